//! Warm throughput and latency: `pullguard serve` (the release binary, JSON logs as deployed) with
//! every image cached, against the allow-all floor on the same server stack, both loaded by h2load
//! in a process of its own, with the same bodies, side by side.

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use pullguard_tests::{
    registry::RegistryProcess,
    seed::{ImageSpec, Seeder},
    served,
};

use crate::{
    RunArgs,
    client::{https_client, post},
    cluster::{self, BenchCluster},
    h2load::{self, Load, Outcome},
    process::{Server, spawn_floor, spawn_pullguard, write_config},
    progress,
    report::{Row, Table, ratio},
    reviews::{Answer, PodReviews},
    stats::ms,
};

/// The load the brief asks for: 4 connections, 10 streams each.
const CLIENTS: u32 = 4;
const STREAMS: u32 = 10;
const HALF_RATE_P99_TARGET_MS: f64 = 2.0;
const THROUGHPUT_TARGET: f64 = 0.70;

pub async fn measure(args: &RunArgs, work: &Path, table: &mut Table) -> Result<()> {
    let registry = RegistryProcess::start_plain().await?;
    let seeder = Seeder::new(&registry)?;
    let mut images = Vec::new();
    for index in 0..10 {
        let repository = format!("warm/img{index}");
        // arm64, the platform of the node pool the captured Pod selects.
        seeder.push_image(&repository, "v1", &ImageSpec::linux("arm64")).await?;
        images.push(format!("{}/{repository}:v1", registry.host()));
    }
    let config = work.join("warm.yaml");
    write_config(&config, &registry.host())?;
    let cluster = BenchCluster::start(work, &registry.host()).await?;
    let (mut pullguard, ca) =
        spawn_pullguard(&args.pullguard, &config, Some(cluster.kubeconfig()), work, "warm-pullguard").await?;
    cluster::wait_ready(pullguard.admin_addr()).await?;
    let (mut floor, floor_ca) = spawn_floor(work, false).await?;
    let (mut transport, transport_ca) = spawn_floor(work, true).await?;
    let pullguard_trust = work.join("pullguard-trust.pem");
    let floor_trust = work.join("floor-trust.pem");
    let transport_trust = work.join("transport-trust.pem");
    std::fs::write(&pullguard_trust, &ca)?;
    std::fs::write(&floor_trust, &floor_ca)?;
    std::fs::write(&transport_trust, &transport_ca)?;

    let reviews = PodReviews::load()?.with_pull_secret(cluster::PULL_SECRET);
    let client = https_client(&ca)?;
    let mut bodies = Vec::new();
    for count in [1usize, 10] {
        let body = reviews.pod_body(&format!("bench-warm-{count}"), &images[..count])?;
        // Warms the cache: every later answer must come from it.
        let (status, text) = post(&client, &pullguard.url(), body.clone()).await?;
        ensure!(status == 200, "warm-up answered {status}: {text}");
        Answer::parse(&text)?.ensure_clean("warm-up")?;
        let path = work.join(format!("pod-{count}.json"));
        std::fs::write(&path, &body).with_context(|| format!("writing {}", path.display()))?;
        bodies.push((count, path, body.len()));
    }
    let registry_before = registry.access_log().len();
    let api_before = cluster.api_requests();

    for (count, body, bytes) in &bodies {
        let label = if *count == 1 { "1 image".to_string() } else { format!("{count} images") };
        let run = |server: &Server, name: &str| Load {
            url: server.url(),
            body: body.clone(),
            seconds: args.warm_seconds,
            clients: CLIENTS,
            streams: STREAMS,
            log: work.join(format!("h2load-{count}-{name}.log")),
        };
        progress(&format!("warm, {label}: floor at full speed"));
        let floor_max = h2load::run(&run(&floor, "floor-max")).await?;
        let transport_max = if *count == 1 {
            progress(&format!("warm, {label}: transport alone (constant answer) at full speed"));
            Some(h2load::run(&run(&transport, "transport-max")).await?)
        } else {
            None
        };
        progress(&format!("warm, {label}: pullguard at full speed"));
        let pullguard_max = h2load::run(&run(&pullguard, "pullguard-max")).await?;
        let half = pullguard_max.rps / 2.0;
        progress(&format!("warm, {label}: both at {half:.0} req/s (half of pullguard's max), open loop"));
        let (floor_half, floor_cpu) = open_loop(&floor, &floor_trust, body, half, args.warm_seconds).await?;
        let (pullguard_half, pullguard_cpu) =
            open_loop(&pullguard, &pullguard_trust, body, half, args.warm_seconds).await?;
        progress(&format!("warm, {label}: transport alone at {half:.0} req/s, open loop"));
        let (_, transport_cpu) =
            open_loop(&transport, &transport_trust, body, half, args.warm_seconds).await?;
        pullguard.ensure_alive()?;
        floor.ensure_alive()?;
        transport.ensure_alive()?;

        if let Some(transport_max) = transport_max {
            table.push(
                Row::info(
                    format!(
                        "Transport alone: constant answer, review not read ({label}, not a valid answer)"
                    ),
                    format!("{:.0} req/s; {}", transport_max.rps, latencies(&transport_max)),
                )
                .compared(
                    format!("pullguard {:.0} req/s", pullguard_max.rps),
                    ratio(pullguard_max.rps, transport_max.rps),
                ),
            );
        }
        let share = pullguard_max.rps / floor_max.rps;
        table.push(
            Row::info(
                format!("Warm throughput, Pod with {label} ({} KiB review), all cached", bytes / 1024),
                format!("{:.0} req/s", pullguard_max.rps),
            )
            .compared(format!("floor {:.0} req/s", floor_max.rps), ratio(pullguard_max.rps, floor_max.rps))
            .target(format!("≥ {THROUGHPUT_TARGET:.2}× floor"), share >= THROUGHPUT_TARGET),
        );
        table.push(
            Row::info(
                format!("Warm latency at max throughput, {label}: p50 / p99 / max"),
                latencies(&pullguard_max),
            )
            .compared(
                format!("floor {}", latencies(&floor_max)),
                ratio(pullguard_max.p99_ms, floor_max.p99_ms),
            ),
        );
        table.push(
            Row::info(
                format!("Warm latency at half of max throughput, {label}: p50 / p99 / max"),
                format!("{} at {:.0} req/s", latencies(&pullguard_half), pullguard_half.rps),
            )
            .compared(
                format!("floor {} at {:.0} req/s", latencies(&floor_half), floor_half.rps),
                ratio(pullguard_half.p99_ms, floor_half.p99_ms),
            )
            .target(
                format!("p99 < {HALF_RATE_P99_TARGET_MS} ms"),
                pullguard_half.p99_ms < HALF_RATE_P99_TARGET_MS,
            ),
        );
        table.push(
            Row::info(
                format!("Server CPU time per request at half of max throughput, {label}"),
                format!("{pullguard_cpu:.0} µs"),
            )
            .compared(format!("floor {floor_cpu:.0} µs"), ratio(pullguard_cpu, floor_cpu)),
        );
        // What the throughput target leaves for pullguard's own work: CPU per request may be at
        // most the floor's / 0.70, and transport takes its share of that first.
        let budget = floor_cpu / THROUGHPUT_TARGET - transport_cpu;
        table.push(
            Row::info(
                format!("Own work per request (CPU above transport alone, {transport_cpu:.0} µs), {label}"),
                format!("{:.0} µs", pullguard_cpu - transport_cpu),
            )
            .compared(
                format!(
                    "floor {:.0} µs; ≤ {budget:.0} µs would keep pullguard at {THROUGHPUT_TARGET:.2}× the floor",
                    floor_cpu - transport_cpu
                ),
                ratio(pullguard_cpu - transport_cpu, budget),
            ),
        );
    }

    // Proof that the warm figures are warm: nothing reached the registry during any load run.
    let during = registry.access_log().len() - registry_before;
    if during > 0 {
        bail!("{during} registry requests during the warm runs: the cache was not warm");
    }
    let api_during = cluster.api_requests() - api_before;
    table.note(format!(
        "Warm: max throughput with h2load -t1 -c{CLIENTS} -m{STREAMS}, TLS 1.3 + HTTP/2, 1 s warm-up then {} s \
         per run; half-of-max rows with `pullguard-bench load` (open loop, evenly spaced requests over \
         {CLIENTS} HTTP/2 connections, one thread, same durations) because h2load 1.52's --rps sends \
         bursts on a 10 ms timer; the floor is pullguard::server::start with a POST /validate that \
         decodes the review and allows it by its uid (the least a webhook the API server accepts does), \
         in its own process; pullguard is `pullguard serve --log-format json` (logs to a file) reading \
         a real kube-apiserver through the harness's counting proxy (6 nodes in 2 pools, the Pod's namespace, service \
         account and pull secret; the images are arm64 like the Pod's pool), so every admission \
         matches nodes, reads the pull secret and answers without findings; 0 registry requests and \
         {api_during} Kubernetes API requests (pull-secret re-reads after their cache time) during \
         the runs; ratio column = pullguard / floor (p99 for latency rows). The load generator takes \
         one of the 2 cores. CPU time per request: user + system time of the server process (/proc) \
         across the half-of-max run, over every request of it (warm-up included); transport alone \
         (the floor's stack answering a constant without reading the review) is run at the same rate \
         to split each server's CPU into transport and its own work.",
        args.warm_seconds
    ));
    pullguard.stop().await;
    floor.stop().await;
    transport.stop().await;
    Ok(())
}

