//! Registry requests per image, counted where they land (the registry's access log), through the
//! webhook; and coalescing: 500 concurrent admissions of one uncached image.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{Result, ensure};
use futures::future::join_all;
use pullguard_core::{
    config::{Config, HumanDuration, RegistryConfig},
    credentials::Keyring,
};
use pullguard_tests::{
    answer::Reviews,
    registry::{AccessLogEntry, RegistryProcess},
    seed::{Format, ImageSpec, IndexEntry, Seeder},
    webhook::{Webhook, registry_settings},
};

use crate::{
    client::{https_client, post},
    progress,
    proxy::DelayProxy,
    report::{Row, Table},
    reviews::{Answer, PodReviews, delete_body},
    stats::{Spread, ms},
};

const CONCURRENT_ADMISSIONS: usize = 500;
/// Connections the 500 admissions are spread over, as several API server replicas would.
const CONNECTIONS: usize = 5;

pub async fn measure(table: &mut Table) -> Result<()> {
    let registry = RegistryProcess::start_plain().await?;
    let seeder = Seeder::new(&registry)?;
    seeder.push_image("req/single", "v1", &ImageSpec::linux("amd64")).await?;
    let entries = [
        IndexEntry::image(ImageSpec::linux("amd64")),
        IndexEntry::image(ImageSpec::linux("arm64/v8")),
        IndexEntry::attestation(0),
    ];
    seeder.push_index("req/multi", "v1", &entries, Format::Oci).await?;
    let pinned = seeder.push_image("req/pinned", "v1", &ImageSpec::linux("arm64")).await?;
    let host = registry.host();
    let reviews = PodReviews::load()?;

    progress("requests per image through the webhook");
    let webhook = Webhook::start(
        Config { registries: vec![registry_settings(&registry)], ..Config::default() },
        Keyring::default(),
    )
    .await?;
    webhook.post_raw(delete_body()?).await?;
    let single = format!("{host}/req/single:v1");
    let multi = format!("{host}/req/multi:v1");
    let by_digest = format!("{host}/req/pinned@{}", pinned.digest);
    // (measurement, image, most requests allowed by the target)
    let cases: [(&str, &str, Option<usize>); 5] = [
        ("uncached single-platform tag", &single, Some(2)),
        ("uncached multi-arch index (2 platforms + attestation)", &multi, Some(2)),
        ("cached tag (the single-platform tag again)", &single, Some(0)),
        ("uncached digest reference", &by_digest, None),
        ("cached digest reference (the same digest again)", &by_digest, Some(0)),
    ];
    for (what, image, most) in cases {
        let requests = count_requests(&registry, async {
            let body = reviews.pod_body("bench-requests", &[image.to_string()])?;
            let (status, text) = webhook.post_raw(body).await?;
            ensure!(status == 200, "{what}: answered {status}: {text}");
            Answer::parse(&text)?.ensure_clean(what)
        })
        .await?;
        let row = Row::info(format!("Registry requests per image: {what}"), describe(&requests));
        table.push(match most {
            Some(0) => row.target("0", requests.is_empty()),
            Some(most) => row.target(format!("≤ {most}"), requests.len() <= most),
            None => row,
        });
    }
    drop(webhook);

    // The README promises a HEAD (not a pull on Docker Hub) when a cached tag expires.
    let short_ttl = Config {
        registries: vec![registry_settings(&registry)],
        cache: pullguard_core::config::CacheConfig {
            tag_ttl: HumanDuration(Duration::from_millis(300)),
            ..Default::default()
        },
        ..Config::default()
    };
    let webhook = Webhook::start(short_ttl, Keyring::default()).await?;
    let body = reviews.pod_body("bench-requests", std::slice::from_ref(&single))?;
    webhook.post_raw(body.clone()).await?;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let requests = count_requests(&registry, async {
        let (status, text) = webhook.post_raw(body).await?;
        ensure!(status == 200, "expired tag: answered {status}: {text}");
        Answer::parse(&text)?.ensure_clean("expired tag")
    })
    .await?;
    table.push(Row::info(
        "Registry requests per image: tag whose cache entry expired (tagTtl), digest unchanged",
        describe(&requests),
    ));
    drop(webhook);

    let upstream: SocketAddr = host.parse()?;
    for delay_ms in [0u64, 50] {
        progress(&format!("coalescing: {CONCURRENT_ADMISSIONS} concurrent admissions, +{delay_ms} ms"));
        let repository = format!("coalesce/d{delay_ms}");
        seeder.push_image(&repository, "v1", &ImageSpec::linux("amd64")).await?;
        coalescing(table, &registry, &reviews, upstream, &repository, delay_ms).await?;
    }
    table.note(format!(
        "Requests: counted in the registry's access log, all methods and paths, per admission of a Pod \
         with that one image; coalescing: {CONCURRENT_ADMISSIONS} admissions sent at once over \
         {CONNECTIONS} HTTP/2 connections to a fresh webhook; with +50 ms the lookup is still in flight \
         when the last one arrives (see the fastest answer)."
    ));
    Ok(())
}

