//! A real OCI registry (CNCF distribution, Debian's `docker-registry`) run as a child process.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use tokio::process::{Child, Command};

use crate::certs::TestCa;
use crate::shared::Keeper;
use crate::token::TokenServer;

/// Environment variable overriding the registry binary.
pub const REGISTRY_BIN_ENV: &str = "PULLGUARD_TEST_REGISTRY_BIN";
/// Where Debian's `docker-registry` package puts the binary.
pub const DEFAULT_REGISTRY_BIN: &str = "/usr/bin/docker-registry";

const READY_TIMEOUT: Duration = Duration::from_secs(10);
// Another process may grab the port between our probe and the registry's bind.
const START_ATTEMPTS: usize = 4;

/// One line of the registry's access log (Apache combined format).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessLogEntry {
    pub method: String,
    /// Request target as sent, query string included.
    pub path: String,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub protocol: String,
    pub status: u16,
}

/// The `auth.token` section of a token-auth registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenAuth {
    pub realm: String,
    /// Expected `aud` of tokens, and the `service` of challenges.
    pub service: String,
    pub issuer: String,
    /// The registry's own copy of the token server's certificate, so a restart does not
    /// depend on the [`TokenServer`] still existing.
    pub rootcertbundle: PathBuf,
}

enum Auth {
    Anonymous,
    Htpasswd { user: String, password: String },
    Token { auth: TokenAuth, root_cert_pem: String },
}

struct Tls {
    ca: TestCa,
    ca_dir: PathBuf,
    ca_path: PathBuf,
}

/// A running registry on `127.0.0.1:<free port>`, with its storage, config and log in a tempdir.
///
/// The child is killed when this is dropped.
pub struct RegistryProcess {
    child: Option<Child>,
    port: u16,
    bin: PathBuf,
    config_path: PathBuf,
    log_path: PathBuf,
    tls: Option<Tls>,
    credentials: Option<(String, String)>,
    token: Option<TokenAuth>,
    // Last field so the directory outlives everything that points into it.
    dir: tempfile::TempDir,
}

impl RegistryProcess {
    /// Plain HTTP, anonymous access.
    pub async fn start_plain() -> Result<Self> {
        Self::start(false, Auth::Anonymous).await
    }

    /// HTTPS with a fresh [`TestCa`] and basic auth (htpasswd, bcrypt cost 4).
    pub async fn start_tls_auth(user: &str, password: &str) -> Result<Self> {
        Self::start(true, Auth::Htpasswd { user: user.to_owned(), password: password.to_owned() }).await
    }

    /// HTTPS with a fresh [`TestCa`], anonymous access.
    pub async fn start_tls() -> Result<Self> {
        Self::start(true, Auth::Anonymous).await
    }

    /// HTTPS with a fresh [`TestCa`] and bearer-token auth against `token` (`auth.token`):
    /// every request needs a token from its realm: seed it with [`crate::seed::Seeder::with_auth`]
    /// and [`crate::seed::Auth::Bearer`] or [`crate::seed::Auth::Token`].
    pub async fn start_token_auth(token: &TokenServer) -> Result<Self> {
        Self::start(
            true,
            Auth::Token {
                auth: TokenAuth {
                    realm: token.realm(),
                    service: token.service().to_owned(),
                    issuer: token.issuer().to_owned(),
                    rootcertbundle: PathBuf::new(),
                },
                root_cert_pem: token.root_cert_pem().to_owned(),
            },
        )
        .await
    }

