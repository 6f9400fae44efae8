//! The webhook with a Kubernetes API behind it (served by the harness, spoken to by kube's real
//! client and watches): node pools decide the platform checks, namespace labels decide the mode,
//! and readiness waits for the watches.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::core::v1::{Namespace, Node};
use pullguard::config::{Config, Mode};
use pullguard::credentials::Keyring;
use pullguard_tests::{
    kubeapi::FakeApiServer,
    registry::RegistryProcess,
    seed::{Format, ImageSpec, IndexEntry, Seeder},
    webhook::{Webhook, fixture, registry_settings},
};
use serde_json::{Value, json};

fn node(name: &str, labels: &[(&str, &str)], taints: Value) -> Node {
    let labels: BTreeMap<String, String> =
        labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {"taints": taints},
    }))
    .unwrap()
}

fn namespace(name: &str, mode: Option<&str>) -> Namespace {
    let labels: BTreeMap<String, String> =
        mode.map(|mode| ("pullguard.io/mode".to_string(), mode.to_string())).into_iter().collect();
    serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}),
    )
    .unwrap()
}

fn pull_secret(name: &str, host: &str, user: &str, password: &str) -> k8s_openapi::api::core::v1::Secret {
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let config = json!({"auths": {host: {"auth": auth}}}).to_string();
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": "shop"},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64::engine::general_purpose::STANDARD.encode(config)},
    }))
    .unwrap()
}

