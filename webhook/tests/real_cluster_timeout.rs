//! The API server's own timeout: it calls `/validate?timeout=Ns` with the webhook's
//! `timeoutSeconds`. With a registry that never answers and `timeoutSeconds: 2` (below
//! pullguard's 8 s deadline), pullguard must answer in time with PG501, or the API server gives
//! up and, failing open, admits without a word. A binary of its own, because the test changes
//! the cluster-wide webhook configuration.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use kube::api::Api;
use pullguard_tests::{control_plane::Options, installed_or_skip};
use serde_json::json;

#[tokio::test]
async fn a_stalled_registry_is_a_warning_within_the_api_servers_timeout() {
    let installed = installed_or_skip!(Options { controller_manager: false });
    let client = installed.control_plane.client().await.unwrap();
    let configurations: Api<ValidatingWebhookConfiguration> = Api::all(client);
    let mut configuration = configurations.get("pullguard").await.unwrap();
    configuration.webhooks.as_mut().unwrap()[0].timeout_seconds = Some(2);
    configurations.replace("pullguard", &Default::default(), &configuration).await.unwrap();
    let namespace = installed.control_plane.namespace("timeout", &[]).await.unwrap();

    let stalled = format!("{}/app:v1", installed.stalled_registry);
    let deployment = |name: &str| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
               "spec": {"selector": {"matchLabels": {"app": name}},
                        "template": {"metadata": {"labels": {"app": name}},
                                     "spec": {"containers": [{"name": "app", "image": stalled}]}}}})
    };
    // The API server picks up the changed configuration through an informer: until it has, it
    // waits the old 10 s. Each attempt is a new Deployment.
    let mut attempt = 0;
    let (output, elapsed) = loop {
        attempt += 1;
        let started = Instant::now();
        let output = installed.apply(&namespace, &deployment(&format!("web-{attempt}"))).await.unwrap();
        let elapsed = started.elapsed();
        if elapsed < Duration::from_secs(3) || attempt == 5 {
            break (output, elapsed);
        }
    };
    assert!(output.success, "a registry that does not answer never blocks: {output:?}");
    assert!(elapsed < Duration::from_secs(3), "the API server waited {elapsed:?}");
    let warned = output.stderr.lines().any(|line| line.starts_with("Warning: ") && line.contains("PG501"));
    assert!(
        warned,
        "pullguard answered in time with PG501, not the API server's silent fail-open: {output:?}"
    );
    let name = format!("web-{attempt}");
    let logged = installed.logged_admissions(&namespace);
    let answer = logged.iter().find(|line| line["name"] == name.as_str());
    let answered_in = answer.and_then(|line| line["elapsed_ms"].as_f64());
    assert!(answered_in.is_some_and(|ms| ms < 2000.0), "answered before the API server's 2 s: {logged:?}");
}
