//! PG200..PG206 and PG604: whether the pull will be authorised, from the lookup's outcome and the
//! pod's credentials.

use std::sync::Arc;

use super::Subject;
use crate::{
    credentials::Credential,
    facts::ImageFacts,
    finding::{Code, Finding, Severity},
    lookup::LookupError,
    pod_credentials::PodCredentials,
    reference::ImageRef,
};

/// How the lookup of one image used credentials.
#[derive(Debug, Clone, Copy)]
pub struct CredentialUse<'a> {
    pub pod: &'a PodCredentials,
    /// The registry is declared as pulled with node credentials (a cloud credential provider).
    pub node_credentials: bool,
    /// The matching credentials that were tried, in order.
    pub tried: &'a [&'a Credential],
    /// Whether the outcome came from an authenticated lookup.
    pub authenticated: bool,
}

pub fn credential_findings(
    subject: Subject<'_>,
    image: &ImageRef,
    outcome: &Result<Arc<ImageFacts>, LookupError>,
    usage: CredentialUse<'_>,
) -> Vec<Finding> {
    let registry = image.registry();
    let finding = match outcome {
        Err(LookupError::AuthRequired) => Some(needs_credentials(subject, image, usage)),
        Err(LookupError::CredentialsRejected) => Some(subject.finding(
            Code::CredentialsRejected,
            format!("{registry} rejected every matching credential (401)"),
            format!(
                "{registry} rejected the credentials for {} (401): {}. They are wrong, revoked or expired, \
                 and the kubelet's pull fails the same way. Renew the token or password in the pull secret.",
                image.repository(),
                describe_tried(usage.tried)
            ),
        )),
        Err(LookupError::Denied) => Some(subject.finding(
            Code::AccessDenied,
            format!("access to {registry}/{} denied (403)", image.repository()),
            format!(
                "{registry} denied access to {} (403){}: the account may be valid but lacks pull \
                 permission on this repository. Grant it read access, or use a credential that has it.",
                image.repository(),
                if usage.tried.is_empty() {
                    String::new()
                } else {
                    format!(" with {}", describe_tried(usage.tried))
                }
            ),
        )),
        Ok(_) if image.is_docker_hub() && !usage.authenticated => Some(subject.finding(
            Code::AnonymousDockerHub,
            "Docker Hub image pulled anonymously (rate-limited)",
            format!(
                "{} comes from Docker Hub and no pull secret applies, so every node pulls it anonymously, \
                 limited per node IP address (429 Too Many Requests during large rollouts). Add an \
                 imagePullSecret with Docker Hub credentials, or use a mirror.",
                image.normalized()
            ),
        )),
        _ => None,
    };
    finding.into_iter().collect()
}

/// "secret ns/name (key host), ...": which credentials were tried, for messages.
fn describe_tried(tried: &[&Credential]) -> String {
    tried.iter().map(|c| format!("{} (key {})", c.source(), c.key())).collect::<Vec<_>>().join(", ")
}

