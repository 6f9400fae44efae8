//! pullguard as a real kube-apiserver (v1.36, with its controller manager) calls it: `pullguard
//! serve` installed with the webhook configuration of `deploy/base`, driven with kubectl as users
//! drive it and with kube's client. The control plane, the registries and the webhook are shared
//! by the tests of this binary (`pullguard_tests::installed`); each test has its own namespace.

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

async fn installed() -> Option<Installed> {
    Installed::shared(Path::new(env!("CARGO_BIN_EXE_pullguard")), Options { controller_manager: true })
        .await
        .expect("starting the control plane and installing pullguard")
}

/// The installation, or return from the test (the skip was announced on stderr).
macro_rules! installed_or_skip {
    () => {
        match installed().await {
            Some(installed) => installed,
            None => return,
        }
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

#[tokio::test]
async fn every_kind_is_checked_at_create_and_update() {
    let installed = installed_or_skip!();
    let namespace = installed.control_plane.namespace("kinds", &[]).await.unwrap();
    let good = format!("{}/app:v1", installed.registry.host);
    let also_good = format!("{}/amdonly:v1", installed.registry.host);
    let missing = format!("{}/app:v404", installed.registry.host);
    for kind in KINDS {
        let name = kind.to_lowercase();
        let denied = installed.apply(&namespace, &workload(kind, &name, pod_spec(&missing))).await.unwrap();
        assert_denied(&denied, "creating", "PG101");
        assert!(denied.stderr.contains(&missing), "{kind}: the denial names the image:\n{}", denied.stderr);

        let created = installed.apply(&namespace, &workload(kind, &name, pod_spec(&good))).await.unwrap();
        assert_admitted(&created);
        assert!(warnings(&created).is_empty(), "{kind}: no warnings for a good image:\n{}", created.stderr);

        if kind == "Pod" {
            // A Pod's image may change in place (the only update of its containers allowed).
            let updated = installed
                .kubectl(&["set", "image", "-n", &namespace, "pod/pod", &format!("app={missing}")], None)
                .await
                .unwrap();
            assert!(!updated.success && updated.stderr.contains("PG101"), "Pod update:\n{updated:?}");
            continue;
        }
        if kind == "Job" {
            // The API server refuses any change of a Job's template before webhooks run.
            continue;
        }
        let denied = installed.apply(&namespace, &workload(kind, &name, pod_spec(&missing))).await.unwrap();
        assert_denied(&denied, "applying patch", "PG101");
        let updated =
            installed.apply(&namespace, &workload(kind, &name, pod_spec(&also_good))).await.unwrap();
        assert_admitted(&updated);
    }
}

#[tokio::test]
async fn a_server_side_dry_run_is_denied_and_stores_nothing() {
    let installed = installed_or_skip!();
    let namespace = installed.control_plane.namespace("dry-run", &[]).await.unwrap();
    let missing = format!("{}/app:v404", installed.registry.host);
    let manifest = workload("Deployment", "dry", pod_spec(&missing));
    let output = installed
        .kubectl(&["apply", "--dry-run=server", "-n", &namespace, "-f", "-"], Some(&manifest.to_string()))
        .await
        .unwrap();
    assert_denied(&output, "creating", "PG101");
    let logged = installed.logged_admissions(&namespace);
    assert!(logged.iter().any(|line| line["dry_run"] == true), "the review carried dryRun: {logged:?}");
    let get = installed.kubectl(&["get", "deployment", "dry", "-n", &namespace], None).await.unwrap();
    assert!(!get.success && get.stderr.contains("NotFound"), "{get:?}");
}

#[tokio::test]
async fn namespace_labels_relax_the_mode_and_scale_is_never_blocked() {
    let installed = installed_or_skip!();
    let missing = format!("{}/app:v404", installed.registry.host);
    let manifest = workload("Deployment", "web", pod_spec(&missing));

    let warn = installed.control_plane.namespace("warn", &[("pullguard.io/mode", "warn")]).await.unwrap();
    let output = apply_once_label_is_seen(&installed, &warn, &manifest).await;
    let lines = warnings(&output);
    assert!(lines.iter().any(|line| line.contains("PG101") && line.contains("v404")), "{output:?}");

    let audit = installed.control_plane.namespace("audit", &[("pullguard.io/mode", "audit")]).await.unwrap();
    let output = apply_once_label_is_seen(&installed, &audit, &manifest).await;
    assert!(warnings(&output).is_empty(), "audit mode only records:\n{output:?}");
    let logged = installed.logged_admissions(&audit);
    assert!(
        logged
            .iter()
            .any(|line| line["verdict"] == "audit:allowed" && line["codes"].to_string().contains("PG101")),
        "audit mode records the finding: {logged:?}"
    );

    // The warn namespace turns to enforce: its Deployment with a missing image can still be
    // scaled, while a new one is denied.
    let relabel = installed
        .kubectl(&["label", "namespace", &warn, "pullguard.io/mode=enforce", "--overwrite"], None)
        .await;
    assert_admitted(&relabel.unwrap());
    let other = workload("Deployment", "other", pod_spec(&missing));
    eventually("the enforce label reaching pullguard", Duration::from_secs(20), || {
        let installed = &installed;
        let other = &other;
        let warn = &warn;
        async move { !installed.apply(warn, other).await.unwrap().success }
    })
    .await
    .unwrap();
    let scaled =
        installed.kubectl(&["scale", "deployment/web", "-n", &warn, "--replicas=3"], None).await.unwrap();
    assert_admitted(&scaled);
}

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

#[tokio::test]
async fn the_object_annotation_relaxes_and_warnings_reach_kubectl() {
    let installed = installed_or_skip!();
    let namespace = installed.control_plane.namespace("annotated", &[]).await.unwrap();
    let missing = format!("{}/app:v404", installed.registry.host);
    let mut manifest = workload("Deployment", "relaxed", pod_spec(&missing));
    manifest["metadata"]["annotations"] = json!({"pullguard.io/mode": "warn"});
    let output = installed.apply(&namespace, &manifest).await.unwrap();
    assert_admitted(&output);
    assert!(warnings(&output).iter().any(|line| line.contains("PG101")), "{output:?}");

    // A mutable tag is a warning in enforce mode: admitted, with a `Warning:` line.
    let seeder = installed.registry.seeder().unwrap();
    seeder.push_image("floating", "latest", &ImageSpec::linux("amd64")).await.unwrap();
    let floating = format!("{}/floating", installed.registry.host);
    let output =
        installed.apply(&namespace, &workload("Deployment", "floating", pod_spec(&floating))).await.unwrap();
    assert_admitted(&output);
    let lines = warnings(&output);
    assert!(lines.iter().any(|line| line.contains("PG601") && line.contains(&floating)), "{output:?}");
}

#[tokio::test]
async fn pods_created_by_controllers_are_not_sent() {
    let installed = installed_or_skip!();
    let namespace = installed.control_plane.namespace("owned", &[]).await.unwrap();
    let good = format!("{}/app:v1", installed.registry.host);
    assert_admitted(
        &installed.apply(&namespace, &workload("Deployment", "web", pod_spec(&good))).await.unwrap(),
    );

    until_made::<Pod>(&installed, &namespace, 1).await;
    // The ReplicaSet is sent (it is a workload); its line is written after the Pod's would have been.
    let logged = until_logged(&installed, &namespace, "ReplicaSet").await;
    assert!(
        !logged.iter().any(|line| line["kind"] == "Pod"),
        "the matchCondition keeps controller-owned Pods from pullguard: {logged:?}"
    );
}

#[tokio::test]
async fn pull_secrets_through_the_pod_and_through_its_service_account() {
    let installed = installed_or_skip!();
    let namespace = installed.control_plane.namespace("secrets", &[]).await.unwrap();
    let private = format!("{}/private/app:v1", installed.private_registry.host);
    assert_admitted(
        &installed.apply(&namespace, &installed.pull_secret("regcred", PRIVATE_PASSWORD)).await.unwrap(),
    );

    let mut with_secret = workload("Pod", "with-secret", pod_spec(&private));
    with_secret["spec"]["imagePullSecrets"] = json!([{"name": "regcred"}]);
    assert_admitted(&installed.apply(&namespace, &with_secret).await.unwrap());

    let without = installed.apply(&namespace, &workload("Pod", "without", pod_spec(&private))).await.unwrap();
    assert_denied(&without, "creating", "PG201");

    // The ServiceAccount admission plugin copies the account's pull secrets into a Pod that
    // names none, before validating webhooks run.
    let client = installed.control_plane.client().await.unwrap();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
    accounts
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({"imagePullSecrets": [{"name": "regcred"}]})),
        )
        .await
        .unwrap();
    let merged = installed.apply(&namespace, &workload("Pod", "merged", pod_spec(&private))).await.unwrap();
    assert_admitted(&merged);
    let pod = Api::<Pod>::namespaced(client, &namespace).get("merged").await.unwrap();
    let names: Vec<String> =
        pod.spec.unwrap().image_pull_secrets.unwrap_or_default().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["regcred"], "the API server merged the account's secret");

    // A template reads its service account's pull secrets itself.
    let mut template = workload("Deployment", "via-account", pod_spec(&private));
    template["spec"]["template"]["spec"]["serviceAccountName"] = json!("puller");
    let account = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "puller"},
                         "imagePullSecrets": [{"name": "regcred"}]});
    assert_admitted(&installed.apply(&namespace, &account).await.unwrap());
    assert_admitted(&installed.apply(&namespace, &template).await.unwrap());
}

