//! A real Kubernetes control plane on loopback: etcd, kube-apiserver and, when asked, the
//! kube-controller-manager, from `KUBEBUILDER_ASSETS` (the folder convention of controller
//! projects' envtest: `kube-apiserver`, `etcd`, optionally `kube-controller-manager`).
//!
//! One control plane per test binary, shared by its tests through [`crate::shared`]; each test
//! works in a namespace of its own ([`ControlPlane::namespace`]). A served imitation only knows
//! what its authors knew; this one taints new nodes not-ready, merges a service account's pull
//! secrets into Pods and compiles CEL match conditions, as clusters do.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, PostParams};
use serde::{Deserialize, Serialize};

use crate::certs::TestCa;
use crate::registry::free_port;
use crate::shared::{self, Keeper};

/// The folder holding `kube-apiserver`, `etcd` and optionally `kube-controller-manager`.
pub const ASSETS_ENV: &str = "KUBEBUILDER_ASSETS";

/// A second user (token authentication, no groups) for tests that prove what a command can do
/// with the rights a role gives it.
pub const VIEWER: &str = "viewer";

const READY_TIMEOUT: Duration = Duration::from_secs(90);
const START_ATTEMPTS: usize = 3;

/// What a test needs to reach a running control plane. Plain data, so that it can be handed to
/// the other test processes of the binary.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ControlPlane {
    /// `https://127.0.0.1:PORT`
    pub url: String,
    /// An admin kubeconfig (a token in group `system:masters`).
    pub kubeconfig: PathBuf,
    /// A kubeconfig for user [`VIEWER`], who has no rights until a test binds a role to it.
    pub viewer_kubeconfig: PathBuf,
    /// The CA of the API server's serving certificate.
    pub ca_path: PathBuf,
    /// Whether a kube-controller-manager runs (Deployments get ReplicaSets and Pods).
    pub controller_manager: bool,
    /// The control plane's own directory (logs, certificates, etcd data).
    pub dir: PathBuf,
    token: String,
}

/// Which processes to start.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub controller_manager: bool,
}

/// The binaries, found through [`ASSETS_ENV`].
#[derive(Clone, Debug)]
pub struct Assets {
    pub apiserver: PathBuf,
    pub etcd: PathBuf,
    pub controller_manager: Option<PathBuf>,
}

impl Assets {
    /// `Ok(None)` when the binaries are not provided (the caller skips, saying so), an error
    /// when they are provided but broken, and an error for anything missing under `CI=true`,
    /// where a skipped cluster test would hide exactly what CI is for.
    pub fn find(options: Options) -> Result<Option<Assets>> {
        match Self::lookup(options) {
            Ok(assets) => Ok(Some(assets)),
            Err(missing) if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
                Err(anyhow!("{missing} (CI=true: the control-plane tests must run)"))
            }
            Err(missing) => {
                record_skip(&missing);
                eprintln!(
                    "SKIPPED (no control plane): {missing}. Run `bash tests/run.sh`, which unpacks \
                     ../shared/envtest and sets {ASSETS_ENV}, or point {ASSETS_ENV} at a folder with \
                     kube-apiserver, etcd and kube-controller-manager (setup-envtest's layout)."
                );
                Ok(None)
            }
        }
    }

    fn lookup(options: Options) -> Result<Assets, String> {
        let Some(dir) = std::env::var_os(ASSETS_ENV).map(PathBuf::from) else {
            return Err(format!("{ASSETS_ENV} is not set"));
        };
        let binary = |name: &str| -> Result<PathBuf, String> {
            let path = dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                Err(format!("{ASSETS_ENV}={} has no {name}", dir.display()))
            }
        };
        Ok(Assets {
            apiserver: binary("kube-apiserver")?,
            etcd: binary("etcd")?,
            controller_manager: if options.controller_manager {
                Some(binary("kube-controller-manager")?)
            } else {
                None
            },
        })
    }
}

/// Where `tests/run.sh` collects the skipped tests, to list them after the run (nextest shows
/// the output of passing tests only on request).
pub const SKIPPED_LOG_ENV: &str = "PULLGUARD_SKIPPED_LOG";

