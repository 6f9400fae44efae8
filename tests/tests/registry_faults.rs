//! Faults a real registry cannot produce on demand (403, 429, 5xx, lies, stalls, refused
//! addresses), from the in-process fake registry: each gives its finding within the deadline.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::{sync::Arc, time::Duration};

use common::*;
use pullguard_tests::{
    fake::{Behaviour, FakeRegistry, Route, closed_port},
    seed::{ImageSpec, Seeder},
};

#[tokio::test]
async fn transport_faults() {
    let registry = RegistryProcess::start_plain().await.expect("registry");
    let seeder = Seeder::new(&registry).expect("seeder");
    seeder.push_image("app", "v1", &ImageSpec::linux("amd64")).await.unwrap();

    // A plain-HTTP registry named (it is on loopback) but not declared insecure.
    let undeclared = inspector(
        vec![RegistryConfig { host: registry.host(), ..RegistryConfig::default() }],
        Keyring::default(),
    );
    let inspection = inspect(&undeclared, &format!("{}/app:v1", registry.host())).await;
    assert_eq!(codes(&inspection), vec![Code::PlainHttpRegistry], "{:#?}", inspection.findings);

    let closed = closed_port().await.unwrap();
    let insecure =
        |host: &str| RegistryConfig { host: host.to_string(), insecure: true, ..RegistryConfig::default() };
    let refused = inspector(vec![insecure(&closed)], Keyring::default());
    assert_eq!(codes(&inspect(&refused, &format!("{closed}/app:v1")).await), vec![Code::RegistryUnreachable]);

    let respond = |status: u16, headers: Vec<(&str, &str)>| Behaviour::Respond {
        status,
        headers: headers.into_iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
        body: r#"{"errors":[{"code":"X","message":"x"}]}"#.to_string(),
    };
    for (behaviour, expected) in [
        (respond(500, vec![]), Code::RegistryError),
        (respond(502, vec![]), Code::RegistryError),
        (respond(429, vec![("Retry-After", "30")]), Code::RateLimited),
        (respond(403, vec![]), Code::AccessDenied),
        (
            respond(200, vec![("Content-Type", "application/vnd.oci.image.manifest.v1+json")]),
            Code::RegistryError,
        ),
    ] {
        let fake = FakeRegistry::start(behaviour.clone()).await.unwrap();
        let checker = inspector(vec![insecure(&fake.host())], Keyring::default());
        let image = format!("{}/app:v1", fake.host());
        assert_eq!(codes(&inspect(&checker, &image).await), vec![expected], "{behaviour:?}");
        if expected == Code::RateLimited {
            // Backing off: the second lookup is answered without asking the registry again.
            let before = fake.requests();
            assert_eq!(
                codes(&inspect(&checker, &format!("{}/other:v1", fake.host())).await),
                vec![Code::RateLimited]
            );
            assert_eq!(fake.requests(), before);
        }
    }
}

#[tokio::test]
async fn registries_that_answer_403_for_missing_things_can_be_declared() {
    let fake = FakeRegistry::start(Behaviour::Respond {
        status: 403,
        headers: vec![],
        body: r#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#
            .into(),
    })
    .await
    .unwrap();
    let image = format!("{}/app:v1", fake.host());
    let plain = RegistryConfig { host: fake.host(), insecure: true, ..RegistryConfig::default() };
    let strict = inspector(vec![plain.clone()], Keyring::default());
    assert_eq!(codes(&inspect(&strict, &image).await), vec![Code::AccessDenied]);
    let lenient = RegistryConfig { forbidden_means_not_found: true, ..plain };
    let lenient = inspector(vec![lenient], Keyring::default());
    assert_eq!(codes(&inspect(&lenient, &image).await), vec![Code::RepositoryNotFound]);
}

