//! Node-pool scenarios as a table, from Node objects as the API server stores them to the platform
//! findings of a pod: pools by label or by platform, tainted and booting nodes, pools scaled to
//! zero, Windows builds, `spec.os`. The real control plane (`tests/tests/cluster/`) covers the
//! wiring: nodes reaching the inventory through the watch, added, deleted and tainted live.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use k8s_openapi::api::core::v1::{Node, PodSpec};
use pullguard_core::{
    checks::{NodeTargets, Placement, Subject, platform_findings},
    config::Config,
    facts::{ImageFacts, facts_of},
    finding::Code,
    manifest::{OCI_INDEX, OCI_MANIFEST, parse},
    nodes::node_facts,
    scheduling::NodeFacts,
};
use serde_json::{Value, json};

const POOL: &str = "cloud.google.com/gke-nodepool";

fn node(name: &str, labels: Value, taints: Value, unschedulable: bool) -> NodeFacts {
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"taints": taints, "unschedulable": unschedulable},
    }))
    .unwrap();
    node_facts(&node)
}

/// The cluster of the control-plane suite, and the nodes it adds in its scenarios.
fn cluster() -> Vec<NodeFacts> {
    let linux =
        |pool: &str, arch: &str| json!({POOL: pool, "kubernetes.io/os": "linux", "kubernetes.io/arch": arch});
    let windows = |pool: &str, build: &str| {
        json!({POOL: pool, "kubernetes.io/os": "windows", "kubernetes.io/arch": "amd64",
               "node.kubernetes.io/windows-build": build})
    };
    // What the API server gives every new node until a kubelet reports Ready.
    let not_ready = json!({"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"});
    let mut nodes = vec![
        node("general-1", linux("general", "amd64"), json!([]), false),
        node("general-2", linux("general", "amd64"), json!([]), false),
        node(
            "arm-1",
            linux("arm-pool", "arm64"),
            json!([{"key": "arch", "value": "arm64", "effect": "NoSchedule"}]),
            false,
        ),
        node(
            "win-1",
            windows("win", "10.0.20348"),
            json!([{"key": "os", "value": "windows", "effect": "NoSchedule"}]),
            false,
        ),
        node("win2025-1", windows("win2025", "10.0.26100"), json!([]), false),
        node("booting-1", linux("booting-pool", "arm64"), json!([not_ready]), false),
        node(
            "cordoned-1",
            linux("cordoned-pool", "arm64"),
            json!([not_ready, {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]),
            true,
        ),
    ];
    // A kubeadm group: no pool label at all.
    for index in 0..3 {
        let labels = json!({"group": "kubeadm", "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"});
        nodes.push(node(&format!("worker-{index}"), labels, json!([]), false));
    }
    nodes
}

/// An image as its registry describes it: an index of `platforms` (`os/arch` or `os/arch@version`).
fn image(platforms: &[&str]) -> ImageFacts {
    let entries: Vec<Value> = platforms
        .iter()
        .enumerate()
        .map(|(n, platform)| {
            let (platform, version) = platform.split_once('@').unwrap_or((platform, ""));
            let (os, architecture) = platform.split_once('/').unwrap();
            let mut described = json!({"os": os, "architecture": architecture});
            if !version.is_empty() {
                described["os.version"] = json!(version);
            }
            json!({"mediaType": OCI_MANIFEST, "digest": format!("sha256:{}", n.to_string().repeat(64)),
                   "size": 1, "platform": described})
        })
        .collect();
    let body = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).to_string();
    facts_of("sha256:index", OCI_INDEX, parse(OCI_INDEX, body.as_bytes()).unwrap()).0
}

