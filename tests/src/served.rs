//! A server under measurement as a child process of its own (`pullguard serve`, the bench's
//! allow-all floor): stderr kept in a file (a pipe nobody drains would stall it under load), found
//! by the addresses it prints, read through `/proc`, killed when dropped. Shared by the benchmark
//! and the soak.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use tokio::process::{Child, Command};

const START_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Served {
    child: Child,
    pid: u32,
    addr: SocketAddr,
    admin_addr: SocketAddr,
    log: PathBuf,
}

impl Served {
    /// Spawns `command` with no cluster and no settings from the caller's environment, logging at
    /// info into `log`, and waits for `serving https://A/validate (admin http://B)` there.
    pub async fn spawn(mut command: Command, log: &Path) -> Result<Served> {
        for (name, _) in std::env::vars_os() {
            let text = name.to_string_lossy();
            if text.starts_with("PULLGUARD_") || text.starts_with("KUBERNETES_") || text == "KUBECONFIG" {
                command.env_remove(&name);
            }
        }
        let file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .kill_on_drop(true)
            .spawn()
            .context("spawning the server")?;
        let pid = child.id().ok_or_else(|| anyhow!("the server exited at once"))?;
        let unbound = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut server = Served { child, pid, addr: unbound, admin_addr: unbound, log: log.to_path_buf() };
        let started = Instant::now();
        loop {
            if let Some((addr, admin_addr)) = server.log_text().lines().find_map(serving_addresses) {
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

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// `/validate` by address.
    pub fn url(&self) -> String {
        format!("https://{}/validate", self.addr)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The whole log as text; for start-up and failures, while it is short.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Resident set size in KiB (`VmRSS`): what a container memory limit is charged.
    pub fn rss_kib(&self) -> Result<u64> {
        rss_kib(self.pid)
    }

    /// Peak resident set size in KiB (`VmHWM`).
    pub fn peak_rss_kib(&self) -> Result<u64> {
        status_kib(self.pid, "VmHWM:")
    }

    /// `None` while it runs.
    pub fn exit_status(&mut self) -> Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// Fails when the server died during a measurement (its numbers would be meaningless).
    pub fn ensure_alive(&mut self) -> Result<()> {
        if let Some(status) = self.exit_status()? {
            bail!("the server exited with {status}; its log:\n{}", self.log_text());
        }
        Ok(())
    }

    pub async fn stop(mut self) {
        // Only that it is gone matters; kill fails on an already exited child.
        let _ = self.child.kill().await;
    }
}

/// CPU time `pid` has used so far, all its threads, user and system (utime + stime of stat(5)).
pub fn cpu_time(pid: u32) -> Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name may hold spaces; the fields counted here come after its closing parenthesis.
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).context("no ) in stat")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); field 3 is the first after the name.
    let ticks: u64 = [11, 12]
        .iter()
        .map(|&i| fields.get(i).context("short stat line")?.parse::<u64>().context("stat field"))
        .sum::<Result<u64>>()?;
    Ok(Duration::from_secs_f64(ticks as f64 / clock_ticks_per_second()))
}

/// `getconf CLK_TCK`, asked once (100 on every Linux this runs on, but it is configurable).
fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// `VmRSS` of `pid` in KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    status_kib(pid, "VmRSS:")
}

fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    text.lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("{path} has no {field}"))
}

/// `pullguard: serving https://A/validate (admin http://B)` -> (A, B).
fn serving_addresses(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let (_, rest) = line.split_once("serving https://")?;
    let (addr, rest) = rest.split_once("/validate")?;
    let (_, admin) = rest.split_once("(admin http://")?;
    Some((addr.parse().ok()?, admin.trim_end_matches(')').parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_serving_line() {
        let line = "pullguard: serving https://127.0.0.1:4100/validate (admin http://127.0.0.1:4101)";
        let (addr, admin) = serving_addresses(line).unwrap();
        assert_eq!((addr.port(), admin.port()), (4100, 4101));
        assert!(serving_addresses("pullguard: self-signed CA written to x").is_none());
        assert!(serving_addresses("pullguard: listening").is_none());
    }

    #[test]
    fn reads_its_own_proc_entries() {
        assert!(rss_kib(std::process::id()).unwrap() > 0);
        assert!(status_kib(std::process::id(), "VmHWM:").unwrap() > 0);
        // Spins until the kernel has charged at least one tick, which a busy machine may delay.
        let before = cpu_time(std::process::id()).unwrap();
        let spin = Instant::now();
        while cpu_time(std::process::id()).unwrap() <= before {
            assert!(spin.elapsed() < Duration::from_secs(10), "10 s of spinning used no CPU time");
            for _ in 0..100_000 {
                std::hint::black_box(0u64);
            }
        }
    }
}
