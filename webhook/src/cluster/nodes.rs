//! Nodes from the API server, followed by a watch and folded into the core's node inventory.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use kube::{Api, runtime::watcher};
use pullguard_core::{
    nodes::{node_facts, snapshot},
    scheduling::NodeFacts,
};

use super::watch::Followed;

#[derive(Clone)]
pub struct NodeInventory {
    followed: Followed<Arc<[NodeFacts]>>,
}

impl NodeInventory {
    /// Starts the watch; it runs (with backoff on errors) for the life of the process.
    pub fn start(client: kube::Client) -> NodeInventory {
        let api: Api<Node> = Api::all(client);
        NodeInventory {
            followed: Followed::start(api, watcher::Config::default(), "node", node_facts, snapshot),
        }
    }

    /// Resolves once the first full list has arrived; false if the watch task ended first.
    pub async fn wait_until_ready(&self) -> bool {
        self.followed.wait_until_ready().await
    }

    pub fn is_synced(&self) -> bool {
        self.followed.is_synced()
    }

    /// The nodes as last seen; cheap to take on every admission.
    pub fn nodes(&self) -> Arc<[NodeFacts]> {
        self.followed.current().unwrap_or_else(|| Arc::from(Vec::new()))
    }
}