#[tokio::test]
async fn node_pools_come_from_the_node_objects() {
    let installed = installed_or_skip!();
    let namespace = installed.control_plane.namespace("pools", &[]).await.unwrap();
    let host = &installed.registry.host;
    let on_pool = |name: &str, image: &str, pool: &str, toleration: (&str, &str)| {
        let mut spec = pod_spec(image);
        spec["nodeSelector"] = json!({"cloud.google.com/gke-nodepool": pool});
        spec["tolerations"] = json!([{"key": toleration.0, "operator": "Equal", "value": toleration.1, "effect": "NoSchedule"}]);
        workload("Deployment", name, spec)
    };
    let arm_toleration = ("kubernetes.io/arch", "arm64");
    let windows_toleration = ("os", "windows");

    let amd_on_arm = on_pool("amd-on-arm", &format!("{host}/amdonly:v1"), "arm-pool", arm_toleration);
    let denied = installed.apply(&namespace, &amd_on_arm).await.unwrap();
    assert_denied(&denied, "creating", "PG301");
    assert!(denied.stderr.contains("arm-pool"), "the denial names the pool:\n{}", denied.stderr);
    let arm_on_arm = on_pool("arm-on-arm", &format!("{host}/armonly:v1"), "arm-pool", arm_toleration);
    assert_admitted(&installed.apply(&namespace, &arm_on_arm).await.unwrap());

    let linux_on_windows = on_pool("linux-on-win", &format!("{host}/amdonly:v1"), "win", windows_toleration);
    assert_denied(&installed.apply(&namespace, &linux_on_windows).await.unwrap(), "creating", "PG301");
    let windows = on_pool("win-on-win", &format!("{host}/win:ltsc2022"), "win", windows_toleration);
    assert_admitted(&installed.apply(&namespace, &windows).await.unwrap());

    // Without a selector the taints keep pods on the general pool: an arm64-only image is
    // refused there.
    let untargeted = workload("Deployment", "arm-anywhere", pod_spec(&format!("{host}/armonly:v1")));
    assert_denied(&installed.apply(&namespace, &untargeted).await.unwrap(), "creating", "PG301");
}

