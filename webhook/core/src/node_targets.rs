//! Where a pod can land, remembered per node inventory. Matching a pod against every node costs
//! time in proportion to the cluster (about half a microsecond per node in the warm bench's
//! profile), yet the answer depends only on the pod's scheduling fields and the inventory, and
//! the pods of a cluster share a handful of those: a deployment's replicas, every pod without a
//! selector. So each answer is kept until the inventory changes (a node added, relabelled,
//! tainted or removed).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use k8s_openapi::api::core::v1::{NodeAffinity, PodOS, PodSpec, Toleration};

use crate::{checks::NodeTargets, scheduling::NodeFacts};

/// Distinct scheduling fields remembered per inventory; past that, the oldest answer goes.
const REMEMBERED: usize = 64;

#[derive(Default)]
pub struct TargetsMemo {
    state: Mutex<Remembered>,
}

#[derive(Default)]
struct Remembered {
    /// The inventory the answers were computed from; held, so that its address is not reused.
    nodes: Option<Arc<[NodeFacts]>>,
    answers: Vec<(Scheduling, Arc<NodeTargets>)>,
}

/// What [`NodeTargets::for_pod`] reads of a pod.
#[derive(PartialEq)]
struct Scheduling {
    node_name: Option<String>,
    node_selector: Option<BTreeMap<String, String>>,
    node_affinity: Option<NodeAffinity>,
    tolerations: Option<Vec<Toleration>>,
    os: Option<PodOS>,
}

impl Scheduling {
    fn of(spec: &PodSpec) -> Scheduling {
        Scheduling {
            node_name: spec.node_name.clone(),
            node_selector: spec.node_selector.clone(),
            node_affinity: node_affinity(spec).cloned(),
            tolerations: spec.tolerations.clone(),
            os: spec.os.clone(),
        }
    }

    /// Compared field by field against the borrowed spec: a hit copies nothing.
    fn is_of(&self, spec: &PodSpec) -> bool {
        self.node_name == spec.node_name
            && self.node_selector == spec.node_selector
            && self.tolerations == spec.tolerations
            && self.os == spec.os
            && self.node_affinity.as_ref() == node_affinity(spec)
    }
}

fn node_affinity(spec: &PodSpec) -> Option<&NodeAffinity> {
    spec.affinity.as_ref()?.node_affinity.as_ref()
}

impl TargetsMemo {
    /// [`NodeTargets::for_pod`], computed once per scheduling fields and inventory.
    pub fn targets(
        &self,
        spec: &PodSpec,
        nodes: &Arc<[NodeFacts]>,
        pool_labels: &[String],
    ) -> Arc<NodeTargets> {
        if let Some(known) = self.recall(spec, nodes) {
            return known;
        }
        // Computed outside the lock: a large inventory must not hold up other admissions.
        let targets = Arc::new(NodeTargets::for_pod(spec, nodes, pool_labels));
        if let Ok(mut state) = self.state.lock()
            && state.nodes.as_ref().is_some_and(|known| Arc::ptr_eq(known, nodes))
            && !state.answers.iter().any(|(scheduling, _)| scheduling.is_of(spec))
        {
            if state.answers.len() >= REMEMBERED {
                state.answers.remove(0);
            }
            state.answers.push((Scheduling::of(spec), targets.clone()));
        }
        targets
    }

