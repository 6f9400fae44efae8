//! Cold latency: one Pod with 10 distinct uncached images against the real registry, beside the
//! slowest of the same images looked up alone and beside the `skopeo inspect` loop a team would
//! script in CI. Every admission gets a fresh webhook (empty cache, no registry connection), whose
//! own TLS connection is opened first: the API server keeps that open, so only lookups are cold.
//! The registry sits behind a proxy that adds 0 or 50 ms per request.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use pullguard_core::{
    config::{Config, RegistryConfig},
    credentials::Keyring,
};
use pullguard_tests::{
    answer::Reviews,
    registry::RegistryProcess,
    seed::{ImageSpec, Seeder},
    served,
    webhook::Webhook,
};
use tokio::process::Command;

use crate::{
    RunArgs, progress,
    proxy::DelayProxy,
    report::{Row, Table, ratio},
    reviews::{Answer, PodReviews, delete_body},
    stats::{Spread, ms},
};

const DELAYS_MS: [u64; 2] = [0, 50];
const IMAGES: usize = 10;
const COLD_RATIO_TARGET: f64 = 1.3;
const SKOPEO_RATIO_TARGET: f64 = 5.0;
const SKOPEO_TIMEOUT: Duration = Duration::from_secs(60);

pub async fn measure(args: &RunArgs, table: &mut Table) -> Result<()> {
    let registry = RegistryProcess::start_plain().await?;
    let seeder = Seeder::new(&registry)?;
    for index in 0..IMAGES {
        seeder.push_image(&format!("cold/img{index}"), "v1", &ImageSpec::linux("amd64")).await?;
    }
    let upstream: SocketAddr = registry.host().parse()?;
    let reviews = PodReviews::load()?;
    let warm_connection = delete_body()?;

    for delay_ms in DELAYS_MS {
        let proxy = DelayProxy::start(upstream, Duration::from_millis(delay_ms)).await?;
        let images: Vec<String> =
            (0..IMAGES).map(|index| format!("{}/cold/img{index}:v1", proxy.host())).collect();
        let config = Config {
            registries: vec![RegistryConfig {
                host: proxy.host(),
                insecure: true,
                ..RegistryConfig::default()
            }],
            ..Config::default()
        };
        let pod = reviews.pod_body("bench-cold-10", &images)?;
        let singles = images
            .iter()
            .map(|image| reviews.pod_body("bench-cold-1", std::slice::from_ref(image)))
            .collect::<Result<Vec<_>>>()?;

        progress(&format!(
            "cold, +{delay_ms} ms: {} trials of 1 ten-image Pod and 10 single lookups",
            args.cold_trials
        ));
        let mut together = Vec::new();
        let mut slowest_alone = Vec::new();
        let mut registry_work = RegistryWork::default();
        for _ in 0..args.cold_trials {
            let before = RegistryWork::so_far(&registry)?;
            together.push(cold_admission(&config, &warm_connection, &pod).await?);
            registry_work.add(before, RegistryWork::so_far(&registry)?);
            let mut slowest = Duration::ZERO;
            for single in &singles {
                slowest = slowest.max(cold_admission(&config, &warm_connection, single).await?);
            }
            slowest_alone.push(slowest);
        }
        progress(&format!("cold, +{delay_ms} ms: {} sequential skopeo inspect loops", args.skopeo_loops));
        let mut loops = Vec::new();
        for _ in 0..args.skopeo_loops {
            loops.push(skopeo_loop(&images).await?);
        }

        let together = Spread::of(&together);
        let alone = Spread::of(&slowest_alone);
        let skopeo = Spread::of(&loops);
        let cold_ratio = together.median_ms / alone.median_ms;
        let skopeo_ratio = skopeo.median_ms / together.median_ms;
        table.push(
            Row::info(
                format!("Cold Pod with {IMAGES} distinct uncached images, registry +{delay_ms} ms/request"),
                together.describe(),
            )
            .compared(
                format!("slowest single-image lookup {}", alone.describe()),
                ratio(together.median_ms, alone.median_ms),
            )
            .target(format!("≤ {COLD_RATIO_TARGET}× slowest single"), cold_ratio <= COLD_RATIO_TARGET),
        );
        table.push(registry_work.row(delay_ms, args.cold_trials, alone.median_ms));
        table.push(
            Row::info(
                format!(
                    "Sequential `skopeo inspect` loop over the same {IMAGES} images, +{delay_ms} ms/request"
                ),
                skopeo.describe(),
            )
            .compared(
                format!("cold {IMAGES}-image Pod {}", ms(together.median_ms)),
                ratio(skopeo.median_ms, together.median_ms),
            )
            .target(
                format!("≥ {SKOPEO_RATIO_TARGET}× slower than pullguard"),
                skopeo_ratio >= SKOPEO_RATIO_TARGET,
            ),
        );
    }
    table.note(format!(
        "Cold: median of {} trials (range in brackets), each admission on a fresh in-process webhook \
         (empty cache, new registry connections) over an already-open HTTP/2 connection; single-platform \
         images on Debian's docker-registry (plain HTTP, declared insecure) behind a proxy that holds \
         each request for the delay; `skopeo inspect --tls-verify=false` is what a CI script runs (it \
         also tries HTTPS first, pings /v2/ and lists tags); median of {} skopeo loops. Registry CPU: \
         user + system time of the docker-registry process (/proc) across the Pods' admissions, over \
         the requests its access log counts for them.",
        args.cold_trials, args.skopeo_loops
    ));
    Ok(())
}

