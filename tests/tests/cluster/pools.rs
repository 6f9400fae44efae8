//! Node pools as the real API server gives them: nodes reaching the inventory through the watch,
//! added and deleted live, new nodes tainted not-ready, the images and container runtime in a
//! node's status. The scenarios themselves (pools by label or platform, zero nodes, Windows
//! builds, `spec.os`, kubeadm groups) are a table in `webhook/core/tests/node_pools.rs`.

use super::*;

#[tokio::test]
async fn platform_checks_follow_the_node_pools() {
    let Some(cluster) = Cluster::start().await else { return };
    let webhook = cluster.webhook(cluster.config()).await;
    let pod = cluster.review("01-create-pod-main-web.json", "unset");
    let deployment = cluster.review("02-create-deployment-main-api.json", "unset");
    let windows_daemonset = cluster.review("17-create-daemonset-main-agent.json", "unset");

    // The pod selects the arm pool: a multi-arch image is fine, an amd64-only one cannot run there.
    let answer = webhook.review(&with_image(pod.clone(), &cluster.image("multi:v1"))).await.unwrap();
    assert!(answer.allowed, "{answer:?}");
    assert!(codes(&answer).is_empty(), "{answer:?}");
    let answer = webhook.review(&with_image(pod.clone(), &cluster.image("amdonly:v1"))).await.unwrap();
    assert!(!answer.allowed);
    let message = answer.message.as_str();
    assert!(message.contains("PG301") && message.contains("arm-pool"), "{message}");

    // No selector: Linux and Windows nodes are both candidates, so a Linux image only fits some.
    let answer = webhook.review(&with_image(deployment.clone(), &cluster.image("amdonly:v1"))).await.unwrap();
    assert!(answer.allowed);
    assert_eq!(codes(&answer), vec!["PG302"]);
    let warnings = answer.warnings.join("\n");
    assert!(warnings.contains("PG302"), "{warnings}");

    // Windows nodes run build 10.0.20348: an ltsc2019 image does not match, ltsc2022 does.
    let answer =
        webhook.review(&with_image(windows_daemonset.clone(), &cluster.image("win:ltsc2019"))).await.unwrap();
    assert!(!answer.allowed);
    assert_eq!(codes(&answer), vec!["PG303"]);
    let answer =
        webhook.review(&with_image(windows_daemonset, &cluster.image("win:ltsc2022"))).await.unwrap();
    assert!(answer.allowed, "{answer:?}");
    assert!(codes(&answer).is_empty(), "{answer:?}");

    // A pool scaled to zero: the selector still names the platform.
    let mut scaled = with_image(pod.clone(), &cluster.image("amdonly:v1"));
    scaled["request"]["object"]["spec"]["nodeSelector"]["cloud.google.com/gke-nodepool"] = json!("gpu-pool");
    let answer = webhook.review(&scaled).await.unwrap();
    assert!(!answer.allowed);
    assert_eq!(codes(&answer), vec!["PG301"]);
    // ... and when it names none, the check is skipped with an info finding.
    scaled["request"]["object"]["spec"]["nodeSelector"] =
        json!({"cloud.google.com/gke-nodepool": "gpu-pool"});
    let answer = webhook.review(&scaled).await.unwrap();
    assert!(answer.allowed);
    assert_eq!(codes(&answer), vec!["PG300"]);
    assert!(answer.warnings.is_empty(), "infos are not warnings: {answer:?}");

    // The inventory follows the cluster: without the Windows node the deployment fits everywhere.
    let nodes: Api<Node> = Api::all(cluster.control_plane.client().await.unwrap());
    nodes.delete(&cluster.node_name("win-1"), &DeleteParams::default()).await.unwrap();
    let review = with_image(deployment, &cluster.image("amdonly:v1"));
    webhook
        .review_until(&review, "the node deletion", Duration::from_secs(10), |answer| {
            codes(answer).is_empty()
        })
        .await
        .unwrap();
}

