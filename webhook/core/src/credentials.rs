//! Registry credentials: docker config JSON parsing and the kubelet's keyring matching rules.
//!
//! A `Credential` never prints its secret: `Debug` is redacted and the only stable handle on it
//! is `identity()`, a hash used in cache keys so that a lookup made with one tenant's secret is
//! never reused for another's.

use std::{collections::BTreeMap, fmt, sync::Arc};

use base64::{Engine, engine::general_purpose::STANDARD};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::{glob, reference::ImageRef};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("not valid docker config JSON: {0}")]
    Json(String),
    #[error("entry {key:?}: the auth field is not base64 of user:password")]
    BadAuth { key: String },
    #[error("entry {key:?}: no username/password or auth field")]
    Empty { key: String },
}

#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    username: String,
    password: String,
    /// Where it came from, for reports ("secret shop/regcred", "~/.docker/config.json").
    source: String,
    /// The docker config key it was stored under.
    key: String,
    /// See [`Credential::identity`]; hashed once, as every cached lookup keys on it.
    identity: String,
}

impl Credential {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Credential {
        let (username, password) = (username.into(), password.into());
        let mut hasher = Sha256::new();
        hasher.update(username.as_bytes());
        hasher.update([0]);
        hasher.update(password.as_bytes());
        let identity = hex::encode(&hasher.finalize()[..12]);
        Credential { username, password, source: String::new(), key: String::new(), identity }
    }

    pub fn with_origin(mut self, source: impl Into<String>, key: impl Into<String>) -> Credential {
        self.source = source.into();
        self.key = key.into();
        self
    }

    pub fn username(&self) -> &str {
        &self.username
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// A short, one-way handle: equal credentials share cache entries, different ones never do.
    pub fn identity(&self) -> &str {
        &self.identity
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("source", &self.source)
            .field("key", &self.key)
            .finish()
    }
}

#[derive(Deserialize)]
struct DockerConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// The keyring: credentials indexed the way the kubelet indexes them. Entries are shared, as
/// every admission builds its pod's keyring from the cached keyrings of its pull secrets.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    entries: Vec<(Arc<str>, Arc<Credential>)>,
}

impl Keyring {
    /// `.dockerconfigjson` (`{"auths": {...}}`) or the legacy `.dockercfg` (the map itself).
    pub fn from_docker_config(json: &[u8], source: &str) -> Result<Keyring, CredentialError> {
        let value: serde_json::Value =
            serde_json::from_slice(json).map_err(|error| CredentialError::Json(error.to_string()))?;
        let auths: BTreeMap<String, AuthEntry> = if value.get("auths").is_some() {
            let config: DockerConfigJson =
                serde_json::from_value(value).map_err(|error| CredentialError::Json(error.to_string()))?;
            config.auths
        } else if value.is_object() {
            serde_json::from_value(value).map_err(|error| CredentialError::Json(error.to_string()))?
        } else {
            return Err(CredentialError::Json("expected a JSON object".to_string()));
        };
        let mut keyring = Keyring::default();
        for (key, entry) in auths {
            let credential = decode_entry(&key, &entry)?.with_origin(source, key.clone());
            keyring.add(&key, credential);
        }
        Ok(keyring)
    }

    /// Appends another keyring's entries after this one's (pod secrets before node credentials,
    /// as the kubelet's union keyring orders them). Into an empty keyring (a pod's first pull
    /// secret, on every admission) the other is moved whole: it is sorted already.
    pub fn extend(&mut self, other: Keyring) {
        if self.entries.is_empty() {
            *self = other;
            return;
        }
        self.entries.extend(other.entries);
        // Stable: equal keys keep this keyring's entries first.
        self.entries.sort_by(|a, b| b.0.cmp(&a.0));
    }

    pub fn add(&mut self, key: &str, credential: Credential) {
        self.entries.push((index_key(key).into(), Arc::new(credential)));
        // The kubelet walks its index in reverse lexical order, so more specific paths come first.
        self.entries.sort_by(|a, b| b.0.cmp(&a.0));
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(_, credential)| credential.key())
    }

    /// Every credential the kubelet would try for this image, in its order.
    pub fn lookup(&self, image: &ImageRef) -> Vec<&Credential> {
        let mut found: Vec<&Credential> = self
            .entries
            .iter()
            .filter(|(key, _)| url_matches(key, image.registry(), image.repository()))
            .map(|(_, credential)| &**credential)
            .collect();
        if found.is_empty() && image.is_docker_hub() {
            found = self
                .entries
                .iter()
                .filter(|(key, _)| &**key == "index.docker.io")
                .map(|(_, credential)| &**credential)
                .collect();
        }
        found
    }
}

