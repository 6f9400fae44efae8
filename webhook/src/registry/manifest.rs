//! Manifest, index and config parsing into the facts the checks need.
//!
//! OCI and Docker v2 bodies go through oci-client's types; Docker schema 1 has no type there
//! (see CRATE-NOTES), so it gets a small struct of its own.

use std::{collections::BTreeMap, sync::OnceLock};

use oci_client::manifest::{OciImageIndex, OciImageManifest};
use serde::{Deserialize, Serialize};

use super::error::LookupError;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const OCTET_STREAM: &str = "application/octet-stream";

/// Every manifest type a runtime can pull, so the registry never rewrites a v2 manifest into
/// schema 1 on the fly (it does when the Docker v2 type is missing from Accept).
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.v1+prettyjws, \
    application/vnd.docker.distribution.manifest.v1+json";

/// Layers that are empty tar archives: they cost a round trip and break lazy image streaming.
const EMPTY_LAYER_DIGESTS: [&str; 2] = [
    "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46ac",
    "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ManifestKind {
    OciIndex,
    DockerManifestList,
    OciManifest,
    DockerV2,
    DockerSchema1,
}

impl ManifestKind {
    pub fn is_index(self) -> bool {
        matches!(self, ManifestKind::OciIndex | ManifestKind::DockerManifestList)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, rename = "os.version", skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        if let Some(version) = &self.os_version {
            write!(f, " ({version})")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Layer {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
}

impl Layer {
    pub fn is_empty_layer(&self) -> bool {
        self.size == 0 || EMPTY_LAYER_DIGESTS.contains(&self.digest.as_str())
    }

    fn is_filesystem_layer(&self) -> bool {
        let media_type = self.media_type.as_str();
        media_type.starts_with("application/vnd.oci.image.layer.")
            || media_type.starts_with("application/vnd.docker.image.rootfs.")
            // Schema 1 blobSums carry no media type.
            || media_type.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub digest: String,
    pub media_type: String,
    pub platform: Option<Platform>,
    /// The entry names no platform at all (not an attestation): containerd keeps it and matches
    /// it by its config's platform.
    pub unlabelled: bool,
}

/// A manifest body, parsed just enough to judge it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Index {
        kind: ManifestKind,
        artifact_type: Option<String>,
        entries: Vec<IndexEntry>,
    },
    Image {
        kind: ManifestKind,
        config_media_type: String,
        config_digest: String,
        artifact_type: Option<String>,
        layers: Vec<Layer>,
    },
    Schema1 {
        architecture: String,
        layers: Vec<Layer>,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Schema1Manifest {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    fs_layers: Vec<Schema1Layer>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Schema1Layer {
    blob_sum: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Sniff {
    #[serde(default)]
    schema_version: Option<u64>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    config: Option<serde::de::IgnoredAny>,
}

fn invalid(reason: impl Into<String>) -> LookupError {
    LookupError::InvalidManifest { reason: reason.into() }
}

/// The media type of a response: the Content-Type header without parameters, else the body's own.
pub fn media_type_of(content_type: Option<&str>, body: &[u8]) -> Result<String, LookupError> {
    let header = content_type
        .map(|value| value.split(';').next().unwrap_or(value).trim().to_ascii_lowercase())
        .filter(|value| !value.is_empty() && value != "application/json" && value != "text/plain");
    if let Some(header) = header {
        // A login page or proxy error in place of a manifest is the registry failing, not an artifact.
        if !header.starts_with("application/") || !(header.contains("json") || header.contains("vnd.")) {
            return Err(invalid(format!("the registry answered {header}, not a manifest")));
        }
        return Ok(header);
    }
    let sniff: Sniff = serde_json::from_slice(body).map_err(|error| invalid(format!("not JSON: {error}")))?;
    Ok(match (sniff.media_type, sniff.schema_version) {
        (Some(media_type), _) => media_type,
        (None, Some(1)) => DOCKER_SCHEMA1.to_string(),
        (None, _) if sniff.manifests.is_some() => OCI_INDEX.to_string(),
        (None, _) if sniff.config.is_some() => OCI_MANIFEST.to_string(),
        (None, _) => return Err(invalid("no media type in the response or the body")),
    })
}

pub fn parse(media_type: &str, body: &[u8]) -> Result<Parsed, LookupError> {
    match media_type {
        OCI_INDEX | DOCKER_LIST => {
            let index: OciImageIndex =
                serde_json::from_slice(body).map_err(|error| invalid(format!("bad index: {error}")))?;
            let kind = if media_type == OCI_INDEX {
                ManifestKind::OciIndex
            } else {
                ManifestKind::DockerManifestList
            };
            let entries = index
                .manifests
                .into_iter()
                .map(|entry| IndexEntry {
                    unlabelled: entry.platform.is_none() && !is_attestation(entry.annotations.as_ref()),
                    platform: entry
                        .platform
                        .filter(|_| !is_attestation(entry.annotations.as_ref()))
                        .map(|platform| Platform {
                            os: platform.os.to_string(),
                            architecture: platform.architecture.to_string(),
                            variant: platform.variant.filter(|variant| !variant.is_empty()),
                            os_version: platform.os_version.filter(|version| !version.is_empty()),
                        })
                        .filter(|platform| platform.os != "unknown" && platform.architecture != "unknown"),
                    digest: entry.digest,
                    media_type: entry.media_type,
                })
                .collect();
            Ok(Parsed::Index { kind, artifact_type: index.artifact_type, entries })
        }
        OCI_MANIFEST | DOCKER_V2 => {
            let manifest: OciImageManifest =
                serde_json::from_slice(body).map_err(|error| invalid(format!("bad manifest: {error}")))?;
            let kind =
                if media_type == OCI_MANIFEST { ManifestKind::OciManifest } else { ManifestKind::DockerV2 };
            let layers = manifest
                .layers
                .into_iter()
                .map(|layer| Layer {
                    digest: layer.digest,
                    size: u64::try_from(layer.size).unwrap_or(0),
                    media_type: layer.media_type,
                })
                .collect();
            Ok(Parsed::Image {
                kind,
                config_media_type: manifest.config.media_type,
                config_digest: manifest.config.digest,
                artifact_type: manifest.artifact_type,
                layers,
            })
        }
        DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED => {
            let manifest: Schema1Manifest = serde_json::from_slice(body)
                .map_err(|error| invalid(format!("bad schema 1 manifest: {error}")))?;
            let layers = manifest
                .fs_layers
                .into_iter()
                .map(|layer| Layer { digest: layer.blob_sum, size: 0, media_type: String::new() })
                .collect();
            Ok(Parsed::Schema1 { architecture: manifest.architecture, layers })
        }
        other => Err(LookupError::UnsupportedMediaType { media_type: other.to_string() }),
    }
}

fn is_attestation(annotations: Option<&BTreeMap<String, String>>) -> bool {
    annotations
        .and_then(|annotations| annotations.get("vnd.docker.reference.type"))
        .is_some_and(|kind| kind == "attestation-manifest")
}

/// The platform fields of an image config blob; the rest of the config is irrelevant here.
#[derive(Debug, Deserialize)]
pub struct ConfigPlatform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
    #[serde(default, rename = "os.version")]
    pub os_version: Option<String>,
}

impl ConfigPlatform {
    pub fn parse(body: &[u8]) -> Option<Platform> {
        let config: ConfigPlatform = serde_json::from_slice(body).ok()?;
        if config.os.is_empty() || config.architecture.is_empty() {
            return None;
        }
        Some(Platform {
            os: config.os,
            architecture: config.architecture,
            variant: config.variant.filter(|variant| !variant.is_empty()),
            os_version: config.os_version.filter(|version| !version.is_empty()),
        })
    }
}

/// Everything pullguard keeps about one resolved image.
#[derive(Debug, Clone, Serialize)]
pub struct ImageFacts {
    pub digest: String,
    pub media_type: String,
    pub kind: ManifestKind,
    /// Runnable platforms: index entries (attestations dropped) or the config blob's platform.
    pub platforms: Vec<Platform>,
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
                    vec![Platform { os: "linux".into(), architecture, variant: None, os_version: None }];
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

    #[test]
    fn media_type_from_header_or_body() {
        assert_eq!(
            media_type_of(Some("application/vnd.oci.image.index.v1+json; charset=utf-8"), b"").unwrap(),
            OCI_INDEX
        );
        assert_eq!(media_type_of(None, br#"{"schemaVersion":1,"name":"a"}"#).unwrap(), DOCKER_SCHEMA1);
        assert_eq!(
            media_type_of(Some("application/json"), br#"{"schemaVersion":2,"manifests":[]}"#).unwrap(),
            OCI_INDEX
        );
        assert_eq!(media_type_of(None, br#"{"schemaVersion":2,"config":{}}"#).unwrap(), OCI_MANIFEST);
        assert!(media_type_of(None, b"<html>").is_err());
        assert!(media_type_of(None, b"{}").is_err());
        assert!(media_type_of(Some("text/html; charset=utf-8"), b"<html>").is_err());
        assert_eq!(
            media_type_of(Some("application/vnd.cncf.helm.chart.v1+json"), b"{}").unwrap(),
            "application/vnd.cncf.helm.chart.v1+json"
        );
    }

    #[test]
    fn index_drops_attestations_and_unknown_platforms() {
        let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:a","size":1,"platform":{"os":"linux","architecture":"arm64","variant":"v8"}},
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:b","size":1,"platform":{"os":"unknown","architecture":"unknown"}},
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:c","size":1,"platform":{"os":"linux","architecture":"amd64"},
             "annotations":{"vnd.docker.reference.type":"attestation-manifest"}}]}"#;
        let Parsed::Index { entries, .. } = parse(OCI_INDEX, body).unwrap() else { panic!("not an index") };
        let platforms: Vec<_> = entries.iter().filter_map(|entry| entry.platform.clone()).collect();
        assert_eq!(platforms.len(), 1);
        assert_eq!(platforms[0].to_string(), "linux/arm64/v8");
    }

    #[test]
    fn image_manifest_layers_and_config() {
        let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
            "config":{"mediaType":"application/octet-stream","digest":"sha256:c","size":2},
            "layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"sha256:l","size":3221225472}]}"#;
        let Parsed::Image { config_media_type, layers, kind, .. } = parse(DOCKER_V2, body).unwrap() else {
            panic!("not an image")
        };
        assert_eq!(kind, ManifestKind::DockerV2);
        assert_eq!(config_media_type, OCTET_STREAM);
        assert_eq!(layers[0].size, 3 << 30);
    }

    #[test]
    fn schema1_and_garbage() {
        let body = br#"{"schemaVersion":1,"name":"a","tag":"v1","architecture":"amd64","fsLayers":[{"blobSum":"sha256:x"}]}"#;
        assert!(matches!(parse(DOCKER_SCHEMA1_SIGNED, body).unwrap(), Parsed::Schema1 { .. }));
        assert!(parse(OCI_MANIFEST, b"not json").is_err());
        assert!(parse("application/vnd.example+json", b"{}").is_err());
    }

    #[test]
    fn config_platform() {
        let platform =
            ConfigPlatform::parse(br#"{"architecture":"arm","os":"linux","variant":"v7","rootfs":{}}"#)
                .unwrap();
        assert_eq!(platform.to_string(), "linux/arm/v7");
        assert!(ConfigPlatform::parse(b"{}").is_none());
        assert!(ConfigPlatform::parse(b"[").is_none());
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