    fn recall(&self, spec: &PodSpec, nodes: &Arc<[NodeFacts]>) -> Option<Arc<NodeTargets>> {
        let mut state = self.state.lock().ok()?;
        if !state.nodes.as_ref().is_some_and(|known| Arc::ptr_eq(known, nodes)) {
            // A newer inventory (or, briefly, an older one still in hand): answers start over.
            state.nodes = Some(nodes.clone());
            state.answers.clear();
            return None;
        }
        state
            .answers
            .iter()
            .find(|(scheduling, _)| scheduling.is_of(spec))
            .map(|(_, targets)| targets.clone())
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Taint;
    use serde_json::json;

    use super::*;
    use crate::platform::Platform;

    fn node(name: &str, pool: &str, arch: &str, taint: Option<&str>) -> NodeFacts {
        NodeFacts {
            images: Default::default(),
            runtime: String::new(),
            name: name.into(),
            labels: BTreeMap::from([
                ("pool".to_string(), pool.to_string()),
                ("kubernetes.io/arch".to_string(), arch.to_string()),
            ]),
            taints: taint
                .map(|key| Taint { key: key.into(), effect: "NoSchedule".into(), ..Taint::default() })
                .into_iter()
                .collect(),
            platform: Platform::new("linux", arch, ""),
        }
    }

    fn inventory() -> Arc<[NodeFacts]> {
        Arc::from(vec![
            node("a1", "amd", "amd64", None),
            node("a2", "amd", "amd64", None),
            node("r1", "arm", "arm64", Some("arch")),
            node("g1", "gpu", "amd64", Some("gpu")),
            // Cordoned: only a DaemonSet's pods still land here.
            node("c1", "cordoned", "amd64", Some("node.kubernetes.io/unschedulable")),
        ])
    }

    fn spec(value: serde_json::Value) -> PodSpec {
        serde_json::from_value(value).unwrap()
    }

    /// Pods that differ in each scheduling field, and in fields scheduling does not read.
    fn specs() -> Vec<PodSpec> {
        let arm_toleration = json!([{"key": "arch", "operator": "Exists", "effect": "NoSchedule"}]);
        vec![
            spec(json!({"containers": []})),
            spec(json!({"containers": [{"name": "other", "image": "x"}], "serviceAccountName": "s"})),
            spec(json!({"containers": [], "nodeSelector": {"pool": "arm"}})),
            spec(json!({"containers": [], "nodeSelector": {"pool": "arm"}, "tolerations": arm_toleration})),
            spec(json!({"containers": [], "tolerations": arm_toleration})),
            spec(json!({"containers": [], "nodeName": "g1"})),
            spec(json!({"containers": [], "nodeSelector": {"pool": "cordoned"}})),
            spec(json!({"containers": [], "nodeSelector": {"kubernetes.io/arch": "s390x"}})),
            spec(
                json!({"containers": [], "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["amd"]}]}]}}}}),
            ),
            spec(
                json!({"containers": [], "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "NotIn", "values": ["amd"]}]}]}}}}),
            ),
        ]
    }

    #[test]
    fn every_answer_is_the_one_computed_afresh() {
        let memo = TargetsMemo::default();
        let nodes = inventory();
        let labels = vec!["pool".to_string()];
        // Twice over: the second round is answered from memory.
        for _ in 0..2 {
            for spec in specs() {
                let remembered = memo.targets(&spec, &nodes, &labels);
                assert_eq!(*remembered, NodeTargets::for_pod(&spec, &nodes, &labels), "{spec:?}");
            }
        }
    }

    #[test]
    fn an_answer_is_computed_once_per_inventory() {
        let memo = TargetsMemo::default();
        let labels = vec!["pool".to_string()];
        let nodes = inventory();
        let pod = spec(json!({"containers": [], "nodeSelector": {"pool": "amd"}}));
        let first = memo.targets(&pod, &nodes, &labels);
        let again = memo.targets(&pod, &nodes, &labels);
        assert!(Arc::ptr_eq(&first, &again), "the same scheduling fields are answered from memory");
        // A fresh inventory with the same content is still a new inventory: asked again.
        let relisted = inventory();
        let after_change = memo.targets(&pod, &relisted, &labels);
        assert!(!Arc::ptr_eq(&first, &after_change));
        assert_eq!(first, after_change);
        // The pool scaled to zero: the answer follows the inventory.
        let scaled: Arc<[NodeFacts]> = Arc::from(vec![node("r1", "arm", "arm64", Some("arch"))]);
        assert_eq!(*memo.targets(&pod, &scaled, &labels), NodeTargets::Pools(Vec::new()));
    }

    #[test]
    fn memory_is_bounded() {
        let memo = TargetsMemo::default();
        let nodes = inventory();
        for index in 0..(REMEMBERED * 3) {
            let pod = spec(json!({"containers": [], "nodeSelector": {"zone": format!("z{index}")}}));
            memo.targets(&pod, &nodes, &[]);
        }
        assert_eq!(memo.state.lock().unwrap().answers.len(), REMEMBERED);
    }
}
