//! Findings from the manifest itself: schema 1 (PG401), octet-stream config (PG402), not an image
//! (PG403), size (PG602) and empty or duplicate layers (PG603).

use std::collections::HashSet;

use super::Subject;
use crate::{
    config::ByteSize,
    facts::{ImageFacts, not_runnable_reason},
    finding::{Code, Finding, Severity},
    manifest::{self, ManifestKind},
};

/// `schema1_pulled`: every node the pod can land on runs containerd 1.x, which still pulls schema 1.
pub fn manifest_findings(
    subject: Subject<'_>,
    facts: &ImageFacts,
    max_image_size: ByteSize,
    schema1_pulled: bool,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    if facts.kind == ManifestKind::DockerSchema1 && schema1_pulled {
        findings.push(subject.finding_with(
            Code::Schema1Manifest,
            Severity::Warning,
            "Docker schema 1 manifest: pulls today, fails after the upgrade to containerd 2.0",
            format!(
                "{} is a Docker image manifest v2 schema 1 ({}). The nodes this pod can land on run \
                 containerd 1.x, which still pulls it (deprecated), but containerd 2.0 removed schema 1 \
                 support: the pull breaks with the nodes' upgrade. Re-push the image as Docker v2 schema 2 \
                 or OCI, for example `skopeo copy --format v2s2` or `crane copy` with a current client.",
                subject.image, facts.media_type
            ),
        ));
        return findings;
    }
    if facts.kind == ManifestKind::DockerSchema1 {
        findings.push(subject.finding(
            Code::Schema1Manifest,
            "Docker schema 1 manifest: containerd 2.x refuses it",
            format!(
                "{} is a Docker image manifest v2 schema 1 ({}). containerd 2.x and recent CRI-O refuse \
                 schema 1 (\"support for schema 1 images has been removed\"), so the pull fails on current \
                 nodes. Re-push the image as Docker v2 schema 2 or OCI, for example `skopeo copy \
                 --format v2s2` or `crane copy` with a current client.",
                subject.image, facts.media_type
            ),
        ));
        return findings;
    }
    if let Some(reason) = not_runnable_reason(facts) {
        findings.push(subject.finding(
            Code::NotAContainerImage,
            format!("not a runnable image: {reason}"),
            format!(
                "{} is not a runnable container image: {reason}. The runtime cannot unpack it into a \
                 container filesystem. Point the container at the image itself, not at a chart, \
                 signature, SBOM or other artifact.",
                subject.image
            ),
        ));
        return findings;
    }
    if facts.config_media_type.as_deref() == Some(manifest::OCTET_STREAM) {
        findings.push(subject.finding(
            Code::OctetStreamConfig,
            "config media type application/octet-stream",
            format!(
                "the manifest of {} declares its config as application/octet-stream; containerd refuses \
                 it (\"unknown config media type\") although some older tools produced it. Rebuild or \
                 re-push the image with a current builder so the config is \
                 application/vnd.oci.image.config.v1+json or application/vnd.docker.container.image.v1+json.",
                subject.image
            ),
        ));
    }
    if let Some(size) = facts.compressed_size
        && size > max_image_size.0
    {
        findings.push(subject.finding(
            Code::ImageTooLarge,
            format!("image is {} compressed (limit {})", ByteSize(size), max_image_size),
            format!(
                "{} is {} compressed, above the configured limit of {}. Large images pull slowly, delay \
                 every scale-up and can hit the kubelet's pull deadline (\"context canceled\"). Use a \
                 smaller base image, multi-stage builds, or raise maxImageSize if this is intended.",
                subject.image,
                ByteSize(size),
                max_image_size
            ),
        ));
    }
    let empty = facts.layers.iter().filter(|layer| layer.is_empty_layer()).count();
    let mut seen = HashSet::new();
    let duplicates = facts.layers.iter().filter(|layer| !seen.insert(layer.digest.as_str())).count();
    if empty > 0 || duplicates > 0 {
        findings.push(subject.finding(
            Code::WastefulLayers,
            format!("{empty} empty and {duplicates} duplicate layer(s)"),
            format!(
                "{} has {empty} empty and {duplicates} duplicate layer(s). They cost a round trip each and \
                 make the image ineligible for lazy image streaming on some platforms. Squash or rebuild \
                 so every layer is distinct and non-empty.",
                subject.image
            ),
        ));
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{ImagePlatform, Layer};

    fn layer(digest: &str, size: u64) -> Layer {
        Layer {
            digest: digest.into(),
            size,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        }
    }

    fn image(config: &str, layers: Vec<Layer>) -> ImageFacts {
        ImageFacts {
            digest: "sha256:x".into(),
            media_type: manifest::OCI_MANIFEST.into(),
            kind: ManifestKind::OciManifest,
            platforms: vec![ImagePlatform {
                os: "linux".into(),
                architecture: "amd64".into(),
                variant: None,
                os_version: None,
            }],
            config_media_type: Some(config.into()),
            artifact_type: None,
            compressed_size: Some(layers.iter().map(|l| l.size).sum()),
            layers,
            comparable_platforms: Default::default(),
        }
    }

    fn codes(facts: &ImageFacts) -> Vec<Code> {
        manifest_findings(
            Subject { container: "c", image: "i", volume: false },
            facts,
            ByteSize(2 << 30),
            false,
        )
        .into_iter()
        .map(|finding| finding.code)
        .collect()
    }

    #[test]
    fn table() {
        let clean = image(manifest::OCI_CONFIG, vec![layer("sha256:a", 10), layer("sha256:b", 20)]);
        assert_eq!(codes(&clean), vec![]);
        assert_eq!(
            codes(&image(manifest::OCTET_STREAM, vec![layer("sha256:a", 10)])),
            vec![Code::OctetStreamConfig]
        );
        assert_eq!(
            codes(&image(manifest::OCI_CONFIG, vec![layer("sha256:a", 3 << 30)])),
            vec![Code::ImageTooLarge]
        );
        assert_eq!(codes(&image(manifest::OCI_CONFIG, vec![layer("sha256:a", 2 << 30)])), vec![]);
        assert_eq!(
            codes(&image(manifest::OCI_CONFIG, vec![layer("sha256:a", 1), layer("sha256:a", 1)])),
            vec![Code::WastefulLayers]
        );
        assert_eq!(
            codes(&image(manifest::OCI_CONFIG, vec![layer("sha256:e", 0)])),
            vec![Code::WastefulLayers]
        );
        assert_eq!(
            codes(&image("application/vnd.cncf.helm.config.v1+json", vec![])),
            vec![Code::NotAContainerImage]
        );
        let mut artifact = clean.clone();
        artifact.artifact_type = Some("application/vnd.example.sbom".into());
        assert_eq!(codes(&artifact), vec![Code::NotAContainerImage]);
        let mut schema1 = clean.clone();
        schema1.kind = ManifestKind::DockerSchema1;
        assert_eq!(codes(&schema1), vec![Code::Schema1Manifest]);
        // Nodes on containerd 1.x still pull it: a warning that the upgrade breaks it.
        let subject = Subject { container: "c", image: "i", volume: false };
        let graded = manifest_findings(subject, &schema1, ByteSize(2 << 30), true);
        assert_eq!((graded[0].code, graded[0].severity), (Code::Schema1Manifest, Severity::Warning));
        assert!(graded[0].message.contains("containerd 2.0"), "{}", graded[0].message);
        let mut index = clean;
        index.kind = ManifestKind::OciIndex;
        index.compressed_size = None;
        index.layers.clear();
        assert_eq!(codes(&index), vec![]);
        index.platforms.clear();
        assert_eq!(codes(&index), vec![Code::NotAContainerImage]);
    }
}
