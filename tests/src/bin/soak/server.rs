//! `pullguard serve` as the deployment runs it (a process of its own, JSON logs at info, files for
//! the certificate, started through `pullguard_tests::served`), and its CPU time and the machine's
//! load from `/proc`.

use std::{path::Path, process::ExitStatus, time::Duration};

use anyhow::{Context, Result};
use pullguard_tests::{secret_volume::SecretVolume, served::Served};
use tokio::process::Command;

use crate::faults::Plan;

#[derive(Debug, Default)]
pub struct LogSummary {
    pub panics: usize,
    pub first_panic: Option<String>,
    pub warn_lines: usize,
    pub error_lines: usize,
}

pub struct Pullguard {
    served: Served,
}

impl Pullguard {
    pub async fn spawn(
        bin: &Path,
        config: &Path,
        volume: &SecretVolume,
        plan: &Plan,
        log: &Path,
    ) -> Result<Pullguard> {
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
        Ok(Pullguard { served: Served::spawn(command, log).await? })
    }

    pub fn pid(&self) -> u32 {
        self.served.pid()
    }

    /// By name, as the API server calls it: the certificate is for `localhost`.
    pub fn url(&self) -> String {
        format!("https://localhost:{}/validate", self.served.addr().port())
    }

    /// Panics and WARN/ERROR lines, read line by line: at info level the log gets hundreds of
    /// megabytes in a full soak.
    pub fn log_summary(&self) -> Result<LogSummary> {
        use std::io::BufRead as _;
        let path = self.served.log_path();
        let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
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
        self.served.exit_status()
    }

    pub async fn metrics(&self) -> Result<String> {
        let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build()?;
        let response = client.get(format!("http://{}/metrics", self.served.admin_addr())).send().await?;
        Ok(response.error_for_status()?.text().await?)
    }

    pub async fn stop(self) {
        self.served.stop().await;
    }
}

/// The 1-minute load average (0 when unreadable: it only explains, it decides nothing).
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}
