//! One `Config` for every command: the YAML file, then `PULLGUARD_*` environment variables and
//! flags on top (clap reads both), validated once at start so a typo fails the rollout, not an
//! admission at 3 a.m.

use std::{collections::BTreeMap, fmt, path::PathBuf, str::FromStr, time::Duration};

use serde::{Deserialize, Deserializer};

use crate::{
    finding::{Code, Severity},
    glob,
    reference::ImageRef,
};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid setting {key}: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("cannot read caFile {path} for registry {host}: {source}")]
    CaFile {
        host: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The key of the namespace label and of the object annotation that set a mode. One key for both:
/// users write the same thing in either place.
pub const MODE_KEY: &str = "pullguard.io/mode";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
/// Ordered from the most permissive to the strictest, so "may only relax" is a `min`.
pub enum Mode {
    Audit,
    Warn,
    #[default]
    Enforce,
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "enforce" => Ok(Mode::Enforce),
            "warn" => Ok(Mode::Warn),
            "audit" => Ok(Mode::Audit),
            other => Err(format!("unknown mode {other:?} (expected enforce, warn or audit)")),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Enforce => "enforce",
            Mode::Warn => "warn",
            Mode::Audit => "audit",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum UnavailablePolicy {
    #[default]
    Allow,
    Deny,
}

impl FromStr for UnavailablePolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "allow" => Ok(UnavailablePolicy::Allow),
            "deny" => Ok(UnavailablePolicy::Deny),
            other => Err(format!("unknown value {other:?} (expected allow or deny)")),
        }
    }
}

/// A finding's configured grade: a severity, or `off` to silence it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Grade {
    Error,
    Warning,
    Info,
    Off,
}

impl Grade {
    pub fn severity(self) -> Option<Severity> {
        match self {
            Grade::Error => Some(Severity::Error),
            Grade::Warning => Some(Severity::Warning),
            Grade::Info => Some(Severity::Info),
            Grade::Off => None,
        }
    }
}

/// A duration written as `8s`, `250ms`, `5m`, `24h` or `1d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let value: u64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a duration (examples: 500ms, 8s, 5m, 24h)"))?;
        let millis = match unit {
            "ms" => Some(value),
            "s" => value.checked_mul(1000),
            "m" => value.checked_mul(60_000),
            "h" => value.checked_mul(3_600_000),
            "d" => value.checked_mul(86_400_000),
            _ => return Err(format!("{text:?} has no known unit (use ms, s, m, h or d)")),
        }
        .ok_or_else(|| format!("{text:?} is too large"))?;
        Ok(HumanDuration(Duration::from_millis(millis)))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

/// A size written as `2Gi`, `500Mi`, `1G` or a plain number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let value: u64 =
            number.parse().map_err(|_| format!("{text:?} is not a size (examples: 2Gi, 500Mi)"))?;
        let factor: u64 = match unit {
            "" => 1,
            "Ki" => 1 << 10,
            "Mi" => 1 << 20,
            "Gi" => 1 << 30,
            "Ti" => 1 << 40,
            "k" | "K" => 1_000,
            "M" => 1_000_000,
            "G" => 1_000_000_000,
            "T" => 1_000_000_000_000,
            _ => {
                return Err(format!("{text:?} has no known unit (use Ki, Mi, Gi, Ti, K, M, G or T)"));
            }
        };
        value.checked_mul(factor).map(ByteSize).ok_or_else(|| format!("{text:?} is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(bytes) => Ok(ByteSize(bytes)),
            Raw::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let units = [("Ti", 1u64 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)];
        for (unit, factor) in units {
            if self.0 >= factor {
                let value = self.0 as f64 / factor as f64;
                return write!(f, "{value:.1} {unit}B");
            }
        }
        write!(f, "{} B", self.0)
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CacheConfig {
    pub tag_ttl: HumanDuration,
    pub digest_ttl: HumanDuration,
    pub miss_ttl: HumanDuration,
    pub max_entries: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            tag_ttl: HumanDuration(Duration::from_secs(300)),
            digest_ttl: HumanDuration(Duration::from_secs(86_400)),
            miss_ttl: HumanDuration(Duration::from_secs(30)),
            max_entries: 100_000,
        }
    }
}

