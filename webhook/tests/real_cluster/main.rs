//! pullguard as a real kube-apiserver (v1.36, with its controller manager) calls it: `pullguard
//! serve` installed with the webhook configuration of `deploy/base`, driven with kubectl as users
//! drive it and with kube's client. The control plane, the registries and the webhook are shared
//! by the tests of this binary (`pullguard_tests::installed`); each test has its own namespace.
//! The tests are grouped by subject in the modules below; the helpers here serve them all.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, ListParams, Patch, PatchParams};
use pullguard_tests::{
    control_plane::{KubectlOutput, Options},
    installed::{Installed, PRIVATE_PASSWORD, WEBHOOK_NAME},
    seed::ImageSpec,
    shared::eventually,
};
use serde_json::{Value, json};

/// The installation (with the controller manager), or return from the test.
macro_rules! installed_or_skip {
    () => {
        pullguard_tests::installed_or_skip!(Options { controller_manager: true })
    };
}

fn pod_spec(image: &str) -> Value {
    json!({"containers": [{"name": "app", "image": image}]})
}

/// A workload of `kind` named `name` whose pod template has `spec`.
fn workload(kind: &str, name: &str, spec: Value) -> Value {
    let labels = json!({"app": name});
    let template = json!({"metadata": {"labels": labels}, "spec": spec});
    let mut job_spec = spec.clone();
    job_spec["restartPolicy"] = json!("Never");
    let job_template = json!({"metadata": {"labels": labels}, "spec": job_spec});
    let (api_version, body) = match kind {
        "Pod" => ("v1", json!({"spec": spec})),
        "ReplicationController" => {
            ("v1", json!({"spec": {"replicas": 1, "selector": labels, "template": template}}))
        }
        "Deployment" | "ReplicaSet" | "DaemonSet" => (
            "apps/v1",
            json!({"spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": template}}),
        ),
        "StatefulSet" => (
            "apps/v1",
            json!({"spec": {"replicas": 1, "serviceName": name, "selector": {"matchLabels": labels}, "template": template}}),
        ),
        "Job" => ("batch/v1", json!({"spec": {"template": job_template}})),
        "CronJob" => (
            "batch/v1",
            json!({"spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": job_template}}}}),
        ),
        other => panic!("no builder for {other}"),
    };
    let mut object = body;
    object["apiVersion"] = json!(api_version);
    object["kind"] = json!(kind);
    object["metadata"] = json!({"name": name});
    if kind == "DaemonSet" {
        object["spec"].as_object_mut().unwrap().remove("replicas");
    }
    object
}

/// A denial as kubectl prints it: `Error from server (Forbidden): error when creating "STDIN":
/// admission webhook "images.pullguard.io" denied the request: pullguard: ...` (for an update,
/// kubectl puts the patch it sent between the two).
fn assert_denied(output: &KubectlOutput, verb: &str, code: &str) {
    assert!(!output.success, "expected a denial with {code}, kubectl said:\n{output:?}");
    let prefix = format!("Error from server (Forbidden): error when {verb}");
    let denial = format!("admission webhook \"{WEBHOOK_NAME}\" denied the request: pullguard: ");
    // kubectl prints the answer's `Warning:` lines first, then the error.
    let error: String =
        output.stderr.lines().skip_while(|line| line.starts_with("Warning: ")).collect::<Vec<_>>().join("\n");
    assert!(
        error.starts_with(&prefix) && error.contains(&denial),
        "kubectl did not print pullguard's denial:\n{}",
        output.stderr
    );
    assert!(output.stderr.contains(code), "the denial does not name {code}:\n{}", output.stderr);
}

fn assert_admitted(output: &KubectlOutput) {
    assert!(output.success, "expected kubectl to succeed:\n{output:?}");
}

/// Waits until the controller manager has made at least `count` objects of `K` in `namespace`,
/// and returns them.
async fn until_made<K>(installed: &Installed, namespace: &str, count: usize) -> Vec<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    let objects: Api<K> = Api::namespaced(installed.control_plane.client().await.unwrap(), namespace);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let list = objects.list(&ListParams::default()).await.unwrap().items;
        if list.len() >= count {
            return list;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the controller manager made {} of {count}",
            list.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the webhook has logged the admission of a `kind` in `namespace`, and returns the
/// namespace's admission lines (written in batches by a thread of their own).
async fn until_logged(installed: &Installed, namespace: &str, kind: &str) -> Vec<Value> {
    eventually("the admission in the log", Duration::from_secs(20), || {
        let logged = installed.logged_admissions(namespace);
        async move { logged.iter().any(|line| line["kind"] == kind) }
    })
    .await
    .unwrap();
    installed.logged_admissions(namespace)
}

/// kubectl's `Warning:` lines.
fn warnings(output: &KubectlOutput) -> Vec<&str> {
    output.stderr.lines().filter(|line| line.starts_with("Warning: ")).collect()
}

const KINDS: [&str; 8] = [
    "Pod",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
    "CronJob",
    "ReplicationController",
];

/// Applies `manifest` until it is admitted: pullguard learns namespace labels from a watch, so
/// the first admissions after a label is set may still see the configured mode.
async fn apply_once_label_is_seen(installed: &Installed, namespace: &str, manifest: &Value) -> KubectlOutput {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let output = installed.apply(namespace, manifest).await.unwrap();
        if output.success || tokio::time::Instant::now() >= deadline {
            return output;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

mod admission;
mod commands;
mod credentials;
mod node_pools;