fn record_skip(missing: &str) {
    let Some(path) = std::env::var_os(SKIPPED_LOG_ENV) else {
        return;
    };
    let binary = std::env::var("NEXTEST_BINARY_ID").unwrap_or_else(|_| {
        std::env::current_exe()
            .ok()
            .and_then(|exe| exe.file_stem().map(|stem| stem.to_string_lossy().into_owned()))
            .unwrap_or_default()
    });
    let test = std::env::var("NEXTEST_TEST_NAME")
        .ok()
        .or_else(|| std::thread::current().name().map(str::to_owned))
        .unwrap_or_default();
    use std::io::Write as _;
    if let Ok(mut log) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        // A lost line only shortens the list printed after the run.
        let _ = writeln!(log, "{binary} {test} ({missing})");
    }
}

impl ControlPlane {
    /// The control plane of this test binary, started by whichever test asks first. `None`
    /// (after a loud message on stderr) when the binaries are not provided outside CI.
    pub async fn shared(options: Options) -> Result<Option<ControlPlane>> {
        let Some(assets) = Assets::find(options)? else {
            return Ok(None);
        };
        let name = if options.controller_manager { "control-plane-kcm" } else { "control-plane" };
        shared::environment(name, |keeper| async move { Self::start(&keeper, &assets).await }).await.map(Some)
    }

    /// Starts etcd and kube-apiserver (and the controller manager when `assets` has it) in
    /// `keeper`'s directory and waits until they serve.
    pub async fn start(keeper: &Keeper, assets: &Assets) -> Result<ControlPlane> {
        let dir = keeper.dir().join("control-plane");
        std::fs::create_dir_all(&dir)?;
        let files = Files::write(&dir)?;
        let mut last_error = None;
        for attempt in 0..START_ATTEMPTS {
            match Self::start_once(keeper, assets, &files, attempt).await {
                Ok(control_plane) => return Ok(control_plane),
                // Free ports are probed, then bound by another process: another one may have
                // taken a port in between. Anything else would fail the same way again.
                Err(error) if format!("{error:#}").contains("address already in use") => {
                    last_error = Some(error)
                }
                Err(error) => return Err(error),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("the control plane did not start")))
    }

