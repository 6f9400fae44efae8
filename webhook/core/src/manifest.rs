//! Manifest, index and config parsing into the facts the checks need.
//!
//! Only the fields the checks read are declared: a registry's manifest carries more, and what is
//! not read cannot fail to parse. Docker schema 1 has a shape of its own.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::lookup::LookupError;

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
pub struct ImagePlatform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, rename = "os.version", skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
}

impl std::fmt::Display for ImagePlatform {
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

    pub(crate) fn is_filesystem_layer(&self) -> bool {
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
    pub platform: Option<ImagePlatform>,
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

// The documents below declare every field of the OCI image spec that a runtime decodes, with
// its type, though pullguard reads only some of them: a field of the wrong type makes the
// runtime's decoding (and so the pull) fail, so it must fail here too. Fields starting with `_`
// are decoded for that reason alone.

/// An OCI image index or Docker manifest list.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexDocument {
    #[serde(rename = "schemaVersion")]
    _schema_version: u8,
    #[serde(rename = "mediaType")]
    _media_type: Option<String>,
    manifests: Vec<IndexEntryDocument>,
    artifact_type: Option<String>,
    #[serde(rename = "annotations")]
    _annotations: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexEntryDocument {
    media_type: String,
    digest: String,
    #[serde(rename = "size")]
    _size: i64,
    platform: Option<PlatformDocument>,
    annotations: Option<BTreeMap<String, String>>,
    #[serde(rename = "artifactType")]
    _artifact_type: Option<String>,
}

#[derive(Deserialize)]
struct PlatformDocument {
    os: String,
    architecture: String,
    variant: Option<String>,
    #[serde(rename = "os.version")]
    os_version: Option<String>,
    #[serde(rename = "os.features")]
    _os_features: Option<Vec<String>>,
    #[serde(rename = "features")]
    _features: Option<Vec<String>>,
}

/// An OCI image manifest or Docker v2 manifest.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ImageDocument {
    #[serde(rename = "schemaVersion")]
    _schema_version: u8,
    #[serde(rename = "mediaType")]
    _media_type: Option<String>,
    config: Descriptor,
    layers: Vec<Descriptor>,
    #[serde(rename = "subject")]
    _subject: Option<Descriptor>,
    artifact_type: Option<String>,
    #[serde(rename = "annotations")]
    _annotations: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    digest: String,
    size: i64,
    #[serde(rename = "urls")]
    _urls: Option<Vec<String>>,
    #[serde(rename = "annotations")]
    _annotations: Option<BTreeMap<String, String>>,
    #[serde(rename = "artifactType")]
    _artifact_type: Option<String>,
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
            let index: IndexDocument =
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
                        .map(|platform| ImagePlatform {
                            os: platform.os,
                            architecture: platform.architecture,
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
            let manifest: ImageDocument =
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
    pub fn parse(body: &[u8]) -> Option<ImagePlatform> {
        let config: ConfigPlatform = serde_json::from_slice(body).ok()?;
        if config.os.is_empty() || config.architecture.is_empty() {
            return None;
        }
        Some(ImagePlatform {
            os: config.os,
            architecture: config.architecture,
            variant: config.variant.filter(|variant| !variant.is_empty()),
            os_version: config.os_version.filter(|version| !version.is_empty()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// Optional fields of the wrong type fail the runtime's decoding, so they fail here too; fields
    /// nobody declares are ignored, by both.
    #[test]
    fn optional_fields_are_typed_as_runtimes_decode_them() {
        let config = r#""config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:c","size":2}"#;
        let image = |extra: &str| format!(r#"{{"schemaVersion":2,{config},"layers":[]{extra}}}"#);
        assert!(parse(OCI_MANIFEST, image("").as_bytes()).is_ok());
        assert!(parse(OCI_MANIFEST, image(r#","whatever":{"x":1}"#).as_bytes()).is_ok());
        for wrong in [r#","annotations":5"#, r#","subject":"sha256:x""#, r#","mediaType":7"#] {
            assert!(parse(OCI_MANIFEST, image(wrong).as_bytes()).is_err(), "{wrong}");
        }
        for wrong in [r#","urls":"http://x""#, r#","artifactType":{}"#] {
            let descriptor = image("").replace(r#""size":2}"#, &format!(r#""size":2{wrong}}}"#));
            assert!(parse(OCI_MANIFEST, descriptor.as_bytes()).is_err(), "{wrong}");
        }
        let index = |platform: &str| {
            format!(
                r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"sha256:a","size":1,"platform":{platform}}}]}}"#
            )
        };
        assert!(
            parse(
                OCI_INDEX,
                index(r#"{"os":"linux","architecture":"amd64","os.features":["a"]}"#).as_bytes()
            )
            .is_ok()
        );
        assert!(
            parse(OCI_INDEX, index(r#"{"os":"linux","architecture":"amd64","features":"sse4"}"#).as_bytes())
                .is_err()
        );
        assert!(parse(OCI_INDEX, index(r#"{"os":"linux"}"#).as_bytes()).is_err());
        let entry_artifact = index(r#"{"os":"linux","architecture":"amd64"},"artifactType":7"#);
        assert!(parse(OCI_INDEX, entry_artifact.as_bytes()).is_err());
    }
}
