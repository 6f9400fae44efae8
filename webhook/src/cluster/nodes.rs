//! Nodes from the API server: a watch whose events are folded into the core's
//! [`Inventory`]; a snapshot is published only when the facts admissions read have changed.

use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::{
    Api, ResourceExt,
    runtime::{WatchStreamExt, watcher},
};
use pullguard_core::{
    nodes::{Inventory, NodeEvent, node_facts},
    scheduling::NodeFacts,
};
use tokio::sync::watch;
use tracing::warn;

#[derive(Clone)]
pub struct NodeInventory {
    snapshot: Arc<RwLock<Arc<[NodeFacts]>>>,
    synced: watch::Receiver<bool>,
}

impl NodeInventory {
    /// Starts the watch; it runs (with backoff on errors) for the life of the process.
    pub fn start(client: kube::Client) -> NodeInventory {
        let snapshot: Arc<RwLock<Arc<[NodeFacts]>>> = Arc::new(RwLock::new(Arc::from(Vec::new())));
        let (synced_tx, synced) = watch::channel(false);
        let api: Api<Node> = Api::all(client);
        let stream = watcher(api, watcher::Config::default()).default_backoff();
        let published = snapshot.clone();
        tokio::spawn(async move {
            let mut inventory = Inventory::default();
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                let event = match event {
                    Ok(event) => node_event(event),
                    Err(error) => {
                        warn!(%error, "node watch failed; retrying");
                        continue;
                    }
                };
                if inventory.apply(event) {
                    if let Ok(mut current) = published.write() {
                        *current = inventory.snapshot();
                    }
                    let _ = synced_tx.send_if_modified(|synced| !std::mem::replace(synced, true));
                }
            }
        });
        NodeInventory { snapshot, synced }
    }

    /// Resolves once the first full list has arrived; false if the watch task ended first.
    pub async fn wait_until_ready(&self) -> bool {
        let mut synced = self.synced.clone();
        synced.wait_for(|synced| *synced).await.is_ok()
    }

    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// The nodes as last seen; cheap to take on every admission.
    pub fn nodes(&self) -> Arc<[NodeFacts]> {
        self.snapshot.read().map(|current| current.clone()).unwrap_or_else(|_| Arc::from(Vec::new()))
    }
}

fn node_event(event: watcher::Event<Node>) -> NodeEvent {
    match event {
        watcher::Event::Init => NodeEvent::RelistStarted,
        watcher::Event::InitApply(node) => NodeEvent::Listed(node_facts(&node)),
        watcher::Event::InitDone => NodeEvent::RelistDone,
        watcher::Event::Apply(node) => NodeEvent::Applied(node_facts(&node)),
        watcher::Event::Delete(node) => NodeEvent::Deleted(node.name_any()),
    }
}
