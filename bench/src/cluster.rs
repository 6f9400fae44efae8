//! The Kubernetes API a deployed pullguard reads: a real kube-apiserver started by the test
//! harness (from `KUBEBUILDER_ASSETS`, as `bench/run.sh` provides it), reached through the
//! harness's proxy so that its requests are counted, holding two node pools (the Pod's
//! `arm-pool` of arm64 nodes and an amd64 pool it cannot land on), the Pod's namespace, service
//! account and pull secret. With it, warm admissions do all the work they do in a
//! cluster (candidate nodes, platform match, pull-secret credentials) and answer without the
//! "no node data" info finding every image gets when pullguard runs without an API.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use base64::Engine;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::api::{Api, PostParams};
use pullguard_tests::{
    api_faults::ApiFaults,
    control_plane::{Assets, ControlPlane, Options},
    installed::create_ready_node,
    shared,
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// The namespace, pull secret and node pool of the captured Pod the warm reviews are built from.
pub const NAMESPACE: &str = "shop";
pub const PULL_SECRET: &str = "regcred";
const POOL_LABEL: &str = "cloud.google.com/gke-nodepool";
const NODES_PER_POOL: usize = 3;

pub struct BenchCluster {
    api: ApiFaults,
    kubeconfig: PathBuf,
}

impl BenchCluster {
    /// Starts the API with the objects above; `registry` is the host the pull secret is for.
    pub async fn start(work: &Path, registry: &str) -> Result<BenchCluster> {
        let options = Options { controller_manager: false };
        let Some(assets) = Assets::find(options)? else {
            bail!(
                "the warm bench needs a control plane: run bench/run.sh, which provides KUBEBUILDER_ASSETS"
            );
        };
        let control_plane = shared::environment("bench-control-plane", |keeper| async move {
            ControlPlane::start(&keeper, &assets).await
        })
        .await?;
        let client = control_plane.client().await?;
        let namespace: Namespace =
            object(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}))?;
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &namespace).await?;
        // No controller manager runs: the account a namespace gets is made here.
        let account: ServiceAccount = object(json!({
            "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": NAMESPACE},
        }))?;
        Api::<ServiceAccount>::namespaced(client.clone(), NAMESPACE)
            .create(&PostParams::default(), &account)
            .await?;
        Api::<Secret>::namespaced(client.clone(), NAMESPACE)
            .create(&PostParams::default(), &pull_secret(registry)?)
            .await?;
        for (pool, arch) in [("arm-pool", "arm64"), ("default-pool", "amd64")] {
            for index in 0..NODES_PER_POOL {
                let name = format!("{pool}-{index}");
                let labels = json!({
                    POOL_LABEL: pool, "kubernetes.io/arch": arch, "kubernetes.io/os": "linux",
                    "kubernetes.io/hostname": name,
                });
                create_ready_node(&client, &name, labels, vec![]).await?;
            }
        }
        let api = ApiFaults::start(&control_plane).await?;
        let kubeconfig = api.write_kubeconfig(work)?;
        Ok(BenchCluster { api, kubeconfig })
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Requests the API has served so far (lists, watches): the warm runs must not add any.
    pub fn api_requests(&self) -> usize {
        self.api.request_count("/")
    }
}

/// Waits until `/readyz` on `admin` says the node and namespace watches have synced, so that no
/// measured admission is judged without node data.
pub async fn wait_ready(admin: SocketAddr) -> Result<()> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let url = format!("http://{admin}/readyz");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(response) = client.get(&url).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{url} did not turn ready within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn object<K: DeserializeOwned>(value: Value) -> Result<K> {
    serde_json::from_value(value).context("building a Kubernetes object")
}

/// A dockerconfigjson secret for `registry` (which serves anonymous pulls: the credential is
/// sent and accepted, as a pull secret for an open mirror is).
fn pull_secret(registry: &str) -> Result<Secret> {
    let engine = base64::engine::general_purpose::STANDARD;
    let config = json!({"auths": {registry: {"auth": engine.encode("bench:bench-password")}}}).to_string();
    object(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": PULL_SECRET, "namespace": NAMESPACE},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": engine.encode(config)},
    }))
}
