//! Image, index, attestation and artifact pushes: manifests and configs built from an
//! [`ImageSpec`], with blobs that are tiny and not real tarballs (registries store them
//! opaquely, and pullguard only ever reads manifests and configs).

use anyhow::{Result, bail};
use serde_json::{Map, Value, json};

use super::{
    Descriptor, Format, ImageSpec, IndexEntry, LayerSpec, PushedImage, PushedIndex, SBOM_ARTIFACT_TYPE,
    Seeder, media, sha256_digest,
};

impl Seeder {
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
