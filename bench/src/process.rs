//! The measured servers as child processes of their own (`pullguard serve`, the floor), through
//! `pullguard_tests::served` as the soak runs them.

use std::path::Path;

use anyhow::{Context, Result};
pub use pullguard_tests::served::Served as Server;
use tokio::process::Command;

/// `pullguard serve` as deployed (JSON logs at info, stderr kept in a file), with `config`,
/// on loopback ports of its own and a generated certificate, reading the Kubernetes API of
/// `kubeconfig` when given. Returns the server and its CA (PEM).
pub async fn spawn_pullguard(
    binary: &Path,
    config: &Path,
    kubeconfig: Option<&Path>,
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
    if let Some(kubeconfig) = kubeconfig {
        command.arg(format!("--kubeconfig={}", kubeconfig.display()));
    }
    let server = Server::spawn(command, &work.join(format!("{name}.log"))).await?;
    let ca = std::fs::read_to_string(&ca_path).with_context(|| format!("reading {}", ca_path.display()))?;
    Ok((server, ca))
}

/// The allow-all floor (`pullguard-bench floor`, with `--constant` when `constant`), as a process
/// of its own like `pullguard serve`. Returns the server and its CA (PEM).
pub async fn spawn_floor(work: &Path, constant: bool) -> Result<(Server, String)> {
    let name = if constant { "floor-constant" } else { "floor" };
    let ca_path = work.join(format!("{name}-ca.pem"));
    let mut command = Command::new(std::env::current_exe().context("locating pullguard-bench")?);
    command.arg("floor").arg(format!("--self-signed-ca-out={}", ca_path.display()));
    if constant {
        command.arg("--constant");
    }
    let server = Server::spawn(command, &work.join(format!("{name}.log"))).await?;
    let ca = std::fs::read_to_string(&ca_path).with_context(|| format!("reading {}", ca_path.display()))?;
    Ok((server, ca))
}

/// A registry settings file for `pullguard serve`: one plain-HTTP registry declared insecure.
pub fn write_config(path: &Path, insecure_host: &str) -> Result<()> {
    let text = format!("registries:\n  - host: \"{insecure_host}\"\n    insecure: true\n");
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