/// What the registry spent serving the cold Pods: with the Pod's requests all at once, the
/// registry's own CPU, shared by its cores, bounds the Pod's latency from below whatever the
/// client does.
#[derive(Debug, Default, Clone, Copy)]
struct RegistryWork {
    cpu: Duration,
    requests: usize,
}

impl RegistryWork {
    fn so_far(registry: &RegistryProcess) -> Result<RegistryWork> {
        let pid = registry.pid().context("the registry is not running")?;
        Ok(RegistryWork { cpu: served::cpu_time(pid)?, requests: registry.access_log().len() })
    }

    fn add(&mut self, before: RegistryWork, after: RegistryWork) {
        self.cpu += after.cpu.saturating_sub(before.cpu);
        self.requests += after.requests.saturating_sub(before.requests);
    }

    fn row(&self, delay_ms: u64, trials: usize, slowest_alone_ms: f64) -> Row {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let per_request_ms = self.cpu.as_secs_f64() * 1000.0 / self.requests.max(1) as f64;
        let per_pod = self.requests as f64 / trials.max(1) as f64;
        let bound_ms = per_request_ms * per_pod / cores as f64;
        Row::info(
            format!("Registry CPU per request while serving the cold Pods, +{delay_ms} ms/request"),
            format!("{} ({per_pod:.0} requests per Pod)", ms(per_request_ms)),
        )
        .compared(
            format!(
                "the Pod's requests keep the registry's {cores} cores busy ≥ {}; slowest single lookup {}",
                ms(bound_ms),
                ms(slowest_alone_ms)
            ),
            ratio(bound_ms, slowest_alone_ms),
        )
    }
}

/// One admission on a fresh webhook; only the admission itself is timed.
async fn cold_admission(config: &Config, warm_connection: &[u8], body: &[u8]) -> Result<Duration> {
    let webhook = Webhook::start(config.clone(), Keyring::default()).await?;
    let (status, text) = webhook.post_raw(warm_connection.to_vec()).await?;
    ensure!(status == 200, "connection warm-up answered {status}: {text}");
    let started = Instant::now();
    let (status, text) = webhook.post_raw(body.to_vec()).await?;
    let elapsed = started.elapsed();
    ensure!(status == 200, "cold admission answered {status}: {text}");
    Answer::parse(&text)?.ensure_clean("cold admission")?;
    Ok(elapsed)
}

async fn skopeo_loop(images: &[String]) -> Result<Duration> {
    let started = Instant::now();
    for image in images {
        let run = Command::new("skopeo")
            .arg("inspect")
            .arg("--tls-verify=false")
            .arg(format!("docker://{image}"))
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(SKOPEO_TIMEOUT, run)
            .await
            .with_context(|| format!("skopeo inspect {image} took over {SKOPEO_TIMEOUT:?}"))?
            .context("running skopeo (is it installed?)")?;
        if !output.status.success() {
            bail!("skopeo inspect {image} failed: {}", String::from_utf8_lossy(&output.stderr));
        }
    }
    Ok(started.elapsed())
}