/// 40 new images at once against a registry that never answers: at most 16 requests reach it
/// (the per-registry bound), and the deadline still answers for all 40.
#[tokio::test]
async fn requests_in_flight_to_one_registry_are_bounded() {
    let fake = FakeRegistry::start(Behaviour::Stall { limit: Duration::from_secs(20) }).await.unwrap();
    let config = Config {
        deadline: HumanDuration(Duration::from_millis(1500)),
        lookup_timeout: HumanDuration(Duration::from_secs(10)),
        ..fake_config(&fake)
    };
    let inspector = inspector_with(config, Keyring::default());
    let containers: Vec<ContainerImage> = (0..40)
        .map(|i| {
            ContainerImage::new(&format!("c{i}"), &format!("{}/app{i}:v1", fake.host()), ContainerKind::App)
        })
        .collect();
    let credentials = PodCredentials::none();
    let context = PodContext { targets: None, credentials: &credentials, placement: Placement::Scheduled };
    let deadline = Instant::now() + inspector.config().deadline.0;
    let started = std::time::Instant::now();
    let inspection = inspector
        .inspect(&containers, context, InspectOptions { offline: false, deadline, image_reports: true })
        .await;
    assert!(started.elapsed() < Duration::from_secs(4), "took {:?}", started.elapsed());
    assert_eq!(inspection.findings.len(), 40);
    assert!(inspection.findings.iter().all(|finding| finding.code == Code::RegistryUnreachable));
    assert!((1..=16).contains(&fake.requests()), "{} requests reached the registry", fake.requests());
}

/// Concurrent admissions of one image whose registry times out share the one failed attempt
/// instead of queueing for a try each (found by the soak during registry outages).
#[tokio::test]
async fn callers_waiting_on_a_failed_lookup_share_its_answer() {
    let fake = FakeRegistry::start(Behaviour::Stall { limit: Duration::from_secs(20) }).await.unwrap();
    let config = Config {
        deadline: HumanDuration(Duration::from_secs(4)),
        lookup_timeout: HumanDuration(Duration::from_millis(500)),
        ..fake_config(&fake)
    };
    let inspector = inspector_with(config, Keyring::default());
    let image = format!("{}/app:v1", fake.host());
    let started = std::time::Instant::now();
    let inspections = futures::future::join_all((0..20).map(|_| inspect(&inspector, &image))).await;
    assert!(started.elapsed() < Duration::from_millis(2500), "took {:?}", started.elapsed());
    assert!(inspections.iter().all(|inspection| codes(inspection) == vec![Code::RegistryUnreachable]));
    assert_eq!(fake.requests(), 1, "one attempt for all twenty");
}

/// During an outage every image of a registry would otherwise wait out its own timeout: after
/// one request times out, other images of that registry are answered at once for a moment.
#[tokio::test]
async fn a_registry_that_times_out_is_left_alone_for_a_moment() {
    let fake = FakeRegistry::start(Behaviour::Stall { limit: Duration::from_secs(20) }).await.unwrap();
    let config = Config { lookup_timeout: HumanDuration(Duration::from_millis(500)), ..fake_config(&fake) };
    let inspector = inspector_with(config, Keyring::default());
    assert_eq!(
        codes(&inspect(&inspector, &format!("{}/first:v1", fake.host())).await),
        vec![Code::RegistryUnreachable]
    );
    let started = std::time::Instant::now();
    let second = inspect(&inspector, &format!("{}/second:v1", fake.host())).await;
    assert!(started.elapsed() < Duration::from_millis(300), "took {:?}", started.elapsed());
    assert_eq!(codes(&second), vec![Code::RegistryUnreachable]);
    assert!(second.findings[0].message.contains("timed out"), "{}", second.findings[0].message);
    assert_eq!(fake.requests(), 1, "the second image did not reach the stalled registry");
}

