//! Pushes synthetic images, indexes, schema 1 manifests and artifacts through the registry
//! HTTP API, so tests need no container engine.
//!
//! Blobs are tiny and not real tarballs: registries store them opaquely, and pullguard only
//! ever reads manifests and configs.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use reqwest::header::{ACCEPT, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode, Url};
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};

use crate::registry::{RegistryProcess, http_client};

/// Media types used by the seeder, plus the Accept list a correct client sends.
pub mod media {
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const OCI_LAYER_NONDISTRIBUTABLE: &str =
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    pub const DOCKER_FOREIGN_LAYER: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
    pub const SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
    pub const SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
    pub const IN_TOTO: &str = "application/vnd.in-toto+json";
    pub const OCTET_STREAM: &str = "application/octet-stream";

    /// Every manifest type, as one `Accept` value. Anything less makes distribution
    /// rewrite or hide manifests (see REGISTRY-NOTES.md).
    pub const FULL_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
        application/vnd.oci.image.manifest.v1+json, \
        application/vnd.docker.distribution.manifest.list.v2+json, \
        application/vnd.docker.distribution.manifest.v2+json, \
        application/vnd.docker.distribution.manifest.v1+prettyjws, \
        application/vnd.docker.distribution.manifest.v1+json";
}

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

    fn platform_label(&self) -> String {
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

    fn platform_json(&self) -> Value {
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

/// Seeds a registry through its HTTP API.
pub struct Seeder {
    client: reqwest::Client,
    base: Url,
    credentials: Option<(String, String)>,
}

impl Seeder {
    /// Trusts the registry's CA and uses its credentials, if any.
    pub fn new(registry: &RegistryProcess) -> Result<Self> {
        Self::for_url(&registry.base_url(), registry.ca_pem(), registry.credentials())
    }

    pub fn for_url(base_url: &str, ca_pem: Option<&str>, credentials: Option<(&str, &str)>) -> Result<Self> {
        Ok(Self {
            client: http_client(ca_pem)?,
            base: Url::parse(base_url).with_context(|| format!("registry URL {base_url:?}"))?,
            credentials: credentials.map(|(u, p)| (u.to_owned(), p.to_owned())),
        })
    }

    fn request(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        let request = self.client.request(method, url);
        match &self.credentials {
            Some((user, password)) => request.basic_auth(user, Some(password)),
            None => request,
        }
    }

    fn url(&self, path: &str) -> Result<Url> {
        Ok(self.base.join(path)?)
    }

    /// Uploads a blob (POST + PUT) and returns its descriptor, typed `application/octet-stream`.
    pub async fn push_blob(&self, repo: &str, bytes: &[u8]) -> Result<Descriptor> {
        let digest = sha256_digest(bytes);
        let start = self
            .request(Method::POST, self.url(&format!("/v2/{repo}/blobs/uploads/"))?)
            .send()
            .await
            .with_context(|| format!("starting a blob upload to {repo}"))?;
        if start.status() != StatusCode::ACCEPTED {
            bail!("POST /v2/{repo}/blobs/uploads/ -> {}: {}", start.status(), start.text().await?);
        }
        let location = start
            .headers()
            .get(LOCATION)
            .ok_or_else(|| anyhow!("blob upload to {repo}: 202 without Location"))?
            .to_str()?;
        // Location may be absolute or relative, and usually already carries `_state`.
        let mut url = self.base.join(location)?;
        url.query_pairs_mut().append_pair("digest", &digest);
        let put = self
            .request(Method::PUT, url)
            .header(CONTENT_TYPE, media::OCTET_STREAM)
            .body(bytes.to_vec())
            .send()
            .await
            .with_context(|| format!("finishing the blob upload to {repo}"))?;
        if put.status() != StatusCode::CREATED {
            bail!("PUT blob {digest} to {repo} -> {}: {}", put.status(), put.text().await?);
        }
        Ok(Descriptor { media_type: media::OCTET_STREAM.to_owned(), digest, size: bytes.len() as u64 })
    }

    /// PUTs a manifest as-is under `reference` (a tag or its digest) and returns the
    /// sha256 of `body`.
    pub async fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Result<String> {
        let digest = sha256_digest(body);
        let served = self.put_manifest(repo, reference, media_type, body).await?;
        // Schema 1 is digested without its signatures; everything else must match.
        if media_type != media::SCHEMA1_SIGNED
            && let Some(served) = served
        {
            ensure!(served == digest, "registry digested {repo}:{reference} as {served}, expected {digest}");
        }
        Ok(digest)
    }

    async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Result<Option<String>> {
        let response = self
            .request(Method::PUT, self.url(&format!("/v2/{repo}/manifests/{reference}"))?)
            .header(CONTENT_TYPE, media_type)
            .body(body.to_vec())
            .send()
            .await
            .with_context(|| format!("pushing manifest {repo}:{reference}"))?;
        let status = response.status();
        let digest = header_string(&response, "docker-content-digest");
        if status != StatusCode::CREATED {
            bail!(
                "PUT /v2/{repo}/manifests/{reference} ({media_type}) -> {status}: {}",
                response.text().await?
            );
        }
        Ok(digest)
    }

    /// Pushes an image and tags it.
    pub async fn push_image(&self, repo: &str, tag: &str, spec: &ImageSpec) -> Result<PushedImage> {
        self.push_image_at(repo, Some(tag), spec, &format!("{repo}:{tag}")).await
    }

    /// Pushes an image by digest only (untagged).
    pub async fn push_image_untagged(
        &self,
        repo: &str,
        spec: &ImageSpec,
        label: &str,
    ) -> Result<PushedImage> {
        self.push_image_at(repo, None, spec, label).await
    }

    async fn push_image_at(
        &self,
        repo: &str,
        tag: Option<&str>,
        spec: &ImageSpec,
        label: &str,
    ) -> Result<PushedImage> {
        let label = format!("{label} {}", spec.platform_label());
        let mut layers: Vec<Value> = Vec::new();
        let mut diff_ids: Vec<String> = Vec::new();
        let mut total_layer_size = 0u64;
        for (i, layer) in spec.layers.iter().enumerate() {
            if layer.repeat_previous {
                let (Some(previous), Some(diff_id)) = (layers.last().cloned(), diff_ids.last().cloned())
                else {
                    bail!("layer {i} of {label}: repeat_previous needs a previous layer");
                };
                total_layer_size += previous["size"].as_u64().unwrap_or(0);
                layers.push(previous);
                diff_ids.push(diff_id);
                continue;
            }
            let bytes = if layer.empty {
                Vec::new()
            } else {
                format!("pullguard test layer {i} of {label}\n").into_bytes()
            };
            let (mut descriptor, urls) = match &layer.foreign_url {
                // Registries do not look for blobs that are served from elsewhere.
                Some(url) => {
                    let media_type = spec.format.foreign_layer_media_type();
                    let digest = sha256_digest(&bytes);
                    (
                        Descriptor { media_type: media_type.to_owned(), digest, size: bytes.len() as u64 },
                        vec![url],
                    )
                }
                None => {
                    let blob = self.push_blob(repo, &bytes).await?;
                    (blob.with_media_type(spec.format.layer_media_type()), Vec::new())
                }
            };
            if let Some(media_type) = &layer.media_type {
                descriptor.media_type.clone_from(media_type);
            }
            if let Some(size) = layer.declared_size {
                descriptor.size = size;
            }
            total_layer_size += descriptor.size;
            // The blobs are stored "uncompressed", so the diff ID is the blob digest.
            diff_ids.push(descriptor.digest.clone());
            let mut json = descriptor.to_json();
            if !urls.is_empty() {
                json["urls"] = json!(urls);
            }
            layers.push(json);
        }

        let config_media_type = spec.effective_config_media_type();
        let config_bytes = if config_media_type == media::OCI_EMPTY {
            b"{}".to_vec()
        } else {
            image_config(spec, &diff_ids, &label)?
        };
        let config = self.push_blob(repo, &config_bytes).await?.with_media_type(config_media_type);

        let mut manifest = Map::new();
        manifest.insert("schemaVersion".into(), json!(2));
        manifest.insert("mediaType".into(), json!(spec.format.manifest_media_type()));
        if let Some(artifact_type) = &spec.artifact_type {
            manifest.insert("artifactType".into(), json!(artifact_type));
        }
        manifest.insert("config".into(), config.to_json());
        manifest.insert("layers".into(), Value::Array(layers));
        let body = serde_json::to_vec(&Value::Object(manifest))?;
        let digest = sha256_digest(&body);
        let media_type = spec.format.manifest_media_type();
        self.push_manifest(repo, tag.unwrap_or(&digest), media_type, &body).await?;
        Ok(PushedImage {
            digest,
            media_type: media_type.to_owned(),
            size: body.len() as u64,
            config_digest: config.digest,
            total_layer_size,
        })
    }

    /// Pushes each entry by digest into `repo`, then an index listing them, tagged `tag`.
    /// Returns the index digest.
    pub async fn push_index(
        &self,
        repo: &str,
        tag: &str,
        entries: &[IndexEntry],
        format: Format,
    ) -> Result<String> {
        Ok(self.push_index_detailed(repo, tag, entries, format).await?.digest)
    }

    /// Like [`Seeder::push_index`], also returning the children's descriptors.
    pub async fn push_index_detailed(
        &self,
        repo: &str,
        tag: &str,
        entries: &[IndexEntry],
        format: Format,
    ) -> Result<PushedIndex> {
        let mut children: Vec<Option<(Descriptor, Value)>> = vec![None; entries.len()];
        // Images first: attestations need their subject's digest.
        for (i, entry) in entries.iter().enumerate() {
            let (IndexEntry::Image(spec) | IndexEntry::Unlabelled(spec)) = entry else { continue };
            let image = self.push_image_untagged(repo, spec, &format!("{repo}:{tag}[{i}]")).await?;
            let mut json = image.descriptor().to_json();
            if let IndexEntry::Image(_) = entry {
                json["platform"] = spec.platform_json();
            }
            children[i] = Some((image.descriptor(), json));
        }
        for (i, entry) in entries.iter().enumerate() {
            if let IndexEntry::Attestation { subject } = entry {
                let subject_digest = match (entries.get(*subject), children.get(*subject)) {
                    (Some(IndexEntry::Image(_)), Some(Some((descriptor, _)))) => descriptor.digest.clone(),
                    _ => bail!("index entry {i}: attestation subject {subject} is not an image entry"),
                };
                let descriptor =
                    self.push_attestation(repo, &subject_digest, &format!("{repo}:{tag}[{i}]")).await?;
                let mut json = descriptor.to_json();
                json["platform"] = json!({"architecture": "unknown", "os": "unknown"});
                json["annotations"] = json!({
                    "vnd.docker.reference.digest": subject_digest,
                    "vnd.docker.reference.type": "attestation-manifest",
                });
                children[i] = Some((descriptor, json));
            }
        }
        let (children, manifests): (Vec<Descriptor>, Vec<Value>) = children.into_iter().flatten().unzip();
        let media_type = format.index_media_type();
        let body = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "manifests": manifests,
        }))?;
        let digest = self.push_manifest(repo, tag, media_type, &body).await?;
        Ok(PushedIndex { digest, media_type: media_type.to_owned(), children })
    }

    // The shape BuildKit gives provenance/SBOM attestations.
    async fn push_attestation(&self, repo: &str, subject_digest: &str, label: &str) -> Result<Descriptor> {
        let statement = serde_json::to_vec(&json!({
            "_type": "https://in-toto.io/Statement/v0.1",
            "predicateType": "https://spdx.dev/Document",
            "subject": [{"name": label, "digest": {"sha256": subject_digest.trim_start_matches("sha256:")}}],
            "predicate": {"spdxVersion": "SPDX-2.3", "name": label},
        }))?;
        let layer = self.push_blob(repo, &statement).await?.with_media_type(media::IN_TOTO);
        let config = serde_json::to_vec(&json!({
            "architecture": "unknown",
            "os": "unknown",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
        }))?;
        let config = self.push_blob(repo, &config).await?.with_media_type(media::OCI_CONFIG);
        let mut layer_json = layer.to_json();
        layer_json["annotations"] = json!({"in-toto.io/predicate-type": "https://spdx.dev/Document"});
        let body = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": config.to_json(),
            "layers": [layer_json],
        }))?;
        let digest = sha256_digest(&body);
        self.push_manifest(repo, &digest, media::OCI_MANIFEST, &body).await?;
        Ok(Descriptor { media_type: media::OCI_MANIFEST.to_owned(), digest, size: body.len() as u64 })
    }

    /// Pushes a signed Docker schema 1 manifest (libtrust pretty JWS, ES256) with one layer.
    /// Returns the digest the registry reports: sha256 of the payload without signatures.
    pub async fn push_schema1(&self, repo: &str, tag: &str, architecture: &str) -> Result<String> {
        let label = format!("{repo}:{tag} linux/{architecture}");
        let layer = self.push_blob(repo, format!("pullguard schema1 layer of {label}\n").as_bytes()).await?;
        let id = hex(&Sha256::digest(label.as_bytes()));
        let v1_compatibility = serde_json::to_string(&json!({
            "id": id,
            "created": "2020-01-01T00:00:00Z",
            "architecture": architecture,
            "os": "linux",
            "container_config": {"Cmd": [""]},
            "config": {"Labels": {"org.pullguard.test.seed": label}},
        }))?;
        let manifest = json!({
            "schemaVersion": 1,
            "name": repo,
            "tag": tag,
            "architecture": architecture,
            "fsLayers": [{"blobSum": layer.digest}],
            "history": [{"v1Compatibility": v1_compatibility}],
        });
        let payload = pretty_json(&manifest, 3)?;
        let signed = sign_pretty_jws(&payload)?;
        let digest = sha256_digest(&payload);
        let served = self.put_manifest(repo, tag, media::SCHEMA1_SIGNED, &signed).await?;
        if let Some(served) = served {
            ensure!(
                served == digest,
                "registry digested schema 1 {repo}:{tag} as {served}, expected {digest}"
            );
        }
        Ok(digest)
    }

    /// Pushes an OCI artifact (`artifactType` [`SBOM_ARTIFACT_TYPE`], empty config, one
    /// non-image layer) and returns its digest.
    pub async fn push_artifact(&self, repo: &str, tag: &str) -> Result<String> {
        let spec = ImageSpec {
            format: Format::Oci,
            os: String::new(),
            architecture: String::new(),
            variant: None,
            os_version: None,
            config_media_type: Some(media::OCI_EMPTY.to_owned()),
            artifact_type: Some(SBOM_ARTIFACT_TYPE.to_owned()),
            layers: vec![LayerSpec::small().with_media_type("application/spdx+json")],
        };
        Ok(self.push_image(repo, tag, &spec).await?.digest)
    }

    /// Deletes a manifest by digest (the registry refuses deletion by tag).
    pub async fn delete_manifest(&self, repo: &str, digest: &str) -> Result<()> {
        let response = self
            .request(Method::DELETE, self.url(&format!("/v2/{repo}/manifests/{digest}"))?)
            .send()
            .await
            .with_context(|| format!("deleting {repo}@{digest}"))?;
        if response.status() != StatusCode::ACCEPTED {
            bail!(
                "DELETE /v2/{repo}/manifests/{digest} -> {}: {}",
                response.status(),
                response.text().await?
            );
        }
        Ok(())
    }

    /// GET a manifest with [`media::FULL_ACCEPT`]; any status is returned, not an error.
    pub async fn get_manifest(&self, repo: &str, reference: &str) -> Result<FetchedManifest> {
        self.fetch_manifest(Method::GET, repo, reference, Some(media::FULL_ACCEPT)).await
    }

    /// HEAD a manifest with [`media::FULL_ACCEPT`].
    pub async fn head_manifest(&self, repo: &str, reference: &str) -> Result<FetchedManifest> {
        self.fetch_manifest(Method::HEAD, repo, reference, Some(media::FULL_ACCEPT)).await
    }

    /// GET or HEAD a manifest with a chosen `Accept` (none when `accept` is `None`).
    pub async fn fetch_manifest(
        &self,
        method: Method,
        repo: &str,
        reference: &str,
        accept: Option<&str>,
    ) -> Result<FetchedManifest> {
        let mut request = self.request(method, self.url(&format!("/v2/{repo}/manifests/{reference}"))?);
        if let Some(accept) = accept {
            request = request.header(ACCEPT, accept);
        }
        let response = request.send().await.with_context(|| format!("fetching {repo}:{reference}"))?;
        Ok(FetchedManifest {
            status: response.status(),
            content_type: header_string(&response, "content-type"),
            digest: header_string(&response, "docker-content-digest"),
            content_length: header_string(&response, "content-length").and_then(|v| v.parse().ok()),
            body: response.bytes().await?.to_vec(),
        })
    }
}

