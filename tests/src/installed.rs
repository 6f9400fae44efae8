//! `pullguard serve` installed as the admission webhook of a real control plane, as a cluster
//! runs it: the ValidatingWebhookConfiguration rendered from `deploy/base` with only its
//! `clientConfig` swapped for a loopback `url` and the test CA, the configuration file from
//! `deploy/base/config.yaml` with the test registries listed, and node pools as Node objects.
//!
//! One installation per test binary ([`crate::shared`]); tests work in namespaces of their own.
//! The nodes are cluster-wide and shared by every test of the binary: see [`NODES`].

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use k8s_openapi::api::{admissionregistration::v1::ValidatingWebhookConfiguration, core::v1::Node};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::certs::TestCa;
use crate::control_plane::{ControlPlane, KubectlOutput, Options};
use crate::registry::{RegistryProcess, SharedRegistry};
use crate::seed::{Format, ImageSpec, IndexEntry};
use crate::shared::{self, Keeper};

/// The webhook's name in `deploy/base`; the API server prefixes audit annotation keys with it
/// and names it in denials.
pub const WEBHOOK_NAME: &str = "images.pullguard.io";

/// User and password of the private (HTTPS + htpasswd) registry.
pub const PRIVATE_USER: &str = "robot";
pub const PRIVATE_PASSWORD: &str = "s3cret-pull-password";

/// The node pools of every installation. Workloads without a
/// selector land on `general` only: the arm64 and Windows pools are tainted, as clouds
/// taint them. Nodes are Ready and carry no condition taints, like a running cluster's.
pub const NODES: &[TestNode] = &[
    TestNode { name: "general-1", pool: "general", os: "linux", arch: "amd64", taints: &[] },
    TestNode { name: "general-2", pool: "general", os: "linux", arch: "amd64", taints: &[] },
    TestNode {
        name: "arm-1",
        pool: "arm-pool",
        os: "linux",
        arch: "arm64",
        taints: &[("kubernetes.io/arch", "arm64")],
    },
    TestNode { name: "win-1", pool: "win", os: "windows", arch: "amd64", taints: &[("os", "windows")] },
];

/// One node of [`NODES`]; `taints` are `key=value:NoSchedule`.
pub struct TestNode {
    pub name: &'static str,
    pub pool: &'static str,
    pub os: &'static str,
    pub arch: &'static str,
    pub taints: &'static [(&'static str, &'static str)],
}

/// The Windows build of the `win` pool (Windows Server 2022).
pub const WINDOWS_BUILD: &str = "10.0.20348";

/// A running installation, as plain data shared by the tests of one binary.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Installed {
    pub control_plane: ControlPlane,
    /// Plain HTTP, anonymous, declared `insecure` in the configuration. Seeded with
    /// `app:v1` (linux amd64 + arm64 index), `amdonly:v1`, `armonly:v1`, `win:ltsc2022`.
    pub registry: SharedRegistry,
    /// HTTPS with its own CA (`caFile` in the configuration) and htpasswd auth
    /// ([`PRIVATE_USER`]); seeded with `private/app:v1` (linux amd64).
    pub private_registry: SharedRegistry,
    /// `127.0.0.1:PORT` of a registry that accepts connections and never answers (declared
    /// `insecure` in the configuration): the fault a real registry does not produce on demand.
    pub stalled_registry: String,
    pub webhook: Server,
}

/// The `pullguard serve` process.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Server {
    pub pid: u32,
    /// `https://127.0.0.1:PORT/validate`
    pub validate_url: String,
    /// `http://127.0.0.1:PORT` (livez, readyz, metrics)
    pub admin_url: String,
    pub log: PathBuf,
    pub config: PathBuf,
}

impl Installed {
    /// The installation of this test binary (started by whichever test asks first), or `None`
    /// when the control-plane binaries are not provided (outside CI; see
    /// [`crate::control_plane::Assets::find`]).
    pub async fn shared(pullguard_bin: &Path, options: Options) -> Result<Option<Installed>> {
        let Some(assets) = crate::control_plane::Assets::find(options)? else {
            return Ok(None);
        };
        let bin = pullguard_bin.to_path_buf();
        let name = if options.controller_manager { "installed-kcm" } else { "installed" };
        shared::environment(name, |keeper| async move {
            let control_plane = ControlPlane::start(&keeper, &assets).await?;
            Self::install(&keeper, control_plane, &bin).await
        })
        .await
        .map(Some)
    }