#[tokio::test]
async fn kubectl_debug_checks_the_ephemeral_container() {
    let installed = installed_or_skip!();
    let namespace = installed.control_plane.namespace("debug", &[]).await.unwrap();
    let good = format!("{}/app:v1", installed.registry.host);
    let missing = format!("{}/app:v404", installed.registry.host);
    assert_admitted(&installed.apply(&namespace, &workload("Pod", "web", pod_spec(&good))).await.unwrap());

    let denied = installed
        .kubectl(&["debug", "-n", &namespace, "pod/web", &format!("--image={missing}"), "-c", "dbg"], None)
        .await
        .unwrap();
    assert!(!denied.success, "{denied:?}");
    assert!(
        denied.stderr.contains(&format!("admission webhook \"{WEBHOOK_NAME}\" denied the request"))
            && denied.stderr.contains("PG101"),
        "{denied:?}"
    );
    let admitted = installed
        .kubectl(&["debug", "-n", &namespace, "pod/web", &format!("--image={good}"), "-c", "dbg2"], None)
        .await
        .unwrap();
    assert_admitted(&admitted);
}

/// Runs the `pullguard` binary with `args` in `dir`.
async fn pullguard(args: &[&str], dir: &Path) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_pullguard"))
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .output()
        .await
        .unwrap()
}

/// Every object's resourceVersion in `namespace`, by kind and name: what a write would change.
async fn versions(installed: &Installed, namespace: &str) -> Vec<String> {
    let output = installed
        .kubectl(
            &["get", "deployments,replicasets,pods,jobs,cronjobs,serviceaccounts", "-n", namespace, "-o",
              "jsonpath={range .items[*]}{.kind}/{.metadata.name}@{.metadata.resourceVersion}{\"\\n\"}{end}"],
            None,
        )
        .await
        .unwrap();
    assert!(output.success, "{output:?}");
    let mut lines: Vec<String> = output.stdout.lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

#[tokio::test]
async fn audit_reads_the_live_cluster_with_read_only_rights() {
    let installed = installed_or_skip!();
    let host = &installed.registry.host;
    // Recorded only, so that the broken workloads exist for the audit to find.
    let namespace =
        installed.control_plane.namespace("audited", &[("pullguard.io/mode", "audit")]).await.unwrap();
    let broken = workload("Deployment", "broken", pod_spec(&format!("{host}/app:gone")));
    assert_admitted(&apply_once_label_is_seen(&installed, &namespace, &broken).await);
    assert_admitted(
        &installed
            .apply(&namespace, &workload("Deployment", "api", pod_spec(&format!("{host}/app:v1"))))
            .await
            .unwrap(),
    );
    assert_admitted(
        &installed
            .apply(&namespace, &workload("Pod", "lonely", pod_spec(&format!("{host}/armonly:v1"))))
            .await
            .unwrap(),
    );
    let mut nightly = workload("CronJob", "nightly", pod_spec(&format!("{host}/app:v1")));
    nightly["spec"]["suspend"] = json!(true);
    assert_admitted(&installed.apply(&namespace, &nightly).await.unwrap());
    // The controller manager makes the Deployments' ReplicaSets and Pods: copies of checked
    // templates, which audit skips as the webhook does.
    until_made::<Pod>(&installed, &namespace, 3).await;

    // The viewer may read what audit reads, and nothing else.
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": format!("audit-{namespace}")},
        "rules": [
            {"apiGroups": [""], "resources": ["pods", "replicationcontrollers", "nodes", "namespaces"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["secrets", "serviceaccounts"], "verbs": ["get"]},
            {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets", "daemonsets", "replicasets"], "verbs": ["list"]},
            {"apiGroups": ["batch"], "resources": ["jobs", "cronjobs"], "verbs": ["list"]}]});
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": format!("audit-{namespace}")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": format!("audit-{namespace}")},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": pullguard_tests::control_plane::VIEWER}]});
    assert_admitted(&installed.kubectl(&["apply", "-f", "-"], Some(&role.to_string())).await.unwrap());
    assert_admitted(&installed.kubectl(&["apply", "-f", "-"], Some(&binding.to_string())).await.unwrap());

    let before = versions(&installed, &namespace).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = installed.control_plane.viewer_kubeconfig.display().to_string();
    let config = installed.webhook.config.display().to_string();
    let output = pullguard(
        &["audit", "--config", &config, "--kubeconfig", &kubeconfig, "-n", &namespace, "--output", "json"],
        dir.path(),
    )
    .await;
    assert_eq!(output.status.code(), Some(1), "{}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let mut found: Vec<(String, String)> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["workload"].as_str().unwrap().to_owned(), f["code"].as_str().unwrap().to_owned()))
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            (format!("Deployment/{namespace}/broken"), "PG101".to_owned()),
            (format!("Pod/{namespace}/lonely"), "PG301".to_owned()),
        ]
    );
    assert_eq!(report["summary"]["by_code"], json!({"PG101": 1, "PG301": 1}));
    assert_eq!(versions(&installed, &namespace).await, before, "audit changed an object");

    // Exempt namespaces are not audited (the webhook never sees kube-system either).
    let system =
        workload("Deployment", &format!("broken-{namespace}"), pod_spec(&format!("{host}/app:gone")));
    assert_admitted(&installed.apply("kube-system", &system).await.unwrap());
    let output = pullguard(
        &["audit", "--config", &config, "--kubeconfig", &kubeconfig, "-n", "kube-system", "--output", "json"],
        dir.path(),
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stdout));
}

