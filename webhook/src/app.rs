//! How pullguard is put together, in one place: [`Engine`] (configuration, metrics, the cached
//! registry and the inspector) is what `serve`, `check` and `audit` all decide with; [`App`] is
//! `serve`'s engine with the cluster state and the admission handler. Tests build both the same
//! way and drive `router()` in-process or over a socket.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::Router;
use pullguard_core::{config::Config, credentials::Keyring};
use tracing::info;

use crate::{
    admission::Admission,
    cluster::ClusterState,
    inspect::Inspector,
    metrics::Metrics,
    registry::{Registry, TransportBuildError},
    server,
};

/// What every command decides with.
pub struct Engine {
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub inspector: Arc<Inspector>,
}

impl Engine {
    /// `keyring`: credentials every lookup may use (a docker config file, the node's).
    pub fn new(config: Config, keyring: Keyring) -> Result<Engine, TransportBuildError> {
        let config = Arc::new(config);
        let metrics = Arc::new(Metrics::new());
        let registry = Arc::new(Registry::new(&config, metrics.clone())?);
        let inspector = Arc::new(Inspector::new(config.clone(), registry, keyring));
        Ok(Engine { config, metrics, inspector })
    }
}

pub struct App {
    pub config: Arc<Config>,
    pub inspector: Arc<Inspector>,
    pub admission: Arc<Admission>,
    /// True once every cache the decisions depend on has synced.
    pub ready: Arc<AtomicBool>,
    pub metrics: Arc<Metrics>,
}

impl App {
    /// Without a cluster: ready at once; namespace modes and node platforms are not read.
    pub fn new(config: Config, keyring: Keyring) -> Result<App, TransportBuildError> {
        App::build(config, keyring, None)
    }

    /// With a cluster: watches start now and `ready` turns true when they have synced.
    pub fn with_cluster(
        config: Config,
        keyring: Keyring,
        client: kube::Client,
    ) -> Result<App, TransportBuildError> {
        App::build(config, keyring, Some(client))
    }

    fn build(
        config: Config,
        keyring: Keyring,
        client: Option<kube::Client>,
    ) -> Result<App, TransportBuildError> {
        let Engine { config, metrics, inspector } = Engine::new(config, keyring)?;
        let cluster = client.map(ClusterState::start);
        let ready = Arc::new(AtomicBool::new(cluster.is_none()));
        if let Some(cluster) = cluster.clone() {
            let ready = ready.clone();
            tokio::spawn(async move {
                if cluster.wait_until_ready().await {
                    info!("namespaces and nodes synced; ready");
                    ready.store(true, Ordering::Relaxed);
                }
            });
        }
        let admission = Arc::new(Admission::new(inspector.clone(), cluster, metrics.clone()));
        Ok(App { config, inspector, admission, ready, metrics })
    }

    pub fn router(&self) -> Router {
        server::router(self.admission.clone(), self.metrics.clone())
    }

    pub fn admin_router(&self) -> Router {
        server::admin_router(self.ready.clone(), self.metrics.clone())
    }
}