/// The registry wants credentials and none matched: say precisely why.
fn needs_credentials(subject: Subject<'_>, image: &ImageRef, usage: CredentialUse<'_>) -> Finding {
    let registry = image.registry();
    let pod = usage.pod;
    if usage.node_credentials {
        return subject.finding(
            Code::CredentialsNotVerified,
            format!("{registry}: pulled with node credentials, not verified"),
            format!(
                "{registry} requires credentials and is declared as pulled with the nodes' own credentials \
                 (nodeCredentials), which pullguard does not hold, so {} could not be verified. Nothing is \
                 known to be wrong.",
                image.normalized()
            ),
        );
    }
    if let Some(reason) = &pod.unreadable {
        return subject.finding(
            Code::CredentialsNotVerified,
            format!("{registry} requires credentials; the pull secrets are not known"),
            format!(
                "{registry} requires credentials, and the pull secrets of {} are not known: {reason}. The \
                 credentials were not verified.",
                pod.origin
            ),
        );
    }
    if pod.account_missing {
        return subject.finding_with(
            Code::CredentialsRequired,
            Severity::Warning,
            format!("{registry} requires credentials; {} does not exist yet", pod.origin),
            format!(
                "{registry} requires credentials to pull {}, and the template's {} does not exist yet: its \
                 controller creates no pods until it does (a bundle applied in one go creates it a moment \
                 later). When it exists, its imagePullSecrets must hold credentials for {registry}.",
                image.repository(),
                pod.origin
            ),
        );
    }
    if !pod.missing.is_empty() {
        let names = pod.missing.join(", ");
        // A template's pods retry until the secret appears (the rest of a bundle, an operator);
        // a bare Pod pulls once it is created.
        let (severity, yet, consequence) = if pod.template {
            (Severity::Warning, " yet", "pods will not start until they do (the kubelet retries)")
        } else {
            (Severity::Error, "", "the kubelet pulls without them and gets 401")
        };
        return subject.finding_with(
            Code::SecretMissing,
            severity,
            format!("imagePullSecret {names} does not exist{yet}"),
            format!(
                "{registry} requires credentials and {} names the pull secret(s) {names}, which do not exist{yet} \
                 in the namespace: {consequence}. Create the secret (kubectl create secret docker-registry {} \
                 --docker-server={registry} ...) or fix the name.",
                pod.origin,
                pod.missing.first().map(String::as_str).unwrap_or_default()
            ),
        );
    }
    if !pod.malformed.is_empty() {
        let problems: Vec<String> =
            pod.malformed.iter().map(|(name, problem)| format!("{name}: {problem}")).collect();
        return subject.finding(
            Code::SecretMalformed,
            format!("pull secret unusable: {}", problems.join("; ")),
            format!(
                "{registry} requires credentials and the pull secret(s) of {} cannot be used: {}. Recreate \
                 the secret with kubectl create secret docker-registry, which writes type \
                 kubernetes.io/dockerconfigjson with the .dockerconfigjson key.",
                pod.origin,
                problems.join("; ")
            ),
        );
    }
    if !pod.keyring.is_empty() {
        let keys: Vec<&str> = pod.keyring.keys().collect();
        return subject.finding(
            Code::NoSecretForRegistry,
            format!("no pull secret matches {registry}"),
            format!(
                "{registry} requires credentials; the pull secrets of {} ({}) hold entries for {} but none \
                 for {registry}, so the kubelet pulls anonymously and gets 401. Add an entry for \
                 {registry} (the key must match the image's registry, port included).",
                pod.origin,
                pod.referenced.join(", "),
                keys.join(", ")
            ),
        );
    }
    if image.is_docker_hub() {
        return subject.finding(
            Code::RepositoryNotFound,
            format!("{}: repository does not exist or no pull access", image.name()),
            format!(
                "Docker Hub answers \"pull access denied, repository does not exist or may require \
                 authorization\" for {}: either the repository name is wrong or it is private. Fix the name, \
                 or add an imagePullSecret with Docker Hub credentials that can read it.",
                image.name()
            ),
        );
    }
    subject.finding(
        Code::CredentialsRequired,
        format!("{registry} requires credentials; none provided"),
        format!(
            "{registry} requires authentication to pull {}, and {} has no imagePullSecrets: the pull fails \
             with 401 Unauthorized. Create a kubernetes.io/dockerconfigjson secret for {registry} and list \
             it in the pod's imagePullSecrets (or its service account's).",
            image.repository(),
            pod.origin
        ),
    )
}

