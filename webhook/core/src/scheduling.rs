//! Which nodes a pod can land on, by the scheduler's hard rules: `spec.nodeName`,
//! `nodeSelector`, required node affinity (terms ORed, expressions ANDed, all operators,
//! `matchFields` on `metadata.name`), and NoSchedule/NoExecute taints the pod must tolerate.
//! Pure: nodes in, candidate nodes out.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PodSpec, Taint, Toleration,
};
use serde::Serialize;

use crate::platform::Platform;

pub const OS_LABEL: &str = "kubernetes.io/os";
pub const ARCH_LABEL: &str = "kubernetes.io/arch";
pub const WINDOWS_BUILD_LABEL: &str = "node.kubernetes.io/windows-build";
/// When no configured pool label is present, the instance type still groups like nodes.
pub const FALLBACK_POOL_LABEL: &str = "node.kubernetes.io/instance-type";

/// What pullguard keeps of a Node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeFacts {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    #[serde(skip)]
    pub taints: Vec<Taint>,
    pub platform: Platform,
    /// The images the node reports holding (`status.images`), keyed as
    /// [`crate::reference::ImageRef::node_image_key`]. The kubelet reports at most 50 by default,
    /// so absence here is no proof.
    #[serde(skip)]
    pub images: std::sync::Arc<std::collections::BTreeSet<String>>,
    /// `status.nodeInfo.containerRuntimeVersion`, e.g. `containerd://1.7.27`.
    #[serde(skip)]
    pub runtime: String,
}

impl NodeFacts {
    /// Whether the node's runtime still pulls Docker schema 1 manifests: containerd before 2.0
    /// (deprecated there, removed in 2.0). Any other or unknown runtime is taken not to.
    pub fn pulls_schema1(&self) -> bool {
        self.runtime.strip_prefix("containerd://").is_some_and(|version| version.starts_with("1."))
    }
}

impl NodeFacts {
    /// The node's pool: the first configured pool label it carries, else its instance type, else
    /// the node itself. Borrowed from the node: candidates are grouped on every admission.
    pub fn pool_name<'a>(&'a self, pool_labels: &'a [String]) -> PoolName<'a> {
        pool_labels
            .iter()
            .map(String::as_str)
            .chain([FALLBACK_POOL_LABEL])
            .find_map(|label| self.labels.get(label).map(|value| PoolName::Label(label, value)))
            .unwrap_or(PoolName::Node(&self.name))
    }
}

/// `label=value`, or `node NAME` for a node that carries no pool label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PoolName<'a> {
    Label(&'a str, &'a str),
    Node(&'a str),
}

impl std::fmt::Display for PoolName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PoolName::Label(label, value) => write!(f, "{label}={value}"),
            PoolName::Node(name) => write!(f, "node {name}"),
        }
    }
}

/// Taints that say how a node is doing, not which pods belong on it: the API server puts
/// `not-ready` on every new node until its kubelet reports Ready (autoscaled pools, scale from
/// zero, upgrades), the node lifecycle controller adds the others for conditions and cordoning.
/// They pass, so they never take a node out of its pool when asking which platforms a pod can
/// land on (a pool whose only node is booting would otherwise look like no pool at all).
const CONDITION_TAINTS: [&str; 7] = [
    "node.kubernetes.io/not-ready",
    "node.kubernetes.io/unreachable",
    "node.kubernetes.io/memory-pressure",
    "node.kubernetes.io/disk-pressure",
    "node.kubernetes.io/pid-pressure",
    "node.kubernetes.io/network-unavailable",
    "node.kubernetes.io/unschedulable",
];

fn is_condition_taint(taint: &Taint) -> bool {
    CONDITION_TAINTS.contains(&taint.key.as_str())
}

/// The nodes among `nodes` that the pod may be scheduled on, whatever state they are in now.
pub fn candidates<'a>(spec: &PodSpec, nodes: &'a [NodeFacts]) -> Vec<&'a NodeFacts> {
    nodes.iter().filter(|node| admits(spec, node)).collect()
}

