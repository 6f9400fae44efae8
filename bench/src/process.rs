//! Servers run as child processes (`pullguard serve`, the floor): started with their stderr in a
//! file (a pipe nobody drains would stall them under load), found by the address they print,
//! measured through `/proc`, and killed when dropped.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail};
use tokio::process::{Child, Command};

const START_TIMEOUT: Duration = Duration::from_secs(20);

/// `pullguard serve` as deployed (JSON logs at info, stderr kept in a file), with `config`,
/// on loopback ports of its own and a generated certificate. Returns the server and its CA (PEM).
pub async fn spawn_pullguard(
    binary: &Path,
    config: &Path,
    work: &Path,
    name: &str,
) -> Result<(Server, String)> {
    let ca_path = work.join(format!("{name}-ca.pem"));
    let mut command = Command::new(binary);
    command
        .arg("serve")
        .arg("--listen=127.0.0.1:0")
        .arg("--admin-listen=127.0.0.1:0")
        .arg(format!("--config={}", config.display()))
        .arg(format!("--self-signed-ca-out={}", ca_path.display()))
        .arg("--log-format=json");
    isolate(&mut command);
    let server = Server::spawn(command, &work.join(format!("{name}.log"))).await?;
    let ca = std::fs::read_to_string(&ca_path).with_context(|| format!("reading {}", ca_path.display()))?;
    Ok((server, ca))
}

/// The allow-all floor (`pullguard-bench floor`), as a process of its own like `pullguard serve`.
/// Returns the server and its CA (PEM).
pub async fn spawn_floor(work: &Path) -> Result<(Server, String)> {
    let ca_path = work.join("floor-ca.pem");
    let mut command = Command::new(std::env::current_exe().context("locating pullguard-bench")?);
    command.arg("floor").arg(format!("--self-signed-ca-out={}", ca_path.display()));
    isolate(&mut command);
    let server = Server::spawn(command, &work.join("floor.log")).await?;
    let ca = std::fs::read_to_string(&ca_path).with_context(|| format!("reading {}", ca_path.display()))?;
    Ok((server, ca))
}

/// No cluster, no settings from the caller's environment: the measured server runs on exactly the
/// flags and file given, at the deployment's log level.
fn isolate(command: &mut Command) {
    for (name, _) in std::env::vars_os() {
        let name_text = name.to_string_lossy();
        if name_text.starts_with("PULLGUARD_")
            || name_text.starts_with("KUBERNETES_")
            || name_text == "KUBECONFIG"
        {
            command.env_remove(&name);
        }
    }
    command.env("RUST_LOG", "info");
}

/// A registry settings file for `pullguard serve`: one plain-HTTP registry declared insecure.
pub fn write_config(path: &Path, insecure_host: &str) -> Result<()> {
    let text = format!("registries:\n  - host: \"{insecure_host}\"\n    insecure: true\n");
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

pub struct Server {
    child: Child,
    pid: u32,
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    log: PathBuf,
}

impl Server {
    /// Spawns `command` and waits for `serving https://ADDR/validate (admin http://ADDR)` on its
    /// stderr.
    pub async fn spawn(mut command: Command, log: &Path) -> Result<Server> {
        let file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .kill_on_drop(true)
            .spawn()
            .context("spawning the server")?;
        let pid = child.id().ok_or_else(|| anyhow!("the server exited at once"))?;
        let mut server = Server {
            child,
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log: log.to_path_buf(),
        };
        let started = std::time::Instant::now();
        loop {
            if let Some((addr, admin_addr)) = parse_serving(&server.log_text()) {
                server.addr = addr;
                server.admin_addr = admin_addr;
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait()? {
                bail!("the server exited with {status} before serving; its log:\n{}", server.log_text());
            }
            if started.elapsed() > START_TIMEOUT {
                bail!("the server did not serve within {START_TIMEOUT:?}; its log:\n{}", server.log_text());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}/validate", self.addr)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Resident set size in KiB (`VmRSS`): what a container memory limit is charged.
    pub fn rss_kib(&self) -> Result<u64> {
        status_kib(self.pid, "VmRSS:")
    }

    /// Peak resident set size in KiB (`VmHWM`).
    pub fn peak_rss_kib(&self) -> Result<u64> {
        status_kib(self.pid, "VmHWM:")
    }

    /// Fails when the server died during a measurement (its numbers would be meaningless).
    pub fn ensure_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("the server exited with {status}; its log:\n{}", self.log_text());
        }
        Ok(())
    }

    pub async fn stop(mut self) {
        // Only the exit matters; an already-exited child makes kill fail.
        let _ = self.child.kill().await;
    }
}

fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    text.lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("{path} has no {field}"))
}

/// `... serving https://127.0.0.1:1234/validate (admin http://127.0.0.1:5678)` -> both addresses.
fn parse_serving(log: &str) -> Option<(SocketAddr, SocketAddr)> {
    log.lines().find_map(|line| {
        let rest = line.split("serving https://").nth(1)?;
        let addr = rest.split("/validate").next()?.parse().ok()?;
        let admin = rest.split("(admin http://").nth(1)?.split(')').next()?.parse().ok()?;
        Some((addr, admin))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_addresses_pullguard_prints() {
        let log = "x\npullguard: serving https://127.0.0.1:41000/validate (admin http://127.0.0.1:41001)\n";
        let (addr, admin) = parse_serving(log).unwrap();
        assert_eq!(addr.port(), 41000);
        assert_eq!(admin.port(), 41001);
        assert!(parse_serving("pullguard: self-signed CA written to x").is_none());
    }
}
