//! Load from a separate process, as the API server's would be: `h2load` (nghttp2) over TLS with
//! HTTP/2 keep-alive, as fast as the server answers. Throughput is h2load's own figure; latency
//! percentiles come from its per-request log (`--log-file`), since its summary has only
//! min/max/mean/sd. Fixed-rate load is `crate::load` (see there why not `h2load --rps`).

use std::{
    path::{Path, PathBuf},
    process::Stdio,
};

use anyhow::{Context, Result, bail};
use tokio::process::Command;

use crate::stats::percentile;

/// One h2load run.
#[derive(Debug, Clone)]
pub struct Load {
    pub url: String,
    pub body: PathBuf,
    pub seconds: u64,
    /// Connections (`-c`).
    pub clients: u32,
    /// Concurrent streams per connection (`-m`).
    pub streams: u32,
    pub log: PathBuf,
}

#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

pub async fn run(load: &Load) -> Result<Outcome> {
    // h2load appends to an existing log; a rerun in the same --work-dir must not mix runs.
    let _ = std::fs::remove_file(&load.log);
    let mut command = Command::new("h2load");
    command
        .arg("-D")
        .arg(load.seconds.to_string())
        // A second of warm-up: connections, TLS handshakes and the server's first allocations are
        // not what the API server sees on its long-lived connections.
        .arg("--warm-up-time=1")
        .arg("-t1")
        .arg(format!("-c{}", load.clients))
        .arg(format!("-m{}", load.streams))
        .arg(format!("--data={}", load.body.display()))
        .arg("-H")
        .arg("content-type: application/json")
        .arg(format!("--log-file={}", load.log.display()));
    command.arg(&load.url).stdin(Stdio::null()).kill_on_drop(true);
    let output = command.output().await.context("running h2load (is nghttp2-client installed?)")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("h2load failed ({}):\n{stdout}\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    }
    let summary = Summary::parse(&stdout).with_context(|| format!("unexpected h2load output:\n{stdout}"))?;
    if summary.failed > 0 || summary.non_2xx > 0 || summary.succeeded == 0 {
        bail!("h2load saw failures against {}:\n{stdout}", load.url);
    }
    let mut latencies = logged_latencies_ms(&load.log)?;
    Ok(Outcome {
        rps: summary.rps,
        p50_ms: percentile(&mut latencies, 50.0).unwrap_or(f64::NAN),
        p99_ms: percentile(&mut latencies, 99.0).unwrap_or(f64::NAN),
        max_ms: latencies.iter().copied().fold(0.0, f64::max),
    })
}

#[derive(Debug, PartialEq)]
struct Summary {
    rps: f64,
    succeeded: u64,
    failed: u64,
    non_2xx: u64,
}

impl Summary {
    /// Reads `finished in 5.00s, 1234.56 req/s, ...`, `requests: ... N succeeded, N failed, ...`
    /// and `status codes: N 2xx, N 3xx, N 4xx, N 5xx`.
    fn parse(stdout: &str) -> Option<Summary> {
        let finished = stdout.lines().find(|line| line.starts_with("finished in"))?;
        let rps = finished.split(", ").nth(1)?.strip_suffix(" req/s")?.parse().ok()?;
        let requests = stdout.lines().find(|line| line.starts_with("requests:"))?;
        let count = |text: &str, what: &str| -> Option<u64> {
            text.split(", ").find_map(|part| {
                let part = part.trim_start_matches("requests: ").trim_start_matches("status codes: ");
                part.strip_suffix(what)?.trim().parse().ok()
            })
        };
        let succeeded = count(requests, " succeeded")?;
        let failed =
            count(requests, " failed")? + count(requests, " errored")? + count(requests, " timeout")?;
        let codes = stdout.lines().find(|line| line.starts_with("status codes:"))?;
        let non_2xx = count(codes, " 3xx")? + count(codes, " 4xx")? + count(codes, " 5xx")?;
        Some(Summary { rps, succeeded, failed, non_2xx })
    }
}

/// `start_us \t status \t duration_us` per request; only 2xx answers count.
fn logged_latencies_ms(path: &Path) -> Result<Vec<f64>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let latencies: Vec<f64> = text
        .lines()
        .filter_map(|line| {
            let mut columns = line.split('\t');
            let _start = columns.next()?;
            let status: u16 = columns.next()?.trim().parse().ok()?;
            let micros: f64 = columns.next()?.trim().parse().ok()?;
            (200..300).contains(&status).then_some(micros / 1000.0)
        })
        .collect();
    if latencies.is_empty() {
        bail!("h2load logged no request in {}", path.display());
    }
    Ok(latencies)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_summary() {
        let stdout = "finished in 5.00s, 12345.67 req/s, 4.12MB/s\n\
            requests: 61728 total, 61768 started, 61728 done, 61728 succeeded, 0 failed, 0 errored, 0 timeout\n\
            status codes: 61728 2xx, 0 3xx, 0 4xx, 0 5xx\n";
        assert_eq!(
            Summary::parse(stdout),
            Some(Summary { rps: 12345.67, succeeded: 61728, failed: 0, non_2xx: 0 })
        );
        assert_eq!(Summary::parse("nothing"), None);
    }
}
