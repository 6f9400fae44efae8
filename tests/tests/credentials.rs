//! Pull secrets through the HTTPS webhook: the real HTTPS+htpasswd registry, secrets and service
//! accounts in a real kube-apiserver (reached through the fault proxy, which counts the reads),
//! and the registry's access log as the witness that one namespace's secret never serves another.
//! The control plane is shared by the tests of this binary; each setup has namespaces of its own.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::time::Duration;

use base64::{Engine, engine::general_purpose::STANDARD};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Api, Patch, PatchParams, PostParams};
use pullguard_core::{config::Config, credentials::Keyring};
use pullguard_tests::{
    answer::{Answer, Reviews},
    api_faults::ApiFaults,
    control_plane::{ControlPlane, Options},
    in_process::InProcess,
    installed::create_ready_node,
    logs::LogBuffer,
    registry::RegistryProcess,
    seed::{ImageSpec, Seeder},
    webhook::{fixture, registry_settings},
};
use serde_json::{Value, json};

const USER: &str = "robot";
const PASSWORD: &str = "s3cret-pass-7f3a";
const WRONG_PASSWORD: &str = "wr0ng-pass-91bc";

fn secret(namespace: &str, name: &str, secret_type: &str, key: &str, auths: Value) -> Secret {
    let config = json!({ "auths": auths }).to_string();
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": secret_type,
        "data": {key: STANDARD.encode(config)},
    }))
    .unwrap()
}

fn auth_entry(user: &str, password: &str) -> Value {
    json!({"auth": STANDARD.encode(format!("{user}:{password}"))})
}

fn service_account(namespace: &str, secrets: &[&str]) -> ServiceAccount {
    let refs: Vec<Value> = secrets.iter().map(|name| json!({"name": name})).collect();
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "default", "namespace": namespace},
        "imagePullSecrets": refs,
    }))
    .unwrap()
}

/// The captured Pod (or Deployment) in `namespace`, every image set to `image`, pull secrets as given.
fn pod_review(namespace: &str, image: &str, secrets: Option<&[&str]>) -> Value {
    review("01-create-pod-main-web.json", "/request/object/spec", namespace, image, secrets)
}

fn deployment_review(namespace: &str, image: &str, secrets: Option<&[&str]>) -> Value {
    review(
        "02-create-deployment-main-api.json",
        "/request/object/spec/template/spec",
        namespace,
        image,
        secrets,
    )
}

fn review(name: &str, spec_pointer: &str, namespace: &str, image: &str, secrets: Option<&[&str]>) -> Value {
    let mut review = fixture(name).unwrap();
    review["request"]["namespace"] = json!(namespace);
    review["request"]["object"]["metadata"]["namespace"] = json!(namespace);
    let spec = review.pointer_mut(spec_pointer).unwrap();
    for list in ["containers", "initContainers"] {
        if let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for container in containers {
                container["image"] = json!(image);
            }
        }
    }
    // Only the app container, so each case has one image and one finding.
    if let Some(object) = spec.as_object_mut() {
        object.remove("initContainers");
        object.remove("nodeSelector");
        object.remove("affinity");
    }
    if let Some(containers) = spec.get_mut("containers").and_then(Value::as_array_mut) {
        containers.truncate(1);
    }
    match secrets {
        Some(names) => {
            spec["imagePullSecrets"] =
                json!(names.iter().map(|name| json!({"name": name})).collect::<Vec<_>>())
        }
        None => {
            if let Some(object) = spec.as_object_mut() {
                object.remove("imagePullSecrets");
            }
        }
    }
    review
}

fn codes(answer: &Answer) -> Vec<String> {
    answer.codes()
}

struct Setup {
    control_plane: ControlPlane,
    api: ApiFaults,
    private: RegistryProcess,
    public: RegistryProcess,
    webhook: InProcess,
    /// The namespaces of this setup, by role: shop, team-a, team-b, sa.
    shop: String,
    team_a: String,
    team_b: String,
    sa: String,
}