#[tokio::test]
async fn check_compares_manifests_with_the_live_node_pools() {
    let installed = installed_or_skip!();
    let host = &installed.registry.host;
    let mut spec = pod_spec(&format!("{host}/amdonly:v1"));
    spec["nodeSelector"] = json!({"cloud.google.com/gke-nodepool": "arm-pool"});
    spec["tolerations"] =
        json!([{"key": "kubernetes.io/arch", "operator": "Exists", "effect": "NoSchedule"}]);
    let manifest = workload("Deployment", "api", spec);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("deploy.json"), manifest.to_string()).unwrap();
    let kubeconfig = installed.control_plane.kubeconfig.display().to_string();
    let config = installed.webhook.config.display().to_string();
    let output = pullguard(
        &["check", "--config", &config, "--kubeconfig", &kubeconfig, "-f", "deploy.json", "--output", "json"],
        dir.path(),
    )
    .await;
    assert_eq!(output.status.code(), Some(1), "{}", String::from_utf8_lossy(&output.stdout));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let findings = report["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{report}");
    assert_eq!(findings[0]["code"], "PG301");
    let message = findings[0]["message"].as_str().unwrap();
    assert!(message.contains("cloud.google.com/gke-nodepool=arm-pool"), "{message}");

    // The same image for the general pool passes.
    let general = workload("Deployment", "api", pod_spec(&format!("{host}/amdonly:v1")));
    std::fs::write(dir.path().join("deploy.json"), general.to_string()).unwrap();
    let output = pullguard(
        &["check", "--config", &config, "--kubeconfig", &kubeconfig, "-f", "deploy.json", "--output", "json"],
        dir.path(),
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stdout));
}

#[tokio::test]
async fn kube_clients_get_the_same_answers_as_kubectl() {
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::api::PostParams;
    let installed = installed_or_skip!();
    let namespace = installed.control_plane.namespace("client", &[]).await.unwrap();
    let deployments: Api<Deployment> =
        Api::namespaced(installed.control_plane.client().await.unwrap(), &namespace);
    let good = format!("{}/app:v1", installed.registry.host);
    let missing = format!("{}/app:v404", installed.registry.host);
    let deployment = |image: &str| -> Deployment {
        serde_json::from_value(workload("Deployment", "api", pod_spec(image))).unwrap()
    };
    let denied = |result: Result<Deployment, kube::Error>, what: &str| match result {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{what}: {status:?}");
            assert!(
                status
                    .message
                    .starts_with(&format!("admission webhook \"{WEBHOOK_NAME}\" denied the request"))
                    && status.message.contains("PG101"),
                "{what}: {}",
                status.message
            );
        }
        other => panic!("{what}: expected a denial, got {other:?}"),
    };

    let dry_run = PostParams { dry_run: true, ..PostParams::default() };
    denied(deployments.create(&dry_run, &deployment(&missing)).await, "dry-run create");
    denied(deployments.create(&PostParams::default(), &deployment(&missing)).await, "create");
    deployments.create(&PostParams::default(), &deployment(&good)).await.unwrap();

    // Without a resourceVersion the replace is unconditional: the controller manager updates
    // the Deployment's status meanwhile, and a stale version would be a 409 before any webhook.
    denied(deployments.replace("api", &PostParams::default(), &deployment(&missing)).await, "update");
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": missing}]}}}});
    denied(deployments.patch("api", &PatchParams::default(), &Patch::Strategic(patch)).await, "patch");
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": good}]}}}});
    deployments.patch("api", &PatchParams::default(), &Patch::Strategic(patch)).await.unwrap();
}