    async fn start_once(keeper: &Keeper, assets: &Assets, files: &Files, attempt: usize) -> Result<Self> {
        let started = Instant::now();
        let dir = &files.dir;
        let etcd_port = free_port()?;
        let peer_port = free_port()?;
        let api_port = free_port()?;
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");

        let (out, err, etcd_log) = keeper.log(&format!("control-plane/etcd-{attempt}.log"))?;
        let mut etcd = keeper.spawn(
            Command::new(&assets.etcd)
                .args(["--name", "pullguard-test"])
                .arg("--data-dir")
                .arg(dir.join(format!("etcd-data-{attempt}")))
                .args(["--listen-client-urls", &etcd_url, "--advertise-client-urls", &etcd_url])
                .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &format!("pullguard-test={peer_url}")])
                .stdout(out)
                .stderr(err),
        )?;
        let http = crate::registry::http_client(None)?;
        wait_for("etcd", &etcd_log, &mut etcd, || {
            let http = http.clone();
            let url = format!("{etcd_url}/health");
            async move {
                let Ok(response) = http.get(&url).timeout(Duration::from_secs(1)).send().await else {
                    return false;
                };
                response.text().await.is_ok_and(|body| body.contains("true"))
            }
        })
        .await?;

        let url = format!("https://127.0.0.1:{api_port}");
        let (out, err, api_log) = keeper.log(&format!("control-plane/kube-apiserver-{attempt}.log"))?;
        let mut apiserver = keeper.spawn(
            Command::new(&assets.apiserver)
                .args(["--advertise-address=127.0.0.1", "--bind-address=127.0.0.1"])
                .arg(format!("--secure-port={api_port}"))
                .arg(format!("--etcd-servers={etcd_url}"))
                .arg(flag("--client-ca-file", &files.ca))
                .arg(flag("--tls-cert-file", &files.serving_cert))
                .arg(flag("--tls-private-key-file", &files.serving_key))
                .arg(flag("--token-auth-file", &files.tokens))
                .arg(flag("--service-account-key-file", &files.service_account_public))
                .arg(flag("--service-account-signing-key-file", &files.service_account_key))
                .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
                .arg("--authorization-mode=RBAC")
                // Otherwise it manages the `kubernetes` Service's endpoints on a real network.
                .arg("--endpoint-reconciler-type=none")
                .arg("--service-cluster-ip-range=10.96.0.0/16")
                .stdout(out)
                .stderr(err),
        )?;
        let authed = http_client_trusting(&files.ca)?;
        let token = files.token.clone();
        wait_for("kube-apiserver", &api_log, &mut apiserver, || {
            let authed = authed.clone();
            let url = format!("{url}/readyz");
            let token = token.clone();
            async move {
                let Ok(response) =
                    authed.get(&url).bearer_auth(&token).timeout(Duration::from_secs(2)).send().await
                else {
                    return false;
                };
                response.status().is_success()
            }
        })
        .await?;

        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, kubeconfig_yaml(&url, &files.ca, &files.token))?;
        let viewer_kubeconfig = dir.join("kubeconfig-viewer");
        std::fs::write(&viewer_kubeconfig, kubeconfig_yaml(&url, &files.ca, &files.viewer_token))?;
        let control_plane = ControlPlane {
            url,
            kubeconfig,
            viewer_kubeconfig,
            ca_path: files.ca.clone(),
            controller_manager: assets.controller_manager.is_some(),
            dir: dir.clone(),
            token: files.token.clone(),
        };

        if let Some(bin) = &assets.controller_manager {
            let flex = dir.join("flex-volume-plugins");
            std::fs::create_dir_all(&flex)?;
            let (out, err, kcm_log) =
                keeper.log(&format!("control-plane/kube-controller-manager-{attempt}.log"))?;
            let mut kcm = keeper.spawn(
                Command::new(bin)
                    .arg(flag("--kubeconfig", &control_plane.kubeconfig))
                    .args(["--secure-port=0", "--leader-elect=false"])
                    // No kubelets report here: the lifecycle controller would only evict.
                    .arg("--controllers=*,-node-lifecycle-controller")
                    .arg("--use-service-account-credentials=true")
                    .arg(flag("--service-account-private-key-file", &files.service_account_key))
                    .arg(flag("--root-ca-file", &files.ca))
                    .arg(flag("--cluster-signing-cert-file", &files.ca))
                    .arg(flag("--cluster-signing-key-file", &files.ca_key))
                    .arg(flag("--flex-volume-plugin-dir", &flex))
                    .stdout(out)
                    .stderr(err),
            )?;
            // It has no health endpoint with --secure-port=0: its service-account controller
            // giving the `default` namespace its account shows the controllers run.
            let client = control_plane.client().await?;
            wait_for("kube-controller-manager", &kcm_log, &mut kcm, || {
                let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
                async move { accounts.get_opt("default").await.is_ok_and(|account| account.is_some()) }
            })
            .await?;
        }
        eprintln!(
            "control plane ready at {} in {:.1} s (controller manager: {})",
            control_plane.url,
            started.elapsed().as_secs_f64(),
            control_plane.controller_manager
        );
        Ok(control_plane)
    }

    /// A `kube` client with admin rights. Must be called inside a Tokio runtime; make one per
    /// test (a client's connections belong to the runtime that made them).
    pub async fn client(&self) -> Result<kube::Client> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig)?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
                .await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// `path` on the API server, e.g. `/api/v1/nodes`.
    pub fn url_for(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// The admin bearer token (for raw HTTP requests).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// `kubectl --kubeconfig <admin>`, with its output captured.
    pub fn kubectl(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(kubectl_bin());
        command.arg("--kubeconfig").arg(&self.kubeconfig);
        command
    }

    /// Runs kubectl with `args` (and `stdin` when given), returning its exit success, stdout
    /// and stderr.
    pub async fn run_kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<KubectlOutput> {
        use tokio::io::AsyncWriteExt as _;
        let mut command = self.kubectl();
        command
            .args(args)
            .stdin(if stdin.is_some() { std::process::Stdio::piped() } else { std::process::Stdio::null() })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().context("running kubectl")?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes()).await?;
            drop(pipe);
        }
        let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .map_err(|_| anyhow!("kubectl {args:?} did not finish within 60 s"))??;
        Ok(KubectlOutput {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }

    /// Creates a namespace named `<prefix>-<random>` with `labels` and returns its name, with its
    /// `default` ServiceAccount as a cluster has it (made by the controller manager when it
    /// runs, else here).
    pub async fn namespace(&self, prefix: &str, labels: &[(&str, &str)]) -> Result<String> {
        let client = self.client().await?;
        let name = format!("{prefix}-{}", random_suffix());
        let labels: BTreeMap<String, String> =
            labels.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect();
        let namespace: Namespace = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels},
        }))?;
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &namespace).await?;
        if !self.controller_manager {
            // Without the controller manager nobody makes the account, and the API server's
            // ServiceAccount admission plugin refuses Pods whose account does not exist.
            let account: ServiceAccount = serde_json::from_value(serde_json::json!({
                "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": name},
            }))?;
            Api::<ServiceAccount>::namespaced(client, &name).create(&PostParams::default(), &account).await?;
        } else {
            let accounts: Api<ServiceAccount> = Api::namespaced(client, &name);
            shared::eventually("the namespace's default service account", READY_TIMEOUT, || {
                let accounts = accounts.clone();
                async move { accounts.get_opt("default").await.is_ok_and(|account| account.is_some()) }
            })
            .await?;
        }
        Ok(name)
    }
}

