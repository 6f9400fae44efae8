//! Fail open, as a real kube-apiserver does it with the shipped `failurePolicy: Ignore`: when
//! pullguard is gone, admissions go on. A binary of its own, because the test kills the
//! webhook that every test of a binary shares.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::time::Duration;

use pullguard_tests::{control_plane::Options, installed_or_skip};
use serde_json::json;

#[tokio::test]
async fn admissions_go_on_when_pullguard_is_killed() {
    let installed = installed_or_skip!(Options { controller_manager: false });
    let namespace = installed.control_plane.namespace("fail-open", &[]).await.unwrap();
    let pod = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
               "spec": {"containers": [{"name": "app", "image": format!("{}/app:v404", installed.registry.host)}]}})
    };
    let denied = installed.apply(&namespace, &pod("while-up")).await.unwrap();
    assert!(
        !denied.success && denied.stderr.contains("PG101"),
        "pullguard answers while it runs: {denied:?}"
    );

    let killed =
        std::process::Command::new("kill").args(["-KILL", &installed.webhook.pid.to_string()]).status();
    assert!(killed.unwrap().success());
    // The port closes with the process: the API server's call is refused at once.
    let started = tokio::time::Instant::now();
    let admitted = installed.apply(&namespace, &pod("while-down")).await.unwrap();
    assert!(admitted.success, "failurePolicy Ignore admits without pullguard: {admitted:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "admitted, but only after {:?}", started.elapsed());
}