impl Setup {
    async fn start() -> Option<Setup> {
        let control_plane = ControlPlane::shared(Options { controller_manager: false }).await.unwrap()?;
        let api = ApiFaults::start(&control_plane).await.unwrap();
        let client = control_plane.client().await.unwrap();
        let private = RegistryProcess::start_tls_auth(USER, PASSWORD).await.unwrap();
        Seeder::new(&private)
            .unwrap()
            .push_image("team/app", "v1", &ImageSpec::linux("amd64"))
            .await
            .unwrap();
        let public = RegistryProcess::start_plain().await.unwrap();
        Seeder::new(&public).unwrap().push_image("app", "v1", &ImageSpec::linux("amd64")).await.unwrap();
        let host = private.host();
        // Every setup's node is alike (linux/amd64, untainted): they may share the cluster.
        let node = format!("n1-{}", pullguard_tests::control_plane::random_suffix());
        let labels = json!({"kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"});
        create_ready_node(&client, &node, labels, vec![]).await.unwrap();
        let shop = control_plane.namespace("shop", &[]).await.unwrap();
        let team_a = control_plane.namespace("team-a", &[]).await.unwrap();
        let team_b = control_plane.namespace("team-b", &[]).await.unwrap();
        let sa = control_plane.namespace("sa", &[]).await.unwrap();
        let json = "kubernetes.io/dockerconfigjson";
        let key = ".dockerconfigjson";
        let secrets = [
            secret(&shop, "good", json, key, json!({ host.clone(): auth_entry(USER, PASSWORD) })),
            secret(&shop, "wrong", json, key, json!({ host.clone(): auth_entry(USER, WRONG_PASSWORD) })),
            secret(&shop, "elsewhere", json, key, json!({"other.example:5000": auth_entry(USER, PASSWORD)})),
            secret(&shop, "opaque", "Opaque", key, json!({ host.clone(): auth_entry(USER, PASSWORD) })),
            // One field edited after a rotation: the kubelet pulls with what `auth` says.
            secret(
                &shop,
                "stale-auth",
                json,
                key,
                json!({ host.clone(): {
                "username": USER, "password": PASSWORD,
                "auth": STANDARD.encode(format!("{USER}:{WRONG_PASSWORD}"))} }),
            ),
            secret(
                &shop,
                "stale-password",
                json,
                key,
                json!({ host.clone(): {
                "username": USER, "password": WRONG_PASSWORD,
                "auth": STANDARD.encode(format!("{USER}:{PASSWORD}"))} }),
            ),
            secret(&team_a, "good", json, key, json!({ host.clone(): auth_entry(USER, PASSWORD) })),
            secret(&sa, "via-account", json, key, json!({ host.clone(): auth_entry(USER, PASSWORD) })),
        ];
        for secret in secrets {
            let namespace = secret.metadata.namespace.clone().unwrap();
            Api::<Secret>::namespaced(client.clone(), &namespace)
                .create(&PostParams::default(), &secret)
                .await
                .unwrap();
        }
        let account = service_account(&sa, &["via-account"]);
        Api::<ServiceAccount>::namespaced(client, &sa)
            .patch("default", &PatchParams::default(), &Patch::Merge(serde_json::to_value(&account).unwrap()))
            .await
            .unwrap();
        let config = Config {
            registries: vec![registry_settings(&private), registry_settings(&public)],
            ..Config::default()
        };
        let webhook =
            InProcess::start_with_cluster(config, Keyring::default(), api.client().unwrap()).unwrap();
        webhook.wait_ready(Duration::from_secs(20)).await.unwrap();
        Some(Setup { control_plane, api, private, public, webhook, shop, team_a, team_b, sa })
    }

    fn image(&self) -> String {
        format!("{}/team/app:v1", self.private.host())
    }

    /// Manifest reads the registry refused for lack of credentials.
    fn unauthorized_reads(&self) -> usize {
        self.private
            .access_log()
            .iter()
            .filter(|entry| entry.path.contains("/manifests/") && entry.status == 401)
            .count()
    }
}