/// `kubectl apply` of `manifest` in `namespace`, denied with `code`; then `fix` (kubectl
/// arguments and stdin), and the same apply at once is admitted: a denial rests on fresh reads,
/// not on what was cached before the fix.
async fn denied_then_fixed(
    installed: &Installed,
    namespace: &str,
    manifest: &Value,
    code: &str,
    fix: (&[&str], Option<String>),
) {
    assert_denied(&installed.apply(namespace, manifest).await.unwrap(), "creating", code);
    let fixed = installed.kubectl(fix.0, fix.1.as_deref()).await.unwrap();
    assert!(fixed.success, "{code}: the fix failed: {fixed:?}");
    let retried = installed.apply(namespace, manifest).await.unwrap();
    assert!(
        retried.success,
        "{code}: fixed as the message said, retried at once, denied again:\n{retried:?}"
    );
}

#[tokio::test]
async fn fixing_what_a_credential_denial_says_and_retrying_at_once_is_admitted() {
    let installed = installed_or_skip!();
    let namespace = installed.control_plane.namespace("retry", &[]).await.unwrap();
    let private = format!("{}/private/app:v1", installed.private_registry.host);
    let in_namespace = |mut object: Value| {
        object["metadata"]["namespace"] = json!(namespace);
        Some(object.to_string())
    };

    // PG201: the service account gets the secret the message asked for.
    assert_admitted(
        &installed.apply(&namespace, &installed.pull_secret("regcred", PRIVATE_PASSWORD)).await.unwrap(),
    );
    let via_account = workload("Deployment", "via-account", pod_spec(&private));
    let patch = r#"{"imagePullSecrets": [{"name": "regcred"}]}"#;
    let fix: &[&str] = &["patch", "serviceaccount", "default", "-n", &namespace, "-p", patch];
    denied_then_fixed(&installed, &namespace, &via_account, "PG201", (fix, None)).await;

    // PG202: the named secret is created (a bare Pod: for a template a missing secret is only a
    // warning, since its pods retry).
    let mut named = pod_spec(&private);
    named["imagePullSecrets"] = json!([{"name": "late"}]);
    let late = installed.pull_secret("late", PRIVATE_PASSWORD);
    let fix: &[&str] = &["apply", "-f", "-"];
    denied_then_fixed(
        &installed,
        &namespace,
        &workload("Pod", "named", named),
        "PG202",
        (fix, in_namespace(late)),
    )
    .await;

    // PG205: the password in the secret is corrected.
    assert_admitted(
        &installed.apply(&namespace, &installed.pull_secret("rotated", "an-old-password")).await.unwrap(),
    );
    let mut rotated = pod_spec(&private);
    rotated["imagePullSecrets"] = json!([{"name": "rotated"}]);
    let corrected = installed.pull_secret("rotated", PRIVATE_PASSWORD);
    denied_then_fixed(
        &installed,
        &namespace,
        &workload("Deployment", "rotated", rotated),
        "PG205",
        (fix, in_namespace(corrected)),
    )
    .await;

    // PG204: the secret's registry key is corrected.
    let mut elsewhere = installed.pull_secret("elsewhere", PRIVATE_PASSWORD);
    let config = json!({"auths": {"other.example:5000": {"auth": "cm9ib3Q6eA=="}}}).to_string();
    elsewhere["data"][".dockerconfigjson"] =
        json!(base64::Engine::encode(&base64::engine::general_purpose::STANDARD, config));
    assert_admitted(&installed.apply(&namespace, &elsewhere).await.unwrap());
    let mut keyed = pod_spec(&private);
    keyed["imagePullSecrets"] = json!([{"name": "elsewhere"}]);
    let corrected = installed.pull_secret("elsewhere", PRIVATE_PASSWORD);
    denied_then_fixed(
        &installed,
        &namespace,
        &workload("Deployment", "keyed", keyed),
        "PG204",
        (fix, in_namespace(corrected)),
    )
    .await;
}

#[tokio::test]
async fn the_hint_names_only_secrets_the_registry_accepts() {
    let installed = installed_or_skip!();
    let namespace = installed.control_plane.namespace("hint", &[]).await.unwrap();
    let private = format!("{}/private/app:v1", installed.private_registry.host);
    assert_admitted(
        &installed.apply(&namespace, &installed.pull_secret("badcred", "not-the-password")).await.unwrap(),
    );
    assert_admitted(
        &installed.apply(&namespace, &installed.pull_secret("regcred", PRIVATE_PASSWORD)).await.unwrap(),
    );
    let denied = installed.apply(&namespace, &workload("Pod", "hinted", pod_spec(&private))).await.unwrap();
    assert_denied(&denied, "creating", "PG201");
    assert!(denied.stderr.contains("add imagePullSecrets: [regcred]"), "{}", denied.stderr);
    assert!(!denied.stderr.contains("badcred"), "a secret the registry rejects is no fix: {}", denied.stderr);
}