pub const DOCKER_CONFIG_JSON: &str = "kubernetes.io/dockerconfigjson";
pub const DOCKER_CFG: &str = "kubernetes.io/dockercfg";

/// Why the kubelet would ignore a pull secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretProblem {
    #[error("type {found:?} is not {DOCKER_CONFIG_JSON} or {DOCKER_CFG}, so the kubelet ignores it")]
    WrongType { found: String },
    #[error("type {kind} needs the data key {expected}, which is missing")]
    MissingKey { kind: &'static str, expected: &'static str },
    #[error("{0}")]
    Content(#[from] CredentialError),
}

/// Reads a pull secret the way the kubelet does: the type decides the one data key that is read.
pub fn keyring_from_secret(
    name: &str,
    secret_type: Option<&str>,
    data: &BTreeMap<String, Vec<u8>>,
) -> Result<Keyring, SecretProblem> {
    let (kind, key) = match secret_type.unwrap_or("Opaque") {
        DOCKER_CONFIG_JSON => (DOCKER_CONFIG_JSON, ".dockerconfigjson"),
        DOCKER_CFG => (DOCKER_CFG, ".dockercfg"),
        other => return Err(SecretProblem::WrongType { found: other.to_string() }),
    };
    let bytes = data.get(key).ok_or(SecretProblem::MissingKey { kind, expected: key })?;
    Ok(Keyring::from_docker_config(bytes, name)?)
}

/// As the kubelet reads an entry (`DockerConfigEntry.UnmarshalJSON`): a non-empty `auth` wins over
/// `username`/`password`, which count only without it. After a password rotation that edited one
/// field, the kubelet pulls with what `auth` says.
fn decode_entry(key: &str, entry: &AuthEntry) -> Result<Credential, CredentialError> {
    let Some(auth) = entry.auth.as_deref().filter(|auth| !auth.is_empty()) else {
        return match (&entry.username, &entry.password) {
            (Some(username), Some(password)) if !username.is_empty() => {
                Ok(Credential::new(username.clone(), password.clone()))
            }
            _ => Err(CredentialError::Empty { key: key.to_string() }),
        };
    };
    let decoded =
        STANDARD.decode(auth.trim()).map_err(|_| CredentialError::BadAuth { key: key.to_string() })?;
    let text = String::from_utf8(decoded).map_err(|_| CredentialError::BadAuth { key: key.to_string() })?;
    let (username, password) =
        text.split_once(':').ok_or_else(|| CredentialError::BadAuth { key: key.to_string() })?;
    Ok(Credential::new(username, password))
}

/// Normalises a docker config key the way the kubelet does: scheme dropped, `/v1/` or `/v2/` prefix
/// of the path dropped, host plus any remaining path.
fn index_key(key: &str) -> String {
    let without_scheme = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    let (host, path) = match without_scheme.find('/') {
        Some(slash) => (&without_scheme[..slash], &without_scheme[slash..]),
        None => (without_scheme, ""),
    };
    let path = path.strip_prefix("/v2/").or_else(|| path.strip_prefix("/v1/")).map_or(path, |rest| rest);
    let path = path.trim_start_matches('/');
    if path.is_empty() { host.to_string() } else { format!("{host}/{path}") }
}

