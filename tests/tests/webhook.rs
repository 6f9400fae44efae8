//! The webhook fed the AdmissionReview bodies captured from a real kube-apiserver, with every
//! image pointed at a real local registry: through its router in-process, and over real HTTPS
//! (HTTP/2, as the API server calls it, and HTTP/1.1) where the wire is the subject.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::{collections::BTreeSet, time::Duration};

use axum::http::Method;
use pullguard_core::{
    config::{Config, HumanDuration, Mode, RegistryConfig},
    credentials::Keyring,
};
use pullguard_tests::{
    answer::{Answer, Reviews},
    fake::{Behaviour, FakeRegistry},
    in_process::InProcess,
    registry::RegistryProcess,
    seed::{ImageSpec, Seeder},
    webhook::{Webhook, fixture, registry_settings},
};
use serde_json::{Value, json};

const ALL_FIXTURES: [&str; 24] = [
    "01-create-pod-main-web.json",
    "02-create-deployment-main-api.json",
    "03-create-replicaset-main-api-58f8c68bb7.json",
    "04-create-deployment-main-dry-dryrun.json",
    "05-create-pod-main-api-58f8c68bb7-b9wlr.json",
    "06-update-deployment-main-api.json",
    "07-create-replicaset-main-api-6cc4775c94.json",
    "08-update-scale-scale-api.json",
    "09-create-pod-main-api-6cc4775c94-9nmnr.json",
    "10-update-replicaset-main-api-6cc4775c94.json",
    "11-update-replicaset-main-api-58f8c68bb7.json",
    "12-create-job-main-once.json",
    "13-create-pod-main-api-6cc4775c94-558jb.json",
    "14-create-pod-main-once-6zrj7.json",
    "15-create-cronjob-main-nightly.json",
    "16-create-statefulset-main-db.json",
    "17-create-daemonset-main-agent.json",
    "18-create-pod-main-db-0.json",
    "19-create-replicationcontroller-main-legacy.json",
    "20-create-pod-main-legacy-sth48.json",
    "21-update-pod-ephemeralcontainers-web.json",
    "22-update-pod-main-web.json",
    "23-delete-pod-main-web.json",
    "24-delete-pod-main-web.json",
];

/// A tag name standing for one image of the fixtures, so distinct images stay distinct.
fn tag_for(original: &str) -> String {
    let tag: String = original.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    tag.chars()
        .rev()
        .take(100)
        .collect::<String>()
        .chars()
        .rev()
        .collect::<String>()
        .trim_start_matches('-')
        .to_string()
}

