//! Memory of `pullguard serve` (the release binary) idle and after its image cache holds 100,000
//! distinct entries, filled through the webhook from the benchmark's fake registry (any tag
//! exists there, so no seeding): Pods of 10 distinct images, a bounded number at a time.

use std::{path::Path, time::Instant};

use anyhow::{Context, Result, bail, ensure};
use futures::{StreamExt, stream};

use crate::{
    RunArgs,
    client::{https_client, post},
    fake_registry,
    process::{spawn_pullguard, write_config},
    progress,
    report::{Row, Table},
    reviews::{Answer, PodReviews},
};

const IMAGES_PER_POD: usize = 10;
/// Admissions in flight while filling (so 160 lookups at a time).
const IN_FLIGHT: usize = 16;
const RSS_TARGET_MIB: f64 = 64.0;
/// Distinct repositories; every tag of one repository is a distinct cache entry.
const REPOSITORIES: usize = IMAGES_PER_POD;

pub async fn measure(args: &RunArgs, work: &Path, table: &mut Table) -> Result<()> {
    let registry = fake_registry::start().await?;
    let config = work.join("memory.yaml");
    write_config(&config, &registry.host())?;
    let (mut serve, ca) = spawn_pullguard(&args.pullguard, &config, None, work, "memory-pullguard").await?;
    // Idle: started, nothing asked yet; a moment lets start-up allocations settle.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let idle_kib = serve.rss_kib()?;

    let reviews = PodReviews::load()?;
    let clients = (0..4).map(|_| https_client(&ca)).collect::<Result<Vec<_>>>()?;
    let url = serve.url();
    let host = registry.host();
    let admissions = args.memory_entries.div_ceil(IMAGES_PER_POD);
    progress(&format!("memory: {admissions} admissions of {IMAGES_PER_POD} distinct images each"));
    let started = Instant::now();
    // Two halves, so the RSS between them gives the marginal cost of an entry, apart from the
    // one-time growth (connection pools, allocator arenas) of the first admissions.
    let half = admissions / 2;
    fill(&clients, &url, &host, &reviews, 0..half).await?;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let half_entries = cache_entries(&serve.admin_addr().to_string()).await?;
    let half_kib = serve.rss_kib()?;
    fill(&clients, &url, &host, &reviews, half..admissions).await?;
    let fill_time = started.elapsed();
    serve.ensure_alive()?;
    // Lets moka finish its pending housekeeping before the count and the RSS are read.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let entries = cache_entries(&serve.admin_addr().to_string()).await?;
    let full_kib = serve.rss_kib()?;
    let peak_kib = serve.peak_rss_kib()?;
    let full_mib = full_kib as f64 / 1024.0;

    table.push(Row::info("RSS of `pullguard serve`, idle", format!("{:.1} MiB", idle_kib as f64 / 1024.0)));
    table.push(
        Row::info(
            format!("RSS of `pullguard serve` with {entries} cached entries"),
            format!("{full_mib:.1} MiB (peak {:.1} MiB)", peak_kib as f64 / 1024.0),
        )
        .compared(format!("idle {:.1} MiB", idle_kib as f64 / 1024.0), "")
        .target(
            format!("< {RSS_TARGET_MIB:.0} MiB with 100,000 entries"),
            full_mib < RSS_TARGET_MIB && entries >= 99_000,
        ),
    );
    let per_thousand = (full_kib.saturating_sub(idle_kib)) as f64 / (entries.max(1) as f64 / 1000.0);
    let marginal = full_kib.saturating_sub(half_kib) as f64
        / (entries.saturating_sub(half_entries).max(1) as f64 / 1000.0);
    table.push(Row::info(
        "RSS per 1,000 cached entries",
        format!(
            "{per_thousand:.0} KiB ((full − idle) / entries); {marginal:.0} KiB marginal (from {half_entries} \
             to {entries} entries: {:.1} → {full_mib:.1} MiB)",
            half_kib as f64 / 1024.0
        ),
    ));
    table.note(format!(
        "Memory: VmRSS from /proc; filled with {admissions} admissions of Pods with {IMAGES_PER_POD} \
         distinct tags ({REPOSITORIES} repositories × {admissions} tags) from a fake registry serving one \
         small OCI manifest + config for any tag, {IN_FLIGHT} admissions in flight, in {:.1} s \
         ({:.0} admissions/s, {} registry requests); default config (cache.maxEntries 100000); entries \
         = pullguard_cache_entries.",
        fill_time.as_secs_f64(),
        admissions as f64 / fill_time.as_secs_f64(),
        registry.requests()
    ));
    serve.stop().await;
    Ok(())
}

/// Admissions `indexes` of Pods with distinct images, a bounded number at a time; every one must
/// be allowed with its images resolved.
async fn fill(
    clients: &[reqwest::Client],
    url: &str,
    host: &str,
    reviews: &PodReviews,
    indexes: std::ops::Range<usize>,
) -> Result<()> {
    let count = indexes.len();
    let results: Vec<Result<()>> = stream::iter(indexes)
        .map(|index| {
            let client = &clients[index % clients.len()];
            let images: Vec<String> =
                (0..REPOSITORIES).map(|repo| format!("{host}/mem/r{repo}:t{index}")).collect();
            let body = reviews.pod_body(&format!("bench-memory-{index}"), &images);
            async move {
                let (status, text) = post(client, url, body?).await?;
                ensure!(status == 200, "answered {status}: {text}");
                Answer::parse(&text)?.ensure_clean("memory fill")
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let failures: Vec<String> =
        results.into_iter().filter_map(|result| result.err().map(|error| format!("{error:#}"))).collect();
    if let Some(first) = failures.first() {
        bail!("{} of {count} fill admissions failed; first: {first}", failures.len());
    }
    Ok(())
}

/// `pullguard_cache_entries` from the admin port's `/metrics`.
async fn cache_entries(admin: &str) -> Result<u64> {
    let text = reqwest::Client::builder()
        .no_proxy()
        .build()?
        .get(format!("http://{admin}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    text.lines()
        .find_map(|line| line.strip_prefix("pullguard_cache_entries "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map(|value| value as u64)
        .context("no pullguard_cache_entries in /metrics")
}