#[tokio::test]
async fn image_volumes_are_pulled_and_checked_like_containers() {
    let installed = installed_or_skip!();
    let namespace = installed.control_plane.namespace("volumes", &[]).await.unwrap();
    let host = &installed.registry.host;
    let seeder = installed.registry.seeder().unwrap();
    // An OCI artifact (a model, a chart): mountable, never run.
    seeder.push_artifact("models/llm", "v1").await.unwrap();
    let with_volume = |name: &str, kind: &str, reference: String| {
        let mut spec = pod_spec(&format!("{host}/app:v1"));
        spec["containers"][0]["volumeMounts"] = json!([{"name": "data", "mountPath": "/data"}]);
        spec["volumes"] =
            json!([{"name": "data", "image": {"reference": reference, "pullPolicy": "IfNotPresent"}}]);
        workload(kind, name, spec)
    };
    for kind in ["Pod", "Deployment"] {
        let name = format!("{}-missing", kind.to_lowercase());
        let denied =
            installed.apply(&namespace, &with_volume(&name, kind, format!("{host}/app:v404"))).await.unwrap();
        assert_denied(&denied, "creating", "PG101");
        assert!(denied.stderr.contains("volume \"data\""), "the denial names the volume:\n{}", denied.stderr);
        let name = format!("{}-artifact", kind.to_lowercase());
        let admitted = installed
            .apply(&namespace, &with_volume(&name, kind, format!("{host}/models/llm:v1")))
            .await
            .unwrap();
        assert_admitted(&admitted);
        assert!(warnings(&admitted).is_empty(), "an artifact is a fine image volume: {admitted:?}");
    }
}

#[tokio::test]
async fn updates_that_move_pods_or_drop_their_credentials_are_checked() {
    let installed = installed_or_skip!();
    let namespace = installed.control_plane.namespace("moved", &[]).await.unwrap();
    let linux = format!("{}/amdonly:v1", installed.registry.host);

    // A DaemonSet moved onto the Windows pool, its image unchanged.
    assert_admitted(
        &installed.apply(&namespace, &workload("DaemonSet", "agent", pod_spec(&linux))).await.unwrap(),
    );
    let patch = json!({"spec": {"template": {"spec": {
        "nodeSelector": {"kubernetes.io/os": "windows"},
        "tolerations": [{"key": "os", "operator": "Equal", "value": "windows", "effect": "NoSchedule"}]}}}});
    let moved = installed
        .kubectl(&["patch", "daemonset", "agent", "-n", &namespace, "-p", &patch.to_string()], None)
        .await
        .unwrap();
    assert!(!moved.success && moved.stderr.contains("PG301"), "the move is checked: {moved:?}");
    // An unrelated change (a label) still costs nothing and passes.
    let relabel = json!({"spec": {"template": {"metadata": {"labels": {"app": "agent", "tier": "ops"}}}}});
    let relabelled = installed
        .kubectl(&["patch", "daemonset", "agent", "-n", &namespace, "-p", &relabel.to_string()], None)
        .await
        .unwrap();
    assert_admitted(&relabelled);
    let logged = installed.logged_admissions(&namespace);
    assert!(logged.iter().any(|line| line["verdict"] == "no-image-change"), "{logged:?}");

    // A Deployment that loses its pull secret, or moves to an account without one.
    let private = format!("{}/private/app:v1", installed.private_registry.host);
    assert_admitted(
        &installed.apply(&namespace, &installed.pull_secret("regcred", PRIVATE_PASSWORD)).await.unwrap(),
    );
    let mut spec = pod_spec(&private);
    spec["imagePullSecrets"] = json!([{"name": "regcred"}]);
    assert_admitted(&installed.apply(&namespace, &workload("Deployment", "api", spec)).await.unwrap());
    let dropped = installed
        .kubectl(
            &[
                "patch",
                "deployment",
                "api",
                "-n",
                &namespace,
                "--type=json",
                "-p",
                r#"[{"op": "remove", "path": "/spec/template/spec/imagePullSecrets"}]"#,
            ],
            None,
        )
        .await
        .unwrap();
    assert!(!dropped.success && dropped.stderr.contains("PG201"), "{dropped:?}");
    let account = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "bare"}});
    assert_admitted(&installed.apply(&namespace, &account).await.unwrap());
    let mut via_account = pod_spec(&private);
    via_account["serviceAccountName"] = json!("puller");
    let puller = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "puller"},
                        "imagePullSecrets": [{"name": "regcred"}]});
    assert_admitted(&installed.apply(&namespace, &puller).await.unwrap());
    assert_admitted(
        &installed.apply(&namespace, &workload("Deployment", "worker", via_account)).await.unwrap(),
    );
    let switched = installed
        .kubectl(
            &[
                "patch",
                "deployment",
                "worker",
                "-n",
                &namespace,
                "-p",
                r#"{"spec": {"template": {"spec": {"serviceAccountName": "bare"}}}}"#,
            ],
            None,
        )
        .await
        .unwrap();
    assert!(!switched.success && switched.stderr.contains("PG201"), "{switched:?}");
}

#[tokio::test]
async fn kubectl_debug_on_a_controllers_pod_is_checked() {
    let installed = installed_or_skip!();
    let namespace = installed.control_plane.namespace("debug-owned", &[]).await.unwrap();
    let good = format!("{}/app:v1", installed.registry.host);
    let missing = format!("{}/app:v404", installed.registry.host);
    assert_admitted(
        &installed.apply(&namespace, &workload("Deployment", "web", pod_spec(&good))).await.unwrap(),
    );
    let made = until_made::<Pod>(&installed, &namespace, 1).await;
    let pod = format!("pod/{}", made[0].metadata.name.clone().unwrap());
    let denied = installed
        .kubectl(&["debug", "-n", &namespace, &pod, &format!("--image={missing}"), "-c", "dbg"], None)
        .await
        .unwrap();
    assert!(
        !denied.success && denied.stderr.contains("PG101"),
        "a person's new image is checked: {denied:?}"
    );
}