fn header_string(response: &reqwest::Response, name: &str) -> Option<String> {
    response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn image_config(spec: &ImageSpec, diff_ids: &[String], label: &str) -> Result<Vec<u8>> {
    let mut config = Map::new();
    config.insert("architecture".into(), json!(spec.architecture));
    config.insert("os".into(), json!(spec.os));
    if let Some(variant) = &spec.variant {
        config.insert("variant".into(), json!(variant));
    }
    if let Some(version) = &spec.os_version {
        config.insert("os.version".into(), json!(version));
    }
    config.insert("created".into(), json!("2020-01-01T00:00:00Z"));
    // The label keeps configs distinct even when every layer is empty or shared.
    config.insert("config".into(), json!({"Labels": {"org.pullguard.test.seed": label}}));
    config.insert("rootfs".into(), json!({"type": "layers", "diff_ids": diff_ids}));
    config.insert(
        "history".into(),
        Value::Array(diff_ids.iter().map(|_| json!({"created_by": "pullguard test seed"})).collect()),
    );
    Ok(serde_json::to_vec(&Value::Object(config))?)
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// serde_json only indents by two spaces without a serde dependency; JSON strings cannot
// contain raw newlines, so leading spaces on each line are pure indentation.
fn pretty_json(value: &Value, indent: usize) -> Result<Vec<u8>> {
    let two = serde_json::to_string_pretty(value)?;
    let lines: Vec<String> = two
        .lines()
        .map(|line| {
            let depth = (line.len() - line.trim_start_matches(' ').len()) / 2;
            format!("{}{}", " ".repeat(depth * indent), line.trim_start_matches(' '))
        })
        .collect();
    Ok(lines.join("\n").into_bytes())
}

/// Signs `payload` (pretty-printed JSON) the way libtrust's `JSONSignature.PrettySignature`
/// does, with a fresh ECDSA P-256 key, and returns the signed manifest body.
pub fn sign_pretty_jws(payload: &[u8]) -> Result<Vec<u8>> {
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};

    // libtrust keeps everything up to the last non-space byte before the final `}` and
    // records the rest as formatTail; verification re-appends the tail to that prefix.
    let close =
        payload.iter().rposition(|&b| b == b'}').ok_or_else(|| anyhow!("payload is not a JSON object"))?;
    let mut format_length = close;
    while format_length > 0 && payload[format_length - 1].is_ascii_whitespace() {
        format_length -= 1;
    }
    let format_tail = &payload[format_length..];

    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| anyhow!("generating the schema 1 signing key"))?;
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .map_err(|e| anyhow!("loading the schema 1 signing key: {e}"))?;
    let point = key.public_key().as_ref();
    ensure!(point.len() == 65 && point[0] == 4, "unexpected P-256 public key encoding");
    let mut spki = P256_SPKI_PREFIX.to_vec();
    spki.extend_from_slice(point);

    let protected = serde_json::to_vec(&json!({
        "formatLength": format_length,
        "formatTail": B64URL.encode(format_tail),
        "time": now_rfc3339(),
    }))?;
    let protected = B64URL.encode(protected);
    let signing_input = format!("{protected}.{}", B64URL.encode(payload));
    let signature =
        key.sign(&rng, signing_input.as_bytes()).map_err(|_| anyhow!("signing the schema 1 manifest"))?;

    let signatures = json!([{
        "header": {
            "jwk": {
                "crv": "P-256",
                "kid": libtrust_key_id(&spki),
                "kty": "EC",
                "x": B64URL.encode(&point[1..33]),
                "y": B64URL.encode(&point[33..]),
            },
            "alg": "ES256",
        },
        "signature": B64URL.encode(signature.as_ref()),
        "protected": protected,
    }]);
    // libtrust marshals the signatures with the payload's indent as both prefix and step.
    let signatures = String::from_utf8(pretty_json(&signatures, 3)?)?.replace('\n', "\n   ");
    let mut body = payload[..format_length].to_vec();
    body.extend_from_slice(b",\n   \"signatures\": ");
    body.extend_from_slice(signatures.as_bytes());
    body.extend_from_slice(b"\n}");
    Ok(body)
}

