//! `soak`: load and faults together (issue 7). A real registry and `pullguard serve` as processes
//! of their own on loopback; the closed-loop maximum throughput is measured first, then an
//! open-loop load at half of it runs for the given time while the registry is killed and restarted
//! and the serving certificate is rotated through a `..data` symlink swap. Every answer is
//! classified, the server's RSS is sampled from `/proc`, and a figures table plus `soak: passed`
//! or `soak: FAILED (...)` is printed. Run it through `bash tests/soak.sh [SECONDS]`.

mod faults;
mod load;
mod report;
mod scenario;
mod server;

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};
use pullguard_tests::{certs::TestCa, registry::RegistryProcess, secret_volume::SecretVolume, seed::Seeder};

use crate::{
    faults::{Plan, RegistryChaos, Rotator, Sampler, registry_5xx_times},
    load::Load,
    report::{Figures, Outcome},
    scenario::Scenario,
    server::Pullguard,
};

/// Closed-loop measurement: warm-up (caches filled, connections open), then the measured part.
const MAX_WARM_UP: Duration = Duration::from_secs(2);
const MAX_MEASURE: Duration = Duration::from_secs(10);
/// HTTP/2 keep-alive connections of the load, as an API server keeps a few to a webhook.
const CONNECTIONS: usize = 4;
/// Requests in flight during the closed-loop measurement.
const MAX_IN_FLIGHT: usize = 32;

struct Args {
    seconds: u64,
    pullguard: PathBuf,
    work: Option<PathBuf>,
    max_rate: Option<f64>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args { seconds: 300, pullguard: default_pullguard()?, work: None, max_rate: None };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let mut value = || given.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--seconds" => args.seconds = value()?.parse().context("--seconds")?,
            "--pullguard" => args.pullguard = PathBuf::from(value()?),
            "--work" => args.work = Some(PathBuf::from(value()?)),
            "--max-rate" => args.max_rate = Some(value()?.parse().context("--max-rate")?),
            "-h" | "--help" => {
                println!("usage: soak [--seconds N] [--pullguard PATH] [--work DIR] [--max-rate REQ_PER_S]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (see --help)"),
        }
    }
    if args.seconds < 45 {
        bail!("--seconds must be at least 45 (a registry outage and a rotation need room)");
    }
    Ok(args)
}

/// `pullguard` next to this binary: `cargo build --release` puts both in `target/release`.
fn default_pullguard() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the soak binary")?;
    Ok(exe.with_file_name("pullguard"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let outcome = match parse_args() {
        Ok(args) => {
            tokio::select! {
                outcome = soak(args) => outcome,
                signal = interrupted() => Err(signal),
            }
        }
        Err(error) => Err(error),
    };
    // Everything the soak started was dropped with the soak future: the children are killed.
    match outcome {
        Ok(Outcome::Passed) => {
            println!("soak: passed");
            std::process::ExitCode::SUCCESS
        }
        Ok(Outcome::Failed(reasons)) => {
            println!("soak: FAILED ({})", reasons.join("; "));
            std::process::ExitCode::FAILURE
        }
        Err(error) => {
            println!("soak: FAILED (the soak itself failed: {error:#})");
            std::process::ExitCode::from(2)
        }
    }
}

/// SIGINT or SIGTERM (`timeout` sends the latter): the soak stops and its children with it.
async fn interrupted() -> anyhow::Error {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        // Without handlers the default action still ends the process; only a clean report is lost.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => anyhow::anyhow!("interrupted by SIGTERM"),
        _ = int.recv() => anyhow::anyhow!("interrupted by SIGINT"),
    }
}