#[tokio::test]
async fn a_bundle_applied_in_one_go_is_admitted() {
    let installed = installed_or_skip!();
    let namespace = installed.control_plane.namespace("bundle", &[]).await.unwrap();
    let private = format!("{}/private/app:v1", installed.private_registry.host);
    // The Deployment first, then its ServiceAccount, then the pull secret: without pullguard the
    // ReplicaSet controller waits for the account, and this works.
    let mut spec = pod_spec(&private);
    spec["serviceAccountName"] = json!("web");
    let mut secret = installed.pull_secret("regcred", PRIVATE_PASSWORD);
    secret["metadata"]["namespace"] = json!(namespace);
    let mut deployment = workload("Deployment", "web", spec);
    deployment["metadata"]["namespace"] = json!(namespace);
    let account = json!({"apiVersion": "v1", "kind": "ServiceAccount",
                         "metadata": {"name": "web", "namespace": namespace},
                         "imagePullSecrets": [{"name": "regcred"}]});
    let bundle =
        json!({"apiVersion": "v1", "kind": "List", "items": [deployment, account, secret]}).to_string();
    let applied = installed.kubectl(&["apply", "-f", "-"], Some(&bundle)).await.unwrap();
    assert_admitted(&applied);
    let lines = warnings(&applied);
    assert!(lines.iter().any(|line| line.contains("does not exist yet")), "{applied:?}");
    assert!(
        !applied.stderr.contains("has no imagePullSecrets"),
        "never said of an account that does not exist"
    );

    // A template naming a secret an operator creates a moment later: a warning too.
    let mut later = pod_spec(&private);
    later["imagePullSecrets"] = json!([{"name": "from-operator"}]);
    let applied =
        installed.apply(&namespace, &workload("Deployment", "operated", later.clone())).await.unwrap();
    assert_admitted(&applied);
    assert!(
        warnings(&applied).iter().any(|line| line.contains("PG202") && line.contains("not exist yet")),
        "{applied:?}"
    );
    // A bare Pod starts at once: for it the missing secret stays an error.
    let denied = installed.apply(&namespace, &workload("Pod", "bare", later)).await.unwrap();
    assert_denied(&denied, "creating", "PG202");
}

#[tokio::test]
async fn objects_a_controller_makes_keep_their_owners_mode() {
    let installed = installed_or_skip!();
    let namespace = installed.control_plane.namespace("owners", &[]).await.unwrap();
    let missing = format!("{}/app:v404", installed.registry.host);
    let warn = json!({"pullguard.io/mode": "warn"});

    // A CronJob admitted in warn mode, and a Job made from it (as its controller does, with a
    // controller reference and only the job template's metadata).
    let mut nightly = workload("CronJob", "nightly", pod_spec(&missing));
    nightly["metadata"]["annotations"] = warn.clone();
    assert_admitted(&installed.apply(&namespace, &nightly).await.unwrap());
    let job = installed
        .kubectl(&["create", "job", "-n", &namespace, "manual-1", "--from=cronjob/nightly"], None)
        .await
        .unwrap();
    assert_admitted(&job);
    assert!(
        warnings(&job).iter().any(|line| line.contains("PG101")),
        "warned in the CronJob's mode: {job:?}"
    );

    // A Deployment admitted in warn mode: the controller manager's ReplicaSet is not denied.
    let mut web = workload("Deployment", "web", pod_spec(&missing));
    web["metadata"]["annotations"] = warn;
    assert_admitted(&installed.apply(&namespace, &web).await.unwrap());
    until_made::<k8s_openapi::api::apps::v1::ReplicaSet>(&installed, &namespace, 1).await;
    let logged = until_logged(&installed, &namespace, "ReplicaSet").await;
    let replicaset = logged.iter().find(|line| line["kind"] == "ReplicaSet").unwrap();
    assert_eq!(replicaset["verdict"], "warn:allowed", "{logged:?}");
}

#[tokio::test]
async fn check_with_a_cluster_reads_credentials_as_the_webhook_does() {
    let installed = installed_or_skip!();
    let namespace = installed.control_plane.namespace("check-creds", &[]).await.unwrap();
    let private = format!("{}/private/app:v1", installed.private_registry.host);
    assert_admitted(
        &installed.apply(&namespace, &installed.pull_secret("regcred", PRIVATE_PASSWORD)).await.unwrap(),
    );
    let account = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "puller"},
                         "imagePullSecrets": [{"name": "regcred"}]});
    assert_admitted(&installed.apply(&namespace, &account).await.unwrap());
    let mut spec = pod_spec(&private);
    spec["serviceAccountName"] = json!("puller");
    let mut deployment = workload("Deployment", "api", spec);
    deployment["metadata"]["namespace"] = json!(namespace);
    // The webhook admits it: the pods pull with the account's secret.
    assert_admitted(&installed.apply(&namespace, &deployment).await.unwrap());

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("deploy.json"), deployment.to_string()).unwrap();
    let kubeconfig = installed.control_plane.kubeconfig.display().to_string();
    let config = installed.webhook.config.display().to_string();
    let check = |with_cluster: bool| {
        let mut args = vec!["check", "--config", &config, "-f", "deploy.json", "--output", "json"];
        if with_cluster {
            args.extend(["--kubeconfig", &kubeconfig]);
        }
        let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        let dir = dir.path().to_path_buf();
        async move { pullguard(&args.iter().map(String::as_str).collect::<Vec<_>>(), &dir).await }
    };
    let output = check(true).await;
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stdout));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["findings"], json!([]), "{report}");
    assert!(report["images"][0]["credential"]["source"].as_str().unwrap().contains("regcred"), "{report}");

    // Without the cluster, check cannot know the account's secrets: not verified, not an error.
    let output = check(false).await;
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stdout));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["findings"][0]["code"], "PG200", "{report}");
}