    async fn install(keeper: &Keeper, control_plane: ControlPlane, bin: &Path) -> Result<Installed> {
        let client = control_plane.client().await?;
        let (registry, private_registry) =
            tokio::try_join!(start_public_registry(), start_private_registry())?;
        let registry = registry.share(keeper)?;
        let private_registry = private_registry.share(keeper)?;
        create_nodes(&client).await?;

        let dir = keeper.dir().join("pullguard");
        std::fs::create_dir_all(&dir)?;
        let ca = TestCa::new("pullguard test webhook CA")?;
        let (cert, key) = ca.issue_server_cert(&["127.0.0.1"])?.write_to(&dir, "serving")?;
        let stalled_registry = start_stalled_registry(keeper).await?;
        let config = dir.join("config.yaml");
        std::fs::write(&config, configuration(&[&registry, &private_registry], &stalled_registry)?)?;
        let webhook = start_server(keeper, bin, &dir, &config, &cert, &key, &control_plane).await?;

        let configuration = webhook_configuration(&webhook.validate_url, &ca.ca_pem).await?;
        Api::<ValidatingWebhookConfiguration>::all(client.clone())
            .create(&PostParams::default(), &configuration)
            .await
            .context("installing the ValidatingWebhookConfiguration")?;
        let installed = Installed { control_plane, registry, private_registry, stalled_registry, webhook };
        installed.wait_until_called().await?;
        Ok(installed)
    }

    /// The API server loads webhook configurations through an informer: a moment passes before
    /// a new one is called. A server-side dry run of a Pod with an invalid image shows it is.
    async fn wait_until_called(&self) -> Result<()> {
        let namespace = self.control_plane.namespace("probe", &[]).await?;
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "probe", "namespace": namespace},
            "spec": {"containers": [{"name": "c", "image": "Not A Valid Reference"}]},
        });
        let pods: Api<k8s_openapi::api::core::v1::Pod> =
            Api::namespaced(self.control_plane.client().await?, &namespace);
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(pod)?;
        shared::eventually("the API server calling the webhook", Duration::from_secs(30), || {
            let pods = pods.clone();
            let pod = pod.clone();
            async move {
                matches!(pods.create(&PostParams { dry_run: true, ..PostParams::default() }, &pod).await,
                    Err(kube::Error::Api(status)) if status.message.contains("PG100"))
            }
        })
        .await
    }

    /// Runs kubectl against the control plane.
    pub async fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<KubectlOutput> {
        self.control_plane.run_kubectl(args, stdin).await
    }

    /// `kubectl apply -f -` of `manifest` (YAML or JSON) in `namespace`.
    pub async fn apply(&self, namespace: &str, manifest: &Value) -> Result<KubectlOutput> {
        self.kubectl(&["apply", "-n", namespace, "-f", "-"], Some(&manifest.to_string())).await
    }

    /// The admission log lines (the JSON `fields`) of objects in `namespace`, oldest first.
    /// Log lines are written in batches by a thread of their own: poll for what is expected.
    pub fn logged_admissions(&self, namespace: &str) -> Vec<Value> {
        self.webhook_log()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .map(|line| line["fields"].clone())
            .filter(|fields| fields["message"] == "admission" && fields["namespace"] == namespace)
            .collect()
    }

    /// What the webhook logged so far.
    pub fn webhook_log(&self) -> String {
        std::fs::read_to_string(&self.webhook.log).unwrap_or_default()
    }

    /// A `dockerconfigjson` Secret for the private registry, with `password`.
    pub fn pull_secret(&self, name: &str, password: &str) -> Value {
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{PRIVATE_USER}:{password}"));
        let config = json!({"auths": {self.private_registry.host.clone(): {"auth": auth}}}).to_string();
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name},
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": base64::engine::general_purpose::STANDARD.encode(config)},
        })
    }
}

async fn start_public_registry() -> Result<RegistryProcess> {
    let registry = RegistryProcess::start_plain().await?;
    let seeder = crate::seed::Seeder::new(&registry)?;
    let index =
        [IndexEntry::image(ImageSpec::linux("amd64")), IndexEntry::image(ImageSpec::linux("arm64/v8"))];
    seeder.push_index("app", "v1", &index, Format::Oci).await?;
    seeder.push_image("amdonly", "v1", &ImageSpec::linux("amd64")).await?;
    seeder.push_image("armonly", "v1", &ImageSpec::linux("arm64")).await?;
    seeder.push_image("win", "ltsc2022", &ImageSpec::windows("amd64", "10.0.20348.2700")).await?;
    Ok(registry)
}