// DER SubjectPublicKeyInfo header for an uncompressed P-256 point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86,
    0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// libtrust key ID (also the `kid` of distribution's token auth): base32 of the first 30
/// bytes of SHA-256 of the DER SubjectPublicKeyInfo, in 12 colon-separated groups of 4.
pub fn libtrust_key_id(spki_der: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let hash = Sha256::digest(spki_der);
    let mut encoded = String::with_capacity(48);
    // 30 bytes = 6 groups of 5 bytes = 48 characters, so no padding is ever needed.
    for chunk in hash[..30].chunks(5) {
        let bits = chunk.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        for shift in (0..8).rev() {
            encoded.push(char::from(ALPHABET[((bits >> (shift * 5)) & 31) as usize]));
        }
    }
    let groups: Vec<&str> = (0..12).map(|i| &encoded[i * 4..i * 4 + 4]).collect();
    groups.join(":")
}

fn now_rfc3339() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

// Howard Hinnant's days-from-epoch to proleptic Gregorian date.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn pretty_json_uses_requested_indent() {
        let out = pretty_json(&json!({"a": [1], "b": {"c": "x  y"}}), 3).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\n   \"a\": [\n      1\n   ],\n   \"b\": {\n      \"c\": \"x  y\"\n   }\n}"
        );
    }

    #[test]
    fn key_id_shape() {
        let kid = libtrust_key_id(b"anything");
        assert_eq!(kid.len(), 59);
        assert_eq!(kid.split(':').count(), 12);
    }

    #[test]
    fn signed_body_keeps_payload_prefix() {
        let payload = pretty_json(&json!({"schemaVersion": 1, "name": "a"}), 3).unwrap();
        let body = sign_pretty_jws(&payload).unwrap();
        let len = payload.len() - 2;
        assert_eq!(&body[..len], &payload[..len]);
        assert!(body.ends_with(b"\n}"));
        let parsed: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed["signatures"][0]["header"]["alg"], "ES256");
    }
}