/// Rewrites every `image` field of the review (object, oldObject, all container lists).
fn map_images(value: &mut Value, map: &dyn Fn(&str) -> String) {
    match value {
        Value::Object(object) => {
            for (key, child) in object.iter_mut() {
                if key == "image"
                    && let Value::String(image) = child
                {
                    *image = map(image);
                } else {
                    map_images(child, map);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| map_images(item, map)),
        _ => {}
    }
}

fn images_of(value: &Value, found: &mut BTreeSet<String>) {
    match value {
        Value::Object(object) => {
            for (key, child) in object {
                match (key.as_str(), child) {
                    ("image", Value::String(image)) => {
                        found.insert(image.clone());
                    }
                    _ => images_of(child, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| images_of(item, found)),
        _ => {}
    }
}

struct Fixtures {
    registry: RegistryProcess,
}

impl Fixtures {
    /// A registry holding a tiny image for every image named in the fixtures.
    async fn start() -> Fixtures {
        let registry = RegistryProcess::start_plain().await.expect("registry");
        let seeder = Seeder::new(&registry).unwrap();
        let mut originals = BTreeSet::new();
        for name in ALL_FIXTURES {
            images_of(&fixture(name).unwrap(), &mut originals);
        }
        for original in originals {
            seeder.push_image("fx", &tag_for(&original), &ImageSpec::linux("amd64")).await.unwrap();
        }
        Fixtures { registry }
    }

    fn config(&self) -> Config {
        Config { registries: vec![registry_settings(&self.registry)], ..Config::default() }
    }

    fn good(&self, name: &str) -> Value {
        let host = self.registry.host();
        let mut review = fixture(name).unwrap();
        map_images(&mut review, &|original| format!("{host}/fx:{}", tag_for(original)));
        review
    }

    fn bad(&self, name: &str) -> Value {
        let host = self.registry.host();
        let mut review = fixture(name).unwrap();
        map_images(&mut review, &|original| format!("{host}/fx:{}-gone", tag_for(original)));
        review
    }
}

fn uid(review: &Value) -> &str {
    review.pointer("/request/uid").and_then(Value::as_str).unwrap()
}

#[tokio::test]
async fn every_captured_review_is_answered_with_its_uid() {
    let fixtures = Fixtures::start().await;
    let webhook = InProcess::start(fixtures.config(), Keyring::default()).unwrap();
    for name in ALL_FIXTURES {
        let review = fixtures.good(name);
        let (status, body) = webhook.post(&review).await.unwrap();
        let answer = Answer::from_review(&body).unwrap();
        assert_eq!(status, 200, "{name}");
        assert_eq!(body["apiVersion"], "admission.k8s.io/v1", "{name}");
        assert_eq!(body["kind"], "AdmissionReview", "{name}");
        assert_eq!(answer.uid, uid(&review), "{name}");
        assert!(answer.allowed, "{name}: {body}");
        assert!(answer.warnings.is_empty(), "{name}: {body}");
    }
}

#[tokio::test]
async fn missing_tags_are_denied_for_every_workload_kind() {
    let fixtures = Fixtures::start().await;
    let webhook = InProcess::start(fixtures.config(), Keyring::default()).unwrap();
    let creates = [
        ("01-create-pod-main-web.json", vec!["app", "sidecar", "init"]),
        ("02-create-deployment-main-api.json", vec!["api"]),
        ("03-create-replicaset-main-api-58f8c68bb7.json", vec!["api"]),
        ("04-create-deployment-main-dry-dryrun.json", vec![]),
        ("12-create-job-main-once.json", vec![]),
        ("15-create-cronjob-main-nightly.json", vec![]),
        ("16-create-statefulset-main-db.json", vec![]),
        ("17-create-daemonset-main-agent.json", vec![]),
        ("19-create-replicationcontroller-main-legacy.json", vec![]),
    ];
    for (name, containers) in creates {
        let review = fixtures.bad(name);
        let answer = webhook.review(&review).await.unwrap();
        assert_eq!(answer.uid, uid(&review));
        assert!(!answer.allowed, "{name} should be denied: {answer:?}");
        assert_eq!(answer.code, Some(403), "{name}");
        let message = answer.message.as_str();
        assert!(message.contains("PG101"), "{name}: {message}");
        assert!(message.contains("Closest existing tags"), "{name}: {message}");
        for container in containers {
            assert!(message.contains(&format!("container {container:?}")), "{name}: {message}");
        }
        assert_eq!(answer.annotation("verdict"), Some("denied"));
        assert!(answer.codes().contains(&"PG101".to_owned()));
    }
}

#[tokio::test]
async fn controller_created_pods_are_allowed_without_lookups() {
    let fixtures = Fixtures::start().await;
    let webhook = InProcess::start(fixtures.config(), Keyring::default()).unwrap();
    for name in [
        "05-create-pod-main-api-58f8c68bb7-b9wlr.json",
        "09-create-pod-main-api-6cc4775c94-9nmnr.json",
        "13-create-pod-main-api-6cc4775c94-558jb.json",
        "14-create-pod-main-once-6zrj7.json",
        "18-create-pod-main-db-0.json",
        "20-create-pod-main-legacy-sth48.json",
    ] {
        let answer = webhook.review(&fixtures.bad(name)).await.unwrap();
        assert!(answer.allowed, "{name}");
        assert_eq!(answer.annotation("skipped").unwrap_or_default(), "controller-owned", "{name}");
    }
    assert_eq!(fixtures.registry.manifest_requests("fx"), 0);

    // With the setting turned off, the same Pods are checked.
    let config = Config { check_controller_pods: true, ..fixtures.config() };
    let strict = InProcess::start(config, Keyring::default()).unwrap();
    let answer = strict.review(&fixtures.bad("05-create-pod-main-api-58f8c68bb7-b9wlr.json")).await.unwrap();
    assert!(!answer.allowed);
}

#[tokio::test]
async fn updates_check_only_the_images_that_changed() {
    let fixtures = Fixtures::start().await;
    let webhook = InProcess::start(fixtures.config(), Keyring::default()).unwrap();
    // 2.0 -> 2.1: the new image is checked.
    let answer = webhook.review(&fixtures.bad("06-update-deployment-main-api.json")).await.unwrap();
    assert!(!answer.allowed);
    // Same images before and after: nothing to check, even if they are gone now.
    for name in [
        "10-update-replicaset-main-api-6cc4775c94.json",
        "11-update-replicaset-main-api-58f8c68bb7.json",
        "22-update-pod-main-web.json",
    ] {
        let answer = webhook.review(&fixtures.bad(name)).await.unwrap();
        assert!(answer.allowed, "{name}");
        assert_eq!(answer.annotation("skipped").unwrap_or_default(), "no-image-change", "{name}");
    }
    // kubectl debug adds an ephemeral container: only it is checked.
    let answer = webhook.review(&fixtures.bad("21-update-pod-ephemeralcontainers-web.json")).await.unwrap();
    assert!(!answer.allowed);
    let message = answer.message.as_str();
    assert!(message.contains("container \"debugger\""), "{message}");
    assert!(!message.contains("container \"app\""), "{message}");
}

#[tokio::test]
async fn deletes_scale_and_unknown_kinds_pass_untouched() {
    let fixtures = Fixtures::start().await;
    let webhook = InProcess::start(fixtures.config(), Keyring::default()).unwrap();
    for name in
        ["08-update-scale-scale-api.json", "23-delete-pod-main-web.json", "24-delete-pod-main-web.json"]
    {
        let (status, body) = webhook.post(&fixtures.bad(name)).await.unwrap();
        let answer = Answer::from_review(&body).unwrap();
        assert_eq!(status, 200);
        assert!(answer.allowed, "{name}");
    }
    let mut unknown = fixtures.bad("01-create-pod-main-web.json");
    unknown["request"]["kind"] = json!({"group": "example.com", "version": "v1", "kind": "Pod"});
    let answer = webhook.review(&unknown).await.unwrap();
    assert!(answer.allowed);
    assert_eq!(answer.annotation("skipped").unwrap_or_default(), "kind");
    let mut exempt = fixtures.bad("01-create-pod-main-web.json");
    exempt["request"]["namespace"] = json!("kube-system");
    let answer = webhook.review(&exempt).await.unwrap();
    assert!(answer.allowed);
    assert_eq!(fixtures.registry.manifest_requests("fx"), 0);
}

#[tokio::test]
async fn modes_and_the_relaxing_annotation() {
    let fixtures = Fixtures::start().await;
    let bad = fixtures.bad("02-create-deployment-main-api.json");
    let cases = [(Mode::Warn, true, true), (Mode::Audit, true, false), (Mode::Enforce, false, false)];
    for (mode, expect_allowed, expect_warnings) in cases {
        let webhook = InProcess::start(Config { mode, ..fixtures.config() }, Keyring::default()).unwrap();
        let answer = webhook.review(&bad).await.unwrap();
        assert_eq!(answer.allowed, expect_allowed, "{mode}");
        let warnings = &answer.warnings;
        assert_eq!(!warnings.is_empty(), expect_warnings, "{mode}: {warnings:?}");
        assert!(warnings.iter().all(|w| w.len() <= 256 && w.starts_with("PG101")), "{warnings:?}");
        assert_eq!(answer.annotation("mode"), Some(mode.to_string().as_str()));
        assert!(answer.codes().contains(&"PG101".to_owned()), "{mode}");
    }
    // The annotation relaxes enforce to warn, but cannot tighten warn to enforce.
    let mut relaxed = bad.clone();
    relaxed["request"]["object"]["metadata"]["annotations"]["pullguard.io/mode"] = json!("warn");
    let enforcing = InProcess::start(fixtures.config(), Keyring::default()).unwrap();
    let answer = enforcing.review(&relaxed).await.unwrap();
    assert!(answer.allowed);
    assert!(!answer.warnings.is_empty());
    let mut tightened = bad;
    tightened["request"]["object"]["metadata"]["annotations"]["pullguard.io/mode"] = json!("enforce");
    let warning =
        InProcess::start(Config { mode: Mode::Warn, ..fixtures.config() }, Keyring::default()).unwrap();
    let answer = warning.review(&tightened).await.unwrap();
    assert!(answer.allowed);
}

#[tokio::test]
async fn malformed_requests_get_clear_answers_and_the_server_keeps_serving() {
    let fixtures = Fixtures::start().await;
    let webhook = InProcess::start(fixtures.config(), Keyring::default()).unwrap();
    let mut wrong_version = fixtures.good("01-create-pod-main-web.json");
    wrong_version["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (b"not json".to_vec(), 400),
        (b"{}".to_vec(), 400),
        (br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(), 400),
        (serde_json::to_vec(&wrong_version).unwrap(), 400),
        (vec![b' '; 4 << 20], 413),
    ];
    for (body, expected) in cases {
        let (status, text) = webhook.post_raw(body).await.unwrap();
        assert_eq!(status, expected, "{text}");
        if expected == 400 {
            let review: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(review["response"]["allowed"], false);
            assert!(!review["response"]["status"]["message"].as_str().unwrap().is_empty());
        }
    }
    // A Pod whose spec has the wrong shape: allowed (fail open) with a message saying why.
    let mut wrong_shape = fixtures.good("01-create-pod-main-web.json");
    wrong_shape["request"]["object"]["spec"]["containers"] = json!("nope");
    let (status, body) = webhook.post(&wrong_shape).await.unwrap();
    let answer = Answer::from_review(&body).unwrap();
    assert_eq!(status, 200);
    assert!(answer.allowed);
    assert!(answer.warnings[0].contains("could not check"));

    let (get, _) = webhook.request(Method::GET, "/validate", Vec::new()).await.unwrap();
    assert_eq!(get, 405);
    let (other, _) = webhook.request(Method::POST, "/mutate", Vec::new()).await.unwrap();
    assert_eq!(other, 404);
    let (status, _) = webhook.post(&fixtures.good("02-create-deployment-main-api.json")).await.unwrap();
    assert_eq!(status, 200);
}

/// The router in-process and the server over HTTPS give every captured review the same answer:
/// what the in-process tests find holds on the wire.
#[tokio::test]
async fn answers_over_https_are_the_answers_in_process() {
    let fixtures = Fixtures::start().await;
    let over_https = Webhook::start(fixtures.config(), Keyring::default()).await.unwrap();
    let in_process = InProcess::start(fixtures.config(), Keyring::default()).unwrap();
    for name in ALL_FIXTURES {
        for review in [fixtures.good(name), fixtures.bad(name)] {
            let (https, in_memory) =
                (over_https.review(&review).await.unwrap(), in_process.review(&review).await.unwrap());
            assert_eq!(https, in_memory, "{name}");
        }
    }
}

#[tokio::test]
async fn http1_clients_are_served_too() {
    let fixtures = Fixtures::start().await;
    let webhook = Webhook::start(fixtures.config(), Keyring::default()).await.unwrap();
    let http1 = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(webhook.ca_pem.as_bytes()).unwrap()])
        .http1_only()
        .build()
        .unwrap();
    let response =
        http1.post(webhook.url()).json(&fixtures.good("01-create-pod-main-web.json")).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    assert_eq!(response.status().as_u16(), 200);
    let http2 = webhook
        .client
        .post(webhook.url())
        .json(&fixtures.good("01-create-pod-main-web.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(http2.version(), reqwest::Version::HTTP_2);
    // A client that does not trust the server's CA is refused: the server really speaks TLS.
    let material = pullguard::server::tls::self_signed(&["localhost".to_string()]).unwrap();
    let untrusting = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(material.ca_pem.as_bytes()).unwrap()])
        .build()
        .unwrap();
    assert!(untrusting.post(webhook.url()).body("{}").send().await.is_err());
}

#[tokio::test]
async fn concurrent_admissions_of_one_new_image_make_one_manifest_request() {
    let fixtures = Fixtures::start().await;
    let seeder = Seeder::new(&fixtures.registry).unwrap();
    seeder.push_image("coalesce", "v1", &ImageSpec::linux("amd64")).await.unwrap();
    let webhook = InProcess::start(fixtures.config(), Keyring::default()).unwrap();
    let host = fixtures.registry.host();
    let mut review = fixtures.good("01-create-pod-main-web.json");
    map_images(&mut review, &|_| format!("{host}/coalesce:v1"));
    let results = futures::future::join_all((0..50).map(|_| webhook.post(&review))).await;
    for result in results {
        let (status, body) = result.unwrap();
        let answer = Answer::from_review(&body).unwrap();
        assert_eq!(status, 200);
        assert!(answer.allowed, "{body}");
    }
    assert_eq!(fixtures.registry.manifest_requests("coalesce"), 1);
}

#[tokio::test]
async fn a_registry_that_never_answers_is_cut_off_by_the_deadline() {
    let fixtures = Fixtures::start().await;
    let fake = FakeRegistry::start(Behaviour::Stall { limit: Duration::from_secs(20) }).await.unwrap();
    let config = Config {
        registries: vec![RegistryConfig { host: fake.host(), insecure: true, ..RegistryConfig::default() }],
        deadline: HumanDuration(Duration::from_secs(1)),
        lookup_timeout: HumanDuration(Duration::from_secs(10)),
        ..fixtures.config()
    };
    let webhook = InProcess::start(config, Keyring::default()).unwrap();
    let host = fake.host();
    let mut review = fixtures.good("02-create-deployment-main-api.json");
    map_images(&mut review, &|_| format!("{host}/app:v1"));
    let started = std::time::Instant::now();
    let (status, body) = webhook.post(&review).await.unwrap();
    let answer = Answer::from_review(&body).unwrap();
    let elapsed = started.elapsed();
    assert_eq!(status, 200);
    assert!(elapsed < Duration::from_secs(4), "answered after {elapsed:?}");
    assert!(answer.allowed, "fail open: {body}");
    assert!(answer.warnings.iter().any(|w| w.starts_with("PG501")), "{body}");
}

#[tokio::test]
async fn metrics_count_admissions_lookups_and_findings() {
    let fixtures = Fixtures::start().await;
    let webhook = InProcess::start(fixtures.config(), Keyring::default()).unwrap();
    webhook.post(&fixtures.good("02-create-deployment-main-api.json")).await.unwrap();
    webhook.post(&fixtures.good("02-create-deployment-main-api.json")).await.unwrap();
    webhook.post(&fixtures.bad("01-create-pod-main-web.json")).await.unwrap();
    webhook.post(&fixtures.good("23-delete-pod-main-web.json")).await.unwrap();
    webhook.post_raw(b"nope".to_vec()).await.unwrap();
    let text = webhook.metrics().await.unwrap();
    for expected in [
        r#"pullguard_admissions_total{kind="Deployment",operation="CREATE",verdict="allowed"} 2"#,
        r#"pullguard_admissions_total{kind="Pod",operation="CREATE",verdict="denied"} 1"#,
        r#"pullguard_admissions_total{kind="Pod",operation="DELETE",verdict="skipped"} 1"#,
        r#"verdict="invalid"} 1"#,
        r#"pullguard_findings_total{code="PG101",severity="error"} 3"#,
        r#"pullguard_cache_lookups_total{result="hit"} 1"#,
        "pullguard_admission_duration_seconds_count 4",
        "pullguard_registry_request_duration_seconds_bucket",
        "pullguard_cache_entries",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    let registry_requests = format!(
        r#"pullguard_registry_requests_total{{registry="{}",outcome="2xx"}}"#,
        fixtures.registry.host()
    );
    assert!(text.contains(&registry_requests), "{text}");
    assert!(text.contains(r#"outcome="404"}"#), "{text}");
}
