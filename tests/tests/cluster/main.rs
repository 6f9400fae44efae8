//! The webhook with a real kube-apiserver behind it (reached through the fault proxy): node pools
//! decide the platform checks, namespace labels decide the mode, and readiness waits for the
//! watches.
//!
//! Nodes are cluster-wide and the control plane is shared by the tests of this binary: every
//! node a test makes carries a taint of that test's own (its scope), and its pods tolerate it,
//! so each test sees exactly its own pools.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::core::v1::{Namespace, Node, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use pullguard_core::config::{Config, Mode};
use pullguard_core::credentials::Keyring;
use pullguard_tests::{
    answer::{Answer, Reviews},
    api_faults::{ApiFaults, Fault},
    control_plane::{ControlPlane, Options, random_suffix},
    in_process::InProcess,
    installed::create_ready_node,
    registry::RegistryProcess,
    seed::{Format, ImageSpec, IndexEntry, Seeder},
    webhook::{fixture, registry_settings, spec_pointer},
};
use serde_json::{Value, json};

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

fn codes(answer: &Answer) -> Vec<String> {
    let mut codes = answer.codes();
    codes.dedup();
    codes
}

/// The key of the taint that keeps each test's nodes its own.
const SCOPE_TAINT: &str = "pullguard.test/scope";

struct Cluster {
    control_plane: ControlPlane,
    api: ApiFaults,
    registry: RegistryProcess,
    scope: String,
    /// The namespace the reviews are sent for.
    namespace: String,
}

impl Cluster {
    async fn start() -> Option<Cluster> {
        let control_plane = ControlPlane::shared(Options { controller_manager: false }).await.unwrap()?;
        let api = ApiFaults::start(&control_plane).await.unwrap();
        let scope = random_suffix();
        let namespace = control_plane.namespace("shop", &[]).await.unwrap();
        let registry = RegistryProcess::start_plain().await.unwrap();
        // The captured pods name `regcred`; the anonymous registry ignores what it holds.
        let config = json!({"auths": {registry.host(): {"auth": "cm9ib3Q6dW51c2Vk"}}}).to_string();
        let regcred: Secret = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "regcred"},
            "type": "kubernetes.io/dockerconfigjson",
            "stringData": {".dockerconfigjson": config},
        }))
        .unwrap();
        let client = control_plane.client().await.unwrap();
        Api::<Secret>::namespaced(client, &namespace).create(&PostParams::default(), &regcred).await.unwrap();
        let cluster = Cluster { control_plane, api, registry, scope, namespace };
        for (name, pool, arch) in [("general-1", "general", "amd64"), ("general-2", "general", "amd64")] {
            cluster
                .add_node(name, &[("cloud.google.com/gke-nodepool", pool), ("kubernetes.io/arch", arch)], &[])
                .await;
        }
        cluster
            .add_node(
                "arm-1",
                &[("cloud.google.com/gke-nodepool", "arm-pool"), ("kubernetes.io/arch", "arm64")],
                &[("arch", "arm64")],
            )
            .await;
        cluster
            .add_node(
                "win-1",
                &[
                    ("cloud.google.com/gke-nodepool", "win"),
                    ("kubernetes.io/arch", "amd64"),
                    ("kubernetes.io/os", "windows"),
                    ("node.kubernetes.io/windows-build", "10.0.20348"),
                ],
                &[],
            )
            .await;

        let seeder = Seeder::new(&cluster.registry).unwrap();
        seeder.push_image("amdonly", "v1", &ImageSpec::linux("amd64")).await.unwrap();
        let entries =
            [IndexEntry::image(ImageSpec::linux("amd64")), IndexEntry::image(ImageSpec::linux("arm64/v8"))];
        seeder.push_index("multi", "v1", &entries, Format::Oci).await.unwrap();
        seeder.push_image("win", "ltsc2019", &ImageSpec::windows("amd64", "10.0.17763.5830")).await.unwrap();
        seeder.push_image("win", "ltsc2022", &ImageSpec::windows("amd64", "10.0.20348.2700")).await.unwrap();
        Some(cluster)
    }

    /// A Ready node of this test (`<scope>-<name>`, Linux unless the labels say otherwise), tainted
    /// with the test's scope and `taints` (`key=value:NoSchedule`).
    async fn add_node(&self, name: &str, labels: &[(&str, &str)], taints: &[(&str, &str)]) {
        let mut label_map: BTreeMap<String, String> =
            labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        label_map.entry("kubernetes.io/os".to_owned()).or_insert_with(|| "linux".to_owned());
        let mut taint_list: Vec<Value> = taints
            .iter()
            .map(|(key, value)| json!({"key": key, "value": value, "effect": "NoSchedule"}))
            .collect();
        taint_list.push(json!({"key": SCOPE_TAINT, "value": self.scope, "effect": "NoSchedule"}));
        let client = self.control_plane.client().await.unwrap();
        create_ready_node(&client, &self.node_name(name), json!(label_map), taint_list).await.unwrap();
    }

    fn node_name(&self, name: &str) -> String {
        format!("{}-{name}", self.scope)
    }

    /// A captured review with every image set to `image`, sent for this test's namespace, its
    /// pod spec tolerating the test's scope.
    fn review(&self, fixture_name: &str, image: &str) -> Value {
        let mut review = with_image(fixture(fixture_name).unwrap(), image);
        review["request"]["namespace"] = json!(self.namespace);
        review["request"]["object"]["metadata"]["namespace"] = json!(self.namespace);
        let spec = review.pointer_mut(&spec_pointer(&review.clone(), "object")).unwrap();
        let toleration =
            json!({"key": SCOPE_TAINT, "operator": "Equal", "value": self.scope, "effect": "NoSchedule"});
        match spec.get_mut("tolerations").and_then(Value::as_array_mut) {
            Some(tolerations) => tolerations.push(toleration),
            None => spec["tolerations"] = json!([toleration]),
        }
        review
    }

    async fn label_namespace(&self, mode: Option<&str>) {
        let client = self.control_plane.client().await.unwrap();
        let patch = json!({"metadata": {"labels": {"pullguard.io/mode": mode}}});
        Api::<Namespace>::all(client)
            .patch(&self.namespace, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .unwrap();
    }

    fn config(&self) -> Config {
        Config { registries: vec![registry_settings(&self.registry)], ..Config::default() }
    }

    async fn webhook(&self, config: Config) -> InProcess {
        let webhook =
            InProcess::start_with_cluster(config, Keyring::default(), self.api.client().unwrap()).unwrap();
        webhook.wait_ready(Duration::from_secs(20)).await.unwrap();
        webhook
    }

    fn image(&self, name: &str) -> String {
        format!("{}/{name}", self.registry.host())
    }
}

mod modes;
mod pools;
