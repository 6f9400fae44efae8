//! What a registry lookup can end in, short of facts about the image.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("tag {tag:?} not found")]
    TagNotFound {
        tag: String,
        /// `Some(false)` when the tag list says the repository itself is unknown.
        existing_tags: Option<Vec<String>>,
    },
    #[error("digest {digest} not found")]
    DigestNotFound { digest: String },
    #[error("repository not found")]
    RepositoryNotFound,
    #[error("registry requires credentials")]
    AuthRequired,
    #[error("registry rejected the credentials (401)")]
    CredentialsRejected,
    #[error("access denied (403)")]
    Denied,
    #[error("registry unreachable: {reason}")]
    Unreachable { reason: String },
    #[error("lookup cut off by the admission deadline")]
    Deadline,
    #[error("registry answers plain HTTP to an HTTPS request")]
    PlainHttp,
    #[error("registry TLS certificate not trusted: {reason}")]
    UntrustedCertificate { reason: String },
    #[error("registry error: {reason}")]
    RegistryFailure { status: Option<u16>, reason: String },
    #[error("registry rate limit (429){}", retry_after.map(|d| format!(", retry after {}s", d.as_secs())).unwrap_or_default())]
    RateLimited { retry_after: Option<Duration> },
    #[error("manifest is not usable: {reason}")]
    InvalidManifest { reason: String },
    #[error("media type {media_type} is not a container image manifest")]
    UnsupportedMediaType { media_type: String },
    #[error("{reason}")]
    AddressRefused { reason: String },
}

impl LookupError {
    /// Definite answers about the image may be cached (for the miss TTL); passing faults must not,
    /// or one blip would block a rollout for the whole TTL.
    pub fn is_definite(&self) -> bool {
        matches!(
            self,
            LookupError::TagNotFound { .. }
                | LookupError::DigestNotFound { .. }
                | LookupError::RepositoryNotFound
                | LookupError::AuthRequired
                | LookupError::CredentialsRejected
                | LookupError::Denied
                | LookupError::InvalidManifest { .. }
                | LookupError::UnsupportedMediaType { .. }
                | LookupError::AddressRefused { .. }
        )
    }

    /// Label for metrics and logs; stable and free of any request detail.
    pub fn metric_label(&self) -> &'static str {
        match self {
            LookupError::TagNotFound { .. } => "tag_not_found",
            LookupError::DigestNotFound { .. } => "digest_not_found",
            LookupError::RepositoryNotFound => "repository_not_found",
            LookupError::AuthRequired => "auth_required",
            LookupError::CredentialsRejected => "credentials_rejected",
            LookupError::Denied => "denied",
            LookupError::Unreachable { .. } => "unreachable",
            LookupError::Deadline => "deadline",
            LookupError::PlainHttp => "plain_http",
            LookupError::UntrustedCertificate { .. } => "untrusted_certificate",
            LookupError::RegistryFailure { .. } => "registry_failure",
            LookupError::RateLimited { .. } => "rate_limited",
            LookupError::InvalidManifest { .. } => "invalid_manifest",
            LookupError::UnsupportedMediaType { .. } => "unsupported_media_type",
            LookupError::AddressRefused { .. } => "address_refused",
        }
    }
}
