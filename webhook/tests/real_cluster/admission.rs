//! What every workload goes through: each kind at create and update, dry runs, modes by
//! namespace label and object annotation, controller-made objects, `kubectl debug`, image
//! volumes, updates that change where pods run, and kube's client.

use super::*;

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