fn admits(spec: &PodSpec, node: &NodeFacts) -> bool {
    if let Some(name) = spec.node_name.as_deref().filter(|name| !name.is_empty()) {
        return name == node.name;
    }
    let selector_matches =
        spec.node_selector.iter().flatten().all(|(key, value)| node.labels.get(key) == Some(value));
    let affinity =
        spec.affinity.as_ref().and_then(|affinity| affinity.node_affinity.as_ref()).and_then(
            |node_affinity| node_affinity.required_during_scheduling_ignored_during_execution.as_ref(),
        );
    let affinity_matches = affinity.is_none_or(|selector| selector_matches_node(selector, node));
    let tolerations = spec.tolerations.as_deref().unwrap_or_default();
    // The kubelet refuses a pod whose `spec.os.name` is not its node's OS.
    let os_matches = spec.os.as_ref().is_none_or(|os| os.name == node.platform.os);
    selector_matches && affinity_matches && os_matches && tolerates_all(tolerations, &node.taints)
}

fn selector_matches_node(selector: &NodeSelector, node: &NodeFacts) -> bool {
    selector.node_selector_terms.iter().any(|term| term_matches(term, node))
}

/// An empty term matches nothing, as in the scheduler.
fn term_matches(term: &NodeSelectorTerm, node: &NodeFacts) -> bool {
    let expressions = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if expressions.is_empty() && fields.is_empty() {
        return false;
    }
    expressions.iter().all(|requirement| requirement_matches(requirement, node.labels.get(&requirement.key)))
        && fields.iter().all(|requirement| {
            requirement.key == "metadata.name" && requirement_matches(requirement, Some(&node.name))
        })
}

fn requirement_matches(requirement: &NodeSelectorRequirement, value: Option<&String>) -> bool {
    let values = requirement.values.as_deref().unwrap_or_default();
    match requirement.operator.as_str() {
        "In" => value.is_some_and(|value| values.contains(value)),
        "NotIn" => value.is_none_or(|value| !values.contains(value)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(value), [bound]) = (value, values) else { return false };
            let (Ok(value), Ok(bound)) = (value.parse::<i64>(), bound.parse::<i64>()) else { return false };
            if requirement.operator == "Gt" { value > bound } else { value < bound }
        }
        _ => false,
    }
}

/// Only taints that keep pods off a node count; PreferNoSchedule is a preference.
fn tolerates_all(tolerations: &[Toleration], taints: &[Taint]) -> bool {
    taints
        .iter()
        .filter(|taint| taint.effect == "NoSchedule" || taint.effect == "NoExecute")
        .filter(|taint| !is_condition_taint(taint))
        .all(|taint| tolerations.iter().any(|toleration| tolerates(toleration, taint)))
}

fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect_matches =
        toleration.effect.as_deref().is_none_or(|effect| effect.is_empty() || effect == taint.effect);
    if !effect_matches {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or_default();
    match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => key.is_empty() || key == taint.key,
        "Equal" => {
            !key.is_empty()
                && key == taint.key
                && toleration.value.as_deref().unwrap_or_default()
                    == taint.value.as_deref().unwrap_or_default()
        }
        _ => false,
    }
}