/// A Deployment's template pointed at the arm pool (selector plus the pool's toleration).
fn arm_deployment(cluster: &Cluster, image: &str) -> Value {
    let mut review = cluster.review("02-create-deployment-main-api.json", image);
    let spec = &mut review["request"]["object"]["spec"]["template"]["spec"];
    spec["nodeSelector"] = json!({"cloud.google.com/gke-nodepool": "arm-pool"});
    spec["tolerations"].as_array_mut().unwrap().push(json!(
        {"key": "arch", "operator": "Equal", "value": "arm64", "effect": "NoSchedule"}
    ));
    review
}

#[tokio::test]
async fn acceptance_deployments_pods_zero_nodes_and_new_pools() {
    let Some(cluster) = Cluster::start().await else { return };
    let webhook = cluster.webhook(cluster.config()).await;

    // A Deployment selecting the arm64 pool: amd64-only is denied naming the pool and platforms.
    let answer = webhook.review(&arm_deployment(&cluster, &cluster.image("amdonly:v1"))).await.unwrap();
    assert!(!answer.allowed);
    let message = answer.message.as_str();
    assert!(message.contains("PG301"), "{message}");
    assert!(message.contains("cloud.google.com/gke-nodepool=arm-pool"), "{message}");
    assert!(message.contains("built for linux/amd64"), "{message}");
    let answer = webhook.review(&arm_deployment(&cluster, &cluster.image("multi:v1"))).await.unwrap();
    assert!(answer.allowed, "{answer:?}");

    // A Pod with no selector in the mixed cluster: PG302 naming the pools that can run it.
    let mut pod = cluster.review("01-create-pod-main-web.json", &cluster.image("amdonly:v1"));
    let spec = &mut pod["request"]["object"]["spec"];
    spec["nodeSelector"] = Value::Null;
    spec["affinity"] = Value::Null;
    let answer = webhook.review(&pod).await.unwrap();
    assert!(answer.allowed);
    assert_eq!(codes(&answer), vec!["PG302"]);
    let findings = answer.annotation("findings").unwrap();
    assert!(findings.contains("It runs on cloud.google.com/gke-nodepool=general"), "{findings}");

    // A new pool arrives through the watch and changes the verdict without a restart.
    let mut new_pool = cluster.review("02-create-deployment-main-api.json", &cluster.image("amdonly:v1"));
    new_pool["request"]["object"]["spec"]["template"]["spec"]["nodeSelector"] =
        json!({"cloud.google.com/gke-nodepool": "new-arm"});
    let answer = webhook.review(&new_pool).await.unwrap();
    assert_eq!(codes(&answer), vec!["PG300"], "no node yet: not verified");
    cluster
        .add_node(
            "new-arm-1",
            &[("cloud.google.com/gke-nodepool", "new-arm"), ("kubernetes.io/arch", "arm64")],
            &[],
        )
        .await;
    let answer = webhook
        .review_until(&new_pool, "the new pool", Duration::from_secs(10), |answer| {
            codes(answer) == vec!["PG301"]
        })
        .await
        .unwrap();
    assert!(answer.message.as_str().contains("new-arm"));
}

