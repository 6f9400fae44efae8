//! PG300..PG303: does the image have a platform that runs where the pod can land?

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::PodSpec;
use serde::Serialize;

use super::Subject;
use crate::{
    facts::ImageFacts,
    finding::{Code, Finding, Severity},
    platform::Platform,
    scheduling::{self, NodeFacts, PoolName},
};

/// Nodes of one pool and platform, the images all of them hold so far (`None` before the first),
/// and whether all of them still pull schema 1.
type Counted = (usize, Option<BTreeSet<String>>, bool);

/// How the pods of a spec are placed on its candidate nodes, which decides how sure a platform
/// mismatch is and what fix to suggest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Placement {
    /// The scheduler picks one candidate node per pod (Deployments, Jobs, ...).
    #[default]
    Scheduled,
    /// A pod on every candidate node (a DaemonSet): a node that cannot run the image fails.
    EveryNode,
    /// Bound to one node by `spec.nodeName` (`kubectl debug`, static placement): no selector helps.
    Bound,
}

impl Placement {
    /// The placement of `spec`; `daemonset` for a DaemonSet's template.
    pub fn of(daemonset: bool, spec: &PodSpec) -> Placement {
        if spec.node_name.as_deref().is_some_and(|name| !name.is_empty()) {
            Placement::Bound
        } else if daemonset {
            Placement::EveryNode
        } else {
            Placement::Scheduled
        }
    }
}