/// Referenced secrets that are missing or unusable although no image needed them: worth a
/// warning once per pod, never a denial.
pub fn unused_secret_findings(subject: Subject<'_>, pod: &PodCredentials) -> Vec<Finding> {
    let mut findings = Vec::new();
    for name in &pod.missing {
        findings.push(subject.finding_with(
            Code::SecretMissing,
            Severity::Warning,
            format!("imagePullSecret {name} does not exist (not needed now)"),
            format!(
                "{} names the pull secret {name}, which does not exist in the namespace. No image of this \
                 pod needs it today; remove the reference or create the secret.",
                pod.origin
            ),
        ));
    }
    for (name, problem) in &pod.malformed {
        findings.push(subject.finding_with(
            Code::SecretMalformed,
            Severity::Warning,
            format!("pull secret {name} unusable (not needed now)"),
            format!(
                "the pull secret {name} of {} cannot be used: {problem}. No image of this pod needs it today; \
                 fix or remove it.",
                pod.origin
            ),
        ));
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::{Keyring, SecretProblem};

    fn image(text: &str) -> ImageRef {
        ImageRef::parse(text).unwrap()
    }

    fn code(
        reference: &str,
        outcome: Result<Arc<ImageFacts>, LookupError>,
        pod: &PodCredentials,
        node: bool,
    ) -> Option<Code> {
        let usage = CredentialUse { pod, node_credentials: node, tried: &[], authenticated: false };
        let subject = Subject { container: "c", image: reference, volume: false };
        credential_findings(subject, &image(reference), &outcome, usage).first().map(|finding| finding.code)
    }

    #[test]
    fn why_credentials_are_missing() {
        let private = "r.example/team/app:v1";
        let none = PodCredentials::none();
        let mut missing = PodCredentials::none();
        missing.referenced = vec!["regcred".into()];
        missing.missing = vec!["regcred".into()];
        let mut malformed = PodCredentials::none();
        malformed.referenced = vec!["bad".into()];
        malformed.malformed = vec![("bad".into(), SecretProblem::WrongType { found: "Opaque".into() })];
        let mut other_host = PodCredentials::none();
        other_host.referenced = vec!["other".into()];
        other_host
            .keyring
            .add("other.example", Credential::new("u", "p").with_origin("secret ns/other", "other.example"));
        let mut unreadable = PodCredentials::none();
        unreadable.unreadable = Some("Forbidden (403)".into());
        let auth = || Err(LookupError::AuthRequired);
        assert_eq!(code(private, auth(), &none, false), Some(Code::CredentialsRequired));
        assert_eq!(code(private, auth(), &missing, false), Some(Code::SecretMissing));
        assert_eq!(code(private, auth(), &malformed, false), Some(Code::SecretMalformed));
        assert_eq!(code(private, auth(), &other_host, false), Some(Code::NoSecretForRegistry));
        assert_eq!(code(private, auth(), &unreadable, false), Some(Code::CredentialsNotVerified));
        assert_eq!(code(private, auth(), &none, true), Some(Code::CredentialsNotVerified));
        assert_eq!(code("someone/private", auth(), &none, false), Some(Code::RepositoryNotFound));
        assert_eq!(
            code(private, Err(LookupError::CredentialsRejected), &none, false),
            Some(Code::CredentialsRejected)
        );
        assert_eq!(code(private, Err(LookupError::Denied), &none, false), Some(Code::AccessDenied));
        assert_eq!(code(private, Err(LookupError::RepositoryNotFound), &none, false), None);
    }

    #[test]
    fn pg204_names_the_keys_present() {
        let mut pod = PodCredentials::none();
        pod.referenced = vec!["other".into()];
        pod.keyring.add(
            "other.example:5000",
            Credential::new("u", "p").with_origin("secret ns/other", "other.example:5000"),
        );
        let usage = CredentialUse { pod: &pod, node_credentials: false, tried: &[], authenticated: false };
        let subject = Subject { container: "c", image: "r.example/a", volume: false };
        let findings =
            credential_findings(subject, &image("r.example/a"), &Err(LookupError::AuthRequired), usage);
        assert!(findings[0].message.contains("other.example:5000"), "{}", findings[0].message);
        let _ = Keyring::default();
    }

    #[test]
    fn unused_problems_are_warnings() {
        let mut pod = PodCredentials::none();
        pod.missing = vec!["gone".into()];
        let findings = unused_secret_findings(Subject { container: "c", image: "i", volume: false }, &pod);
        assert_eq!(findings[0].code, Code::SecretMissing);
        assert_eq!(findings[0].severity, Severity::Warning);
    }
}