#[tokio::test]
async fn booting_and_cordoned_nodes_stay_in_their_pool() {
    let Some(cluster) = Cluster::start().await else { return };
    let webhook = cluster.webhook(cluster.config()).await;
    // New nodes as the API server leaves them: tainted not-ready until a kubelet reports Ready
    // (none runs here). The cordoned one also gets the taint the node lifecycle controller adds
    // for `spec.unschedulable` (that controller does not run here either).
    let nodes: Api<Node> = Api::all(cluster.control_plane.client().await.unwrap());
    for (name, unschedulable) in [("booting-1", false), ("cordoned-1", true)] {
        let mut taints = vec![json!({"key": SCOPE_TAINT, "value": cluster.scope, "effect": "NoSchedule"})];
        if unschedulable {
            taints.push(json!({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}));
        }
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": cluster.node_name(name), "labels": {
                "cloud.google.com/gke-nodepool": format!("{name}-pool"), "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "arm64"}},
            "spec": {"unschedulable": unschedulable, "taints": taints},
        }))
        .unwrap();
        let created = nodes.create(&PostParams::default(), &node).await.unwrap();
        let taints: Vec<String> =
            created.spec.unwrap().taints.unwrap_or_default().into_iter().map(|taint| taint.key).collect();
        assert!(taints.iter().any(|key| key == "node.kubernetes.io/not-ready"), "{taints:?}");
    }
    for pool in ["booting-1-pool", "cordoned-1-pool"] {
        let mut review = cluster.review("02-create-deployment-main-api.json", &cluster.image("amdonly:v1"));
        review["request"]["object"]["spec"]["template"]["spec"]["nodeSelector"] =
            json!({"cloud.google.com/gke-nodepool": pool});
        // The node watch delivers the new nodes a moment after they are created.
        let verdict = webhook
            .review_until(&review, "the new nodes", Duration::from_secs(10), |answer| {
                codes(answer) != vec!["PG300"]
            })
            .await
            .unwrap();
        assert_eq!(codes(&verdict), vec!["PG301"], "{pool}: {verdict:?}");
        let message = verdict.message.as_str();
        assert!(message.contains(pool), "{message}");
        let answer = webhook.review(&with_image(review, &cluster.image("multi:v1"))).await.unwrap();
        assert!(answer.allowed && codes(&answer).is_empty(), "{pool}: {answer:?}");
    }
}

/// A Deployment review for `pool`, its one container running `image` with `policy`.
fn pooled(cluster: &Cluster, image: &str, policy: &str, pool: &str) -> Value {
    let mut review = cluster.review("02-create-deployment-main-api.json", image);
    let spec = &mut review["request"]["object"]["spec"]["template"]["spec"];
    spec["nodeSelector"] = json!({"cloud.google.com/gke-nodepool": pool});
    spec["containers"].as_array_mut().unwrap().truncate(1);
    spec["containers"][0]["imagePullPolicy"] = json!(policy);
    if let Some(object) = spec.as_object_mut() {
        object.remove("initContainers");
        object.remove("affinity");
    }
    review
}

