//! What pullguard keeps about one resolved image, made from a registry's parsed answers.

use std::sync::OnceLock;

use serde::Serialize;

use crate::manifest::{DOCKER_CONFIG, ImagePlatform, Layer, ManifestKind, OCI_CONFIG, OCTET_STREAM, Parsed};

/// Everything pullguard keeps about one resolved image.
#[derive(Debug, Clone, Serialize)]
pub struct ImageFacts {
    pub digest: String,
    pub media_type: String,
    pub kind: ManifestKind,
    /// Runnable platforms: index entries (attestations dropped) or the config blob's platform.
    pub platforms: Vec<ImagePlatform>,
    pub config_media_type: Option<String>,
    pub artifact_type: Option<String>,
    /// Sum of the layer sizes the manifest declares; unknown for an index and for schema 1.
    pub compressed_size: Option<u64>,
    pub layers: Vec<Layer>,
    /// `platforms` as nodes are compared with them, worked out on first use: facts are shared
    /// by every admission of the image, the comparison is made for each.
    #[serde(skip)]
    pub comparable_platforms: OnceLock<Vec<crate::platform::Platform>>,
}

impl ImageFacts {
    pub fn comparable_platforms(&self) -> &[crate::platform::Platform] {
        self.comparable_platforms
            .get_or_init(|| self.platforms.iter().map(crate::platform::Platform::from_image).collect())
    }
}

/// At most this many platform-less index entries are read (manifest and config each) for one
/// index: each costs two requests.
pub const MAX_UNLABELLED_ENTRIES: usize = 4;

/// What facts still lack after the manifest itself: the config blob of a single-platform image
/// (which names its platform only there), or the children of an index whose entries name no
/// platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToRead {
    Nothing,
    Config(String),
    Children(Vec<String>),
}

/// Facts from a parsed manifest, and what is still to be read for its platforms. The one way
/// facts are made from a registry's answer, shared with the `manifest` fuzz target.
pub fn facts_of(digest: &str, media_type: &str, parsed: Parsed) -> (ImageFacts, ToRead) {
    let mut facts = ImageFacts {
        digest: digest.to_string(),
        media_type: media_type.to_string(),
        kind: ManifestKind::OciManifest,
        platforms: Vec::new(),
        config_media_type: None,
        artifact_type: None,
        compressed_size: None,
        layers: Vec::new(),
        comparable_platforms: Default::default(),
    };
    let mut to_read = ToRead::Nothing;
    match parsed {
        Parsed::Index { kind, artifact_type, entries } => {
            facts.kind = kind;
            facts.artifact_type = artifact_type;
            let unlabelled: Vec<String> = entries
                .iter()
                .filter(|entry| entry.unlabelled)
                .take(MAX_UNLABELLED_ENTRIES)
                .map(|entry| entry.digest.clone())
                .collect();
            if !unlabelled.is_empty() {
                to_read = ToRead::Children(unlabelled);
            }
            facts.platforms = entries.into_iter().filter_map(|entry| entry.platform).collect();
            facts.platforms.sort();
            facts.platforms.dedup();
        }
        Parsed::Image { kind, config_media_type, config_digest, artifact_type, layers } => {
            facts.kind = kind;
            // Sizes are whatever the registry declares: a hostile manifest must not wrap the sum
            // (or panic a debug build) into a small one.
            facts.compressed_size =
                Some(layers.iter().fold(0u64, |sum, layer| sum.saturating_add(layer.size)));
            facts.layers = layers;
            let runnable_config = artifact_type.is_none()
                && [OCI_CONFIG, DOCKER_CONFIG, OCTET_STREAM].contains(&config_media_type.as_str());
            facts.artifact_type = artifact_type;
            facts.config_media_type = Some(config_media_type);
            if runnable_config {
                to_read = ToRead::Config(config_digest);
            }
        }
        Parsed::Schema1 { architecture, layers } => {
            facts.kind = ManifestKind::DockerSchema1;
            facts.layers = layers;
            if !architecture.is_empty() {
                facts.platforms =
                    vec![ImagePlatform { os: "linux".into(), architecture, variant: None, os_version: None }];
            }
        }
    }
    (facts, to_read)
}

