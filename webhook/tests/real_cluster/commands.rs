//! The `audit` and `check` commands against the live cluster.

use super::*;

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
