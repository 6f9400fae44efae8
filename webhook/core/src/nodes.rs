//! The node inventory: what a watch on Nodes says, folded into the facts scheduling and platform
//! checks read (labels, taints, platform, the images a node holds). Kubelet heartbeats modify
//! Nodes every few seconds without touching any of that, so [`Inventory::apply`] says whether the
//! reduced facts changed, and only then is a new snapshot published.

use std::{collections::HashMap, sync::Arc};

use k8s_openapi::api::core::v1::Node;

use crate::{
    platform::Platform,
    reference::ImageRef,
    scheduling::{ARCH_LABEL, NodeFacts, OS_LABEL, WINDOWS_BUILD_LABEL},
};

/// One step of a watch on Nodes, in the watch's own order: a (re)list is `RelistStarted`, a
/// `Listed` per node, then `RelistDone`; changes between lists are `Applied` and `Deleted`.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeEvent {
    RelistStarted,
    Listed(NodeFacts),
    RelistDone,
    Applied(NodeFacts),
    Deleted(String),
}

/// The nodes as the last complete list and the changes since describe them.
#[derive(Debug, Default)]
pub struct Inventory {
    nodes: HashMap<String, NodeFacts>,
    /// Nodes of a list in progress: they replace `nodes` only once the list is complete, so a
    /// relist never shows a half-empty cluster.
    relisting: Option<HashMap<String, NodeFacts>>,
    synced: bool,
}

impl Inventory {
    /// Folds one event in; true when the facts the checks read have changed.
    pub fn apply(&mut self, event: NodeEvent) -> bool {
        match event {
            NodeEvent::RelistStarted => {
                self.relisting = Some(HashMap::new());
                false
            }
            NodeEvent::Listed(facts) => {
                self.relisting.get_or_insert_with(HashMap::new).insert(facts.name.clone(), facts);
                false
            }
            NodeEvent::RelistDone => {
                let listed = self.relisting.take().unwrap_or_default();
                let changed = !self.synced || listed != self.nodes;
                self.nodes = listed;
                self.synced = true;
                changed
            }
            NodeEvent::Applied(facts) => {
                let unchanged = self.nodes.get(&facts.name) == Some(&facts);
                self.nodes.insert(facts.name.clone(), facts);
                !unchanged
            }
            NodeEvent::Deleted(name) => self.nodes.remove(&name).is_some(),
        }
    }

    /// True once a first complete list has been folded in.
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// The nodes, by name: what admissions read until the next change.
    pub fn snapshot(&self) -> Arc<[NodeFacts]> {
        let mut list: Vec<NodeFacts> = self.nodes.values().cloned().collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        Arc::from(list)
    }
}

/// Labels first (what the scheduler matches), `status.nodeInfo` as the fallback.
pub fn node_facts(node: &Node) -> NodeFacts {
    let labels = node.metadata.labels.clone().unwrap_or_default();
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
        name: node.metadata.name.clone().unwrap_or_default(),
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

    fn node(name: &str, arch: &str) -> NodeFacts {
        node_facts(
            &serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {"kubernetes.io/os": "linux", "kubernetes.io/arch": arch}}
            }))
            .unwrap(),
        )
    }

    fn names(inventory: &Inventory) -> Vec<String> {
        inventory.snapshot().iter().map(|node| format!("{}:{}", node.name, node.platform)).collect()
    }

    /// Each row: an event, whether it changes what admissions read, and the nodes afterwards.
    #[test]
    fn watch_events_fold_into_the_inventory() {
        let mut inventory = Inventory::default();
        let steps: Vec<(NodeEvent, bool, &[&str])> = vec![
            (NodeEvent::RelistStarted, false, &[]),
            (NodeEvent::Listed(node("a", "amd64")), false, &[]),
            (NodeEvent::Listed(node("b", "arm64")), false, &[]),
            (NodeEvent::RelistDone, true, &["a:linux/amd64", "b:linux/arm64"]),
            // A heartbeat: the node's facts are the same.
            (NodeEvent::Applied(node("a", "amd64")), false, &["a:linux/amd64", "b:linux/arm64"]),
            (NodeEvent::Applied(node("a", "arm64")), true, &["a:linux/arm64", "b:linux/arm64"]),
            (
                NodeEvent::Applied(node("c", "amd64")),
                true,
                &["a:linux/arm64", "b:linux/arm64", "c:linux/amd64"],
            ),
            (NodeEvent::Deleted("b".into()), true, &["a:linux/arm64", "c:linux/amd64"]),
            (NodeEvent::Deleted("b".into()), false, &["a:linux/arm64", "c:linux/amd64"]),
            // A relist (after a dropped watch) shows the old nodes until it is complete, then
            // only what it listed: a node deleted while the watch was down is gone.
            (NodeEvent::RelistStarted, false, &["a:linux/arm64", "c:linux/amd64"]),
            (NodeEvent::Listed(node("a", "arm64")), false, &["a:linux/arm64", "c:linux/amd64"]),
            (NodeEvent::RelistDone, true, &["a:linux/arm64"]),
            (NodeEvent::RelistStarted, false, &["a:linux/arm64"]),
            (NodeEvent::Listed(node("a", "arm64")), false, &["a:linux/arm64"]),
            (NodeEvent::RelistDone, false, &["a:linux/arm64"]),
        ];
        assert!(!inventory.is_synced());
        for (row, (event, changes, after)) in steps.into_iter().enumerate() {
            let description = format!("row {row}: {event:?}");
            assert_eq!(inventory.apply(event), changes, "{description}");
            assert_eq!(names(&inventory), after, "{description}");
        }
        assert!(inventory.is_synced());
    }

    #[test]
    fn an_empty_first_list_is_a_change_and_syncs() {
        let mut inventory = Inventory::default();
        assert!(!inventory.apply(NodeEvent::RelistStarted));
        assert!(inventory.apply(NodeEvent::RelistDone), "the first list is published even when empty");
        assert!(inventory.is_synced() && inventory.snapshot().is_empty());
    }
}
