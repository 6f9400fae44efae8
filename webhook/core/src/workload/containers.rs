//! The images a pod spec makes the kubelet pull, and what an UPDATE changed about them.

use k8s_openapi::api::core::v1::PodSpec;
use serde::Serialize;

use crate::reference::ImageRef;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerKind {
    Init,
    App,
    Ephemeral,
    /// An image volume (`volumes[].image`): mounted, not run, and possibly an OCI artifact.
    Volume,
}

/// When the kubelet pulls a container's image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    /// Only when the node does not hold the image already.
    IfNotPresent,
    /// Never: the image must already be on the node (`kind load`, pre-pulled nodes).
    Never,
}

impl PullPolicy {
    /// The policy as written, else the API server's default: `Always` for `:latest` or no tag
    /// (and no digest), `IfNotPresent` otherwise.
    pub fn effective(written: Option<&str>, image: &str) -> PullPolicy {
        match written {
            Some("Always") => PullPolicy::Always,
            Some("IfNotPresent") => PullPolicy::IfNotPresent,
            Some("Never") => PullPolicy::Never,
            _ => match ImageRef::parse(image) {
                Ok(parsed) if parsed.tag().is_none() && parsed.digest().is_some() => PullPolicy::IfNotPresent,
                Ok(parsed) if parsed.effective_tag() == Some("latest") => PullPolicy::Always,
                _ => PullPolicy::IfNotPresent,
            },
        }
    }
}

/// One container of a pod spec, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerImage {
    pub name: String,
    pub image: String,
    pub kind: ContainerKind,
    pub pull_policy: PullPolicy,
}

impl ContainerImage {
    /// A container with the pull policy the API server would give it.
    pub fn new(name: &str, image: &str, kind: ContainerKind) -> ContainerImage {
        ContainerImage {
            name: name.to_string(),
            image: image.to_string(),
            kind,
            pull_policy: PullPolicy::effective(None, image),
        }
    }
}

/// Every image the kubelet pulls for the spec: its containers' in the order it starts them, then
/// its image volumes'.
pub fn containers(spec: &PodSpec) -> Vec<ContainerImage> {
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| (ContainerKind::Init, &c.name, &c.image, &c.image_pull_policy));
    let app = spec.containers.iter().map(|c| (ContainerKind::App, &c.name, &c.image, &c.image_pull_policy));
    let ephemeral = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .map(|c| (ContainerKind::Ephemeral, &c.name, &c.image, &c.image_pull_policy));
    let volumes = spec.volumes.iter().flatten().filter_map(|volume| {
        let image = volume.image.as_ref()?;
        Some((ContainerKind::Volume, &volume.name, &image.reference, &image.pull_policy))
    });
    init.chain(app)
        .chain(ephemeral)
        .chain(volumes)
        // The API server rejects a container without an image; a template being edited may lack one.
        .filter_map(|(kind, name, image, policy)| {
            image.as_ref().map(|image| ContainerImage {
                name: name.clone(),
                image: image.clone(),
                kind,
                pull_policy: PullPolicy::effective(policy.as_deref(), image),
            })
        })
        .collect()
}

/// Whether an UPDATE changed anything besides the images that the verdict rests on: where the
/// pods can run (`nodeName`, `nodeSelector`, affinity, tolerations, `spec.os`) and which
/// credentials their pulls use (`imagePullSecrets`, the service account). A DaemonSet moved to
/// Windows nodes, or a Deployment that lost its pull secret, fails to pull with the same images.
pub fn pull_inputs_changed(new: &PodSpec, old: &PodSpec) -> bool {
    new.node_name != old.node_name
        || new.node_selector != old.node_selector
        || new.affinity.as_ref().and_then(|a| a.node_affinity.as_ref())
            != old.affinity.as_ref().and_then(|a| a.node_affinity.as_ref())
        || new.tolerations != old.tolerations
        || new.os != old.os
        || new.image_pull_secrets != old.image_pull_secrets
        || new.service_account_name != old.service_account_name
}

/// On UPDATE only containers whose image changed (or that are new) are checked: an unrelated
/// edit must not be blocked by an image that was already running.
pub fn changed_containers(new: Vec<ContainerImage>, old: &[ContainerImage]) -> Vec<ContainerImage> {
    new.into_iter()
        .filter(|container| {
            !old.iter().any(|previous| {
                previous.name == container.name
                    && previous.kind == container.kind
                    && previous.image == container.image
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changed_images_on_update() {
        let container = |name: &str, image: &str| ContainerImage::new(name, image, ContainerKind::App);
        let old = vec![container("a", "x:1"), container("b", "y:1")];
        let new = vec![container("a", "x:1"), container("b", "y:2"), container("c", "z:1")];
        let changed = changed_containers(new, &old);
        assert_eq!(changed.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), vec!["b", "c"]);
    }
}
