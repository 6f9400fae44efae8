//! Findings from a lookup that ended without facts: not found, auth, transport and registry faults.

use super::Subject;
use crate::{
    finding::{Code, Finding},
    lookup::LookupError,
    reference::ImageRef,
};

pub fn lookup_findings(subject: Subject<'_>, image: &ImageRef, error: &LookupError) -> Vec<Finding> {
    let registry = image.registry();
    let repository = image.repository();
    let finding = match error {
        LookupError::TagNotFound { tag, existing_tags } => {
            let hint = match existing_tags {
                Some(tags) if !tags.is_empty() => format!(" Closest existing tags: {}.", tags.join(", ")),
                Some(_) => " The repository has no tags at all.".to_string(),
                None => String::new(),
            };
            let short_hint = match existing_tags {
                Some(tags) if !tags.is_empty() => format!(" (closest: {})", tags.join(", ")),
                _ => String::new(),
            };
            subject.finding(
                Code::TagNotFound,
                format!("tag {tag:?} not found in {registry}/{repository}{short_hint}"),
                format!(
                    "tag {tag:?} does not exist in {registry}/{repository}: the pull fails with \"not found\" \
                     and the pod stays in ImagePullBackOff.{hint} Fix the tag, or push the image first."
                ),
            )
        }
        LookupError::DigestNotFound { digest } => subject.finding(
            Code::DigestNotFound,
            format!("digest {} not found in {registry}/{repository}", short_digest(digest)),
            format!(
                "manifest {digest} does not exist in {registry}/{repository} (deleted, garbage-collected, or \
                 pushed to another repository): the pull fails with \"not found\". Pin a digest that exists \
                 (`crane digest` or `skopeo inspect` on the tag you meant)."
            ),
        ),
        LookupError::RepositoryNotFound => subject.finding(
            Code::RepositoryNotFound,
            format!("repository {registry}/{repository} not found"),
            format!(
                "repository {repository} does not exist on {registry} (or is hidden from this client): the \
                 pull fails with \"repository does not exist or may require authorization\". Check the \
                 repository path for typos, or push the image first."
            ),
        ),
        // Whether credentials were needed, wrong or insufficient depends on the pod: see credentials.rs.
        LookupError::AuthRequired | LookupError::CredentialsRejected | LookupError::Denied => {
            return Vec::new();
        }
        LookupError::Unreachable { reason } => subject.finding(
            Code::RegistryUnreachable,
            format!("registry {registry} unreachable: {reason}"),
            format!(
                "could not reach {registry} ({reason}), so the image was not verified. If nodes cannot \
                 reach it either, the pull will fail with a timeout; check DNS, firewalls and proxies."
            ),
        ),
        LookupError::Deadline => subject.finding(
            Code::RegistryUnreachable,
            format!("registry {registry} did not answer before the admission deadline"),
            format!(
                "{registry} did not answer within the admission deadline, so the image was not verified. \
                 A slow registry also slows image pulls; if it is permanently slow, raise `deadline` (below \
                 the webhook timeout) or check the registry's health."
            ),
        ),
        LookupError::PlainHttp => subject.finding(
            Code::PlainHttpRegistry,
            format!("{registry} speaks plain HTTP, not HTTPS"),
            format!(
                "{registry} answered an HTTPS request in plain HTTP. containerd and CRI-O pull over HTTPS \
                 unless the registry is configured as insecure on every node, so the pull fails with \
                 \"http: server gave HTTP response to HTTPS client\". Serve the registry over TLS, or \
                 configure it as insecure on the nodes and list it with `insecure: true` under \
                 `registries` in pullguard's config."
            ),
        ),
        LookupError::UntrustedCertificate { reason } => subject.finding(
            Code::UntrustedCertificate,
            format!("{registry} TLS certificate not trusted ({reason})"),
            format!(
                "the TLS certificate of {registry} is not trusted ({reason}); nodes fail the same way with \
                 \"x509: certificate signed by unknown authority\" unless their trust store has the CA. \
                 Use a certificate from a public CA, or install the CA on the nodes and give it to \
                 pullguard with `caFile` under `registries`."
            ),
        ),
        LookupError::RegistryFailure { reason, .. } => subject.finding(
            Code::RegistryError,
            format!("registry {registry} error: {reason}"),
            format!(
                "{registry} failed to answer for {repository} ({reason}), so the image was not verified. \
                 Pulls may fail the same way while the registry is unhealthy."
            ),
        ),
        LookupError::RateLimited { retry_after } => subject.finding(
            Code::RateLimited,
            format!("registry {registry} rate limit (429)"),
            format!(
                "{registry} is rate-limiting requests (429 Too Many Requests{}); the image was not verified, \
                 and nodes pulling now may hit the same limit. Authenticate pulls (imagePullSecrets) or use \
                 a pull-through mirror.",
                retry_after.map(|wait| format!(", retry after {}s", wait.as_secs())).unwrap_or_default()
            ),
        ),
        LookupError::InvalidManifest { reason } => subject.finding(
            Code::RegistryError,
            format!("registry {registry} returned an unusable manifest"),
            format!(
                "{registry} returned a manifest for {} that cannot be read ({reason}); the runtime will \
                 refuse it too. Re-push the image.",
                image.normalized()
            ),
        ),
        LookupError::AddressRefused { reason } => subject.finding(
            Code::AddressRefused,
            format!("registry {registry} not contacted: address refused"),
            format!(
                "pullguard did not contact {registry}: {reason}. Image references are chosen by whoever \
                 creates a pod, so pullguard fetches link-local, cloud metadata and loopback addresses \
                 only for registries listed under `registries` (private ones also when \
                 `allowPrivateNetworks` is true, the default). The image was not verified."
            ),
        ),
        LookupError::UnsupportedMediaType { media_type } => subject.finding(
            Code::NotAContainerImage,
            format!("{} is not a container image ({media_type})", image.normalized()),
            format!(
                "{} points to a manifest of type {media_type}, which no container runtime can run. Point \
                 the container at an image (OCI or Docker v2 manifest or index).",
                image.normalized()
            ),
        ),
    };
    vec![finding]
}