/// The kubelet's URLsMatch on `registry/repository`: per-label globs on the host, equal ports,
/// path prefix. A registry never contains '/', so it is the image's host part.
fn url_matches(key: &str, registry: &str, repository: &str) -> bool {
    let (key_host, key_path) = key.split_once('/').unwrap_or((key, ""));
    glob::host_matches(key_host, registry) && repository.starts_with(key_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring(json: &str) -> Keyring {
        Keyring::from_docker_config(json.as_bytes(), "test").unwrap()
    }

    fn image(text: &str) -> ImageRef {
        ImageRef::parse(text).unwrap()
    }

    #[test]
    fn debug_never_shows_the_password() {
        let credential = Credential::new("robot", "s3cr3t-value");
        let printed = format!("{credential:?}");
        assert!(!printed.contains("s3cr3t-value"));
        assert!(printed.contains("redacted"));
        assert_ne!(credential.identity(), Credential::new("robot", "other").identity());
        assert!(!credential.identity().contains("s3cr3t"));
    }

    /// kubelet `pkg/credentialprovider/config_test.go` TestDockerConfigEntryJSONDecode: the
    /// `auth` field, when present, decides the credential.
    #[test]
    fn docker_config_entry_json_decode() {
        let auth = |text: &str| STANDARD.encode(text);
        type Case = (&'static str, String, Option<(&'static str, &'static str)>);
        let cases: Vec<Case> = vec![
            ("auth only", format!(r#"{{"auth": "{}"}}"#, auth("foo:bar")), Some(("foo", "bar"))),
            (
                "username and password only",
                r#"{"username": "foo", "password": "bar"}"#.into(),
                Some(("foo", "bar")),
            ),
            (
                "both, consistent",
                format!(r#"{{"username": "foo", "password": "bar", "auth": "{}"}}"#, auth("foo:bar")),
                Some(("foo", "bar")),
            ),
            (
                "both, auth wins over a rotated password",
                format!(r#"{{"username": "foo", "password": "new", "auth": "{}"}}"#, auth("foo:old")),
                Some(("foo", "old")),
            ),
            (
                "both, auth wins over a stale username",
                format!(r#"{{"username": "bob", "password": "bar", "auth": "{}"}}"#, auth("alice:bar")),
                Some(("alice", "bar")),
            ),
            (
                "password with a colon",
                format!(r#"{{"auth": "{}"}}"#, auth("foo:b:ar")),
                Some(("foo", "b:ar")),
            ),
            ("auth without a colon", format!(r#"{{"auth": "{}"}}"#, auth("foobar")), None),
            ("auth not base64", r#"{"username": "foo", "password": "bar", "auth": "%%%"}"#.into(), None),
            (
                "empty auth falls back",
                r#"{"username": "foo", "password": "bar", "auth": ""}"#.into(),
                Some(("foo", "bar")),
            ),
        ];
        for (name, entry, expected) in cases {
            let config = format!(r#"{{"auths": {{"r.example": {entry}}}}}"#);
            let found = Keyring::from_docker_config(config.as_bytes(), "test").ok().and_then(|ring| {
                ring.lookup(&image("r.example/app"))
                    .first()
                    .map(|c| (c.username().to_string(), c.password().to_string()))
            });
            let expected = expected.map(|(user, password)| (user.to_string(), password.to_string()));
            assert_eq!(found, expected, "{name}");
        }
    }

    #[test]
    fn auth_and_username_password_forms() {
        let auth = STANDARD.encode("u1:p:1");
        let ring = keyring(&format!(
            r#"{{"auths": {{"a.example": {{"auth": "{auth}"}}, "b.example": {{"username": "u2", "password": "p2"}}}}}}"#
        ));
        assert_eq!(ring.lookup(&image("a.example/x")).first().unwrap().password(), "p:1");
        assert_eq!(ring.lookup(&image("b.example/x")).first().unwrap().username(), "u2");
        assert!(ring.lookup(&image("c.example/x")).is_empty());
    }

    #[test]
    fn legacy_dockercfg_is_the_bare_map() {
        let ring = keyring(r#"{"a.example": {"username": "u", "password": "p"}}"#);
        assert_eq!(ring.lookup(&image("a.example/x")).len(), 1);
    }

    #[test]
    fn bad_entries_are_errors() {
        assert!(matches!(
            Keyring::from_docker_config(br#"{"auths": {"a": {"auth": "!!"}}}"#, "t"),
            Err(CredentialError::BadAuth { .. })
        ));
        assert!(matches!(
            Keyring::from_docker_config(br#"{"auths": {"a": {}}}"#, "t"),
            Err(CredentialError::Empty { .. })
        ));
        assert!(Keyring::from_docker_config(b"[]", "t").is_err());
        assert!(Keyring::from_docker_config(b"{", "t").is_err());
    }

    #[test]
    fn secrets_are_read_by_their_type() {
        let config = br#"{"auths": {"r.example": {"username": "u", "password": "p"}}}"#.to_vec();
        let legacy = br#"{"r.example": {"username": "u", "password": "p"}}"#.to_vec();
        let data = |key: &str, bytes: &[u8]| BTreeMap::from([(key.to_string(), bytes.to_vec())]);
        let ring = keyring_from_secret(
            "secret shop/a",
            Some(DOCKER_CONFIG_JSON),
            &data(".dockerconfigjson", &config),
        )
        .unwrap();
        assert_eq!(ring.lookup(&image("r.example/x")).first().unwrap().source(), "secret shop/a");
        assert!(keyring_from_secret("s", Some(DOCKER_CFG), &data(".dockercfg", &legacy)).is_ok());
        assert!(matches!(
            keyring_from_secret("s", Some(DOCKER_CONFIG_JSON), &data(".dockercfg", &legacy)),
            Err(SecretProblem::MissingKey { .. })
        ));
        assert!(matches!(
            keyring_from_secret("s", Some("Opaque"), &data(".dockerconfigjson", &config)),
            Err(SecretProblem::WrongType { .. })
        ));
        assert!(matches!(
            keyring_from_secret("s", Some(DOCKER_CONFIG_JSON), &data(".dockerconfigjson", b"{")),
            Err(SecretProblem::Content(_))
        ));
    }

    #[test]
    fn docker_hub_aliases_as_the_kubelet_has_them() {
        let ring = keyring(
            r#"{"auths": {
                "docker.io": {"username": "plain", "password": "p"},
                "registry-1.docker.io": {"username": "api-host", "password": "p"}
            }}"#,
        );
        let users: Vec<&str> = ring.lookup(&image("nginx")).iter().map(|c| c.username()).collect();
        // registry-1.docker.io has another label count than docker.io: the kubelet never matches it.
        assert_eq!(users, vec!["plain"]);
        let legacy = keyring(r#"{"auths": {"index.docker.io": {"username": "index", "password": "p"}}}"#);
        assert_eq!(legacy.lookup(&image("library/nginx")).len(), 1);
        assert!(legacy.lookup(&image("ghcr.io/a/b")).is_empty());
    }

    #[test]
    fn extend_keeps_pod_secrets_first() {
        let mut pod = keyring(r#"{"auths": {"r.example": {"username": "pod", "password": "p"}}}"#);
        let node = keyring(r#"{"auths": {"r.example": {"username": "node", "password": "p"}}}"#);
        pod.extend(node);
        let users: Vec<&str> = pod.lookup(&image("r.example/x")).iter().map(|c| c.username()).collect();
        assert_eq!(users, vec!["pod", "node"]);
    }

    #[test]
    fn extending_an_empty_keyring_gives_the_other_in_its_order() {
        let secret = keyring(
            r#"{"auths": {"r.example": {"username": "host", "password": "p"},
                          "r.example/team": {"username": "team", "password": "p"}}}"#,
        );
        let mut pod = Keyring::default();
        pod.extend(secret.clone());
        let users = |ring: &Keyring| -> Vec<String> {
            ring.lookup(&image("r.example/team/x")).iter().map(|c| c.username().to_string()).collect()
        };
        assert_eq!(users(&pod), vec!["team", "host"]);
        assert_eq!(users(&pod), users(&secret));
    }

    #[test]
    fn kubelet_matching_rules() {
        let ring = keyring(
            r#"{"auths": {
                "https://index.docker.io/v1/": {"username": "hub", "password": "p"},
                "*.corp.example": {"username": "glob", "password": "p"},
                "registry.example.com:5443/team": {"username": "team", "password": "p"},
                "registry.example.com:5443": {"username": "any", "password": "p"}
            }}"#,
        );
        let users = |reference: &str| -> Vec<String> {
            ring.lookup(&image(reference)).iter().map(|c| c.username().to_string()).collect()
        };
        assert_eq!(users("nginx"), vec!["hub"]);
        assert_eq!(users("docker.io/bitnami/redis"), vec!["hub"]);
        assert_eq!(users("r.corp.example/app"), vec!["glob"]);
        assert!(users("a.r.corp.example/app").is_empty());
        assert_eq!(users("registry.example.com:5443/team/web:v1"), vec!["team", "any"]);
        assert_eq!(users("registry.example.com:5443/other/web"), vec!["any"]);
        assert!(users("registry.example.com/team/web").is_empty());
    }
}
