//! The shipped kustomize overlays applied to a real kube-apiserver, which validates every object
//! and compiles the webhook's CEL matchConditions at create time. Only the overlay that needs no
//! cert-manager (`self-managed`, with the certificate from `certs/make-certs.sh`) can be applied
//! here; `tests/deploy-check.sh` renders and checks the others offline.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use base64::Engine as _;
use k8s_openapi::api::{admissionregistration::v1::ValidatingWebhookConfiguration, apps::v1::Deployment};
use kube::api::Api;
use pullguard_tests::{
    control_plane::{ControlPlane, Options},
    installed::repository_root,
};

#[tokio::test]
async fn the_self_managed_overlay_applies() {
    let Some(control_plane) = ControlPlane::shared(Options { controller_manager: false }).await.unwrap()
    else {
        return;
    };
    // make-certs.sh writes into the overlay: work on a copy of deploy/.
    let work = tempfile::tempdir().unwrap();
    let copied = std::process::Command::new("cp")
        .arg("-r")
        .arg(repository_root().join("deploy"))
        .arg(work.path())
        .status()
        .unwrap();
    assert!(copied.success());
    let overlay = work.path().join("deploy/overlays/self-managed");
    let certs = std::process::Command::new("bash")
        .arg(repository_root().join("certs/make-certs.sh"))
        .arg("-o")
        .arg(work.path().join("out"))
        .arg("--overlay")
        .arg(overlay.join("generated"))
        .output()
        .unwrap();
    assert!(certs.status.success(), "make-certs.sh: {}", String::from_utf8_lossy(&certs.stderr));

    let overlay_arg = overlay.display().to_string();
    let applied = control_plane.run_kubectl(&["apply", "-k", &overlay_arg], None).await.unwrap();
    assert!(applied.success, "kubectl apply -k {overlay_arg}:\n{applied:?}");
    for object in [
        "namespace/pullguard",
        "serviceaccount/pullguard",
        "clusterrole.rbac.authorization.k8s.io/pullguard",
        "deployment.apps/pullguard",
        "service/pullguard",
        "validatingwebhookconfiguration.admissionregistration.k8s.io/pullguard",
    ] {
        assert!(
            applied.stdout.contains(&format!("{object} created")),
            "{object} not created:\n{}",
            applied.stdout
        );
    }

    let client = control_plane.client().await.unwrap();
    let configuration =
        Api::<ValidatingWebhookConfiguration>::all(client.clone()).get("pullguard").await.unwrap();
    let webhook = &configuration.webhooks.unwrap()[0];
    let conditions: Vec<&str> =
        webhook.match_conditions.iter().flatten().map(|condition| condition.name.as_str()).collect();
    assert_eq!(conditions, ["skip-controller-owned-pods"], "the API server kept the compiled matchCondition");
    let ca = std::fs::read(work.path().join("out/ca.crt")).unwrap();
    let bundle = webhook.client_config.ca_bundle.as_ref().unwrap();
    assert_eq!(
        base64::engine::general_purpose::STANDARD.encode(&bundle.0),
        base64::engine::general_purpose::STANDARD.encode(&ca),
        "caBundle is make-certs.sh's CA"
    );
    let deployment = Api::<Deployment>::namespaced(client, "pullguard").get("pullguard").await.unwrap();
    let args = deployment.spec.template.spec.unwrap().containers[0].args.clone().unwrap();
    assert!(args.iter().any(|arg| arg == "--config"), "{args:?}");

    // What the API server stored is what the overlay says: nothing left to change. (kubectl
    // 1.32 reports the PodDisruptionBudget "configured" on every apply, with a patch the server
    // finds empty: its words are not the measure, the server's diff is.)
    let diff = control_plane.run_kubectl(&["diff", "-k", &overlay_arg], None).await.unwrap();
    assert!(diff.success && diff.stdout.is_empty(), "the cluster differs from the overlay:\n{diff:?}");
}