/// What kubectl printed.
#[derive(Clone, Debug)]
pub struct KubectlOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// kubectl from `KUBEBUILDER_ASSETS` when it holds one, else from `PATH`.
pub fn kubectl_bin() -> PathBuf {
    std::env::var_os(ASSETS_ENV)
        .map(|dir| Path::new(&dir).join("kubectl"))
        .filter(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from("kubectl"))
}

/// Certificates, keys and the token file of one control plane.
struct Files {
    dir: PathBuf,
    ca: PathBuf,
    ca_key: PathBuf,
    serving_cert: PathBuf,
    serving_key: PathBuf,
    service_account_key: PathBuf,
    service_account_public: PathBuf,
    tokens: PathBuf,
    token: String,
    viewer_token: String,
}

impl Files {
    fn write(dir: &Path) -> Result<Files> {
        let ca = TestCa::new("pullguard test cluster CA")?;
        let ca_path = ca.write_to(dir)?;
        let ca_key = dir.join("ca.key");
        std::fs::write(&ca_key, &ca.key_pem)?;
        let (serving_cert, serving_key) =
            ca.issue_server_cert(&["127.0.0.1", "localhost"])?.write_to(dir, "apiserver")?;
        // kube-apiserver reads the signing key as PKCS#8, but the verification keys only as a
        // public key or a PKCS#1/SEC1 private key: hand it the public half.
        let service_account = rcgen::KeyPair::generate().context("generating the service account key")?;
        let service_account_key = dir.join("service-account.key");
        std::fs::write(&service_account_key, service_account.serialize_pem())?;
        let service_account_public = dir.join("service-account.pub");
        std::fs::write(&service_account_public, service_account.public_key_pem())?;
        let token = random_suffix() + &random_suffix() + &random_suffix();
        let viewer_token = random_suffix() + &random_suffix() + &random_suffix();
        let tokens = dir.join("tokens.csv");
        std::fs::write(
            &tokens,
            format!("{token},admin,admin,system:masters\n{viewer_token},{VIEWER},{VIEWER}\n"),
        )?;

        Ok(Files {
            dir: dir.to_owned(),
            ca: ca_path,
            ca_key,
            serving_cert,
            serving_key,
            service_account_key,
            service_account_public,
            tokens,
            token,
            viewer_token,
        })
    }
}

fn kubeconfig_yaml(url: &str, ca: &Path, token: &str) -> String {
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: test\n  cluster:\n    server: {url}\n    certificate-authority: {ca}\n\
         users:\n\
         - name: admin\n  user:\n    token: {token}\n\
         contexts:\n\
         - name: test\n  context:\n    cluster: test\n    user: admin\n    namespace: default\n\
         current-context: test\n",
        ca = ca.display()
    )
}

fn flag(name: &str, path: &Path) -> String {
    format!("{name}={}", path.display())
}

/// Waits until `ready` holds, failing early with the log when the process exits.
async fn wait_for<F, Fut>(what: &str, log: &Path, child: &mut std::process::Child, mut ready: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if ready().await {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited with {status} before it was ready; log:\n{}", tail(log));
        }
        if Instant::now() >= deadline {
            bail!("{what} was not ready within {READY_TIMEOUT:?}; log:\n{}", tail(log));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn http_client_trusting(ca: &Path) -> Result<reqwest::Client> {
    let pem = std::fs::read_to_string(ca)?;
    crate::registry::http_client(Some(&pem))
}

/// 8 lowercase letters and digits, as Kubernetes names allow.
pub fn random_suffix() -> String {
    let mut bytes = [0u8; 8];
    // Without randomness, the time still separates test processes.
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes = (nanos as u64).to_le_bytes();
    }
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    bytes.iter().map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char).collect()
}
