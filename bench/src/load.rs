//! `pullguard-bench load`: an open-loop load generator at a fixed rate, run by `run` as a process
//! of its own (one thread, like `h2load -t1`). Why not `h2load --rps`: nghttp2 1.52 starts rate
//! limited requests in bursts on a ~10 ms timer, and its per-request times then read ~10 ms even
//! for the allow-all floor (0.4 ms at 200 req/s, 9.9 ms at 2,900 req/s), which hides everything
//! under the 2 ms target. Here every request starts on its own schedule (rate × time), whether or
//! not earlier ones have answered, over a fixed set of HTTP/2 connections opened beforehand.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::json;
use tokio::task::JoinSet;

use crate::{
    client::{https_client, post},
    stats::percentile,
};

#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    #[arg(long)]
    url: String,
    /// The request body (an AdmissionReview).
    #[arg(long)]
    body: PathBuf,
    /// The server's CA (PEM): the connection is verified like the API server's.
    #[arg(long)]
    ca: PathBuf,
    /// Requests per second, spread evenly.
    #[arg(long)]
    rate: f64,
    /// Measured seconds, after `--warm-up-seconds` at the same rate.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    #[arg(long, default_value_t = 1)]
    warm_up_seconds: u64,
    #[arg(long, default_value_t = 4)]
    connections: usize,
}

/// Prints one JSON object: requests, failures, achieved rate, latency percentiles (ms) and how late
/// the generator itself started requests (so a generator that fell behind shows).
pub async fn generate(args: LoadArgs) -> Result<()> {
    if !args.rate.is_finite() || args.rate <= 0.0 {
        bail!("--rate must be positive");
    }
    let body = std::fs::read(&args.body).with_context(|| format!("reading {}", args.body.display()))?;
    let ca = std::fs::read_to_string(&args.ca).with_context(|| format!("reading {}", args.ca.display()))?;
    let mut clients = Vec::new();
    for _ in 0..args.connections.max(1) {
        let client = https_client(&ca)?;
        // Opens the connection (TLS, HTTP/2 settings) before the clock starts.
        let (status, text) = post(&client, &args.url, body.clone()).await?;
        if status != 200 {
            bail!("the server answered {status}: {text}");
        }
        clients.push(client);
    }
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let warm_up = (args.rate * args.warm_up_seconds as f64) as u64;
    let total = warm_up + (args.rate * args.seconds as f64) as u64;
    let mut tasks = JoinSet::new();
    let started = tokio::time::Instant::now();
    let mut lags = Vec::new();
    let mut outcomes = Outcomes::default();
    for index in 0..total {
        let due = started + interval.mul_f64(index as f64);
        tokio::time::sleep_until(due).await;
        let lag = tokio::time::Instant::now().saturating_duration_since(due);
        if index >= warm_up {
            lags.push(lag.as_secs_f64() * 1000.0);
        }
        let client = clients[(index as usize) % clients.len()].clone();
        let url = args.url.clone();
        let body = body.clone();
        tasks.spawn(async move {
            let sent = Instant::now();
            let ok = matches!(post(&client, &url, body).await, Ok((200, _)));
            (index >= warm_up, ok, sent.elapsed())
        });
        // Reaps answered requests as it goes, so finished tasks do not pile up.
        while let Some(joined) = tasks.try_join_next() {
            outcomes.record(joined)?;
        }
    }
    let measured_until = started.elapsed();
    while let Some(joined) = tasks.join_next().await {
        outcomes.record(joined)?;
    }
    let Outcomes { mut latencies, failed } = outcomes;
    let sent = total - warm_up;
    let measured_seconds = (measured_until.as_secs_f64() - args.warm_up_seconds as f64).max(1e-9);
    let report = json!({
        "sent": sent,
        // Warm-up included: what the server served while this ran, for its CPU time per request.
        "requests": total,
        "answered": latencies.len(),
        "failed": failed,
        "rps": sent as f64 / measured_seconds,
        "p50_ms": percentile(&mut latencies, 50.0),
        "p99_ms": percentile(&mut latencies, 99.0),
        "max_ms": latencies.iter().copied().fold(0.0, f64::max),
        "lag_p99_ms": percentile(&mut lags, 99.0),
    });
    println!("{report}");
    Ok(())
}

#[derive(Default)]
struct Outcomes {
    latencies: Vec<f64>,
    failed: u64,
}

impl Outcomes {
    /// Keeps the latency of an answered measured request; warm-up requests are dropped.
    fn record(&mut self, joined: Result<(bool, bool, Duration), tokio::task::JoinError>) -> Result<()> {
        let (measured, ok, elapsed) = joined.context("a request task failed")?;
        if measured {
            if ok {
                self.latencies.push(elapsed.as_secs_f64() * 1000.0);
            } else {
                self.failed += 1;
            }
        }
        Ok(())
    }
}