/// Registries answer 404 for a tag while it is pushed again; a tag the tag list names is a
/// passing fault (a warning), not a "not found" that would deny a valid image for the miss TTL.
#[tokio::test]
async fn a_tag_the_registry_lists_but_does_not_serve_is_not_denied() {
    let fake = FakeRegistry::start(Behaviour::Routes(vec![
        Route::new("/tags/list", 200, r#"{"name":"app","tags":["v1","v2"]}"#),
        Route::new("/manifests/", 404, r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}"#),
    ]))
    .await
    .unwrap();
    let inspector = inspector_with(fake_config(&fake), Keyring::default());
    let listed = inspect(&inspector, &format!("{}/app:v1", fake.host())).await;
    assert_eq!(codes(&listed), vec![Code::RegistryError], "{:#?}", listed.findings);
    assert!(listed.findings.iter().all(|finding| finding.severity != Severity::Error));
    let unlisted = inspect(&inspector, &format!("{}/app:v3", fake.host())).await;
    assert_eq!(codes(&unlisted), vec![Code::TagNotFound], "{:#?}", unlisted.findings);
}

#[tokio::test]
async fn a_stalled_registry_is_cut_off_by_the_deadline() {
    let fake = FakeRegistry::start(Behaviour::Stall { limit: Duration::from_secs(20) }).await.unwrap();
    let config = Config {
        deadline: HumanDuration(Duration::from_millis(800)),
        lookup_timeout: HumanDuration(Duration::from_secs(10)),
        ..fake_config(&fake)
    };
    let inspector = inspector_with(config, Keyring::default());
    let started = std::time::Instant::now();
    let inspection = inspect(&inspector, &format!("{}/app:v1", fake.host())).await;
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    assert_eq!(codes(&inspection), vec![Code::RegistryUnreachable]);
    assert!(inspection.findings[0].message.contains("deadline"));
}

/// A stale tag is revalidated by one caller; callers arriving meanwhile are answered from the
/// facts it had instead of queueing behind a slow registry.
#[tokio::test]
async fn callers_arriving_while_a_tag_is_revalidated_get_its_facts_at_once() {
    use sha2::{Digest, Sha256};
    let digest_of = |body: &str| format!("sha256:{:x}", Sha256::digest(body.as_bytes()));
    let config_blob = r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[]}}"#,
        digest_of(config_blob),
        config_blob.len()
    );
    let manifest_digest = digest_of(&manifest);
    let slow_head = Route {
        method: "HEAD".into(),
        path_contains: "/manifests/v1".into(),
        status: 200,
        headers: vec![("Docker-Content-Digest".into(), manifest_digest.clone())],
        body: manifest.clone(),
        delay: Duration::from_secs(2),
    };
    let mut get_manifest = Route::new("/manifests/v1", 200, &manifest);
    get_manifest.headers = vec![("Content-Type".into(), "application/vnd.oci.image.manifest.v1+json".into())];
    let fake = FakeRegistry::start(Behaviour::Routes(vec![
        slow_head,
        get_manifest,
        Route::new(&format!("/blobs/{}", digest_of(config_blob)), 200, config_blob),
    ]))
    .await
    .unwrap();
    let mut config = fake_config(&fake);
    config.cache.tag_ttl = HumanDuration(Duration::from_millis(200));
    let inspector = Arc::new(inspector_with(config, Keyring::default()));
    let image = format!("{}/app:v1", fake.host());
    let first = inspect(&inspector, &image).await;
    assert!(first.findings.is_empty(), "{:#?}", first.findings);
    assert_eq!(first.images[0].resolved_digest.as_deref(), Some(manifest_digest.as_str()));

    tokio::time::sleep(Duration::from_millis(300)).await;
    let revalidating = tokio::spawn({
        let (inspector, image) = (inspector.clone(), image.clone());
        async move { inspect(&inspector, &image).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    let meanwhile = futures::future::join_all((0..10).map(|_| inspect(&inspector, &image))).await;
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    for inspection in meanwhile {
        assert!(inspection.findings.is_empty(), "{:#?}", inspection.findings);
        assert_eq!(inspection.images[0].resolved_digest.as_deref(), Some(manifest_digest.as_str()));
    }
    assert!(revalidating.await.unwrap().findings.is_empty());
    assert_eq!(fake.requests(), 3, "GET manifest, GET config, one HEAD");
}

#[tokio::test]
async fn metadata_and_unnamed_loopback_addresses_are_never_contacted() {
    let fake = FakeRegistry::start(Behaviour::Respond { status: 404, headers: vec![], body: "{}".into() })
        .await
        .unwrap();
    let port = fake.host().rsplit_once(':').unwrap().1.to_string();
    let unnamed = inspector_with(Config::default(), Keyring::default());
    for image in [
        "169.254.169.254/latest/meta-data:v1".to_string(),
        "[fd00:ec2::254]/app:v1".to_string(),
        "100.100.100.200/app:v1".to_string(),
        format!("127.0.0.1:{port}/app:v1"),
        format!("localhost:{port}/app:v1"),
    ] {
        let started = std::time::Instant::now();
        let inspection = inspect(&unnamed, &image).await;
        assert_eq!(codes(&inspection), vec![Code::AddressRefused], "{image}: {:#?}", inspection.findings);
        assert!(started.elapsed() < Duration::from_secs(2), "{image}");
    }
    assert_eq!(fake.requests(), 0, "refused addresses are never connected to");

    // Named, the same loopback registry is contacted. Unnamed metadata stays refused.
    let open = inspector_with(
        Config {
            registries: vec![RegistryConfig {
                host: format!("localhost:{port}"),
                ..RegistryConfig::default()
            }],
            lookup_timeout: HumanDuration(Duration::from_millis(500)),
            ..Config::default()
        },
        Keyring::default(),
    );
    // The fake answers a TLS hello in plain HTTP: it was reached, which is what is tested.
    let inspection = inspect(&open, &format!("localhost:{port}/app:v1")).await;
    assert_eq!(codes(&inspection), vec![Code::PlainHttpRegistry], "{:#?}", inspection.findings);
    assert_eq!(codes(&inspect(&open, "169.254.169.254/app:v1").await), vec![Code::AddressRefused]);

    // A named registry whose token realm points at a metadata address: the realm is not fetched.
    let realm = FakeRegistry::start(Behaviour::Respond {
        status: 401,
        headers: vec![(
            "WWW-Authenticate".into(),
            r#"Bearer realm="http://169.254.169.254/token",service="x""#.into(),
        )],
        body: "{}".into(),
    })
    .await
    .unwrap();
    let named = RegistryConfig { host: realm.host(), insecure: true, ..RegistryConfig::default() };
    let checker = inspector(vec![named], Keyring::default());
    let inspection = inspect(&checker, &format!("{}/app:v1", realm.host())).await;
    assert_eq!(codes(&inspection), vec![Code::AddressRefused], "{:#?}", inspection.findings);
    assert!(inspection.findings[0].message.contains("token realm"));
}

#[tokio::test]
async fn registries_that_lie_or_stall_give_findings_within_the_deadline() {
    let manifest = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;
    let respond = |status: u16, headers: Vec<(&str, &str)>, body: String| Behaviour::Respond {
        status,
        headers: headers.into_iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
        body,
    };
    let oci = "application/vnd.oci.image.manifest.v1+json";
    let zero_digest = format!("sha256:{}", "0".repeat(64));
    let cases: Vec<(&str, Behaviour, Code)> = vec![
        (
            "manifest over the size limit",
            respond(200, vec![("Content-Type", oci)], "x".repeat(5 << 20)),
            Code::RegistryError,
        ),
        (
            "HTML instead of a manifest",
            respond(200, vec![("Content-Type", "text/html")], "<html>hi</html>".into()),
            Code::RegistryError,
        ),
        (
            "digest header does not match the body",
            respond(
                200,
                vec![("Content-Type", oci), ("Docker-Content-Digest", &zero_digest)],
                manifest.into(),
            ),
            Code::RegistryError,
        ),
        (
            "invalid JSON",
            respond(200, vec![("Content-Type", oci)], "{\"schemaVersion\":".into()),
            Code::RegistryError,
        ),
        (
            "unknown media type",
            respond(200, vec![("Content-Type", "application/vnd.example+json")], "{}".into()),
            Code::NotAContainerImage,
        ),
        (
            "503 with Retry-After",
            respond(503, vec![("Retry-After", "1")], String::new()),
            Code::RegistryError,
        ),
        ("redirect loop", Behaviour::RedirectLoop, Code::RegistryError),
        (
            "stall mid-body",
            Behaviour::StallMidBody { declared: 4096, limit: Duration::from_secs(20) },
            Code::RegistryUnreachable,
        ),
        (
            "stall before answering",
            Behaviour::Stall { limit: Duration::from_secs(20) },
            Code::RegistryUnreachable,
        ),
    ];
    for (name, behaviour, expected) in cases {
        let fake = FakeRegistry::start(behaviour).await.unwrap();
        let config = Config {
            registries: vec![RegistryConfig {
                host: fake.host(),
                insecure: true,
                ..RegistryConfig::default()
            }],
            deadline: HumanDuration(Duration::from_secs(2)),
            lookup_timeout: HumanDuration(Duration::from_secs(1)),
            ..Config::default()
        };
        let checker = inspector_with(config, Keyring::default());
        let started = std::time::Instant::now();
        let inspection = inspect(&checker, &format!("{}/app:v1", fake.host())).await;
        assert!(started.elapsed() < Duration::from_secs(3), "{name}: took {:?}", started.elapsed());
        assert_eq!(codes(&inspection), vec![expected], "{name}: {:#?}", inspection.findings);
    }

    // A token endpoint that never answers is cut off like any registry request.
    let stalled_realm =
        FakeRegistry::start(Behaviour::Stall { limit: Duration::from_secs(20) }).await.unwrap();
    let challenge = format!(r#"Bearer realm="http://{}/token",service="x""#, stalled_realm.host());
    let registry =
        FakeRegistry::start(respond(401, vec![("WWW-Authenticate", &challenge)], "{}".into())).await.unwrap();
    let config = Config {
        registries: vec![
            RegistryConfig { host: registry.host(), insecure: true, ..RegistryConfig::default() },
            RegistryConfig { host: stalled_realm.host(), insecure: true, ..RegistryConfig::default() },
        ],
        deadline: HumanDuration(Duration::from_secs(2)),
        lookup_timeout: HumanDuration(Duration::from_secs(1)),
        ..Config::default()
    };
    let checker = inspector_with(config, Keyring::default());
    let started = std::time::Instant::now();
    let inspection = inspect(&checker, &format!("{}/app:v1", registry.host())).await;
    assert!(started.elapsed() < Duration::from_secs(3), "token stall took {:?}", started.elapsed());
    assert_eq!(codes(&inspection), vec![Code::RegistryUnreachable], "{:#?}", inspection.findings);
}

/// A bearer-token registry: `/token` issues `t1`, `t2`, ...; the registry accepts only the token
/// issued last, and none while `revoked`.
#[derive(Default)]
struct RevokingRegistry {
    issued: std::sync::atomic::AtomicUsize,
    valid: std::sync::Mutex<Option<String>>,
}

impl RevokingRegistry {
    fn issued(&self) -> usize {
        self.issued.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn revoke(&self) {
        *self.valid.lock().unwrap() = None;
    }

    fn router(self: &Arc<Self>) -> axum::Router {
        use axum::{
            http::{HeaderMap, StatusCode, header},
            response::IntoResponse,
            routing::get,
        };
        let index = serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": format!("sha256:{}", "a".repeat(64)), "size": 1,
                "platform": {"os": "linux", "architecture": "amd64"}}]
        })
        .to_string();
        let digest = {
            use sha2::Digest;
            format!("sha256:{}", hex::encode(sha2::Sha256::digest(index.as_bytes())))
        };
        let (tokens, registry) = (self.clone(), self.clone());
        let issue = move || async move {
            let n = tokens.issued.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            *tokens.valid.lock().unwrap() = Some(format!("t{n}"));
            axum::Json(serde_json::json!({"token": format!("t{n}")}))
        };
        let manifest = move |headers: HeaderMap| async move {
            let expected = registry.valid.lock().unwrap().clone().map(|token| format!("Bearer {token}"));
            let presented = headers.get(header::AUTHORIZATION).and_then(|value| value.to_str().ok());
            if expected.is_none() || presented != expected.as_deref() {
                let host =
                    headers.get(header::HOST).and_then(|value| value.to_str().ok()).unwrap_or_default();
                let challenge = format!(r#"Bearer realm="http://{host}/token",service="fake""#);
                return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, challenge)]).into_response();
            }
            let media_type = "application/vnd.oci.image.index.v1+json".to_string();
            let digest_header = header::HeaderName::from_static("docker-content-digest");
            ([(header::CONTENT_TYPE, media_type), (digest_header, digest.clone())], index.clone())
                .into_response()
        };
        axum::Router::new().route("/token", get(issue)).route("/v2/app/manifests/{tag}", get(manifest))
    }
}

/// A token the registry stops accepting (revoked, or expired before its stated life) is dropped
/// from the cache when refused: the next lookup fetches a new one instead of failing for the
/// token's whole life in the cache.
#[tokio::test]
async fn a_revoked_token_is_fetched_anew() {
    let registry = Arc::new(RevokingRegistry::default());
    let server = pullguard_tests::loopback::LoopbackServer::start(registry.router()).await.unwrap();
    let host = server.addr().to_string();
    let config = Config {
        registries: vec![RegistryConfig { host: host.clone(), insecure: true, ..RegistryConfig::default() }],
        ..Config::default()
    };
    let inspector = inspector_with(config, Keyring::default());

    assert_eq!(codes(&inspect(&inspector, &format!("{host}/app:v1")).await), vec![]);
    assert_eq!(registry.issued(), 1);
    registry.revoke();
    let refused = inspect(&inspector, &format!("{host}/app:v2")).await;
    assert_eq!(codes(&refused), vec![Code::CredentialsRequired], "{:#?}", refused.findings);
    let again = inspect(&inspector, &format!("{host}/app:v3")).await;
    assert_eq!(codes(&again), vec![], "{:#?}", again.findings);
    assert_eq!(registry.issued(), 2, "one new token after the refusal");
}
