//! The node inventory: a watch on Nodes reduced to what scheduling and platform checks read
//! (labels, taints, platform, the images the node holds). Kubelet heartbeats modify Nodes every
//! few seconds without touching any of that, so a change is only published when the reduced
//! facts differ.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::{
    Api, ResourceExt,
    runtime::{WatchStreamExt, watcher},
};
use tokio::sync::watch;
use tracing::warn;

use crate::{
    platform::Platform,
    reference::ImageRef,
    scheduling::{ARCH_LABEL, NodeFacts, OS_LABEL, WINDOWS_BUILD_LABEL},
};

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
            let mut nodes: HashMap<String, NodeFacts> = HashMap::new();
            let mut relisting: Option<HashMap<String, NodeFacts>> = None;
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                let changed = match event {
                    Ok(watcher::Event::Init) => {
                        relisting = Some(HashMap::new());
                        false
                    }
                    Ok(watcher::Event::InitApply(node)) => {
                        let facts = node_facts(&node);
                        relisting.get_or_insert_with(HashMap::new).insert(facts.name.clone(), facts);
                        false
                    }
                    Ok(watcher::Event::InitDone) => {
                        nodes = relisting.take().unwrap_or_default();
                        let _ = synced_tx.send(true);
                        true
                    }
                    Ok(watcher::Event::Apply(node)) => {
                        let facts = node_facts(&node);
                        let unchanged = nodes.get(&facts.name) == Some(&facts);
                        nodes.insert(facts.name.clone(), facts);
                        !unchanged
                    }
                    Ok(watcher::Event::Delete(node)) => nodes.remove(&node.name_any()).is_some(),
                    Err(error) => {
                        warn!(%error, "node watch failed; retrying");
                        false
                    }
                };
                if changed {
                    let mut list: Vec<NodeFacts> = nodes.values().cloned().collect();
                    list.sort_by(|a, b| a.name.cmp(&b.name));
                    if let Ok(mut current) = published.write() {
                        *current = Arc::from(list);
                    }
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

/// Labels first (what the scheduler matches), `status.nodeInfo` as the fallback.
pub fn node_facts(node: &Node) -> NodeFacts {
    let labels = node.labels().clone();
    let info = node.status.as_ref().and_then(|status| status.node_info.as_ref());
    let os = labels.get(OS_LABEL).cloned().or_else(|| info.map(|info| info.operating_system.clone()));
    let arch = labels.get(ARCH_LABEL).cloned().or_else(|| info.map(|info| info.architecture.clone()));
    let mut platform =
        Platform::new(os.as_deref().unwrap_or("linux"), arch.as_deref().unwrap_or("amd64"), "");
    if platform.os == "windows" {
        let build = labels
            .get(WINDOWS_BUILD_LABEL)
            .cloned()
            .or_else(|| info.map(|info| windows_build(&info.kernel_version)))
            .unwrap_or_default();
        platform = platform.with_os_version(&build);
    }
    let images = node
        .status
        .iter()
        .flat_map(|status| status.images.iter().flatten())
        .flat_map(|image| image.names.iter().flatten())
        .filter_map(|name| ImageRef::parse(name).ok())
        .map(|image| image.node_image_key())
        .collect();
    NodeFacts {
        runtime: info.map(|info| info.container_runtime_version.clone()).unwrap_or_default(),
        images: Arc::new(images),
        name: node.name_any(),
        labels,
        taints: node.spec.as_ref().and_then(|spec| spec.taints.clone()).unwrap_or_default(),
        platform,
    }
}

/// `10.0.17763.5830` -> `10.0.17763`: process isolation needs major.minor.build to match.
pub fn windows_build(version: &str) -> String {
    version.split('.').take(3).collect::<Vec<_>>().join(".")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn facts_from_labels_then_node_info() {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "w1", "labels": {"kubernetes.io/os": "windows", "kubernetes.io/arch": "amd64"}},
            "spec": {"taints": [{"key": "os", "value": "windows", "effect": "NoSchedule"}]},
            "status": {"nodeInfo": {"operatingSystem": "windows", "architecture": "amd64",
                "kernelVersion": "10.0.20348.2700", "machineID": "", "systemUUID": "", "bootID": "",
                "containerRuntimeVersion": "", "kubeletVersion": "", "kubeProxyVersion": "", "osImage": ""}}
        }))
        .unwrap();
        let facts = node_facts(&node);
        assert_eq!(facts.platform.to_string(), "windows/amd64 (10.0.20348)");
        assert_eq!(facts.taints.len(), 1);

        let bare: Node = serde_json::from_value(json!({
            "metadata": {"name": "n1"},
            "status": {"nodeInfo": {"operatingSystem": "linux", "architecture": "arm64",
                "kernelVersion": "6.1", "machineID": "", "systemUUID": "", "bootID": "",
                "containerRuntimeVersion": "", "kubeletVersion": "", "kubeProxyVersion": "", "osImage": ""}}
        }))
        .unwrap();
        assert_eq!(node_facts(&bare).platform.to_string(), "linux/arm64");
    }
}
