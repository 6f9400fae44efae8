//! PG104 and PG105: what the pull policy changes. The kubelet pulls an `IfNotPresent` image only
//! on a node that lacks it, and a `Never` image never: then the node's own images decide, not
//! the registry. Nodes list what they hold in `status.images` (at most 50 by default), so a
//! listed image is certain and a missing one is not.

use super::{NodeTargets, Subject};
use crate::{
    finding::{Code, Finding, Severity},
    reference::ImageRef,
};

/// `imagePullPolicy: Never`: nothing is asked of a registry. Where the candidate nodes are
/// known, say whether they all hold the image.
pub fn never_pulled(
    subject: Subject<'_>,
    image: &ImageRef,
    targets: Option<&NodeTargets>,
) -> Option<Finding> {
    let shown = image.normalized();
    match targets.and_then(|targets| targets.held_everywhere(&image.node_image_key())) {
        Some(true) => None,
        Some(false) => Some(subject.finding(
            Code::NeverPulledNotOnEveryNode,
            format!(
                "imagePullPolicy Never: {shown} is not listed on every node the pod can land on \
                 (ErrImageNeverPull where it is missing)"
            ),
            format!(
                "imagePullPolicy is Never, so the kubelet never pulls {shown}: it must already be on the \
                 node. Not every node this pod can be scheduled on lists it in its images; where it is \
                 missing the container fails with ErrImageNeverPull. (Nodes list at most 50 images, so \
                 it may be there unlisted.) Load it onto the nodes (kind load docker-image, a pre-pull \
                 DaemonSet), or use imagePullPolicy IfNotPresent."
            ),
        )),
        None => Some(subject.finding_with(
            Code::NeverPulledNotOnEveryNode,
            Severity::Info,
            format!("imagePullPolicy Never: {shown} not looked up"),
            format!(
                "imagePullPolicy is Never, so the kubelet never pulls {shown} and pullguard asked no \
                 registry; without the nodes' image lists it cannot say whether the nodes hold it. Where \
                 a node lacks it the container fails with ErrImageNeverPull."
            ),
        )),
    }
}

/// `IfNotPresent` and every candidate node holds the image: the registry's answer about its
/// existence or reachability does not stop today's pods, only those on a new node.
pub fn held_on_every_node(subject: Subject<'_>, image: &ImageRef, lookup: Vec<Finding>) -> Vec<Finding> {
    let shown = image.normalized();
    lookup
        .into_iter()
        .map(|finding| {
            subject.finding(
                Code::HeldOnEveryNode,
                format!(
                    "{} ({}); every node the pod can land on already holds {shown}",
                    finding.summary, finding.code
                ),
                format!(
                    "{} ({}: {}) Every node this pod can be scheduled on lists {shown} in its images and \
                     imagePullPolicy is IfNotPresent, so the kubelet does not pull it there and the pods \
                     start. A new node (scale-up, replacement, upgrade) has to pull it and will fail the \
                     same way: fix the reference or the registry before the pool changes.",
                    finding.summary, finding.code, finding.message
                ),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::{checks::Pool, platform::Platform};

    fn targets(held: &[&[&str]]) -> NodeTargets {
        NodeTargets::Pools(
            held.iter()
                .enumerate()
                .map(|(index, images)| Pool {
                    name: format!("pool-{index}"),
                    platform: Platform::new("linux", "amd64", ""),
                    held_by_every_node: Some(
                        images.iter().map(|image| image.to_string()).collect::<BTreeSet<_>>(),
                    ),
                    pulls_schema1: Some(false),
                    nodes: 1,
                })
                .collect(),
        )
    }

    #[test]
    fn never_pulled_images_are_judged_by_the_nodes_lists() {
        let subject = Subject { container: "app", image: "app:v1", volume: false };
        let image = ImageRef::parse("registry.local/app:v1").unwrap();
        let key = image.node_image_key();
        let code = |targets: Option<&NodeTargets>| {
            never_pulled(subject, &image, targets).map(|f| (f.code, f.severity))
        };
        assert_eq!(code(Some(&targets(&[&[&key], &[&key, "other"]]))), None);
        assert_eq!(
            code(Some(&targets(&[&[&key], &["other"]]))),
            Some((Code::NeverPulledNotOnEveryNode, Severity::Warning))
        );
        assert_eq!(
            code(Some(&NodeTargets::Unknown("no cluster".into()))),
            Some((Code::NeverPulledNotOnEveryNode, Severity::Info))
        );
        assert_eq!(code(None), Some((Code::NeverPulledNotOnEveryNode, Severity::Info)));
        let stand_in = NodeTargets::from_platforms(&[Platform::new("linux", "amd64", "")]);
        assert_eq!(
            code(Some(&stand_in)),
            Some((Code::NeverPulledNotOnEveryNode, Severity::Info)),
            "--platform knows no node"
        );
    }

    #[test]
    fn held_images_turn_registry_answers_into_warnings() {
        let subject = Subject { container: "app", image: "app:v1", volume: false };
        let image = ImageRef::parse("registry.local/app:v1").unwrap();
        let missing = subject.finding(Code::TagNotFound, "tag v1 not found", "the tag does not exist");
        let held = held_on_every_node(subject, &image, vec![missing]);
        assert_eq!(held.len(), 1);
        assert_eq!((held[0].code, held[0].severity), (Code::HeldOnEveryNode, Severity::Warning));
        assert!(
            held[0].message.contains("PG101") && held[0].message.contains("new node"),
            "{}",
            held[0].message
        );
    }
}