    async fn start(tls: bool, auth: Auth) -> Result<Self> {
        let bin = registry_bin()?;
        let dir = tempfile::Builder::new().prefix("pullguard-registry-").tempdir()?;
        let root = dir.path();
        std::fs::create_dir_all(root.join("storage"))?;

        let tls = if tls {
            let ca = TestCa::new("pullguard test registry CA")?;
            let server = ca.issue_server_cert(&["127.0.0.1", "localhost"])?;
            server.write_to(&root.join("tls"), "server")?;
            // The CA gets a directory of its own so it can be used as a containers cert-dir.
            let ca_dir = root.join("ca");
            let ca_path = ca.write_to(&ca_dir)?;
            Some(Tls { ca, ca_dir, ca_path })
        } else {
            None
        };
        let (credentials, token) = match auth {
            Auth::Anonymous => (None, None),
            Auth::Htpasswd { user, password } => {
                // Cost 4: the registry pays the bcrypt cost on every request.
                let hash = bcrypt::hash(&password, 4)?;
                std::fs::write(root.join("htpasswd"), format!("{user}:{hash}\n"))?;
                (Some((user, password)), None)
            }
            Auth::Token { mut auth, root_cert_pem } => {
                auth.rootcertbundle = root.join("token-root.crt");
                std::fs::write(&auth.rootcertbundle, root_cert_pem)
                    .context("writing the token root certificate")?;
                (None, Some(auth))
            }
        };

        let mut registry = Self {
            child: None,
            port: 0,
            bin,
            config_path: root.join("config.yml"),
            log_path: root.join("registry.log"),
            tls,
            credentials,
            token,
            dir,
        };
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            registry.port = free_port()?;
            registry.write_config()?;
            match registry.spawn_and_wait().await {
                Ok(()) => return Ok(registry),
                Err(Spawn::PortTaken(e)) => last_error = Some(e),
                Err(Spawn::Failed(e)) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("registry did not start")))
    }

    /// `127.0.0.1:PORT`, as used in image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The registry process, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// PEM of the CA that signed the serving certificate (HTTPS registries only).
    pub fn ca_pem(&self) -> Option<&str> {
        self.tls.as_ref().map(|t| t.ca.ca_pem.as_str())
    }

    /// The CA certificate as a file (HTTPS registries only).
    pub fn ca_path(&self) -> Option<&Path> {
        self.tls.as_ref().map(|t| t.ca_path.as_path())
    }

    /// A directory holding only `ca.crt`, suitable for `skopeo --cert-dir`.
    pub fn ca_dir(&self) -> Option<&Path> {
        self.tls.as_ref().map(|t| t.ca_dir.as_path())
    }

    /// The CA itself, to issue more certificates under the same trust root.
    pub fn ca(&self) -> Option<&TestCa> {
        self.tls.as_ref().map(|t| &t.ca)
    }

    /// `(user, password)` accepted by the registry, when it requires basic auth.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// The `auth.token` settings, when the registry uses bearer-token auth.
    pub fn token_auth(&self) -> Option<&TokenAuth> {
        self.token.as_ref()
    }

    /// The `service` a token-auth registry names in its challenges and expects as `aud`.
    pub fn token_service(&self) -> Option<&str> {
        self.token.as_ref().map(|t| t.service.as_str())
    }

    /// The registry's scratch directory (storage, config, log, certificates).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything the registry printed so far (stdout and stderr, across restarts).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// An HTTP client that trusts this registry's CA (no credentials attached).
    pub fn client(&self) -> Result<reqwest::Client> {
        http_client(self.ca_pem())
    }

    /// Parsed access-log lines, oldest first.
    pub fn access_log(&self) -> Vec<AccessLogEntry> {
        self.log().lines().filter_map(parse_access_line).collect()
    }

    /// Number of GET or HEAD requests on `/v2/<repo>/manifests/…` so far.
    pub fn manifest_requests(&self, repo: &str) -> usize {
        let prefix = format!("/v2/{repo}/manifests/");
        self.access_log()
            .iter()
            .filter(|e| (e.method == "GET" || e.method == "HEAD") && e.path.starts_with(&prefix))
            .count()
    }

    /// Number of requests whose `METHOD PATH` starts with `method_and_path_prefix`,
    /// e.g. `"HEAD /v2/app/manifests/"` or `"GET /v2/"`.
    pub fn requests(&self, method_and_path_prefix: &str) -> usize {
        self.access_log()
            .iter()
            .filter(|e| format!("{} {}", e.method, e.path).starts_with(method_and_path_prefix))
            .count()
    }

    /// Hands the running registry to a shared environment: it outlives this process, and the
    /// environment's watchdog ends it and removes its directory.
    pub fn share(mut self, keeper: &Keeper) -> Result<SharedRegistry> {
        let child = self.child.take().context("the registry is not running")?;
        keeper.adopt_pid(child.id().context("the registry has exited")?)?;
        // A tokio Child with kill_on_drop would end the registry with this process.
        std::mem::forget(child);
        let shared = SharedRegistry {
            host: self.host(),
            base_url: self.base_url(),
            ca_path: self.ca_path().map(Path::to_path_buf),
            ca_pem: self.ca_pem().map(str::to_owned),
            credentials: self.credentials.clone(),
        };
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir()?).keep();
        keeper.adopt_dir(&dir)?;
        Ok(shared)
    }

    /// Kills the registry and waits for it to exit. Storage is kept until drop.
    pub async fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            // An already-exited child makes kill() fail; only the exit matters here.
            let _ = child.kill().await;
        }
        Ok(())
    }

    /// Kills the registry and starts it again on the same port with the same storage.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await?;
        // The old listener is gone once the child has been reaped, but give the kernel
        // a few tries in case the port is briefly unavailable.
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            match self.spawn_and_wait().await {
                Ok(()) => return Ok(()),
                Err(Spawn::PortTaken(e)) => {
                    last_error = Some(e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(Spawn::Failed(e)) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("registry did not restart")))
    }

    fn write_config(&self) -> Result<()> {
        let root = self.dir.path();
        let mut secret = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
            .map_err(|_| anyhow!("no randomness for the registry secret"))?;
        let secret = hex::encode(secret);
        let mut config = format!(
            "version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
compatibility:
  schema1:
    enabled: true
validation:
  manifests:
    urls:
      allow: ['^https?://']
http:
  addr: 127.0.0.1:{port}
  secret: {secret}
",
            storage = yaml_str(&root.join("storage")),
            port = self.port,
        );
        if self.tls.is_some() {
            let _ = write!(
                config,
                "  tls:\n    certificate: {}\n    key: {}\n",
                yaml_str(&root.join("tls/server.crt")),
                yaml_str(&root.join("tls/server.key")),
            );
        }
        if self.credentials.is_some() {
            let _ = write!(
                config,
                "auth:\n  htpasswd:\n    realm: pullguard-test\n    path: {}\n",
                yaml_str(&root.join("htpasswd")),
            );
        }
        if let Some(token) = &self.token {
            let _ = write!(
                config,
                "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                yaml_quote(&token.realm),
                yaml_quote(&token.service),
                yaml_quote(&token.issuer),
                yaml_str(&token.rootcertbundle),
            );
        }
        std::fs::write(&self.config_path, config)
            .with_context(|| format!("writing {}", self.config_path.display()))
    }

    async fn spawn_and_wait(&mut self) -> Result<(), Spawn> {
        let log_start = std::fs::metadata(&self.log_path).map(|m| m.len()).unwrap_or(0);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("opening {}", self.log_path.display()))
            .map_err(Spawn::Failed)?;
        let log_err = log.try_clone().map_err(|e| Spawn::Failed(e.into()))?;
        let child = Command::new(&self.bin)
            .arg("serve")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {}", self.bin.display()))
            .map_err(Spawn::Failed)?;
        self.child = Some(child);

        let client = self.client().map_err(Spawn::Failed)?;
        let url = format!("{}/v2/", self.base_url());
        let listening = format!("listening on 127.0.0.1:{}", self.port);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let exited = match self.child.as_mut() {
                Some(child) => child.try_wait().map_err(|e| Spawn::Failed(e.into()))?,
                None => None,
            };
            if let Some(status) = exited {
                self.child = None;
                let log = self.log_since(log_start);
                let error = anyhow!("registry exited with {status} before answering; log:\n{log}");
                return Err(if log.contains("address already in use") {
                    Spawn::PortTaken(error)
                } else {
                    Spawn::Failed(error)
                });
            }
            // An answer alone could come from whoever else holds the port; the log line
            // proves that this child bound it.
            if self.log_since(log_start).contains(&listening)
                && let Ok(response) = client.get(&url).timeout(Duration::from_secs(1)).send().await
                && matches!(response.status().as_u16(), 200 | 401)
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = self.stop().await;
                return Err(Spawn::Failed(anyhow!(
                    "registry did not answer GET {url} within {READY_TIMEOUT:?}; log:\n{}",
                    self.log_since(log_start)
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log_since(&self, offset: u64) -> String {
        let log = self.log();
        log.get(usize::try_from(offset).unwrap_or(0)..).unwrap_or(&log).to_owned()
    }
}

impl Drop for RegistryProcess {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

/// A registry of a shared environment ([`RegistryProcess::share`]), as plain data.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SharedRegistry {
    /// `127.0.0.1:PORT`, as used in image references.
    pub host: String,
    pub base_url: String,
    pub ca_path: Option<PathBuf>,
    pub ca_pem: Option<String>,
    pub credentials: Option<(String, String)>,
}

impl SharedRegistry {
    /// A seeder with the registry's CA and credentials.
    pub fn seeder(&self) -> Result<crate::seed::Seeder> {
        crate::seed::Seeder::for_url(
            &self.base_url,
            self.ca_pem.as_deref(),
            self.credentials.as_ref().map(|(user, password)| (user.as_str(), password.as_str())),
        )
    }
}

enum Spawn {
    PortTaken(anyhow::Error),
    Failed(anyhow::Error),
}

/// A reqwest client for talking to test registries: trusts only `ca_pem` when given
/// (so a mistake in the test CA shows up as a TLS error), and never uses a proxy.
pub fn http_client(ca_pem: Option<&str>) -> Result<reqwest::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30));
    if let Some(pem) = ca_pem {
        builder = builder.tls_certs_only([reqwest::Certificate::from_pem(pem.as_bytes())?]);
    }
    Ok(builder.build()?)
}