/// One pod spec, and per image: the codes of its platform findings and a part of the first one's
/// message.
type Case = (&'static str, Value, bool, Vec<(&'static str, Vec<Code>, &'static str)>);

#[test]
fn node_pools_decide_the_platform_findings() {
    let images = |name: &str| match name {
        "multi" => image(&["linux/amd64", "linux/arm64"]),
        "amdonly" => image(&["linux/amd64"]),
        "armonly" => image(&["linux/arm64"]),
        "ltsc2019" => image(&["windows/amd64@10.0.17763.5830"]),
        "ltsc2022" => image(&["windows/amd64@10.0.20348.2700"]),
        "ltsc2025" => image(&["windows/amd64@10.0.26100.2894"]),
        other => panic!("no image {other}"),
    };
    let arm_pool = json!({"nodeSelector": {POOL: "arm-pool"},
        "tolerations": [{"key": "arch", "operator": "Equal", "value": "arm64", "effect": "NoSchedule"}]});
    let windows_agent = |pool: &str| {
        json!({"nodeSelector": {"kubernetes.io/os": "windows", POOL: pool},
               "tolerations": [{"key": "os", "operator": "Exists", "effect": "NoSchedule"}]})
    };
    let selecting = |selector: Value| json!({ "nodeSelector": selector });
    let (fits, cannot, some, windows, unverified) = (
        vec![],
        vec![Code::NoRunnablePlatform],
        vec![Code::SomeNodesCannotRun],
        vec![Code::WindowsVersionMismatch],
        vec![Code::PlatformNotVerified],
    );
    let cases: Vec<Case> = vec![
        (
            "the arm pool",
            arm_pool,
            false,
            vec![
                ("multi", fits.clone(), ""),
                ("amdonly", cannot.clone(), "cloud.google.com/gke-nodepool=arm-pool"),
            ],
        ),
        (
            "no selector: the amd64 pools can run it, the others cannot",
            json!({}),
            false,
            vec![("amdonly", some.clone(), "It runs on cloud.google.com/gke-nodepool=general")],
        ),
        (
            "spec.os windows leaves the Windows nodes only",
            json!({"os": {"name": "windows"}}),
            false,
            vec![("amdonly", cannot.clone(), "cloud.google.com/gke-nodepool=win2025")],
        ),
        (
            "a DaemonSet on build 20348",
            windows_agent("win"),
            true,
            vec![
                ("ltsc2019", windows.clone(), ""),
                ("ltsc2022", fits.clone(), ""),
                ("ltsc2025", windows.clone(), ""),
            ],
        ),
        // Windows Server 2025 runs the previous LTSC's containers (stable ABI).
        (
            "a DaemonSet on build 26100",
            windows_agent("win2025"),
            true,
            vec![
                ("ltsc2022", fits.clone(), ""),
                ("ltsc2025", fits.clone(), ""),
                ("ltsc2019", windows.clone(), ""),
            ],
        ),
        (
            "a pool scaled to zero, arm64 selected",
            selecting(json!({POOL: "scaled-to-zero", "kubernetes.io/arch": "arm64"})),
            false,
            vec![("amdonly", cannot.clone(), "scaled to zero")],
        ),
        (
            "a pool scaled to zero, amd64 selected",
            selecting(json!({POOL: "scaled-to-zero", "kubernetes.io/arch": "amd64"})),
            false,
            vec![("amdonly", fits.clone(), "")],
        ),
        (
            "a pool scaled to zero, no platform named",
            selecting(json!({POOL: "gpu-pool"})),
            false,
            vec![("amdonly", unverified, "")],
        ),
        (
            "a booting node (not-ready taint) stays in its pool",
            selecting(json!({POOL: "booting-pool"})),
            false,
            vec![("amdonly", cannot.clone(), "booting-pool"), ("multi", fits.clone(), "")],
        ),
        (
            "a cordoned node stays in its pool",
            selecting(json!({POOL: "cordoned-pool"})),
            false,
            vec![("amdonly", cannot.clone(), "cordoned-pool"), ("multi", fits, "")],
        ),
        (
            "nodes without a pool label are named by platform",
            selecting(json!({"group": "kubeadm"})),
            false,
            vec![("armonly", cannot, "nodes without a pool label (linux/amd64, 3 node(s))")],
        ),
    ];
    let nodes = cluster();
    let pool_labels = Config::default().node_pool_labels;
    let subject = Subject { container: "app", image: "r.example/app:v1", volume: false };
    for (what, spec, daemonset, expected) in cases {
        let mut spec = spec;
        spec["containers"] = json!([{"name": "app", "image": "r.example/app:v1"}]);
        let spec: PodSpec = serde_json::from_value(spec).unwrap();
        let targets = NodeTargets::for_pod(&spec, &nodes, &pool_labels);
        for (name, codes, says) in expected {
            let findings =
                platform_findings(subject, &images(name), &targets, Placement::of(daemonset, &spec));
            let found: Vec<Code> = findings.iter().map(|finding| finding.code).collect();
            assert_eq!(found, codes, "{what}, {name}: {findings:#?}");
            if let Some(finding) = findings.first() {
                let message = &finding.message;
                assert!(message.contains(says), "{what}, {name}: {message}");
                // Nodes are named by pool, never listed one by one; an image newer than the
                // host cannot be fixed by a rebuild for it.
                assert!(!message.contains("worker-1"), "{what}, {name}: {message}");
                assert!(name != "ltsc2025" || !message.contains("buildx"), "{what}, {name}: {message}");
            }
        }
    }
}
