//! Node-pool scenarios as a table, from Node objects as the API server stores them to the platform
//! findings of a pod: pools by label or by platform, tainted and booting nodes, pools scaled to
//! zero, Windows builds, `spec.os`. The real control plane (`tests/tests/cluster/`) covers the
//! wiring: nodes reaching the inventory through the watch, added, deleted and tainted live.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use k8s_openapi::api::core::v1::{Node, PodSpec};
use pullguard_core::{
    checks::{NodeTargets, Placement, Subject, platform_findings},
    config::Config,
    facts::ImageFacts,
    finding::Code,
    manifest::{ImagePlatform, ManifestKind},
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

fn image(platforms: &[(&str, &str, Option<&str>)]) -> ImageFacts {
    ImageFacts {
        digest: "sha256:x".into(),
        media_type: "application/vnd.oci.image.index.v1+json".into(),
        kind: ManifestKind::OciIndex,
        platforms: platforms
            .iter()
            .map(|(os, architecture, version)| ImagePlatform {
                os: os.to_string(),
                architecture: architecture.to_string(),
                variant: None,
                os_version: version.map(String::from),
            })
            .collect(),
        config_media_type: None,
        artifact_type: None,
        compressed_size: None,
        layers: vec![],
        comparable_platforms: Default::default(),
    }
}

struct Row {
    what: &'static str,
    spec: Value,
    daemonset: bool,
    image: &'static str,
    codes: &'static [Code],
    /// A part of the message of the first finding.
    says: &'static str,
    /// What the message must not say.
    never_says: &'static str,
}

#[test]
fn node_pools_decide_the_platform_findings() {
    let images = |name: &str| match name {
        "multi" => image(&[("linux", "amd64", None), ("linux", "arm64", None)]),
        "amdonly" => image(&[("linux", "amd64", None)]),
        "armonly" => image(&[("linux", "arm64", None)]),
        "ltsc2019" => image(&[("windows", "amd64", Some("10.0.17763.5830"))]),
        "ltsc2022" => image(&[("windows", "amd64", Some("10.0.20348.2700"))]),
        "ltsc2025" => image(&[("windows", "amd64", Some("10.0.26100.2894"))]),
        other => panic!("no image {other}"),
    };
    let arm_pool = json!({"nodeSelector": {POOL: "arm-pool"},
        "tolerations": [{"key": "arch", "operator": "Equal", "value": "arm64", "effect": "NoSchedule"}]});
    let windows_agent = |pool: &str| {
        json!({"nodeSelector": {"kubernetes.io/os": "windows", POOL: pool},
               "tolerations": [{"key": "os", "operator": "Exists", "effect": "NoSchedule"}]})
    };
    let rows = [
        Row {
            what: "a multi-arch image on the arm pool",
            spec: arm_pool.clone(),
            daemonset: false,
            image: "multi",
            codes: &[],
            says: "",
            never_says: "worker-1",
        },
        Row {
            what: "an amd64 image on the arm pool",
            spec: arm_pool.clone(),
            daemonset: false,
            image: "amdonly",
            codes: &[Code::NoRunnablePlatform],
            says: "cloud.google.com/gke-nodepool=arm-pool",
            never_says: "worker-1",
        },
        Row {
            what: "no selector: the amd64 pools can run it, the others cannot",
            spec: json!({}),
            daemonset: false,
            image: "amdonly",
            codes: &[Code::SomeNodesCannotRun],
            says: "It runs on cloud.google.com/gke-nodepool=general",
            never_says: "worker-1",
        },
        Row {
            what: "spec.os windows leaves the Windows nodes only",
            spec: json!({"os": {"name": "windows"}}),
            daemonset: false,
            image: "amdonly",
            codes: &[Code::NoRunnablePlatform],
            says: "cloud.google.com/gke-nodepool=win",
            never_says: "worker-1",
        },
        Row {
            what: "ltsc2019 on build 20348",
            spec: windows_agent("win"),
            daemonset: true,
            image: "ltsc2019",
            codes: &[Code::WindowsVersionMismatch],
            says: "",
            never_says: "worker-1",
        },
        Row {
            what: "ltsc2022 on build 20348",
            spec: windows_agent("win"),
            daemonset: true,
            image: "ltsc2022",
            codes: &[],
            says: "",
            never_says: "worker-1",
        },
        Row {
            what: "Windows Server 2025 runs the previous LTSC (stable ABI)",
            spec: windows_agent("win2025"),
            daemonset: true,
            image: "ltsc2022",
            codes: &[],
            says: "",
            never_says: "worker-1",
        },
        Row {
            what: "ltsc2025 on 2025",
            spec: windows_agent("win2025"),
            daemonset: true,
            image: "ltsc2025",
            codes: &[],
            says: "",
            never_says: "worker-1",
        },
        Row {
            what: "ltsc2019 on 2025",
            spec: windows_agent("win2025"),
            daemonset: true,
            image: "ltsc2019",
            codes: &[Code::WindowsVersionMismatch],
            says: "",
            never_says: "worker-1",
        },
        Row {
            what: "a 2025 image on 2022 hosts: no rebuild advice",
            spec: windows_agent("win"),
            daemonset: true,
            image: "ltsc2025",
            codes: &[Code::WindowsVersionMismatch],
            says: "",
            never_says: "buildx",
        },
        Row {
            what: "a pool scaled to zero: the selector names the platform",
            spec: json!({"nodeSelector": {POOL: "scaled-to-zero", "kubernetes.io/arch": "arm64"}}),
            daemonset: false,
            image: "amdonly",
            codes: &[Code::NoRunnablePlatform],
            says: "scaled to zero",
            never_says: "worker-1",
        },
        Row {
            what: "a pool scaled to zero, the image fits the selector",
            spec: json!({"nodeSelector": {POOL: "scaled-to-zero", "kubernetes.io/arch": "amd64"}}),
            daemonset: false,
            image: "amdonly",
            codes: &[],
            says: "",
            never_says: "worker-1",
        },
        Row {
            what: "a pool scaled to zero, no platform named: not verified",
            spec: json!({"nodeSelector": {POOL: "gpu-pool"}}),
            daemonset: false,
            image: "amdonly",
            codes: &[Code::PlatformNotVerified],
            says: "",
            never_says: "worker-1",
        },
        Row {
            what: "a booting node (not-ready taint) stays in its pool",
            spec: json!({"nodeSelector": {POOL: "booting-pool"}}),
            daemonset: false,
            image: "amdonly",
            codes: &[Code::NoRunnablePlatform],
            says: "booting-pool",
            never_says: "worker-1",
        },
        Row {
            what: "a cordoned node stays in its pool",
            spec: json!({"nodeSelector": {POOL: "cordoned-pool"}}),
            daemonset: false,
            image: "multi",
            codes: &[],
            says: "",
            never_says: "worker-1",
        },
        Row {
            what: "nodes without a pool label are named by platform, not one by one",
            spec: json!({"nodeSelector": {"group": "kubeadm"}}),
            daemonset: false,
            image: "armonly",
            codes: &[Code::NoRunnablePlatform],
            says: "nodes without a pool label (linux/amd64, 3 node(s))",
            never_says: "worker-1",
        },
    ];
    let nodes = cluster();
    let pool_labels = Config::default().node_pool_labels;
    let subject = Subject { container: "app", image: "r.example/app:v1", volume: false };
    for row in rows {
        let mut spec = row.spec.clone();
        spec["containers"] = json!([{"name": "app", "image": "r.example/app:v1"}]);
        let spec: PodSpec = serde_json::from_value(spec).unwrap();
        let targets = NodeTargets::for_pod(&spec, &nodes, &pool_labels);
        let findings =
            platform_findings(subject, &images(row.image), &targets, Placement::of(row.daemonset, &spec));
        let codes: Vec<Code> = findings.iter().map(|finding| finding.code).collect();
        assert_eq!(codes, row.codes, "{}: {findings:#?}", row.what);
        if let Some(finding) = findings.first() {
            assert!(finding.message.contains(row.says), "{}: {}", row.what, finding.message);
            assert!(!finding.message.contains(row.never_says), "{}: {}", row.what, finding.message);
        }
    }
}