async fn start_private_registry() -> Result<RegistryProcess> {
    let registry = RegistryProcess::start_tls_auth(PRIVATE_USER, PRIVATE_PASSWORD).await?;
    crate::seed::Seeder::new(&registry)?.push_image("private/app", "v1", &ImageSpec::linux("amd64")).await?;
    Ok(registry)
}

/// A listening socket nobody accepts on: the kernel completes the handshake, the request is
/// sent, and no answer ever comes. A process of its own, so that it outlives the test that
/// started it.
async fn start_stalled_registry(keeper: &Keeper) -> Result<String> {
    let port = crate::registry::free_port()?;
    let script = "import socket, sys, time\n\
                  s = socket.socket()\n\
                  s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
                  s.bind(('127.0.0.1', int(sys.argv[1])))\n\
                  s.listen(1024)\n\
                  time.sleep(86400)\n";
    let (out, err, log) = keeper.log("stalled-registry.log")?;
    let mut child = keeper
        .spawn(Command::new("python3").arg("-c").arg(script).arg(port.to_string()).stdout(out).stderr(err))?;
    let host = format!("127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(&host).await.is_err() {
        if let Some(status) = child.try_wait()? {
            bail!(
                "the stalled registry exited with {status}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("the stalled registry did not listen on {host} within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(host)
}

/// The repository's root (the workspace holding `deploy/`).
pub fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// `deploy/base/config.yaml` with the test registries listed (they are on loopback, which
/// pullguard contacts only for registries its configuration names).
fn configuration(registries: &[&SharedRegistry], stalled: &str) -> Result<String> {
    let base = std::fs::read_to_string(repository_root().join("deploy/base/config.yaml"))?;
    let mut listed = String::from("registries:\n");
    for registry in registries {
        listed.push_str(&format!("  - host: \"{}\"\n", registry.host));
        match &registry.ca_path {
            Some(ca) => listed.push_str(&format!("    caFile: \"{}\"\n", ca.display())),
            None => listed.push_str("    insecure: true\n"),
        }
    }
    listed.push_str(&format!("  - host: \"{stalled}\"\n    insecure: true\n"));
    if !base.lines().any(|line| line == "registries: []") {
        bail!("deploy/base/config.yaml no longer has the line `registries: []` the tests replace");
    }
    Ok(base.replace("registries: []\n", &listed))
}

/// The ValidatingWebhookConfiguration of `deploy/base`, as `kubectl kustomize` renders it, with
/// its `clientConfig` pointing at `url` with `ca_pem`.
pub async fn webhook_configuration(url: &str, ca_pem: &str) -> Result<ValidatingWebhookConfiguration> {
    let rendered = render_kustomization(&repository_root().join("deploy/base")).await?;
    let mut configuration = rendered
        .into_iter()
        .find(|object| object["kind"] == "ValidatingWebhookConfiguration")
        .context("deploy/base renders no ValidatingWebhookConfiguration")?;
    let webhooks = configuration["webhooks"].as_array_mut().context("no webhooks")?;
    for webhook in webhooks {
        webhook["clientConfig"] = json!({
            "url": url,
            "caBundle": base64::engine::general_purpose::STANDARD.encode(ca_pem),
        });
    }
    Ok(serde_json::from_value(configuration)?)
}

/// `kubectl kustomize DIR` as JSON objects.
pub async fn render_kustomization(dir: &Path) -> Result<Vec<Value>> {
    let output = tokio::process::Command::new(crate::control_plane::kubectl_bin())
        .arg("kustomize")
        .arg(dir)
        .output()
        .await
        .context("running kubectl kustomize")?;
    if !output.status.success() {
        bail!("kubectl kustomize {} failed: {}", dir.display(), String::from_utf8_lossy(&output.stderr));
    }
    let text = String::from_utf8(output.stdout).context("kubectl kustomize printed non-UTF-8")?;
    let documents: Vec<Value> =
        serde_saphyr::from_multiple(&text).map_err(|error| anyhow!("reading kustomize output: {error}"))?;
    Ok(documents.into_iter().filter(|document| !document.is_null()).collect())
}

/// Creates [`NODES`] as a running cluster has them (see [`create_ready_node`]).
async fn create_nodes(client: &kube::Client) -> Result<()> {
    for TestNode { name, pool, os, arch, taints } in NODES {
        let mut labels = json!({
            "cloud.google.com/gke-nodepool": pool,
            "kubernetes.io/os": os,
            "kubernetes.io/arch": arch,
            "kubernetes.io/hostname": name,
        });
        if *os == "windows" {
            labels["node.kubernetes.io/windows-build"] = json!(WINDOWS_BUILD);
        }
        let taints: Vec<Value> = taints
            .iter()
            .map(|(key, value)| json!({"key": key, "value": value, "effect": "NoSchedule"}))
            .collect();
        create_ready_node(client, name, labels, taints).await?;
    }
    Ok(())
}

/// Creates a Node with `labels` and `taints` as a running cluster has it: the API server taints
/// every new Node `node.kubernetes.io/not-ready` until a kubelet reports Ready and the lifecycle
/// controller lifts the taint; neither runs here, so this does both.
pub async fn create_ready_node(
    client: &kube::Client,
    name: &str,
    labels: Value,
    taints: Vec<Value>,
) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let os = labels["kubernetes.io/os"].as_str().unwrap_or("linux").to_owned();
    let arch = labels["kubernetes.io/arch"].as_str().unwrap_or("amd64").to_owned();
    let node: Node = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}),
    )?;
    nodes.create(&PostParams::default(), &node).await.with_context(|| format!("creating node {name}"))?;
    nodes
        .patch(name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"taints": taints}})))
        .await
        .with_context(|| format!("lifting the not-ready taint of node {name}"))?;
    let status = json!({"status": {
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                        "message": "kubelet is posting ready status",
                        "lastHeartbeatTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
        "nodeInfo": {"architecture": arch, "operatingSystem": os, "containerRuntimeVersion": "containerd://2.1.4",
                     "kubeletVersion": "v1.36.2", "kubeProxyVersion": "", "osImage": "", "kernelVersion": "",
                     "machineID": "", "systemUUID": "", "bootID": ""},
    }});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .with_context(|| format!("reporting node {name} Ready"))?;
    Ok(())
}