#[tokio::test]
async fn images_the_nodes_hold_are_judged_by_the_pull_policy() {
    let Some(cluster) = Cluster::start().await else { return };
    // Two pools; every node of `held` lists both images, one node of `partial` lists none.
    // Neither image is in the registry: tag v1 of `gone` was deleted (v0 is left), `local` was only
    // ever built on the nodes.
    Seeder::new(&cluster.registry)
        .unwrap()
        .push_image("gone", "v0", &ImageSpec::linux("amd64"))
        .await
        .unwrap();
    let gone = cluster.image("gone:v1");
    let local = cluster.image("local:dev");
    let nodes: Api<Node> = Api::all(cluster.control_plane.client().await.unwrap());
    for (name, pool, holds) in [
        ("held-1", "held", true),
        ("held-2", "held", true),
        ("partial-1", "partial", true),
        ("partial-2", "partial", false),
    ] {
        cluster
            .add_node(name, &[("cloud.google.com/gke-nodepool", pool), ("kubernetes.io/arch", "amd64")], &[])
            .await;
        if holds {
            // As the kubelet reports them: by digest and by tag.
            let images = json!({"status": {"images": [
                {"names": [format!("{gone}"), format!("{}@sha256:{}", cluster.image("gone"), "a".repeat(64))], "sizeBytes": 1000},
                {"names": [local.clone()], "sizeBytes": 1000},
            ]}});
            nodes
                .patch_status(&cluster.node_name(name), &PatchParams::default(), &Patch::Merge(images))
                .await
                .unwrap();
        }
    }
    let webhook = cluster.webhook(cluster.config()).await;
    // The node watch delivers the image lists a moment after the nodes themselves.
    let verdict = async |review: Value, settled: fn(&[String]) -> bool| {
        let what = "the nodes' image lists";
        let limit = Duration::from_secs(10);
        webhook.review_until(&review, what, limit, |answer| settled(&codes(answer))).await.unwrap()
    };
    let any = |codes: &[String]| !codes.contains(&"PG300".to_owned());

    // IfNotPresent and every node holds it: a missing tag does not stop today's pods.
    let answer =
        verdict(pooled(&cluster, &gone, "IfNotPresent", "held"), |codes: &[String]| codes == ["PG104"]).await;
    assert!(answer.allowed, "{answer:?}");
    assert_eq!(codes(&answer), vec!["PG104"], "{answer:?}");
    let warnings = answer.warnings.join("\n");
    assert!(warnings.contains("PG104") && warnings.contains("PG101"), "{warnings}");
    // ... but Always pulls, and a pool where one node lacks it pulls there.
    let answer = verdict(pooled(&cluster, &gone, "Always", "held"), any).await;
    assert_eq!((answer.allowed, codes(&answer)), (false, vec!["PG101".to_string()]), "{answer:?}");
    let answer = verdict(pooled(&cluster, &gone, "IfNotPresent", "partial"), any).await;
    assert_eq!((answer.allowed, codes(&answer)), (false, vec!["PG101".to_string()]), "{answer:?}");

    // Never: no registry request at all; the nodes' lists decide, a gap is a warning at most.
    let before = cluster.registry.manifest_requests("local");
    let answer = verdict(pooled(&cluster, &local, "Never", "held"), any).await;
    assert!(answer.allowed && codes(&answer).is_empty(), "{answer:?}");
    let answer = verdict(pooled(&cluster, &local, "Never", "partial"), any).await;
    assert!(answer.allowed, "{answer:?}");
    assert_eq!(codes(&answer), vec!["PG105"], "{answer:?}");
    assert!(answer.warns("ErrImageNeverPull"), "{answer:?}");
    assert_eq!(cluster.registry.manifest_requests("local"), before, "a Never image is not looked up");
}

#[tokio::test]
async fn schema_1_is_graded_by_the_nodes_runtime() {
    let Some(cluster) = Cluster::start().await else { return };
    Seeder::new(&cluster.registry).unwrap().push_schema1("legacy", "v1", "amd64").await.unwrap();
    let nodes: Api<Node> = Api::all(cluster.control_plane.client().await.unwrap());
    for (name, pool, runtime) in
        [("old-1", "old", "containerd://1.7.27"), ("new-1", "new", "containerd://2.1.4")]
    {
        cluster
            .add_node(name, &[("cloud.google.com/gke-nodepool", pool), ("kubernetes.io/arch", "amd64")], &[])
            .await;
        let info = json!({"status": {"nodeInfo": {"containerRuntimeVersion": runtime}}});
        nodes
            .patch_status(&cluster.node_name(name), &PatchParams::default(), &Patch::Merge(info))
            .await
            .unwrap();
    }
    let webhook = cluster.webhook(cluster.config()).await;
    let review = |pool: &str| pooled(&cluster, &cluster.image("legacy:v1"), "IfNotPresent", pool);
    // containerd 1.x still pulls schema 1: a warning (the node watch brings the runtime version).
    let old = review("old");
    let answer = webhook
        .review_until(&old, "the runtime version", Duration::from_secs(10), |answer| answer.allowed)
        .await
        .unwrap();
    assert!(answer.allowed, "{answer:?}");
    assert_eq!(codes(&answer), vec!["PG401"], "{answer:?}");
    assert!(answer.warns("containerd 2.0"), "{answer:?}");
    // containerd 2.x refuses it.
    let answer = webhook.review(&review("new")).await.unwrap();
    assert!(!answer.allowed, "{answer:?}");
    assert_eq!(codes(&answer), vec!["PG401"], "{answer:?}");
}
