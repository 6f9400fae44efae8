//! `pullguard serve` as the deployment runs it (a process of its own, JSON logs at info, files for
//! the certificate), so its RSS and CPU time can be read from `/proc/<pid>`.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use pullguard_tests::secret_volume::SecretVolume;
use tokio::process::{Child, Command};

use crate::faults::Plan;

const START_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Default)]
pub struct LogSummary {
    pub panics: usize,
    pub first_panic: Option<String>,
    pub warn_lines: usize,
    pub error_lines: usize,
}

pub struct Pullguard {
    child: Child,
    pid: u32,
    addr: SocketAddr,
    admin: SocketAddr,
    log: PathBuf,
}

impl Pullguard {
    pub async fn spawn(
        bin: &Path,
        config: &Path,
        volume: &SecretVolume,
        plan: &Plan,
        log: &Path,
    ) -> Result<Pullguard> {
        let log_file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut command = Command::new(bin);
        command
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--log-format", "json"])
            .arg("--config")
            .arg(config)
            .arg("--tls-cert")
            .arg(volume.cert())
            .arg("--tls-key")
            .arg(volume.key())
            .arg("--tls-reload-interval")
            .arg(format!("{}ms", plan.reload_interval.as_millis()));
        // Nothing from the caller's environment may point it at a cluster or change its settings.
        for (name, _) in std::env::vars_os() {
            let text = name.to_string_lossy();
            if text.starts_with("PULLGUARD_") || text.starts_with("KUBERNETES_") || text == "KUBECONFIG" {
                command.env_remove(&name);
            }
        }
        // stderr goes to a file: a pipe nobody drains would stall the server under load.
        let child = command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let pid = child.id().ok_or_else(|| anyhow!("pullguard exited at once"))?;
        let mut server = Pullguard {
            child,
            pid,
            addr: ([127, 0, 0, 1], 0).into(),
            admin: ([127, 0, 0, 1], 0).into(),
            log: log.to_path_buf(),
        };
        let started = Instant::now();
        loop {
            if let Some((addr, admin)) = server.log_text().lines().find_map(serving_addresses) {
                server.addr = addr;
                server.admin = admin;
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait()? {
                bail!("pullguard exited with {status} before serving; log:\n{}", server.log_text());
            }
            if started.elapsed() > START_TIMEOUT {
                bail!("pullguard did not serve within {START_TIMEOUT:?}; log:\n{}", server.log_text());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// By name, as the API server calls it: the certificate is for `localhost`.
    pub fn url(&self) -> String {
        format!("https://localhost:{}/validate", self.addr.port())
    }

    /// The log as text; only for start-up, while it is short.
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics and WARN/ERROR lines, read line by line: at info level the log gets hundreds of
    /// megabytes in a full soak.
    pub fn log_summary(&self) -> Result<LogSummary> {
        use std::io::BufRead as _;
        let file =
            std::fs::File::open(&self.log).with_context(|| format!("opening {}", self.log.display()))?;
        let mut summary = LogSummary::default();
        for line in std::io::BufReader::new(file).split(b'\n') {
            let line = line.context("reading the server log")?;
            let line = String::from_utf8_lossy(&line);
            if line.contains("panicked") {
                summary.panics += 1;
                summary.first_panic.get_or_insert_with(|| line.chars().take(300).collect());
            }
            summary.warn_lines += usize::from(line.contains("\"level\":\"WARN\""));
            summary.error_lines += usize::from(line.contains("\"level\":\"ERROR\""));
        }
        Ok(summary)
    }

    /// `None` while it runs.
    pub fn exit_status(&mut self) -> Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    pub async fn metrics(&self) -> Result<String> {
        let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build()?;
        let response = client.get(format!("http://{}/metrics", self.admin)).send().await?;
        Ok(response.error_for_status()?.text().await?)
    }

    pub async fn stop(mut self) {
        // Only that it is gone matters; kill fails on an already exited child.
        let _ = self.child.kill().await;
    }
}

/// `VmRSS` of `pid` in KiB: what a container memory limit is charged for.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).context("no VmRSS line")?;
    let kib = line.split_whitespace().nth(1).context("empty VmRSS line")?;
    kib.parse().with_context(|| format!("VmRSS {kib:?}"))
}

/// Utime + stime of `pid` in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
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
    Ok(ticks as f64 / clock_ticks_per_second())
}

/// The 1-minute load average (0 when unreadable: it only explains, it decides nothing).
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
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
        assert!(serving_addresses("pullguard: listening").is_none());
    }

    #[test]
    fn reads_its_own_proc_entries() {
        assert!(rss_kib(std::process::id()).unwrap() > 0);
        assert!(cpu_seconds(std::process::id()).unwrap() >= 0.0);
    }
}
