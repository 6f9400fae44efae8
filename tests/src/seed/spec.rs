//! What the seeder builds (image, layer and index specifications) and what it reports back.

use anyhow::{Context, Result};
use reqwest::StatusCode;
use serde_json::{Map, Value, json};

use super::{media, sha256_digest};

/// Artifact type used by [`Seeder::push_artifact`].
pub const SBOM_ARTIFACT_TYPE: &str = "application/vnd.example.sbom.v1";
/// Foreign-layer URL used by [`ImageSpec::windows`].
pub const WINDOWS_FOREIGN_LAYER_URL: &str =
    "https://mcr.microsoft.com/v2/windows/servercore/blobs/sha256:pullguard-test";

/// Manifest family of an image or index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    #[default]
    Oci,
    DockerV2,
}

impl Format {
    pub fn manifest_media_type(self) -> &'static str {
        match self {
            Self::Oci => media::OCI_MANIFEST,
            Self::DockerV2 => media::DOCKER_MANIFEST,
        }
    }

    pub fn index_media_type(self) -> &'static str {
        match self {
            Self::Oci => media::OCI_INDEX,
            Self::DockerV2 => media::DOCKER_LIST,
        }
    }

    pub fn config_media_type(self) -> &'static str {
        match self {
            Self::Oci => media::OCI_CONFIG,
            Self::DockerV2 => media::DOCKER_CONFIG,
        }
    }

    pub fn layer_media_type(self) -> &'static str {
        match self {
            Self::Oci => media::OCI_LAYER,
            Self::DockerV2 => media::DOCKER_LAYER,
        }
    }

    pub fn foreign_layer_media_type(self) -> &'static str {
        match self {
            Self::Oci => media::OCI_LAYER_NONDISTRIBUTABLE,
            Self::DockerV2 => media::DOCKER_FOREIGN_LAYER,
        }
    }
}

/// A content descriptor as it appears in manifests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    pub size: u64,
}

impl Descriptor {
    pub fn with_media_type(mut self, media_type: &str) -> Self {
        media_type.clone_into(&mut self.media_type);
        self
    }

    pub fn to_json(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }
}

/// One layer of an [`ImageSpec`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LayerSpec {
    /// Size written into the manifest instead of the real one. The registry never checks
    /// sizes, so a 100-byte blob can be declared as 3 GiB.
    pub declared_size: Option<u64>,
    /// Repeat the previous layer's descriptor verbatim (a duplicate layer).
    pub repeat_previous: bool,
    /// A zero-length blob.
    pub empty: bool,
    /// Overrides the format's layer media type.
    pub media_type: Option<String>,
    /// A foreign (non-distributable) layer served from this URL: nothing is uploaded, and
    /// the media type defaults to the format's foreign/non-distributable type.
    pub foreign_url: Option<String>,
}

impl LayerSpec {
    /// A small unique layer with its real size.
    pub fn small() -> Self {
        Self::default()
    }

    pub fn declared(size: u64) -> Self {
        Self { declared_size: Some(size), ..Self::default() }
    }

    pub fn repeat_previous() -> Self {
        Self { repeat_previous: true, ..Self::default() }
    }

    pub fn empty() -> Self {
        Self { empty: true, ..Self::default() }
    }

    pub fn foreign(url: &str) -> Self {
        Self { foreign_url: Some(url.to_owned()), ..Self::default() }
    }

    pub fn with_media_type(mut self, media_type: &str) -> Self {
        self.media_type = Some(media_type.to_owned());
        self
    }

    pub fn with_declared_size(mut self, size: u64) -> Self {
        self.declared_size = Some(size);
        self
    }
}

/// What [`Seeder::push_image`] builds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSpec {
    pub format: Format,
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
    pub os_version: Option<String>,
    /// Defaults to the format's config media type.
    pub config_media_type: Option<String>,
    /// OCI `artifactType` of the manifest.
    pub artifact_type: Option<String>,
    pub layers: Vec<LayerSpec>,
}

impl ImageSpec {
    /// An OCI linux image with one small layer. `arch` may carry a variant: `"arm64/v8"`.
    pub fn linux(arch: &str) -> Self {
        let (architecture, variant) = match arch.split_once('/') {
            Some((a, v)) => (a, Some(v.to_owned())),
            None => (arch, None),
        };
        Self {
            format: Format::Oci,
            os: "linux".to_owned(),
            architecture: architecture.to_owned(),
            variant,
            os_version: None,
            config_media_type: None,
            artifact_type: None,
            layers: vec![LayerSpec::small()],
        }
    }

