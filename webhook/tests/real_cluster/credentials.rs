//! Pull secrets as the kubelet will use them: named by the Pod or lent by its ServiceAccount, and
//! a denial that holds only until the user fixes what it says.

use super::*;

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