async fn coalescing(
    table: &mut Table,
    registry: &RegistryProcess,
    reviews: &PodReviews,
    upstream: SocketAddr,
    repository: &str,
    delay_ms: u64,
) -> Result<()> {
    let proxy = DelayProxy::start(upstream, Duration::from_millis(delay_ms)).await?;
    let config = Config {
        registries: vec![RegistryConfig { host: proxy.host(), insecure: true, ..RegistryConfig::default() }],
        ..Config::default()
    };
    let webhook = Webhook::start(config, Keyring::default()).await?;
    let url = format!("https://127.0.0.1:{}/validate", webhook.running.addr.port());
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        let client = https_client(&webhook.ca_pem)?;
        // Connections open before the burst, as the API server's are.
        post(&client, &url, delete_body()?).await?;
        clients.push(client);
    }
    let image = format!("{}/{repository}:v1", proxy.host());
    let body = reviews.pod_body("bench-coalesce", &[image])?;
    let before = registry.manifest_requests(repository);
    let answers = join_all((0..CONCURRENT_ADMISSIONS).map(|index| {
        let client = &clients[index % CONNECTIONS];
        let body = body.clone();
        let url = &url;
        async move {
            let started = Instant::now();
            let (status, text) = post(client, url, body).await?;
            ensure!(status == 200, "answered {status}: {text}");
            let allowed = Answer::parse(&text)?.ensure_clean("coalesced admission").is_ok();
            Ok((started.elapsed(), allowed))
        }
    }))
    .await
    .into_iter()
    .collect::<Result<Vec<_>>>()?;
    settle(registry).await;
    let manifests = registry.manifest_requests(repository) - before;
    let allowed = answers.iter().filter(|(_, allowed)| *allowed).count();
    let latency = Spread::of(&answers.iter().map(|(elapsed, _)| *elapsed).collect::<Vec<_>>());
    table.push(
        Row::info(
            format!("Coalescing: {CONCURRENT_ADMISSIONS} concurrent admissions of one uncached image, +{delay_ms} ms/request"),
            format!(
                "{manifests} manifest request(s); {allowed}/{CONCURRENT_ADMISSIONS} allowed; answers in {}–{}",
                ms(latency.min_ms),
                ms(latency.max_ms)
            ),
        )
        .target("exactly 1 manifest request", manifests == 1 && allowed == CONCURRENT_ADMISSIONS),
    );
    Ok(())
}

/// The requests the registry logged while `action` ran.
async fn count_requests(
    registry: &RegistryProcess,
    action: impl std::future::Future<Output = Result<()>>,
) -> Result<Vec<AccessLogEntry>> {
    settle(registry).await;
    let before = registry.access_log().len();
    action.await?;
    settle(registry).await;
    Ok(registry.access_log().into_iter().skip(before).collect())
}

/// The registry writes an access-log line after it has answered; wait until the log stops growing.
async fn settle(registry: &RegistryProcess) {
    let mut last = registry.access_log().len();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = registry.access_log().len();
        if now == last {
            return;
        }
        last = now;
    }
}

/// `2 (GET manifest, GET blob)`.
fn describe(requests: &[AccessLogEntry]) -> String {
    if requests.is_empty() {
        return "0".into();
    }
    let kinds: Vec<String> = requests
        .iter()
        .map(|entry| {
            let what = if entry.path.contains("/manifests/") {
                "manifest"
            } else if entry.path.contains("/blobs/") {
                "blob"
            } else if entry.path.contains("/tags/list") {
                "tag list"
            } else {
                entry.path.as_str()
            };
            format!("{} {what}", entry.method)
        })
        .collect();
    format!("{} ({})", requests.len(), kinds.join(", "))
}