    /// A Docker v2 Windows image: a foreign base layer plus one small layer, like the
    /// servercore-based images Docker Hub serves.
    pub fn windows(arch: &str, os_version: &str) -> Self {
        let mut spec = Self::linux(arch).docker().with_os_version(os_version);
        "windows".clone_into(&mut spec.os);
        spec.layers = vec![LayerSpec::foreign(WINDOWS_FOREIGN_LAYER_URL), LayerSpec::small()];
        spec
    }

    /// Switches to Docker v2 (schema 2) manifest and config types.
    pub fn docker(self) -> Self {
        self.with_format(Format::DockerV2)
    }

    pub fn with_format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }

    pub fn with_variant(mut self, variant: &str) -> Self {
        self.variant = Some(variant.to_owned());
        self
    }

    pub fn with_os_version(mut self, os_version: &str) -> Self {
        self.os_version = Some(os_version.to_owned());
        self
    }

    pub fn with_config_media_type(mut self, media_type: &str) -> Self {
        self.config_media_type = Some(media_type.to_owned());
        self
    }

    pub fn with_artifact_type(mut self, artifact_type: &str) -> Self {
        self.artifact_type = Some(artifact_type.to_owned());
        self
    }

    pub fn with_layers(mut self, layers: Vec<LayerSpec>) -> Self {
        self.layers = layers;
        self
    }

    pub fn effective_config_media_type(&self) -> &str {
        self.config_media_type.as_deref().unwrap_or_else(|| self.format.config_media_type())
    }

    pub(super) fn platform_label(&self) -> String {
        let mut label = format!("{}/{}", self.os, self.architecture);
        if let Some(variant) = &self.variant {
            label.push('/');
            label.push_str(variant);
        }
        if let Some(version) = &self.os_version {
            label.push(':');
            label.push_str(version);
        }
        label
    }

    pub(super) fn platform_json(&self) -> Value {
        let mut platform = Map::new();
        platform.insert("architecture".into(), json!(self.architecture));
        platform.insert("os".into(), json!(self.os));
        if let Some(variant) = &self.variant {
            platform.insert("variant".into(), json!(variant));
        }
        if let Some(version) = &self.os_version {
            platform.insert("os.version".into(), json!(version));
        }
        Value::Object(platform)
    }
}

/// One child of an index pushed by [`Seeder::push_index`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IndexEntry {
    /// An image pushed by digest and listed with its platform.
    Image(ImageSpec),
    /// An image pushed by digest and listed without any `platform` (some build tools write
    /// indexes so): only its config says what it runs on.
    Unlabelled(ImageSpec),
    /// A BuildKit-style attestation manifest (platform `unknown/unknown`) for the image at
    /// position `subject` of the same entry list.
    Attestation { subject: usize },
}

impl IndexEntry {
    pub fn image(spec: ImageSpec) -> Self {
        Self::Image(spec)
    }

    pub fn attestation(subject: usize) -> Self {
        Self::Attestation { subject }
    }
}

/// Result of pushing one image manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushedImage {
    /// Manifest digest.
    pub digest: String,
    pub media_type: String,
    /// Manifest length in bytes.
    pub size: u64,
    pub config_digest: String,
    /// Sum of the layer sizes as declared in the manifest (duplicates counted each time).
    pub total_layer_size: u64,
}

impl PushedImage {
    pub fn descriptor(&self) -> Descriptor {
        Descriptor { media_type: self.media_type.clone(), digest: self.digest.clone(), size: self.size }
    }
}

/// Result of pushing an index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushedIndex {
    pub digest: String,
    pub media_type: String,
    /// The children, in entry order.
    pub children: Vec<Descriptor>,
}

/// A manifest as the registry served it.
#[derive(Clone, Debug)]
pub struct FetchedManifest {
    pub status: StatusCode,
    pub content_type: Option<String>,
    /// `Docker-Content-Digest`.
    pub digest: Option<String>,
    pub content_length: Option<u64>,
    pub body: Vec<u8>,
}

impl FetchedManifest {
    pub fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.body).context("manifest body is not JSON")
    }

    /// `sha256:<hex>` of the body.
    pub fn body_digest(&self) -> String {
        sha256_digest(&self.body)
    }
}
