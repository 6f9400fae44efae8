//! Node pools read from the Node objects: which pools an image runs on, DaemonSets, bound Pods.

use super::*;

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