async fn soak(args: Args) -> Result<Outcome> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    if !args.pullguard.is_file() {
        bail!("{} not found: build it with `cargo build --release -p pullguard`", args.pullguard.display());
    }
    let scratch = tempfile::Builder::new().prefix("pullguard-soak-").tempdir()?;
    let work = match &args.work {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            dir.clone()
        }
        None => scratch.path().to_path_buf(),
    };
    let plan = Plan::for_seconds(args.seconds);
    eprintln!("soak: work directory {}", work.display());

    let mut registry = RegistryProcess::start_plain().await.context("starting the registry")?;
    let seeder = Seeder::new(&registry)?;
    let scenario = Arc::new(Scenario::seed(&registry, &seeder).await.context("seeding the registry")?);
    let config = scenario.write_config(&work.join("config.yaml"), &plan)?;

    let ca = TestCa::new("pullguard soak CA")?;
    let mut volume = SecretVolume::new(&work.join("tls"));
    let first = ca.issue_server_cert(&["localhost", "127.0.0.1"])?;
    volume.publish(&first.cert_pem, &first.key_pem)?;

    let log_path = work.join("pullguard.log");
    let mut server = Pullguard::spawn(&args.pullguard, &config, &volume, &plan, &log_path)
        .await
        .context("starting pullguard serve")?;
    eprintln!("soak: pullguard pid {} at {}, log {}", server.pid(), server.url(), log_path.display());
    let load = Load::connect(&server.url(), &ca.ca_pem, CONNECTIONS, scenario).await?;

    eprintln!("soak: phase 1: closed loop, {MAX_IN_FLIGHT} in flight, {MAX_MEASURE:?} after {MAX_WARM_UP:?}");
    let max = load.closed_loop(MAX_IN_FLIGHT, MAX_WARM_UP, MAX_MEASURE).await?;
    let mut target = max.rate / 2.0;
    if let Some(cap) = args.max_rate {
        target = target.min(cap);
    }
    if target < 1.0 {
        bail!("the measured throughput {:.1} req/s is too low to soak at", max.rate);
    }
    eprintln!(
        "soak: phase 2: {target:.0} req/s (max {:.0}) for {} s; outages at {:?}, rotations at {:?}",
        max.rate, args.seconds, plan.outages, plan.rotations
    );

    let registry_log_before = registry.access_log().len();
    let started = Instant::now();
    let started_unix =
        SystemTime::now().duration_since(UNIX_EPOCH).context("clock before 1970")?.as_secs_f64();
    let end = started + plan.duration;
    let sampler = Sampler::new(server.pid(), plan.rss_every);
    let mut chaos = RegistryChaos::new(&mut registry, &seeder);
    let mut rotator = Rotator::new(&mut volume, &ca, plan.reload_interval);
    let (open, probes, rotated, outages, samples) = tokio::join!(
        load.open_loop(target, started, end),
        load.fresh_connections(plan.probe_every, end),
        rotator.run(&load, &plan.rotations, started, end),
        chaos.run(&plan, started, end),
        sampler.run(started, end),
    );
    let seconds = started.elapsed().as_secs_f64();
    let (repushed, repush_failures) = chaos.repushes();
    let repush_failures = repush_failures.to_vec();
    let (open, (rotations, rotation_records), outages) = (open?, rotated?, outages?);

    let server_exit = server.exit_status()?;
    let metrics = server.metrics().await.unwrap_or_else(|error| format!("# unavailable: {error:#}"));
    let log = server.log_summary()?;
    server.stop().await;
    let mut registry_requests = registry.access_log();
    let registry_requests = registry_requests.split_off(registry_log_before.min(registry_requests.len()));
    registry.stop().await?;
    let registry_log = registry.log();
    // The registry's own directory goes with it; its log is evidence for a 5xx it answered.
    std::fs::write(work.join("registry.log"), &registry_log).context("keeping the registry log")?;
    let registry_errors: Vec<report::Window> = registry_5xx_times(&registry_log)
        .into_iter()
        .filter_map(|unix| failing_window(started, started_unix, unix))
        .collect();

    let mut records = max.records;
    records.extend(open.records);
    records.extend(probes);
    records.extend(rotation_records);
    let figures = Figures {
        seconds,
        max_rate: max.rate,
        target_rate: target,
        scheduled: open.scheduled,
        not_sent: open.not_sent,
        unanswered: open.unanswered,
        in_flight_cap: open.in_flight_cap,
        lag_p99_ms: open.lag_p99_ms,
        records: &records,
        outages: &outages,
        outage_length: plan.outage_length,
        repushes: (repushed, &repush_failures),
        registry_requests: &registry_requests,
        registry_errors: &registry_errors,
        rotations: &rotations,
        reload_interval: plan.reload_interval,
        started,
        samples: &samples,
        rss_warm_up: plan.rss_warm_up,
        server_exit,
        log: &log,
        metrics: &metrics,
    };
    print!("{}", figures.table());
    println!("{}", figures.timeline());
    Ok(figures.judge())
}

/// When a registry 5xx at `unix` (whole seconds, as the access log has them) may show in answers:
/// from a second before (clock skew between the log and us) to the end of that second plus
/// pullguard's 2 s backoff after a 5xx and the restart grace.
fn failing_window(started: Instant, started_unix: f64, unix: i64) -> Option<report::Window> {
    let at = |offset: f64| {
        if offset >= 0.0 {
            started.checked_add(Duration::from_secs_f64(offset))
        } else {
            started.checked_sub(Duration::from_secs_f64(-offset))
        }
    };
    let offset = unix as f64 - started_unix;
    Some((at(offset - 1.0)?, at(offset + 1.0 + 2.0 + report::RESTART_GRACE.as_secs_f64())?))
}