async fn start_server(
    keeper: &Keeper,
    bin: &Path,
    dir: &Path,
    config: &Path,
    cert: &Path,
    key: &Path,
    control_plane: &ControlPlane,
) -> Result<Server> {
    let mut last_error = None;
    for attempt in 0..3 {
        let port = crate::registry::free_port()?;
        let admin_port = crate::registry::free_port()?;
        let (out, err, log) = keeper.log(&format!("pullguard/serve-{attempt}.log"))?;
        let mut child = keeper.spawn(
            Command::new(bin)
                .arg("serve")
                .arg("--config")
                .arg(config)
                .arg("--tls-cert")
                .arg(cert)
                .arg("--tls-key")
                .arg(key)
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--admin-listen")
                .arg(format!("127.0.0.1:{admin_port}"))
                .arg("--kubeconfig")
                .arg(&control_plane.kubeconfig)
                .args(["--log-format", "json"])
                .env("RUST_LOG", "info")
                .current_dir(dir)
                .stdout(out)
                .stderr(err),
        )?;
        let server = Server {
            pid: child.id(),
            validate_url: format!("https://127.0.0.1:{port}/validate"),
            admin_url: format!("http://127.0.0.1:{admin_port}"),
            log: log.clone(),
            config: config.to_path_buf(),
        };
        let http = crate::registry::http_client(None)?;
        let ready = format!("{}/readyz", server.admin_url);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let outcome = loop {
            if let Some(status) = child.try_wait()? {
                break Err(anyhow!(
                    "pullguard serve exited with {status}; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                ));
            }
            if let Ok(response) = http.get(&ready).timeout(Duration::from_secs(1)).send().await
                && response.status().is_success()
            {
                break Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                break Err(anyhow!(
                    "pullguard serve was not ready within 60 s; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        match outcome {
            Ok(()) => return Ok(server),
            Err(error) if format!("{error:#}").contains("in use") => {
                let _ = child.kill();
                last_error = Some(error);
            }
            Err(error) => return Err(error),
        }
    }
    Err(last_error.unwrap_or_else(|| anyhow!("pullguard serve did not start")))
}

/// In a test of the `pullguard` package: this binary's installation with `options`, or return
/// from the test (the skip was announced on stderr). A macro, because the path of the
/// `pullguard` binary (`CARGO_BIN_EXE_pullguard`) is known only where the test is compiled.
#[macro_export]
macro_rules! installed_or_skip {
    ($options:expr) => {
        match $crate::installed::Installed::shared(
            std::path::Path::new(env!("CARGO_BIN_EXE_pullguard")),
            $options,
        )
        .await
        .expect("starting the control plane and installing pullguard")
        {
            Some(installed) => installed,
            None => return,
        }
    };
}