/// Rewrites every `image` field of a review.
fn with_image(mut review: Value, image: &str) -> Value {
    fn walk(value: &mut Value, image: &str) {
        match value {
            Value::Object(object) => {
                for (key, child) in object.iter_mut() {
                    if key == "image" {
                        *child = Value::String(image.to_string());
                    } else {
                        walk(child, image);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|item| walk(item, image)),
            _ => {}
        }
    }
    walk(&mut review, image);
    review
}

fn codes(body: &Value) -> Vec<String> {
    let findings = body["response"]["auditAnnotations"]["findings"].as_str().unwrap_or("[]");
    let findings: Vec<Value> = serde_json::from_str(findings).unwrap();
    let mut codes: Vec<String> = findings.iter().map(|f| f["code"].as_str().unwrap().to_string()).collect();
    codes.sort();
    codes.dedup();
    codes
}

fn allowed(body: &Value) -> bool {
    body["response"]["allowed"].as_bool().unwrap()
}

struct Cluster {
    api: FakeApiServer,
    registry: RegistryProcess,
}

impl Cluster {
    async fn start() -> Cluster {
        let api = FakeApiServer::start().await.unwrap();
        for (name, pool, arch) in [("general-1", "general", "amd64"), ("general-2", "general", "amd64")] {
            api.apply(&node(
                name,
                &[
                    ("cloud.google.com/gke-nodepool", pool),
                    ("kubernetes.io/arch", arch),
                    ("kubernetes.io/os", "linux"),
                ],
                json!([]),
            ))
            .unwrap();
        }
        api.apply(&node(
            "arm-1",
            &[
                ("cloud.google.com/gke-nodepool", "arm-pool"),
                ("kubernetes.io/arch", "arm64"),
                ("kubernetes.io/os", "linux"),
            ],
            json!([{"key": "arch", "value": "arm64", "effect": "NoSchedule"}]),
        ))
        .unwrap();
        api.apply(&node(
            "win-1",
            &[
                ("cloud.google.com/gke-nodepool", "win"),
                ("kubernetes.io/arch", "amd64"),
                ("kubernetes.io/os", "windows"),
                ("node.kubernetes.io/windows-build", "10.0.20348"),
            ],
            json!([]),
        ))
        .unwrap();
        api.apply(&namespace("shop", None)).unwrap();

        let registry = RegistryProcess::start_plain().await.unwrap();
        // The captured pods name `regcred`; the anonymous registry ignores what it holds.
        api.apply(&pull_secret("regcred", &registry.host(), "robot", "unused")).unwrap();
        let seeder = Seeder::new(&registry).unwrap();
        seeder.push_image("amdonly", "v1", &ImageSpec::linux("amd64")).await.unwrap();
        let entries =
            [IndexEntry::image(ImageSpec::linux("amd64")), IndexEntry::image(ImageSpec::linux("arm64/v8"))];
        seeder.push_index("multi", "v1", &entries, Format::Oci).await.unwrap();
        seeder.push_image("win", "ltsc2019", &ImageSpec::windows("amd64", "10.0.17763.5830")).await.unwrap();
        seeder.push_image("win", "ltsc2022", &ImageSpec::windows("amd64", "10.0.20348.2700")).await.unwrap();
        Cluster { api, registry }
    }

    fn config(&self) -> Config {
        Config { registries: vec![registry_settings(&self.registry)], ..Config::default() }
    }

    async fn webhook(&self, config: Config) -> Webhook {
        let webhook = Webhook::start_with_cluster(config, Keyring::default(), self.api.client().unwrap())
            .await
            .unwrap();
        webhook.wait_ready(Duration::from_secs(10)).await.unwrap();
        webhook
    }

    fn image(&self, name: &str) -> String {
        format!("{}/{name}", self.registry.host())
    }
}

#[tokio::test]
async fn platform_checks_follow_the_node_pools() {
    let cluster = Cluster::start().await;
    let webhook = cluster.webhook(cluster.config()).await;
    let pod = fixture("01-create-pod-main-web.json").unwrap();
    let deployment = fixture("02-create-deployment-main-api.json").unwrap();
    let windows_daemonset = fixture("17-create-daemonset-main-agent.json").unwrap();

    // The pod selects the arm pool: a multi-arch image is fine, an amd64-only one cannot run there.
    let (_, body) = webhook.post(&with_image(pod.clone(), &cluster.image("multi:v1"))).await.unwrap();
    assert!(allowed(&body), "{body}");
    assert!(codes(&body).is_empty(), "{body}");
    let (_, body) = webhook.post(&with_image(pod.clone(), &cluster.image("amdonly:v1"))).await.unwrap();
    assert!(!allowed(&body));
    let message = body["response"]["status"]["message"].as_str().unwrap();
    assert!(message.contains("PG301") && message.contains("arm-pool"), "{message}");

    // No selector: Linux and Windows nodes are both candidates, so a Linux image only fits some.
    let (_, body) =
        webhook.post(&with_image(deployment.clone(), &cluster.image("amdonly:v1"))).await.unwrap();
    assert!(allowed(&body));
    assert_eq!(codes(&body), vec!["PG302"]);
    let warnings = body["response"]["warnings"].to_string();
    assert!(warnings.contains("PG302"), "{warnings}");

    // Windows nodes run build 10.0.20348: an ltsc2019 image does not match, ltsc2022 does.
    let (_, body) =
        webhook.post(&with_image(windows_daemonset.clone(), &cluster.image("win:ltsc2019"))).await.unwrap();
    assert!(!allowed(&body));
    assert_eq!(codes(&body), vec!["PG303"]);
    let (_, body) =
        webhook.post(&with_image(windows_daemonset, &cluster.image("win:ltsc2022"))).await.unwrap();
    assert!(allowed(&body), "{body}");
    assert!(codes(&body).is_empty(), "{body}");

    // A pool scaled to zero: the selector still names the platform.
    let mut scaled = with_image(pod.clone(), &cluster.image("amdonly:v1"));
    scaled["request"]["object"]["spec"]["nodeSelector"]["cloud.google.com/gke-nodepool"] = json!("gpu-pool");
    let (_, body) = webhook.post(&scaled).await.unwrap();
    assert!(!allowed(&body));
    assert_eq!(codes(&body), vec!["PG301"]);
    // ... and when it names none, the check is skipped with an info finding.
    scaled["request"]["object"]["spec"]["nodeSelector"] =
        json!({"cloud.google.com/gke-nodepool": "gpu-pool"});
    let (_, body) = webhook.post(&scaled).await.unwrap();
    assert!(allowed(&body));
    assert_eq!(codes(&body), vec!["PG300"]);
    assert!(body["response"]["warnings"].is_null(), "infos are not warnings: {body}");

    // The inventory follows the cluster: without the Windows node the deployment fits everywhere.
    assert!(cluster.api.delete::<Node>(None, "win-1"));
    let review = with_image(deployment, &cluster.image("amdonly:v1"));
    let started = std::time::Instant::now();
    loop {
        let (_, body) = webhook.post(&review).await.unwrap();
        if codes(&body).is_empty() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "node deletion never seen: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn namespace_labels_set_the_mode() {
    let cluster = Cluster::start().await;
    let bad =
        with_image(fixture("02-create-deployment-main-api.json").unwrap(), &cluster.image("amdonly:gone"));

    cluster.api.apply(&namespace("shop", Some("warn"))).unwrap();
    let enforcing = cluster.webhook(cluster.config()).await;
    let (_, body) = enforcing.post(&bad).await.unwrap();
    assert!(allowed(&body), "warn namespace: {body}");
    assert!(body["response"]["warnings"].to_string().contains("PG101"));
    assert_eq!(body["response"]["auditAnnotations"]["mode"], "warn");

    // The label is followed live, and may tighten as well as relax.
    cluster.api.apply(&namespace("shop", Some("enforce"))).unwrap();
    let warning = cluster.webhook(Config { mode: Mode::Warn, ..cluster.config() }).await;
    let started = std::time::Instant::now();
    loop {
        let (_, body) = warning.post(&bad).await.unwrap();
        if !allowed(&body) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "label change never seen: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // An object annotation still only relaxes the namespace's mode.
    let mut relaxed = bad.clone();
    relaxed["request"]["object"]["metadata"]["annotations"]["pullguard.io/mode"] = json!("audit");
    let (_, body) = warning.post(&relaxed).await.unwrap();
    assert!(allowed(&body));
    assert!(body["response"]["warnings"].is_null());
}

#[tokio::test]
async fn readiness_waits_for_the_watches() {
    let cluster = Cluster::start().await;
    cluster.api.set_unavailable(true);
    let webhook =
        Webhook::start_with_cluster(cluster.config(), Keyring::default(), cluster.api.client().unwrap())
            .await
            .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(webhook.readyz().await.unwrap(), 503);
    // While not synced it still answers, without platform data.
    let review = with_image(fixture("01-create-pod-main-web.json").unwrap(), &cluster.image("amdonly:v1"));
    let (status, body) = webhook.post(&review).await.unwrap();
    assert_eq!(status, 200);
    assert!(allowed(&body));
    assert_eq!(codes(&body), vec!["PG300"]);
    cluster.api.set_unavailable(false);
    webhook.wait_ready(Duration::from_secs(20)).await.unwrap();
    let (_, body) = webhook.post(&review).await.unwrap();
    assert_eq!(codes(&body), vec!["PG301"]);
}

/// A Deployment's template pointed at the arm pool (selector plus the pool's toleration).
fn arm_deployment(image: &str) -> Value {
    let mut review = with_image(fixture("02-create-deployment-main-api.json").unwrap(), image);
    let spec = &mut review["request"]["object"]["spec"]["template"]["spec"];
    spec["nodeSelector"] = json!({"cloud.google.com/gke-nodepool": "arm-pool"});
    spec["tolerations"] =
        json!([{"key": "arch", "operator": "Equal", "value": "arm64", "effect": "NoSchedule"}]);
    review
}

#[tokio::test]
async fn acceptance_deployments_pods_zero_nodes_and_new_pools() {
    let cluster = Cluster::start().await;
    let webhook = cluster.webhook(cluster.config()).await;

    // A Deployment selecting the arm64 pool: amd64-only is denied naming the pool and platforms.
    let (_, body) = webhook.post(&arm_deployment(&cluster.image("amdonly:v1"))).await.unwrap();
    assert!(!allowed(&body));
    let message = body["response"]["status"]["message"].as_str().unwrap();
    assert!(message.contains("PG301"), "{message}");
    assert!(message.contains("cloud.google.com/gke-nodepool=arm-pool"), "{message}");
    assert!(message.contains("built for linux/amd64"), "{message}");
    let (_, body) = webhook.post(&arm_deployment(&cluster.image("multi:v1"))).await.unwrap();
    assert!(allowed(&body), "{body}");

    // A Pod with no selector in the mixed cluster: PG302 naming the pools that can run it.
    let mut pod = with_image(fixture("01-create-pod-main-web.json").unwrap(), &cluster.image("amdonly:v1"));
    let spec = &mut pod["request"]["object"]["spec"];
    spec["nodeSelector"] = Value::Null;
    spec["affinity"] = Value::Null;
    let (_, body) = webhook.post(&pod).await.unwrap();
    assert!(allowed(&body));
    assert_eq!(codes(&body), vec!["PG302"]);
    let findings = body["response"]["auditAnnotations"]["findings"].as_str().unwrap();
    assert!(findings.contains("It runs on cloud.google.com/gke-nodepool=general"), "{findings}");

    // A new pool arrives through the watch and changes the verdict without a restart.
    let mut new_pool =
        with_image(fixture("02-create-deployment-main-api.json").unwrap(), &cluster.image("amdonly:v1"));
    new_pool["request"]["object"]["spec"]["template"]["spec"]["nodeSelector"] =
        json!({"cloud.google.com/gke-nodepool": "new-arm"});
    let (_, body) = webhook.post(&new_pool).await.unwrap();
    assert_eq!(codes(&body), vec!["PG300"], "no node yet: not verified");
    cluster
        .api
        .apply(&node(
            "new-arm-1",
            &[
                ("cloud.google.com/gke-nodepool", "new-arm"),
                ("kubernetes.io/arch", "arm64"),
                ("kubernetes.io/os", "linux"),
            ],
            json!([]),
        ))
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        let (_, body) = webhook.post(&new_pool).await.unwrap();
        if codes(&body) == vec!["PG301"] {
            assert!(body["response"]["status"]["message"].as_str().unwrap().contains("new-arm"));
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "new pool never seen: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_cluster_with_zero_nodes_uses_the_selector_platform() {
    let api = FakeApiServer::start().await.unwrap();
    let registry = RegistryProcess::start_plain().await.unwrap();
    Seeder::new(&registry).unwrap().push_image("amdonly", "v1", &ImageSpec::linux("amd64")).await.unwrap();
    let config = Config { registries: vec![registry_settings(&registry)], ..Config::default() };
    let webhook =
        Webhook::start_with_cluster(config, Keyring::default(), api.client().unwrap()).await.unwrap();
    webhook.wait_ready(Duration::from_secs(10)).await.unwrap();
    let image = format!("{}/amdonly:v1", registry.host());
    let mut review = with_image(fixture("02-create-deployment-main-api.json").unwrap(), &image);
    review["request"]["object"]["spec"]["template"]["spec"]["nodeSelector"] =
        json!({"kubernetes.io/arch": "arm64"});
    let (_, body) = webhook.post(&review).await.unwrap();
    assert!(!allowed(&body));
    assert_eq!(codes(&body), vec!["PG301"]);
    review["request"]["object"]["spec"]["template"]["spec"]["nodeSelector"] =
        json!({"kubernetes.io/arch": "amd64"});
    let (_, body) = webhook.post(&review).await.unwrap();
    assert!(allowed(&body));
    assert!(codes(&body).is_empty(), "{body}");
}