#[tokio::test]
async fn every_credential_case_through_the_webhook() {
    // Everything pullguard logs during the test, at trace level, for the leak check.
    let logs = LogBuffer::default();
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(logs.clone())
        .with_ansi(false)
        .try_init();
    let Some(setup) = Setup::start().await else { return };
    let image = setup.image();
    let public_image = format!("{}/app:v1", setup.public.host());
    let cases: Vec<(&str, Value, Vec<&str>, bool)> = vec![
        ("no secret", pod_review(&setup.shop, &image, None), vec!["PG201"], false),
        ("missing secret", pod_review(&setup.shop, &image, Some(&["nope"])), vec!["PG202"], false),
        (
            "secret for another host",
            pod_review(&setup.shop, &image, Some(&["elsewhere"])),
            vec!["PG204"],
            false,
        ),
        ("wrong password", pod_review(&setup.shop, &image, Some(&["wrong"])), vec!["PG205"], false),
        (
            "right password, stale auth: auth wins",
            pod_review(&setup.shop, &image, Some(&["stale-auth"])),
            vec!["PG205"],
            false,
        ),
        (
            "stale password, right auth: auth wins",
            pod_review(&setup.shop, &image, Some(&["stale-password"])),
            vec![],
            true,
        ),
        // A type whose key does not match it (dockerconfigjson holding `.dockercfg`) cannot
        // exist: the API server's validation refuses such a Secret.
        ("wrong type", pod_review(&setup.shop, &image, Some(&["opaque"])), vec!["PG203"], false),
        ("correct secret on the pod", pod_review(&setup.shop, &image, Some(&["good"])), vec![], true),
        (
            "wrong then right: tried in order",
            pod_review(&setup.shop, &image, Some(&["wrong", "good"])),
            vec![],
            true,
        ),
        ("correct secret via the service account", deployment_review(&setup.sa, &image, None), vec![], true),
        (
            "anonymous registry, needless secret",
            pod_review(&setup.shop, &public_image, Some(&["good"])),
            vec![],
            true,
        ),
        (
            "anonymous registry, missing secret",
            pod_review(&setup.shop, &public_image, Some(&["nope"])),
            vec!["PG202"],
            true,
        ),
    ];
    for (name, review, expected, expect_allowed) in cases {
        let answer = setup.webhook.review(&review).await.unwrap();
        assert_eq!(codes(&answer), expected, "{name}: {answer:?}");
        assert_eq!(answer.allowed, expect_allowed, "{name}: {answer:?}");
    }

    // PG204 names the keys that were present; the needless-secret warning says it is not needed.
    let answer = setup.webhook.review(&pod_review(&setup.shop, &image, Some(&["elsewhere"]))).await.unwrap();
    let message = answer.message.as_str();
    assert!(message.contains("other.example:5000"), "{message}");
    // A usable secret exists in the namespace but is not referenced: the message says so.
    let answer = setup.webhook.review(&pod_review(&setup.shop, &image, None)).await.unwrap();
    let message = answer.message.as_str();
    // Only secrets the registry accepts are named: `wrong` and `stale-auth` match the host, but the
    // registry rejects what they hold.
    assert!(message.contains("add imagePullSecrets: [good, stale-password]"), "{message}");

    // Secrets are read through cached GETs: repeated admissions do not ask the API again.
    setup.api.clear_requests();
    for _ in 0..5 {
        setup.webhook.post(&pod_review(&setup.shop, &image, Some(&["good"]))).await.unwrap();
    }
    let secret_reads = setup.api.request_count(&format!("/api/v1/namespaces/{}/secrets", setup.shop));
    assert_eq!(secret_reads, 0, "served from the cache");

    let metrics = setup.webhook.metrics().await.unwrap();
    assert!(metrics.contains("pullguard_findings_total{code=\"PG205\""), "{metrics}");
    for secret in [PASSWORD, WRONG_PASSWORD] {
        assert!(!metrics.contains(secret), "a credential reached the metrics");
    }

    let captured = logs.text();
    assert!(!captured.is_empty(), "the trace subscriber captured nothing");
    for secret in [PASSWORD, WRONG_PASSWORD, &STANDARD.encode(format!("{USER}:{PASSWORD}"))] {
        assert!(!captured.contains(secret), "a credential reached the logs");
    }
}