/// Runs `pullguard-bench load` (a process of its own) at `rate` against `server`; also returns
/// the server's CPU time per request (µs) meanwhile, which other tenants of a shared machine
/// disturb far less than they disturb throughput.
async fn open_loop(
    server: &Server,
    ca: &Path,
    body: &Path,
    rate: f64,
    seconds: u64,
) -> Result<(Outcome, f64)> {
    let cpu_before = served::cpu_time(server.pid())?;
    let output = tokio::process::Command::new(std::env::current_exe()?)
        .arg("load")
        .arg(format!("--url={}", server.url()))
        .arg(format!("--body={}", body.display()))
        .arg(format!("--ca={}", ca.display()))
        .arg(format!("--rate={rate:.1}"))
        .arg(format!("--seconds={seconds}"))
        .arg(format!("--connections={CLIENTS}"))
        .kill_on_drop(true)
        .output()
        .await
        .context("running pullguard-bench load")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("pullguard-bench load failed: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    }
    let report: serde_json::Value =
        serde_json::from_str(stdout.trim()).with_context(|| format!("load printed {stdout}"))?;
    let number = |key: &str| report.get(key).and_then(serde_json::Value::as_f64).unwrap_or(f64::NAN);
    if number("failed") > 0.0 || number("answered") < number("sent") {
        bail!("requests failed at {rate:.0} req/s against {}: {report}", server.url());
    }
    let achieved = number("rps");
    if achieved.is_nan() || achieved < 0.95 * rate {
        // A generator that could not keep its schedule did not offer the rate it claims.
        bail!("the load generator reached {achieved:.0} of {rate:.0} req/s: {report}");
    }
    let cpu = served::cpu_time(server.pid())?.saturating_sub(cpu_before);
    let cpu_per_request_us = cpu.as_secs_f64() * 1e6 / number("requests");
    let outcome = Outcome {
        rps: number("rps"),
        p50_ms: number("p50_ms"),
        p99_ms: number("p99_ms"),
        max_ms: number("max_ms"),
    };
    Ok((outcome, cpu_per_request_us))
}

fn latencies(outcome: &Outcome) -> String {
    format!("{} / {} / {}", ms(outcome.p50_ms), ms(outcome.p99_ms), ms(outcome.max_ms))
}
