//! Findings: what pullguard reports about one container image.
//!
//! Codes are part of the public contract (users silence or re-grade them by code), so the
//! enum's string form never changes once released. In code a finding is named by what it means
//! (`Code::SecretMissing`); the table below is the one place that maps it to its `PG` code.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! codes {
    ($($variant:ident => $text:literal, $default:ident, $title:literal;)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Code { $($variant,)* }

        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $text,)* }
            }

            pub fn default_severity(self) -> Severity {
                match self { $(Code::$variant => Severity::$default,)* }
            }

            /// One line for the README table and `--help` output.
            pub fn title(self) -> &'static str {
                match self { $(Code::$variant => $title,)* }
            }
        }

        impl FromStr for Code {
            type Err = UnknownCode;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s.to_ascii_uppercase().as_str() {
                    $($text => Ok(Code::$variant),)*
                    _ => Err(UnknownCode(s.to_string())),
                }
            }
        }
    };
}

codes! {
    InvalidReference => "PG100", Error, "image reference is not valid (kubelet: InvalidImageName)";
    TagNotFound => "PG101", Error, "tag not found in the repository";
    DigestNotFound => "PG102", Error, "digest not found";
    RepositoryNotFound => "PG103", Error, "repository not found, or no pull access";
    HeldOnEveryNode => "PG104", Warning, "registry lookup failed, but every candidate node holds the image (IfNotPresent)";
    NeverPulledNotOnEveryNode => "PG105", Warning, "imagePullPolicy Never: the image is not listed on every candidate node";
    CredentialsNotVerified => "PG200", Info, "credentials not verified (node credentials, or secrets unreadable)";
    CredentialsRequired => "PG201", Error, "registry requires credentials and none are provided";
    SecretMissing => "PG202", Error, "a named imagePullSecret does not exist";
    SecretMalformed => "PG203", Error, "a pull secret is malformed or of the wrong type";
    NoSecretForRegistry => "PG204", Error, "pull secrets exist but none matches this registry";
    CredentialsRejected => "PG205", Error, "credentials rejected by the registry (401)";
    AccessDenied => "PG206", Error, "access denied (403)";
    PlatformNotVerified => "PG300", Info, "platform not verified: no node data for the pod";
    NoRunnablePlatform => "PG301", Error, "no platform of the image runs on the candidate nodes";
    SomeNodesCannotRun => "PG302", Warning, "some candidate nodes cannot run the image";
    WindowsVersionMismatch => "PG303", Error, "Windows image os.version incompatible with the nodes";
    Schema1Manifest => "PG401", Error, "Docker schema 1 manifest (containerd 2.x refuses it)";
    OctetStreamConfig => "PG402", Error, "config media type application/octet-stream";
    NotAContainerImage => "PG403", Error, "reference is not a runnable container image";
    RegistryUnreachable => "PG501", Warning, "registry unreachable (DNS, connect, timeout)";
    PlainHttpRegistry => "PG502", Error, "registry speaks plain HTTP and is not configured as insecure";
    UntrustedCertificate => "PG503", Error, "registry TLS certificate not trusted";
    RegistryError => "PG504", Warning, "registry error (5xx, invalid response)";
    RateLimited => "PG505", Warning, "registry rate limit (429)";
    AddressRefused => "PG506", Warning, "registry address refused (metadata, link-local, or private not allowed)";
    MutableTag => "PG601", Warning, "mutable tag: latest, or no tag";
    ImageTooLarge => "PG602", Warning, "image larger than the configured limit";
    WastefulLayers => "PG603", Info, "empty or duplicate layers";
    AnonymousDockerHub => "PG604", Info, "Docker Hub image pulled anonymously";
}

impl Code {
    /// Findings that say the registry could not answer, as opposed to a definite answer about the image.
    pub fn is_registry_unavailable(self) -> bool {
        matches!(self, Code::RegistryUnreachable | Code::RegistryError | Code::RateLimited)
    }

    /// Findings that say the pull will not be authorised (PG200, "not verified", is not one).
    pub fn is_credential(self) -> bool {
        matches!(
            self,
            Code::CredentialsRequired
                | Code::SecretMissing
                | Code::SecretMalformed
                | Code::NoSecretForRegistry
                | Code::CredentialsRejected
                | Code::AccessDenied
        )
    }

    /// Credential findings a pull secret of the namespace could fix: none given, a missing one,
    /// none for this registry.
    pub fn wants_a_secret(self) -> bool {
        matches!(self, Code::CredentialsRequired | Code::SecretMissing | Code::NoSecretForRegistry)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Code {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown finding code {0:?} (codes are PG100..PG604, see the README)")]
pub struct UnknownCode(pub String);

/// One problem (or notice) about one container's image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub code: Code,
    pub severity: Severity,
    /// The container's name, or the image volume's when `volume` is set.
    pub container: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub volume: bool,
    pub image: String,
    /// Short form for kubectl `Warning:` lines (kept well under the API server's 256-character cut).
    #[serde(skip)]
    pub summary: String,
    /// What is wrong, why the pull fails, and how to fix it.
    pub message: String,
}

impl Finding {
    /// The warning line kubectl prints: code, container (or volume) and the short summary.
    pub fn warning_line(&self) -> String {
        self.warning_line_for(&self.short_place())
    }

    /// The warning line for this finding as it stands for `places` (the containers sharing it).
    pub fn warning_line_for(&self, places: &str) -> String {
        truncate_chars(&format!("{} {places}: {}", self.code, self.summary), 240)
    }

    /// `app`, or `volume data`: where the image is used, as a warning line names it.
    pub fn short_place(&self) -> String {
        if self.volume { format!("volume {}", self.container) } else { self.container.clone() }
    }

    /// `container "app"` or `volume "data"`, as messages name where the image is used.
    pub fn place(&self) -> String {
        let what = if self.volume { "volume" } else { "container" };
        format!("{what} {:?}", self.container)
    }
}

pub fn truncate_chars(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for code in Code::ALL {
            assert!(seen.insert(code.as_str()));
            assert_eq!(code.as_str().parse::<Code>().unwrap(), *code);
            assert_eq!(code.as_str().to_lowercase().parse::<Code>().unwrap(), *code);
        }
        assert!("PG999".parse::<Code>().is_err());
    }

    #[test]
    fn defaults_follow_the_design_table() {
        assert_eq!(Code::TagNotFound.default_severity(), Severity::Error);
        assert_eq!(Code::RegistryUnreachable.default_severity(), Severity::Warning);
        assert_eq!(Code::WastefulLayers.default_severity(), Severity::Info);
        assert!(Code::RateLimited.is_registry_unavailable());
        assert!(!Code::UntrustedCertificate.is_registry_unavailable());
    }

    #[test]
    fn warning_lines_are_short() {
        let finding = Finding {
            code: Code::TagNotFound,
            severity: Severity::Error,
            container: "app".into(),
            volume: false,
            image: "x".into(),
            summary: "y".repeat(500),
            message: String::new(),
        };
        assert!(finding.warning_line().chars().count() <= 240);
    }
}