fn short_digest(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn code_for(image: &str, error: LookupError) -> Code {
        let subject = Subject { container: "app", image, volume: false };
        let findings = lookup_findings(subject, &ImageRef::parse(image).unwrap(), &error);
        assert_eq!(findings.len(), 1);
        assert!(!findings[0].message.is_empty());
        findings[0].code
    }

    #[test]
    fn auth_outcomes_are_left_to_the_credential_checks() {
        let image = ImageRef::parse("r.example/a:v1").unwrap();
        let subject = Subject { container: "app", image: "r.example/a:v1", volume: false };
        for error in [LookupError::AuthRequired, LookupError::CredentialsRejected, LookupError::Denied] {
            assert!(lookup_findings(subject, &image, &error).is_empty());
        }
    }

    #[test]
    fn table() {
        let private = "registry.example.com/team/api:v2";
        let cases = [
            (
                private,
                LookupError::TagNotFound { tag: "v2".into(), existing_tags: Some(vec!["v1".into()]) },
                Code::TagNotFound,
            ),
            (private, LookupError::DigestNotFound { digest: "sha256:00".into() }, Code::DigestNotFound),
            (private, LookupError::RepositoryNotFound, Code::RepositoryNotFound),
            (private, LookupError::Unreachable { reason: "refused".into() }, Code::RegistryUnreachable),
            (private, LookupError::Deadline, Code::RegistryUnreachable),
            (private, LookupError::PlainHttp, Code::PlainHttpRegistry),
            (
                private,
                LookupError::UntrustedCertificate { reason: "UnknownIssuer".into() },
                Code::UntrustedCertificate,
            ),
            (
                private,
                LookupError::RegistryFailure { status: Some(503), reason: "x".into() },
                Code::RegistryError,
            ),
            (
                private,
                LookupError::RateLimited { retry_after: Some(Duration::from_secs(5)) },
                Code::RateLimited,
            ),
            (private, LookupError::InvalidManifest { reason: "x".into() }, Code::RegistryError),
            (private, LookupError::UnsupportedMediaType { media_type: "x".into() }, Code::NotAContainerImage),
            (private, LookupError::AddressRefused { reason: "x".into() }, Code::AddressRefused),
        ];
        for (image, error, code) in cases {
            assert_eq!(code_for(image, error.clone()), code, "{error:?}");
        }
    }

    #[test]
    fn pg101_names_the_closest_tags() {
        let image = ImageRef::parse("r.example/app:v1.2.5").unwrap();
        let error = LookupError::TagNotFound {
            tag: "v1.2.5".into(),
            existing_tags: Some(vec!["v1.2.4".into(), "v1.2.3".into()]),
        };
        let finding = &lookup_findings(
            Subject { container: "app", image: "r.example/app:v1.2.5", volume: false },
            &image,
            &error,
        )[0];
        assert!(finding.message.contains("v1.2.4, v1.2.3"), "{}", finding.message);
        assert!(finding.warning_line().contains("v1.2.4"));
    }
}
