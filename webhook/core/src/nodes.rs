//! The node inventory: Nodes reduced to the facts scheduling and platform checks read (labels,
//! taints, platform, the images a node holds). Kubelet heartbeats modify Nodes every few seconds
//! without touching any of that, so a watch's events fold into [`Inventory`] as facts, and only a
//! change of facts publishes a new snapshot.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;

use crate::{
    platform::Platform,
    reference::ImageRef,
    scheduling::{ARCH_LABEL, NodeFacts, OS_LABEL, WINDOWS_BUILD_LABEL},
    watched::Watched,
};

/// The nodes, folded from a watch on Nodes.
pub type Inventory = Watched<NodeFacts>;

/// The nodes, by name: what admissions read until the next change.
pub fn snapshot(inventory: &Inventory) -> Arc<[NodeFacts]> {
    let mut list: Vec<NodeFacts> = inventory.values().cloned().collect();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    Arc::from(list)
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

    /// A heartbeat changes nothing the checks read; a relabelled node does.
    #[test]
    fn node_facts_fold_into_a_sorted_snapshot() {
        use crate::watched::WatchEvent::*;
        let mut inventory = Inventory::default();
        inventory.apply(RelistStarted);
        inventory.apply(Listed("b".into(), node("b", "arm64")));
        inventory.apply(Listed("a".into(), node("a", "amd64")));
        assert!(inventory.apply(RelistDone));
        let names: Vec<String> = snapshot(&inventory).iter().map(|node| node.name.clone()).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(!inventory.apply(Applied("a".into(), node("a", "amd64"))));
        assert!(inventory.apply(Applied("a".into(), node("a", "arm64"))));
        assert_eq!(snapshot(&inventory)[0].platform.to_string(), "linux/arm64");
    }
}