#[tokio::test]
async fn a_daemonset_on_a_pool_its_image_cannot_run_on_is_denied() {
    let installed = installed_or_skip!();
    let namespace = installed.control_plane.namespace("mixed", &[]).await.unwrap();
    // Tolerating the arm pool's taint: the pods go to the general (amd64) and arm pools.
    let mut spec = pod_spec(&format!("{}/armonly:v1", installed.registry.host));
    spec["tolerations"] =
        json!([{"key": "kubernetes.io/arch", "operator": "Exists", "effect": "NoSchedule"}]);
    let daemonset = installed.apply(&namespace, &workload("DaemonSet", "agent", spec.clone())).await.unwrap();
    assert_denied(&daemonset, "creating", "PG302");
    assert!(
        daemonset.stderr.contains("general"),
        "the denial names the pool that fails: {}",
        daemonset.stderr
    );
    // A Deployment with the same template may still be scheduled where it runs: a warning.
    let deployment = installed.apply(&namespace, &workload("Deployment", "api", spec)).await.unwrap();
    assert_admitted(&deployment);
    assert!(warnings(&deployment).iter().any(|line| line.contains("PG302")), "{deployment:?}");
}

#[tokio::test]
async fn a_pod_bound_to_a_node_is_not_told_to_pick_a_pool() {
    let installed = installed_or_skip!();
    let namespace = installed.control_plane.namespace("bound", &[]).await.unwrap();
    let mut spec = pod_spec(&format!("{}/amdonly:v1", installed.registry.host));
    spec["nodeName"] = json!("arm-1");
    let denied = installed.apply(&namespace, &workload("Pod", "pinned", spec)).await.unwrap();
    assert_denied(&denied, "creating", "PG301");
    assert!(denied.stderr.contains("bound to its node"), "{}", denied.stderr);
    assert!(
        !denied.stderr.contains("add a nodeSelector"),
        "no selector moves a bound pod: {}",
        denied.stderr
    );
}

#[tokio::test]
async fn thirty_containers_sharing_a_missing_image_get_one_line() {
    let installed = installed_or_skip!();
    let namespace = installed.control_plane.namespace("thirty", &[]).await.unwrap();
    let image = format!("{}/app:v404", installed.registry.host);
    let containers: Vec<Value> =
        (0..30).map(|i| json!({"name": format!("worker-{i}"), "image": image})).collect();
    let denied = installed
        .apply(&namespace, &workload("Pod", "thirty", json!({"containers": containers})))
        .await
        .unwrap();
    assert_denied(&denied, "creating", "PG101");
    // The header and one line for the image, naming its 30 containers (5 KB in 22 lines before).
    assert_eq!(denied.stderr.lines().count(), 2, "{}", denied.stderr);
    assert!(
        denied.stderr.contains("container \"worker-0\"") && denied.stderr.contains("container \"worker-29\"")
    );
    assert!(denied.stderr.len() < 2000, "{} bytes", denied.stderr.len());
}

#[tokio::test]
async fn a_namespace_label_that_is_no_mode_is_reported() {
    let installed = installed_or_skip!();
    let namespace =
        installed.control_plane.namespace("typo", &[("pullguard.io/mode", "Warn")]).await.unwrap();
    let good = format!("{}/app:v1", installed.registry.host);
    let metric = || async {
        let text = pullguard_tests::registry::http_client(None)
            .unwrap()
            .get(format!("{}/metrics", installed.webhook.admin_url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix("pullguard_invalid_mode_labels_total "))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let before = metric().await;
    // The label reaches pullguard through its namespace watch: the first answers may not see it.
    let mut output = None;
    for attempt in 0..50 {
        let applied = installed
            .apply(&namespace, &workload("Deployment", &format!("web-{attempt}"), pod_spec(&good)))
            .await
            .unwrap();
        if warnings(&applied).iter().any(|line| line.contains("pullguard.io/mode=Warn")) {
            output = Some(applied);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let output = output.expect("the invalid label is reported in the answer's warnings");
    assert_admitted(&output);
    assert!(
        warnings(&output)[0].contains("is not a mode") && warnings(&output)[0].contains("enforce"),
        "{output:?}"
    );
    // Still enforced: a missing image is denied, and the label is counted once, not per answer.
    let denied = installed
        .apply(
            &namespace,
            &workload("Deployment", "broken", pod_spec(&format!("{}/app:v404", installed.registry.host))),
        )
        .await
        .unwrap();
    assert_denied(&denied, "creating", "PG101");
    assert_eq!(metric().await - before, 1.0);
}