/// Settings for registries the operator names.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistryConfig {
    /// Exact `host[:port]` or a glob such as `*.corp.example` (`*` stands for one DNS label).
    pub host: String,
    #[serde(default)]
    pub insecure: bool,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub node_credentials: bool,
    /// Some registries answer 403 instead of 404 for a missing tag; with this, 403 counts as "not found".
    #[serde(default)]
    pub forbidden_means_not_found: bool,
    /// Hosts (globs as in `host`) of token services on another host that may receive this
    /// registry's pull credentials. A realm on the registry's own host, and `auth.docker.io` for
    /// Docker Hub, need no entry.
    #[serde(default)]
    pub token_realm_hosts: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Config {
    pub mode: Mode,
    pub registry_unavailable: UnavailablePolicy,
    pub deadline: HumanDuration,
    pub lookup_timeout: HumanDuration,
    pub cache: CacheConfig,
    pub max_image_size: ByteSize,
    /// Reads of manifests and config blobs stop here: a registry must not make us buffer gigabytes.
    pub max_manifest_size: ByteSize,
    pub registries: Vec<RegistryConfig>,
    pub findings: BTreeMap<Code, Grade>,
    pub exempt_namespaces: Vec<String>,
    pub exempt_images: Vec<String>,
    pub node_pool_labels: Vec<String>,
    /// Pods created by a controller were checked at their template; checking them again costs
    /// registry calls on every scale-up for nothing.
    pub check_controller_pods: bool,
    /// Registries not named under `registries` may resolve to private addresses (never loopback,
    /// link-local or metadata). On by default: the kubelet pulls from private endpoints, and a
    /// pod's author reaches them from the pod anyway (see `registry::address` in the pullguard crate).
    pub allow_private_networks: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::Enforce,
            registry_unavailable: UnavailablePolicy::Allow,
            deadline: HumanDuration(Duration::from_secs(8)),
            lookup_timeout: HumanDuration(Duration::from_secs(3)),
            cache: CacheConfig::default(),
            max_image_size: ByteSize(2 << 30),
            max_manifest_size: ByteSize(4 << 20),
            registries: Vec::new(),
            findings: BTreeMap::new(),
            exempt_namespaces: vec!["kube-system".to_string()],
            exempt_images: Vec::new(),
            node_pool_labels: [
                "cloud.google.com/gke-nodepool",
                "eks.amazonaws.com/nodegroup",
                "kubernetes.azure.com/agentpool",
                "karpenter.sh/nodepool",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            check_controller_pods: false,
            allow_private_networks: true,
        }
    }
}

