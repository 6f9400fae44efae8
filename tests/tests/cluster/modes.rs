//! Namespace labels decide the mode; readiness waits for the watches.

use super::*;

#[tokio::test]
async fn namespace_labels_set_the_mode() {
    let Some(cluster) = Cluster::start().await else { return };
    let bad = cluster.review("02-create-deployment-main-api.json", &cluster.image("amdonly:gone"));

    cluster.label_namespace(Some("warn")).await;
    let enforcing = cluster.webhook(cluster.config()).await;
    let answer = enforcing.review(&bad).await.unwrap();
    assert!(answer.allowed, "warn namespace: {answer:?}");
    assert!(answer.warns("PG101"));
    assert_eq!(answer.annotation("mode").unwrap_or_default(), "warn");

    // The label is followed live, and may tighten as well as relax.
    cluster.label_namespace(Some("enforce")).await;
    let warning = cluster.webhook(Config { mode: Mode::Warn, ..cluster.config() }).await;
    warning
        .review_until(&bad, "the label change", Duration::from_secs(10), |answer| !answer.allowed)
        .await
        .unwrap();
    // An object annotation still only relaxes the namespace's mode.
    let mut relaxed = bad.clone();
    relaxed["request"]["object"]["metadata"]["annotations"]["pullguard.io/mode"] = json!("audit");
    let answer = warning.review(&relaxed).await.unwrap();
    assert!(answer.allowed);
    assert!(answer.warnings.is_empty());
}

#[tokio::test]
async fn readiness_waits_for_the_watches() {
    let Some(cluster) = Cluster::start().await else { return };
    cluster.api.set_fault(Fault::Unavailable);
    let webhook =
        InProcess::start_with_cluster(cluster.config(), Keyring::default(), cluster.api.client().unwrap())
            .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(webhook.readyz().await.unwrap(), 503);
    // While not synced it still answers, without platform data.
    let review = cluster.review("01-create-pod-main-web.json", &cluster.image("amdonly:v1"));
    let answer = webhook.review(&review).await.unwrap();
    assert!(answer.allowed);
    assert_eq!(codes(&answer), vec!["PG300"]);
    cluster.api.set_fault(Fault::None);
    webhook.wait_ready(Duration::from_secs(20)).await.unwrap();
    let answer = webhook.review(&review).await.unwrap();
    assert_eq!(codes(&answer), vec!["PG301"]);
}
