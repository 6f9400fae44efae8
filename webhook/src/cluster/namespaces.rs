//! Per-namespace modes: a watch on the namespaces that carry the `pullguard.io/mode` label, each
//! reduced to what its label says, folded into the core's [`NamespaceModes`].

use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, ResourceExt, runtime::watcher};
use pullguard_core::{
    config::MODE_KEY,
    namespaces::{self, NamespaceMode, NamespaceModes as Modes},
};

use super::watch::Followed;

#[derive(Clone)]
pub struct NamespaceModes {
    followed: Followed<Arc<Modes>>,
}

impl NamespaceModes {
    /// Starts the watch; it runs (with backoff on errors) for the life of the process.
    pub fn start(client: kube::Client) -> NamespaceModes {
        let api: Api<Namespace> = Api::all(client);
        let labelled = watcher::Config::default().labels(MODE_KEY);
        NamespaceModes { followed: Followed::start(api, labelled, "namespace", mode_label, copied) }
    }

    /// Resolves once the first full list has arrived.
    pub async fn wait_until_ready(&self) -> bool {
        self.followed.wait_until_ready().await
    }

    /// What the namespace's `pullguard.io/mode` label says.
    pub fn mode_of(&self, namespace: &str) -> NamespaceMode {
        self.followed.current().map_or(NamespaceMode::Unset, |modes| namespaces::mode_of(&modes, namespace))
    }
}

fn mode_label(namespace: &Namespace) -> NamespaceMode {
    NamespaceMode::of_label(namespace.labels().get(MODE_KEY).map(String::as_str))
}

/// Namespaces change rarely and only labelled ones are followed: each change publishes a copy.
fn copied(modes: &Modes) -> Arc<Modes> {
    Arc::new(modes.clone())
}