impl Config {
    pub fn from_yaml(text: &str) -> Result<Config, String> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        serde_saphyr::from_str(text).map_err(|error| error.to_string())
    }

    /// The settings' own rules; files the settings name are the caller's to read (the core does
    /// no I/O).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| Err(ConfigError::Invalid { key, message: message.to_string() });
        if self.deadline.0.is_zero() {
            return invalid("deadline", "must be greater than zero");
        }
        // The API server gives up at the webhook timeout (at most 30 s); answering after that is useless.
        if self.deadline.0 > Duration::from_secs(29) {
            return invalid("deadline", "must be below the API server's 30s webhook timeout limit");
        }
        if self.lookup_timeout.0.is_zero() {
            return invalid("lookupTimeout", "must be greater than zero");
        }
        if self.cache.max_entries == 0 {
            return invalid("cache.maxEntries", "must be at least 1");
        }
        if self.max_manifest_size.0 < 1024 {
            return invalid("maxManifestSize", "must be at least 1Ki");
        }
        for registry in &self.registries {
            if registry.host.is_empty() || registry.host.contains('/') || registry.host.contains("://") {
                return invalid(
                    "registries[].host",
                    &format!("{:?} must be host[:port] or a glob", registry.host),
                );
            }
        }
        Ok(())
    }

    /// The severity a finding ends with: the configured grade of its code if any (`None` when
    /// silenced), else the severity the check gave it.
    pub fn regrade(&self, code: Code, computed: Severity) -> Option<Severity> {
        if let Some(grade) = self.findings.get(&code) {
            return grade.severity();
        }
        if code.is_registry_unavailable() && self.registry_unavailable == UnavailablePolicy::Deny {
            return Some(Severity::Error);
        }
        Some(computed)
    }

    /// The severity of a code as configured, starting from its default.
    pub fn severity_of(&self, code: Code) -> Option<Severity> {
        self.regrade(code, code.default_severity())
    }

    /// The settings of the first listed registry whose host pattern matches.
    pub fn registry(&self, host: &str) -> Option<&RegistryConfig> {
        self.registries.iter().find(|registry| glob::host_matches(&registry.host, host))
    }

    pub fn is_exempt_namespace(&self, namespace: &str) -> bool {
        self.exempt_namespaces.iter().any(|pattern| glob::matches(pattern, namespace))
    }

    /// Exempt images are matched as written and normalised, so both `nginx*` and `docker.io/library/*` work.
    /// `image`: the parsed reference, whose normalised form also counts (built only when there
    /// are patterns: this runs for every image of every admission).
    pub fn is_exempt_image(&self, as_written: &str, image: Option<&ImageRef>) -> bool {
        if self.exempt_images.is_empty() {
            return false;
        }
        let normalized = image.map(ImageRef::normalized);
        self.exempt_images.iter().any(|pattern| {
            glob::matches(pattern, as_written)
                || normalized.as_deref().is_some_and(|name| glob::matches(pattern, name))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_design_example_parses() {
        let yaml = r#"
mode: warn
registryUnavailable: deny
deadline: 8s
lookupTimeout: 3s
cache: {tagTtl: 5m, digestTtl: 24h, missTtl: 30s, maxEntries: 100000}
maxImageSize: 2Gi
registries:
  - host: "registry.internal:5000"
    insecure: true
    nodeCredentials: true
findings: {PG601: off, PG604: warning}
exemptNamespaces: [kube-system]
exemptImages: ["registry.k8s.io/*"]
nodePoolLabels: [cloud.google.com/gke-nodepool]
"#;
        let config = Config::from_yaml(yaml).unwrap();
        assert_eq!(config.mode, Mode::Warn);
        assert_eq!(config.cache.tag_ttl.0, Duration::from_secs(300));
        assert_eq!(config.max_image_size.0, 2 << 30);
        assert_eq!(config.severity_of(Code::MutableTag), None);
        assert_eq!(config.severity_of(Code::AnonymousDockerHub), Some(Severity::Warning));
        assert_eq!(config.severity_of(Code::RegistryUnreachable), Some(Severity::Error));
        assert!(config.registry("registry.internal:5000").unwrap().insecure);
        assert!(config.is_exempt_image("registry.k8s.io/pause:3.9", None));
        // The normalised form counts too: `pause` is `docker.io/library/pause:latest`.
        let exempt_hub = Config::from_yaml("exemptImages: [\"docker.io/library/*\"]\n").unwrap();
        let pause = ImageRef::parse("pause").unwrap();
        assert!(exempt_hub.is_exempt_image("pause", Some(&pause)));
        assert!(!config.is_exempt_image("pause", Some(&pause)));
        config.validate().unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let error = Config::from_yaml("mode: enforce\nmodee: warn\n").unwrap_err();
        assert!(error.contains("modee"), "{error}");
        let error = Config::from_yaml("mode: strict\n").unwrap_err();
        assert!(error.contains("strict"), "{error}");
        let error = Config::from_yaml("deadline: 8 parsecs\n").unwrap_err();
        assert!(error.contains("parsecs"), "{error}");
        let error = Config::from_yaml("findings: {PG999: off}\n").unwrap_err();
        assert!(error.contains("PG999"), "{error}");
        let error = Config::from_yaml("cache: {tagTTL: 5m}\n").unwrap_err();
        assert!(error.contains("tagTTL"), "{error}");
    }

    #[test]
    fn validation_rejects_impossible_values() {
        let config = Config { deadline: HumanDuration(Duration::from_secs(40)), ..Config::default() };
        assert!(matches!(config.validate(), Err(ConfigError::Invalid { key: "deadline", .. })));
        let config = Config {
            registries: vec![RegistryConfig { host: "https://x".into(), ..Default::default() }],
            ..Config::default()
        };
        assert!(config.validate().is_err());
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!("250ms".parse::<HumanDuration>().unwrap().0, Duration::from_millis(250));
        assert_eq!("1d".parse::<HumanDuration>().unwrap().0, Duration::from_secs(86_400));
        assert!("5".parse::<HumanDuration>().is_err());
        assert!("99999999999999999999d".parse::<HumanDuration>().is_err());
        assert_eq!("500Mi".parse::<ByteSize>().unwrap().0, 500 << 20);
        assert_eq!("1G".parse::<ByteSize>().unwrap().0, 1_000_000_000);
        assert!("1Gb".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize(3 << 30).to_string(), "3.0 GiB");
    }

    #[test]
    fn modes_relax_by_min() {
        assert_eq!(Mode::Enforce.min(Mode::Warn), Mode::Warn);
        assert_eq!(Mode::Audit.min(Mode::Enforce), Mode::Audit);
    }
}