/// Where a pod can run, as far as platforms go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum NodeTargets {
    /// Candidate nodes, grouped by pool.
    Pools(Vec<Pool>),
    /// No node matches (pools scaled to zero), but the pod's selector names a platform.
    Selector(Platform),
    /// Nothing to compare with; the reason goes into an info finding.
    Unknown(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pool {
    pub name: String,
    pub platform: Platform,
    /// The images every node of the pool reports holding; `None` for stand-in pools
    /// (`check --platform`), whose nodes nobody knows.
    #[serde(skip)]
    pub held_by_every_node: Option<BTreeSet<String>>,
    /// Every node of the pool runs containerd 1.x, which still pulls schema 1; `None` for
    /// stand-in pools.
    #[serde(skip)]
    pub pulls_schema1: Option<bool>,
    pub nodes: usize,
}

impl NodeTargets {
    /// Where a pod with `spec` can land among `nodes`: its candidate nodes grouped by pool, else
    /// (no node admits it, as when its pools are scaled to zero) the platform its selector names.
    pub fn for_pod(spec: &PodSpec, nodes: &[NodeFacts], pool_labels: &[String]) -> NodeTargets {
        let candidates = scheduling::candidates(spec, nodes);
        if candidates.is_empty() {
            return match scheduling::platform_from_selectors(spec) {
                Some(platform) => NodeTargets::Selector(platform),
                None => NodeTargets::Pools(Vec::new()),
            };
        }
        NodeTargets::from_nodes(&candidates, pool_labels)
    }

    /// Groups candidate nodes by pool and platform (a pool with mixed platforms appears once per platform).
    ///
    /// Nodes without any pool label (kubeadm clusters) are grouped by platform, not listed one by
    /// one: thirty such nodes are one line of a message, and a single one keeps its name.
    pub fn from_nodes(candidates: &[&NodeFacts], pool_labels: &[String]) -> NodeTargets {
        let mut counted: BTreeMap<(Option<PoolName<'_>>, &Platform), Counted> = BTreeMap::new();
        let mut unlabelled_names: BTreeMap<&Platform, &str> = BTreeMap::new();
        for node in candidates {
            let pool = match node.pool_name(pool_labels) {
                PoolName::Node(name) => {
                    unlabelled_names.entry(&node.platform).or_insert(name);
                    None
                }
                labelled => Some(labelled),
            };
            let (nodes, held, schema1) = counted.entry((pool, &node.platform)).or_insert((0, None, true));
            *nodes += 1;
            *schema1 &= node.pulls_schema1();
            *held = Some(match held.take() {
                None => (*node.images).clone(),
                Some(so_far) => so_far.intersection(&node.images).cloned().collect(),
            });
        }
        let mut pools: Vec<Pool> = counted
            .into_iter()
            .map(|((pool, platform), (nodes, held, schema1))| Pool {
                name: match (pool, nodes) {
                    (Some(pool), _) => pool.to_string(),
                    (None, 1) => {
                        format!("node {}", unlabelled_names.get(platform).copied().unwrap_or_default())
                    }
                    (None, _) => "nodes without a pool label".to_string(),
                },
                platform: platform.clone(),
                held_by_every_node: Some(held.unwrap_or_default()),
                pulls_schema1: Some(schema1),
                nodes,
            })
            .collect();
        // By name as written, which is how messages list them.
        pools.sort_by(|a, b| (&a.name, &a.platform).cmp(&(&b.name, &b.platform)));
        NodeTargets::Pools(pools)
    }

    /// Whether every candidate node reports holding the image with `key`
    /// ([`crate::reference::ImageRef::node_image_key`]); `None` when the nodes are not known.
    pub fn held_everywhere(&self, key: &str) -> Option<bool> {
        match self {
            NodeTargets::Pools(pools) if !pools.is_empty() => {
                let mut every = true;
                for pool in pools {
                    every &= pool.held_by_every_node.as_ref()?.contains(key);
                }
                Some(every)
            }
            _ => None,
        }
    }

    /// Whether every candidate node is known to run containerd 1.x (which still pulls schema 1).
    pub fn all_pull_schema1(&self) -> bool {
        match self {
            NodeTargets::Pools(pools) if !pools.is_empty() => {
                pools.iter().all(|pool| pool.pulls_schema1 == Some(true))
            }
            _ => false,
        }
    }

    /// Stand-in nodes for `check --platform`: one pool per platform.
    pub fn from_platforms(platforms: &[Platform]) -> NodeTargets {
        NodeTargets::Pools(
            platforms
                .iter()
                .map(|platform| Pool {
                    name: format!("--platform {platform}"),
                    platform: platform.clone(),
                    held_by_every_node: None,
                    pulls_schema1: None,
                    nodes: 1,
                })
                .collect(),
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fit {
    Runs,
    WrongWindowsBuild,
    No,
}

fn fit(node: &Platform, images: &[Platform]) -> Fit {
    let mut best = Fit::No;
    for image in images.iter().filter(|image| node.runs(image)) {
        let build_mismatch =
            node.os == "windows" && !crate::platform::windows_host_runs(&node.os_version, &image.os_version);
        if !build_mismatch {
            return Fit::Runs;
        }
        best = Fit::WrongWindowsBuild;
    }
    best
}

fn list(platforms: &[Platform]) -> String {
    platforms.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

fn describe_pools(pools: &[&Pool]) -> String {
    pools
        .iter()
        .map(|pool| format!("{} ({}, {} node(s))", pool.name, pool.platform, pool.nodes))
        .collect::<Vec<_>>()
        .join("; ")
}

/// `placement`: with a pod on every candidate node (a DaemonSet) a node that cannot run the image
/// certainly fails, where for other workloads the scheduler may still avoid it.
pub fn platform_findings(
    subject: Subject<'_>,
    facts: &ImageFacts,
    targets: &NodeTargets,
    placement: Placement,
) -> Vec<Finding> {
    let images = facts.comparable_platforms();
    if images.is_empty() {
        // Artifacts and manifests without platform data are judged elsewhere (PG403); guessing here would lie.
        return Vec::new();
    }
    let finding = match targets {
        NodeTargets::Unknown(reason) => Some(subject.finding(
            Code::PlatformNotVerified,
            format!("platform not verified: {reason}"),
            format!(
                "the platforms of {} ({}) were not compared with the nodes: {reason}.",
                subject.image,
                list(images)
            ),
        )),
        NodeTargets::Selector(platform) => (fit(platform, images) == Fit::No).then(|| {
            subject.finding(
                Code::NoRunnablePlatform,
                format!("no {platform} image: built for {}", list(images)),
                format!(
                    "{} is built for {} but the pod's node selector asks for {platform} nodes (none are \
                     running now, so the pool is probably scaled to zero): the pull will fail with \"no \
                     match for platform in manifest\". Build and push the image for {platform} (for \
                     example docker buildx build --platform {}), or change the selector.",
                    subject.image,
                    list(images),
                    platform.buildx()
                ),
            )
        }),
        NodeTargets::Pools(pools) if pools.is_empty() => Some(subject.finding(
            Code::PlatformNotVerified,
            "platform not verified: no node matches the pod's scheduling constraints",
            format!(
                "no node currently matches the nodeSelector, affinity and tolerations of this pod, and \
                 they name no kubernetes.io/arch, so the platforms of {} ({}) could not be checked.",
                subject.image,
                list(images)
            ),
        )),
        NodeTargets::Pools(pools) => pool_finding(subject, images, pools, placement),
    };
    finding.into_iter().collect()
}

fn pool_finding(
    subject: Subject<'_>,
    images: &[Platform],
    pools: &[Pool],
    placement: Placement,
) -> Option<Finding> {
    let fits: Vec<(&Pool, Fit)> = pools.iter().map(|pool| (pool, fit(&pool.platform, images))).collect();
    let running: Vec<&Pool> =
        fits.iter().filter(|(_, fit)| *fit == Fit::Runs).map(|(pool, _)| *pool).collect();
    let failing: Vec<&Pool> =
        fits.iter().filter(|(_, fit)| *fit != Fit::Runs).map(|(pool, _)| *pool).collect();
    if failing.is_empty() {
        return None;
    }
    let wrong_build = fits.iter().any(|(_, fit)| *fit == Fit::WrongWindowsBuild);
    if running.is_empty() && wrong_build {
        let builds: Vec<String> = failing.iter().map(|pool| pool.platform.os_version.clone()).collect();
        return Some(subject.finding(
            Code::WindowsVersionMismatch,
            format!("Windows build mismatch: image {} vs nodes {}", list(images), builds.join(", ")),
            format!(
                "{} is a Windows image for {} but the candidate nodes run Windows build {}: \
                 process-isolated Windows containers need the same major.minor.build, so the container \
                 fails to start (\"The container operating system does not match the host operating \
                 system\"). A Windows host runs process-isolated containers of its own build, and from \
                 Windows Server 2022 on also those of an older long-term release down to 2022; never a newer \
                 one. Use an image built for a Windows version these nodes run (for example the one their \
                 own build names), or publish an index with an entry per Windows version.",
                subject.image,
                list(images),
                builds.join(", ")
            ),
        ));
    }
    if running.is_empty() {
        return Some(subject.finding(
            Code::NoRunnablePlatform,
            format!("built for {}, nodes are {}", list(images), describe_platforms(&failing)),
            format!(
                "{} is built for {} but every node this pod can be scheduled on runs another platform: \
                 {}. The pull fails with \"no match for platform in manifest\" (or the container with \
                 \"exec format error\"). Build the image for the nodes' platform (docker buildx build \
                 --platform {}){}.",
                subject.image,
                list(images),
                describe_pools(&failing),
                failing.first().map(|pool| pool.platform.buildx()).unwrap_or_default(),
                if placement == Placement::Bound {
                    "; the pod is bound to its node (spec.nodeName), so no selector can move it"
                } else {
                    ", or add a nodeSelector for a pool whose platform the image has"
                }
            ),
        ));
    }
    if placement == Placement::EveryNode {
        // A DaemonSet puts a pod on every node it selects and tolerates: those that cannot run
        // the image will fail, whatever the scheduler does.
        return Some(subject.finding_with(
            Code::SomeNodesCannotRun,
            Severity::Error,
            format!(
                "will fail on {}: built for {}",
                failing.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", "),
                list(images)
            ),
            format!(
                "{} is built for {}. This DaemonSet runs a pod on every node it selects and tolerates, and \
                 those on {} cannot run it: they will fail with \"no match for platform in manifest\". It \
                 runs on {}. Restrict the DaemonSet to those pools (a nodeSelector or node affinity), or \
                 build the image for every platform it lands on.",
                subject.image,
                list(images),
                describe_pools(&failing),
                describe_pools(&running),
            ),
        ));
    }
    Some(subject.finding(
        Code::SomeNodesCannotRun,
        format!(
            "only some nodes can run it: fine on {}",
            running.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
        ),
        format!(
            "{} is built for {}. Some nodes this pod can be scheduled on cannot run it: {}. It runs on {}. \
             The scheduler may still pick a node that cannot pull it. Add a nodeSelector (for example \
             kubernetes.io/arch: {}) or build the image for every platform in the cluster.",
            subject.image,
            list(images),
            describe_pools(&failing),
            describe_pools(&running),
            running.first().map(|pool| pool.platform.architecture.clone()).unwrap_or_default()
        ),
    ))
}

fn describe_platforms(pools: &[&Pool]) -> String {
    let mut platforms: Vec<String> = pools.iter().map(|pool| pool.platform.to_string()).collect();
    platforms.sort();
    platforms.dedup();
    platforms.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{ImagePlatform, ManifestKind};

    fn facts(platforms: &[(&str, &str, Option<&str>, Option<&str>)]) -> ImageFacts {
        ImageFacts {
            digest: "sha256:x".into(),
            media_type: "application/vnd.oci.image.index.v1+json".into(),
            kind: ManifestKind::OciIndex,
            platforms: platforms
                .iter()
                .map(|(os, arch, variant, version)| ImagePlatform {
                    os: os.to_string(),
                    architecture: arch.to_string(),
                    variant: variant.map(String::from),
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

    fn pools(list: &[(&str, &str, &str)]) -> NodeTargets {
        NodeTargets::Pools(
            list.iter()
                .map(|(name, platform, build)| Pool {
                    held_by_every_node: None,
                    pulls_schema1: None,
                    name: name.to_string(),
                    platform: Platform::parse(platform).unwrap().with_os_version(build),
                    nodes: 2,
                })
                .collect(),
        )
    }

    fn codes(facts: &ImageFacts, targets: &NodeTargets) -> Vec<Code> {
        platform_findings(
            Subject { container: "c", image: "i", volume: false },
            facts,
            targets,
            Placement::Scheduled,
        )
        .iter()
        .map(|f| f.code)
        .collect()
    }

    #[test]
    fn table() {
        let arm = facts(&[("linux", "arm64", Some("v8"), None)]);
        let multi = facts(&[("linux", "amd64", None, None), ("linux", "arm64", Some("v8"), None)]);
        let win2019 = facts(&[("windows", "amd64", None, Some("10.0.17763.5830"))]);
        let amd = pools(&[("general", "linux/amd64", "")]);
        let mixed = pools(&[("general", "linux/amd64", ""), ("graviton", "linux/arm64", "")]);
        let win2022 = pools(&[("win", "windows/amd64", "10.0.20348")]);
        let win2019_nodes = pools(&[("win", "windows/amd64", "10.0.17763")]);
        let cases = [
            (&arm, &amd, vec![Code::NoRunnablePlatform]),
            (&multi, &amd, vec![]),
            (&arm, &mixed, vec![Code::SomeNodesCannotRun]),
            (&multi, &mixed, vec![]),
            (&win2019, &win2022, vec![Code::WindowsVersionMismatch]),
            (&win2019, &win2019_nodes, vec![]),
            (&win2019, &amd, vec![Code::NoRunnablePlatform]),
            (
                &arm,
                &NodeTargets::Selector(Platform::parse("linux/amd64").unwrap()),
                vec![Code::NoRunnablePlatform],
            ),
            (&arm, &NodeTargets::Selector(Platform::parse("linux/arm64").unwrap()), vec![]),
            (&arm, &NodeTargets::Unknown("no cluster".into()), vec![Code::PlatformNotVerified]),
            (&arm, &NodeTargets::Pools(vec![]), vec![Code::PlatformNotVerified]),
            (&facts(&[]), &amd, vec![]),
        ];
        for (facts, targets, expected) in cases {
            assert_eq!(codes(facts, targets), expected, "{targets:?}");
        }
    }

    /// kubeadm clusters label no pools: nodes are grouped by platform, not listed one by one.
    #[test]
    fn nodes_without_a_pool_label_are_grouped_by_platform() {
        let node = |name: String, arch: &str| NodeFacts {
            name,
            labels: Default::default(),
            taints: Vec::new(),
            platform: Platform::new("linux", arch, ""),
            images: Default::default(),
            runtime: String::new(),
        };
        let mut nodes: Vec<NodeFacts> = (0..30).map(|i| node(format!("worker-{i}"), "amd64")).collect();
        nodes.push(node("pi".into(), "arm64"));
        let candidates: Vec<&NodeFacts> = nodes.iter().collect();
        let NodeTargets::Pools(pools) = NodeTargets::from_nodes(&candidates, &[]) else { panic!("pools") };
        let named: Vec<(&str, usize)> = pools.iter().map(|pool| (pool.name.as_str(), pool.nodes)).collect();
        assert_eq!(named, [("node pi", 1), ("nodes without a pool label", 30)]);
    }

    #[test]
    fn messages_name_pools_and_the_fix() {
        let arm = facts(&[("linux", "arm64", Some("v8"), None)]);
        let subject = Subject { container: "c", image: "i", volume: false };
        let mixed = pools(&[("general", "linux/amd64", ""), ("graviton", "linux/arm64", "")]);
        let finding = &platform_findings(subject, &arm, &mixed, Placement::Scheduled)[0];
        assert_eq!((finding.code, finding.severity), (Code::SomeNodesCannotRun, Severity::Warning));
        // A DaemonSet lands on every pool: the amd64 one certainly fails.
        let daemonset = &platform_findings(subject, &arm, &mixed, Placement::EveryNode)[0];
        assert_eq!((daemonset.code, daemonset.severity), (Code::SomeNodesCannotRun, Severity::Error));
        assert!(daemonset.summary.contains("will fail on general"), "{}", daemonset.summary);
        assert!(finding.message.contains("general (linux/amd64"), "{}", finding.message);
        assert!(finding.message.contains("kubernetes.io/arch: arm64"), "{}", finding.message);
        let finding = &platform_findings(
            subject,
            &arm,
            &pools(&[("general", "linux/amd64", "")]),
            Placement::Scheduled,
        )[0];
        assert!(finding.message.contains("--platform linux/amd64"), "{}", finding.message);
    }
}
