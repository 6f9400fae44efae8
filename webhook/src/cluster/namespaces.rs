//! Per-namespace modes: the `pullguard.io/mode` label, read through a reflector that watches only
//! labelled namespaces and keeps nothing but their name and that label.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, ResourceExt,
    runtime::{WatchStreamExt, reflector, reflector::Store, watcher},
};
use pullguard_core::config::{MODE_KEY, Mode};
use tracing::warn;

#[derive(Clone)]
pub struct NamespaceModes {
    store: Store<Namespace>,
}

impl NamespaceModes {
    /// Starts the reflector; it runs (with backoff on errors) for the life of the process.
    pub fn start(client: kube::Client) -> NamespaceModes {
        let (store, writer) = reflector::store();
        let api: Api<Namespace> = Api::all(client);
        let stream = watcher(api, watcher::Config::default().labels(MODE_KEY))
            .default_backoff()
            .modify(strip)
            .reflect(writer)
            .applied_objects();
        tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                if let Err(error) = event {
                    warn!(%error, "namespace watch failed; retrying");
                }
            }
        });
        NamespaceModes { store }
    }

    /// Resolves once the first full list has arrived.
    pub async fn wait_until_ready(&self) -> bool {
        self.store.wait_until_ready().await.is_ok()
    }

    /// What the namespace's `pullguard.io/mode` label says.
    pub fn mode_of(&self, namespace: &str) -> NamespaceMode {
        let Some(found) = self.store.get(&reflector::ObjectRef::new(namespace)) else {
            return NamespaceMode::Unset;
        };
        let found: Arc<Namespace> = found;
        match found.labels().get(MODE_KEY) {
            None => NamespaceMode::Unset,
            Some(value) => match value.parse() {
                Ok(mode) => NamespaceMode::Set(mode),
                Err(_) => NamespaceMode::Invalid(value.clone()),
            },
        }
    }
}

/// A namespace's `pullguard.io/mode` label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceMode {
    Unset,
    Set(Mode),
    /// A value that is no mode (`Warn`, `off`): the configured mode applies, and the user is told.
    Invalid(String),
}

impl NamespaceMode {
    pub fn mode(&self) -> Option<Mode> {
        match self {
            NamespaceMode::Set(mode) => Some(*mode),
            NamespaceMode::Unset | NamespaceMode::Invalid(_) => None,
        }
    }
}

/// Only the name and the mode label are ever read; the rest would just occupy memory.
fn strip(namespace: &mut Namespace) {
    namespace.managed_fields_mut().clear();
    namespace.annotations_mut().clear();
    namespace.labels_mut().retain(|key, _| key == MODE_KEY);
    namespace.spec = None;
    namespace.status = None;
}