/// The platform the pod's own selector or required affinity names, for pools scaled to zero:
/// `kubernetes.io/os` and `kubernetes.io/arch` from `nodeSelector`, or from a single-term `In`
/// with one value.
pub fn platform_from_selectors(spec: &PodSpec) -> Option<Platform> {
    let from_selector =
        |label: &str| spec.node_selector.as_ref().and_then(|selector| selector.get(label).cloned());
    let from_affinity = |label: &str| {
        let terms = &spec
            .affinity
            .as_ref()?
            .node_affinity
            .as_ref()?
            .required_during_scheduling_ignored_during_execution
            .as_ref()?
            .node_selector_terms;
        let [term] = terms.as_slice() else { return None };
        term.match_expressions.iter().flatten().find_map(|requirement| {
            match (requirement.key == label, requirement.operator.as_str(), requirement.values.as_deref()) {
                (true, "In", Some([value])) => Some(value.clone()),
                _ => None,
            }
        })
    };
    let arch = from_selector(ARCH_LABEL).or_else(|| from_affinity(ARCH_LABEL))?;
    let os =
        from_selector(OS_LABEL).or_else(|| from_affinity(OS_LABEL)).unwrap_or_else(|| "linux".to_string());
    Some(Platform::new(&os, &arch, ""))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Affinity, NodeAffinity};
    use serde_json::json;

    use super::*;

    fn node(name: &str, labels: &[(&str, &str)], taints: &[(&str, &str, &str)]) -> NodeFacts {
        let labels: BTreeMap<String, String> =
            labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let platform = Platform::new(
            labels.get(OS_LABEL).map_or("linux", String::as_str),
            labels.get(ARCH_LABEL).map_or("amd64", String::as_str),
            "",
        );
        NodeFacts {
            images: Default::default(),
            runtime: String::new(),
            name: name.into(),
            labels,
            taints: taints
                .iter()
                .map(|(key, value, effect)| Taint {
                    key: key.to_string(),
                    value: (!value.is_empty()).then(|| value.to_string()),
                    effect: effect.to_string(),
                    ..Taint::default()
                })
                .collect(),
            platform,
        }
    }

    fn spec(value: serde_json::Value) -> PodSpec {
        let mut value = value;
        value["containers"] = json!([{"name": "c", "image": "i"}]);
        serde_json::from_value(value).unwrap()
    }

    fn names(spec: &PodSpec, nodes: &[NodeFacts]) -> Vec<String> {
        candidates(spec, nodes).iter().map(|node| node.name.clone()).collect()
    }

    fn cluster() -> Vec<NodeFacts> {
        vec![
            node(
                "amd-1",
                &[(ARCH_LABEL, "amd64"), (OS_LABEL, "linux"), ("pool", "general"), ("cpu", "8")],
                &[],
            ),
            node(
                "arm-1",
                &[(ARCH_LABEL, "arm64"), (OS_LABEL, "linux"), ("pool", "arm")],
                &[("arch", "arm64", "NoSchedule")],
            ),
            node("win-1", &[(ARCH_LABEL, "amd64"), (OS_LABEL, "windows")], &[("os", "windows", "NoExecute")]),
            node("soft-1", &[(ARCH_LABEL, "amd64"), ("cpu", "32")], &[("spot", "", "PreferNoSchedule")]),
        ]
    }

    #[test]
    fn selectors_affinity_and_taints_table() {
        let nodes = cluster();
        let cases: Vec<(serde_json::Value, Vec<&str>)> = vec![
            (json!({}), vec!["amd-1", "soft-1"]),
            (json!({"nodeName": "win-1"}), vec!["win-1"]),
            (json!({"nodeSelector": {"pool": "arm"}}), vec![]),
            (
                json!({"nodeSelector": {"pool": "arm"}, "tolerations": [{"key": "arch", "operator": "Equal", "value": "arm64", "effect": "NoSchedule"}]}),
                vec!["arm-1"],
            ),
            (json!({"tolerations": [{"key": "arch", "value": "amd64"}]}), vec!["amd-1", "soft-1"]),
            (json!({"tolerations": [{"operator": "Exists"}]}), vec!["amd-1", "arm-1", "win-1", "soft-1"]),
            (
                json!({"tolerations": [{"key": "os", "operator": "Exists", "effect": "NoSchedule"}]}),
                vec!["amd-1", "soft-1"],
            ),
            (json!({"tolerations": [{"key": "os", "operator": "Exists"}]}), vec!["amd-1", "win-1", "soft-1"]),
        ];
        for (value, expected) in cases {
            assert_eq!(names(&spec(value.clone()), &nodes), expected, "{value}");
        }
    }

    #[test]
    fn affinity_operators() {
        let nodes = cluster();
        let with_affinity = |terms: serde_json::Value| {
            let mut pod = spec(json!({"tolerations": [{"operator": "Exists"}]}));
            pod.affinity = Some(Affinity {
                node_affinity: Some(NodeAffinity {
                    required_during_scheduling_ignored_during_execution: Some(
                        serde_json::from_value(json!({"nodeSelectorTerms": terms})).unwrap(),
                    ),
                    ..NodeAffinity::default()
                }),
                ..Affinity::default()
            });
            pod
        };
        let cases: Vec<(serde_json::Value, Vec<&str>)> = vec![
            (
                json!([{"matchExpressions": [{"key": ARCH_LABEL, "operator": "In", "values": ["arm64"]}]}]),
                vec!["arm-1"],
            ),
            (
                json!([{"matchExpressions": [{"key": OS_LABEL, "operator": "NotIn", "values": ["windows"]}]}]),
                vec!["amd-1", "arm-1", "soft-1"],
            ),
            (json!([{"matchExpressions": [{"key": "pool", "operator": "Exists"}]}]), vec!["amd-1", "arm-1"]),
            (
                json!([{"matchExpressions": [{"key": "pool", "operator": "DoesNotExist"}]}]),
                vec!["win-1", "soft-1"],
            ),
            (
                json!([{"matchExpressions": [{"key": "cpu", "operator": "Gt", "values": ["16"]}]}]),
                vec!["soft-1"],
            ),
            (
                json!([{"matchExpressions": [{"key": "cpu", "operator": "Lt", "values": ["16"]}]}]),
                vec!["amd-1"],
            ),
            (json!([{"matchExpressions": [{"key": "cpu", "operator": "Gt", "values": ["x"]}]}]), vec![]),
            (
                json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["win-1"]}]}]),
                vec!["win-1"],
            ),
            (
                json!([
                    {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["arm"]}]},
                    {"matchExpressions": [{"key": OS_LABEL, "operator": "In", "values": ["windows"]}]}
                ]),
                vec!["arm-1", "win-1"],
            ),
            (
                json!([{"matchExpressions": [
                    {"key": ARCH_LABEL, "operator": "In", "values": ["amd64"]},
                    {"key": "pool", "operator": "Exists"}
                ]}]),
                vec!["amd-1"],
            ),
            (json!([{}]), vec![]),
        ];
        for (terms, expected) in cases {
            assert_eq!(names(&with_affinity(terms.clone()), &nodes), expected, "{terms}");
        }
    }

    #[test]
    fn spec_os_narrows_the_candidates() {
        let nodes =
            vec![node("linux-1", &[(OS_LABEL, "linux")], &[]), node("win-1", &[(OS_LABEL, "windows")], &[])];
        let names =
            |pod: &PodSpec| candidates(pod, &nodes).iter().map(|n| n.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&spec(json!({}))), ["linux-1", "win-1"]);
        assert_eq!(names(&spec(json!({"os": {"name": "windows"}}))), ["win-1"]);
        assert_eq!(names(&spec(json!({"os": {"name": "linux"}}))), ["linux-1"]);
    }

    #[test]
    fn condition_taints_never_take_a_node_out_of_its_pool() {
        let nodes = vec![
            node("booting", &[], &[("node.kubernetes.io/not-ready", "", "NoSchedule")]),
            node("down", &[], &[("node.kubernetes.io/unreachable", "", "NoExecute")]),
            node("cordoned", &[], &[("node.kubernetes.io/unschedulable", "", "NoSchedule")]),
            node("pressed", &[], &[("node.kubernetes.io/memory-pressure", "", "NoSchedule")]),
            node("full", &[], &[("node.kubernetes.io/disk-pressure", "", "NoSchedule")]),
            node("forking", &[], &[("node.kubernetes.io/pid-pressure", "", "NoSchedule")]),
            node("offline", &[], &[("node.kubernetes.io/network-unavailable", "", "NoSchedule")]),
            node("gpu", &[], &[("nvidia.com/gpu", "", "NoSchedule")]),
        ];
        let pod = spec(json!({}));
        let names = candidates(&pod, &nodes).iter().map(|n| n.name.clone()).collect::<Vec<_>>();
        assert_eq!(names, ["booting", "down", "cordoned", "pressed", "full", "forking", "offline"]);
    }

    #[test]
    fn pools_and_selector_platforms() {
        let labels = ["pool".to_string()];
        assert_eq!(cluster()[0].pool_name(&labels).to_string(), "pool=general");
        assert_eq!(cluster()[2].pool_name(&labels).to_string(), "node win-1");
        let typed = node("t", &[(FALLBACK_POOL_LABEL, "m7g.large")], &[]);
        assert_eq!(typed.pool_name(&labels).to_string(), "node.kubernetes.io/instance-type=m7g.large");

        let from_selector = spec(json!({"nodeSelector": {ARCH_LABEL: "arm64"}}));
        assert_eq!(platform_from_selectors(&from_selector).unwrap().to_string(), "linux/arm64");
        let mut from_affinity = spec(json!({}));
        from_affinity.affinity =
            serde_json::from_value(json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": OS_LABEL, "operator": "In", "values": ["windows"]},
                {"key": ARCH_LABEL, "operator": "In", "values": ["amd64"]}]}]}}}))
            .unwrap();
        assert_eq!(platform_from_selectors(&from_affinity).unwrap().to_string(), "windows/amd64");
        assert_eq!(platform_from_selectors(&spec(json!({}))), None);
    }
}