/// Why a manifest cannot be run as a container image, if it cannot.
pub fn not_runnable_reason(facts: &ImageFacts) -> Option<String> {
    if let Some(artifact_type) = &facts.artifact_type {
        return Some(format!("it is an OCI artifact of type {artifact_type}"));
    }
    if facts.kind.is_index() {
        return facts.platforms.is_empty().then(|| "the index lists no runnable platform".to_string());
    }
    if let Some(config) = &facts.config_media_type
        && config != OCI_CONFIG
        && config != DOCKER_CONFIG
        && config != OCTET_STREAM
    {
        return Some(format!("its config media type is {config}, not an image config"));
    }
    if let Some(layer) = facts.layers.iter().find(|layer| !layer.is_filesystem_layer()) {
        return Some(format!(
            "layer {} has media type {}, not a filesystem layer",
            layer.digest, layer.media_type
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{OCI_INDEX, OCI_MANIFEST, parse};

    /// containerd keeps index entries without a platform (and matches them by their config);
    /// attestations, which carry `unknown/unknown`, are no such entries.
    #[test]
    fn unlabelled_index_entries_are_read_attestations_are_not() {
        let digest = |n: char| format!("sha256:{}", n.to_string().repeat(64));
        let body = serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": digest('a'), "size": 1},
                {"mediaType": OCI_MANIFEST, "digest": digest('b'), "size": 1,
                 "platform": {"os": "linux", "architecture": "amd64"}},
                {"mediaType": OCI_MANIFEST, "digest": digest('c'), "size": 1,
                 "platform": {"os": "unknown", "architecture": "unknown"},
                 "annotations": {"vnd.docker.reference.type": "attestation-manifest",
                                 "vnd.docker.reference.digest": digest('b')}},
            ],
        })
        .to_string();
        let (facts, to_read) = facts_of("sha256:i", OCI_INDEX, parse(OCI_INDEX, body.as_bytes()).unwrap());
        assert_eq!(to_read, ToRead::Children(vec![digest('a')]));
        assert_eq!(facts.platforms.len(), 1);
    }

    #[test]
    fn declared_sizes_saturate_instead_of_wrapping() {
        let layer = |n: u8| {
            serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": format!("sha256:{}", format!("{n:02x}").repeat(32)), "size": i64::MAX})
        };
        let body = serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": format!("sha256:{}", "c".repeat(64)), "size": 2},
            "layers": [layer(1), layer(2), layer(3)],
        })
        .to_string();
        let parsed = parse(OCI_MANIFEST, body.as_bytes()).unwrap();
        let (facts, config) = facts_of("sha256:x", OCI_MANIFEST, parsed);
        assert_eq!(facts.compressed_size, Some(u64::MAX));
        assert_eq!(config, ToRead::Config(format!("sha256:{}", "c".repeat(64))));
    }

    fn facts(config: Option<&str>, artifact: Option<&str>) -> ImageFacts {
        ImageFacts {
            digest: "sha256:x".into(),
            media_type: OCI_MANIFEST.into(),
            kind: ManifestKind::OciManifest,
            platforms: vec![],
            config_media_type: config.map(String::from),
            artifact_type: artifact.map(String::from),
            compressed_size: Some(1),
            layers: vec![],
            comparable_platforms: Default::default(),
        }
    }

    #[test]
    fn runnable_or_not() {
        assert_eq!(not_runnable_reason(&facts(Some(OCI_CONFIG), None)), None);
        assert_eq!(not_runnable_reason(&facts(Some(OCTET_STREAM), None)), None);
        assert!(
            not_runnable_reason(&facts(Some("application/vnd.cncf.helm.config.v1+json"), None)).is_some()
        );
        assert!(
            not_runnable_reason(&facts(Some(OCI_CONFIG), Some("application/vnd.example.sbom"))).is_some()
        );
    }
}