#[tokio::test]
async fn one_namespace_secret_never_admits_another_namespace() {
    let Some(setup) = Setup::start().await else { return };
    let image = setup.image();
    let with_secret = pod_review(&setup.team_a, &image, Some(&["good"]));
    let without = pod_review(&setup.team_b, &image, None);

    // A first, then B: B is denied although A's lookup is cached.
    let answer = setup.webhook.review(&with_secret).await.unwrap();
    assert!(answer.allowed, "{answer:?}");
    let refused_before = setup.unauthorized_reads();
    let answer = setup.webhook.review(&without).await.unwrap();
    assert!(!answer.allowed);
    assert_eq!(codes(&answer), vec!["PG201"]);
    assert!(
        setup.unauthorized_reads() > refused_before,
        "B's lookup went to the registry without credentials"
    );

    // B again, then A again, both warm: the verdicts hold in either order.
    let answer = setup.webhook.review(&without).await.unwrap();
    assert!(!answer.allowed);
    let answer = setup.webhook.review(&with_secret).await.unwrap();
    assert!(answer.allowed);
    let answer = setup.webhook.review(&without).await.unwrap();
    assert!(!answer.allowed);
}

#[tokio::test]
async fn the_reverse_order_with_a_cold_cache() {
    let Some(setup) = Setup::start().await else { return };
    let image = setup.image();
    let answer = setup.webhook.review(&pod_review(&setup.team_b, &image, None)).await.unwrap();
    assert!(!answer.allowed);
    let answer = setup.webhook.review(&pod_review(&setup.team_a, &image, Some(&["good"]))).await.unwrap();
    assert!(answer.allowed, "A's secret is used although B's anonymous miss is cached: {answer:?}");
}

#[tokio::test]
async fn a_secret_created_after_a_denial_is_seen_without_a_restart() {
    let Some(setup) = Setup::start().await else { return };
    let image = setup.image();
    let review = pod_review(&setup.team_b, &image, Some(&["late"]));
    let answer = setup.webhook.review(&review).await.unwrap();
    assert_eq!(codes(&answer), vec!["PG202"]);
    let host = setup.private.host();
    let late = secret(
        &setup.team_b,
        "late",
        "kubernetes.io/dockerconfigjson",
        ".dockerconfigjson",
        json!({ host: auth_entry(USER, PASSWORD) }),
    );
    let client = setup.control_plane.client().await.unwrap();
    Api::<Secret>::namespaced(client, &setup.team_b).create(&PostParams::default(), &late).await.unwrap();
    setup
        .webhook
        .review_until(&review, "the new secret in use", Duration::from_secs(20), |answer| answer.allowed)
        .await
        .unwrap();
}

#[tokio::test]
async fn registries_pulled_with_node_credentials_are_not_verified_rather_than_wrong() {
    let Some(setup) = Setup::start().await else { return };
    let mut settings = registry_settings(&setup.private);
    settings.node_credentials = true;
    let config = Config { registries: vec![settings], ..Config::default() };
    let webhook =
        InProcess::start_with_cluster(config, Keyring::default(), setup.api.client().unwrap()).unwrap();
    webhook.wait_ready(Duration::from_secs(20)).await.unwrap();
    let answer = webhook.review(&pod_review(&setup.shop, &setup.image(), None)).await.unwrap();
    assert!(answer.allowed, "{answer:?}");
    assert_eq!(codes(&answer), vec!["PG200"]);
    assert!(answer.warnings.is_empty(), "an info is not a warning: {answer:?}");
}
