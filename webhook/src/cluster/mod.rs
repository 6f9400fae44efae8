//! The Kubernetes API, when there is one: a client from `--kubeconfig`, the in-cluster service
//! account, or `$KUBECONFIG`, and lean watches over what admissions need. Without a cluster
//! pullguard still serves; only the cluster-backed inputs are missing.

mod namespaces;
mod nodes;
mod owners;
mod secrets;
mod watch;

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};

pub use self::{
    namespaces::NamespaceModes,
    nodes::NodeInventory,
    owners::OwnerModes,
    secrets::{Listing, PullSecretReader},
};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot read kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("in-cluster configuration: {0}")]
    InCluster(#[source] kube::config::InClusterError),
    #[error("cannot build the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

/// Everything admissions read from the cluster, kept current by watches.
#[derive(Clone)]
pub struct ClusterState {
    pub namespace_modes: NamespaceModes,
    pub nodes: NodeInventory,
    pub pull_secrets: PullSecretReader,
    pub owner_modes: OwnerModes,
}

impl ClusterState {
    pub fn start(client: kube::Client) -> ClusterState {
        ClusterState {
            namespace_modes: NamespaceModes::start(client.clone()),
            nodes: NodeInventory::start(client.clone()),
            pull_secrets: PullSecretReader::new(client.clone()),
            owner_modes: OwnerModes::new(client),
        }
    }

    /// True once every watch has delivered its first full list.
    pub async fn wait_until_ready(&self) -> bool {
        self.namespace_modes.wait_until_ready().await && self.nodes.wait_until_ready().await
    }
}

/// Where the client came from, for the start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Kubeconfig(String),
    InCluster,
}

/// `--kubeconfig` wins; then the in-cluster service account; then `$KUBECONFIG`; else no cluster.
/// `~/.kube/config` is deliberately not read: a webhook must not pick up a developer's context.
pub async fn connect(explicit: Option<&Path>) -> Result<Option<(kube::Client, Source)>, ClusterError> {
    let (config, source) = if let Some(path) = explicit {
        (from_file(path).await?, Source::Kubeconfig(path.display().to_string()))
    } else if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        (kube::Config::incluster().map_err(ClusterError::InCluster)?, Source::InCluster)
    } else if let Some(path) = std::env::var_os("KUBECONFIG").filter(|value| !value.is_empty()) {
        let path = std::path::PathBuf::from(path);
        (from_file(&path).await?, Source::Kubeconfig(path.display().to_string()))
    } else {
        return Ok(None);
    };
    let client = kube::Client::try_from(config).map_err(ClusterError::Client)?;
    Ok(Some((client, source)))
}

async fn from_file(path: &Path) -> Result<kube::Config, ClusterError> {
    let error = |source| ClusterError::Kubeconfig { path: path.display().to_string(), source };
    let kubeconfig = Kubeconfig::read_from(path).map_err(error)?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.map_err(error)
}