fn registry_bin() -> Result<PathBuf> {
    let bin = std::env::var_os(REGISTRY_BIN_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_REGISTRY_BIN));
    if !bin.is_file() {
        bail!(
            "registry binary {} not found (override with {REGISTRY_BIN_ENV}); run the test command \
             from the README, which installs Debian's `docker-registry` package",
            bin.display()
        );
    }
    Ok(bin)
}

/// A port on 127.0.0.1 that was free a moment ago (callers retry when another process takes it).
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("probing for a free port")?;
    Ok(listener.local_addr()?.port())
}

fn yaml_str(path: &Path) -> String {
    yaml_quote(&path.display().to_string())
}

fn yaml_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

// `127.0.0.1 - - [10/Oct/2024:13:55:36 +0000] "GET /v2/app/manifests/v1 HTTP/2.0" 200 528 "" "ua"`
fn parse_access_line(line: &str) -> Option<AccessLogEntry> {
    let open = line.find("] \"")? + 3;
    let rest = &line[open..];
    let close = rest.find('"')?;
    let mut request = rest[..close].split(' ');
    let method = request.next()?;
    let path = request.next()?;
    let protocol = request.next()?;
    if !protocol.starts_with("HTTP/") || request.next().is_some() {
        return None;
    }
    let status = rest[close + 1..].split_whitespace().next()?.parse().ok()?;
    Some(AccessLogEntry {
        method: method.to_owned(),
        path: path.to_owned(),
        protocol: protocol.to_owned(),
        status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_combined_log_lines() {
        let line = r#"127.0.0.1 - - [10/Oct/2024:13:55:36 +0000] "HEAD /v2/app/manifests/v1 HTTP/2.0" 200 0 "" "x/1""#;
        let entry = parse_access_line(line).unwrap();
        assert_eq!(entry.method, "HEAD");
        assert_eq!(entry.path, "/v2/app/manifests/v1");
        assert_eq!(entry.protocol, "HTTP/2.0");
        assert_eq!(entry.status, 200);
        assert!(parse_access_line(r#"time="2024" level=info msg="response completed""#).is_none());
    }
}
