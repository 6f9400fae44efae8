//! Registry authentication: the challenge a registry answers 401 with, what answers it (basic
//! credentials, or a bearer token from the realm), and where credentials may be sent. The token
//! itself is a secret: it is kept in the transport's cache and never logged.

use std::{collections::HashMap, sync::Arc};

use pullguard_core::{config::RegistryConfig, credentials::Credential, glob, lookup::LookupError};
use reqwest::{Response, Url, header};
use serde::Deserialize;

use super::endpoint::Endpoint;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer { realm: String, service: Option<String> },
}

const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";
const DOCKER_HUB_TOKEN_HOST: &str = "auth.docker.io";

#[derive(Deserialize)]
struct TokenReply {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

/// The token of a token endpoint's answer (`token`, or OAuth2's `access_token`).
pub fn token_of(body: &[u8]) -> Result<Arc<str>, LookupError> {
    let reply: TokenReply = serde_json::from_slice(body).map_err(|_| LookupError::RegistryFailure {
        status: None,
        reason: "token response is not valid JSON".into(),
    })?;
    reply.token.or(reply.access_token).filter(|token| !token.is_empty()).map(Arc::from).ok_or_else(|| {
        LookupError::RegistryFailure { status: None, reason: "token response has no token".into() }
    })
}

/// The realm as a URL, refused unless it is HTTP(S).
pub fn realm_url(realm: &str) -> Result<Url, LookupError> {
    let url = Url::parse(realm).map_err(|_| LookupError::RegistryFailure {
        status: None,
        reason: "token realm is not a URL".into(),
    })?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(LookupError::RegistryFailure {
            status: None,
            reason: "token realm is not HTTP(S)".into(),
        });
    }
    Ok(url)
}

/// Any registry can name any realm in its challenge: credentials matched for this registry go
/// only where its operator (`registries[].tokenRealmHosts`, or the built-in Docker Hub pair)
/// says they belong.
pub fn check_realm_trusted(
    endpoint: &Endpoint<'_>,
    settings: Option<&RegistryConfig>,
    realm: &Url,
) -> Result<(), LookupError> {
    let realm_host = realm.host_str().unwrap_or_default();
    let registry_host = host_of(endpoint.api_host);
    let trusted = realm_host.eq_ignore_ascii_case(registry_host)
        || (registry_host == DOCKER_HUB_API_HOST && realm_host == DOCKER_HUB_TOKEN_HOST)
        || settings.is_some_and(|settings| {
            settings.token_realm_hosts.iter().any(|pattern| glob::host_matches(pattern, realm_host))
        });
    if trusted {
        return Ok(());
    }
    Err(LookupError::AddressRefused {
        reason: format!(
            "{} sends token requests to {realm_host}, another host; its pull credentials are not \
             sent there unless registries[].tokenRealmHosts for {} lists {realm_host}",
            endpoint.registry, endpoint.registry
        ),
    })
}

pub fn auth_failure(endpoint: &Endpoint<'_>, insufficient_scope: bool) -> LookupError {
    match (endpoint.credential, insufficient_scope) {
        (None, _) => LookupError::AuthRequired,
        (Some(_), true) => LookupError::Denied,
        (Some(_), false) => LookupError::CredentialsRejected,
    }
}

/// `host` of `host[:port]`, also for `[v6]:port`.
fn host_of(authority: &str) -> &str {
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// Tokens are bound to the realm, service, repository scope and credential they were issued for.
pub fn token_key(endpoint: &Endpoint<'_>, realm: &str, service: Option<&str>) -> String {
    let identity = endpoint.credential.map_or("anonymous", Credential::identity);
    format!("{realm}\u{0}{}\u{0}{}\u{0}{identity}", service.unwrap_or(""), endpoint.repository)
}

pub fn challenge_of(response: &Response) -> Option<Challenge> {
    response
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .and_then(|value| value.to_str().ok())
        .and_then(parse_challenge)
}

pub fn is_insufficient_scope(response: &Response) -> bool {
    response
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.contains("insufficient_scope"))
}

pub fn basic_value(credential: &Credential) -> String {
    use base64::Engine;
    let raw = format!("{}:{}", credential.username(), credential.password());
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
}

/// `WWW-Authenticate: Bearer realm="...",service="...",scope="..."` or `Basic realm="..."`.
pub fn parse_challenge(value: &str) -> Option<Challenge> {
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_params(rest);
    Some(Challenge::Bearer { realm: params.get("realm")?.clone(), service: params.get("service").cloned() })
}

fn parse_params(text: &str) -> HashMap<String, String> {
    let mut params = HashMap::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remainder) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        params.insert(key, value.to_string());
        rest = remainder.trim_start().trim_start_matches(',').trim_start();
    }
    params
}

#[cfg(test)]
mod tests {
    use pullguard_core::config::RegistryConfig;

    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into())
            })
        );
        assert_eq!(parse_challenge(r#"Basic realm="Registry Realm""#), Some(Challenge::Basic));
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge("Bearer service=x"), None);
    }

    fn endpoint<'a>(api_host: &'a str, credential: Option<&'a Credential>) -> Endpoint<'a> {
        Endpoint { registry: api_host, api_host, repository: "team/app", credential }
    }

    /// Credentials go to the registry's own host, Docker Hub's token host, or a listed one.
    #[test]
    fn realms_that_may_receive_credentials() {
        let listed = RegistryConfig {
            host: "r.example:5000".into(),
            token_realm_hosts: vec!["*.auth.example".into()],
            ..RegistryConfig::default()
        };
        let rows: [(&str, &str, Option<&RegistryConfig>, bool); 7] = [
            ("r.example:5000", "https://r.example/token", None, true),
            ("r.example:5000", "https://R.EXAMPLE:8443/token", None, true),
            ("r.example:5000", "https://evil.example/token", None, false),
            ("registry-1.docker.io", "https://auth.docker.io/token", None, true),
            ("other.example", "https://auth.docker.io/token", None, false),
            ("r.example:5000", "https://tokens.auth.example/t", Some(&listed), true),
            ("r.example:5000", "https://auth.example/t", Some(&listed), false),
        ];
        for (host, realm, settings, trusted) in rows {
            let realm = realm_url(realm).unwrap();
            let verdict = check_realm_trusted(&endpoint(host, None), settings, &realm);
            assert_eq!(verdict.is_ok(), trusted, "{host} -> {realm}");
        }
        assert!(realm_url("ftp://r.example/token").is_err());
        assert!(realm_url("not a url").is_err());
    }

    #[test]
    fn token_answers() {
        assert_eq!(&*token_of(br#"{"token":"t1","expires_in":60}"#).unwrap(), "t1");
        assert_eq!(&*token_of(br#"{"access_token":"t2"}"#).unwrap(), "t2");
        assert!(token_of(br#"{"token":""}"#).is_err());
        assert!(token_of(b"<html>").is_err());
    }

    /// A token serves only the realm, service, repository and credential it was issued for.
    #[test]
    fn token_keys_separate_tenants() {
        let (alice, bob) =
            (Credential::new("alice", "alice-password"), Credential::new("bob", "bob-password"));
        let keys = [
            token_key(&endpoint("r.example", Some(&alice)), "https://r.example/t", Some("s")),
            token_key(&endpoint("r.example", Some(&bob)), "https://r.example/t", Some("s")),
            token_key(&endpoint("r.example", None), "https://r.example/t", Some("s")),
            token_key(&endpoint("r.example", None), "https://r.example/t", None),
        ];
        let distinct: std::collections::HashSet<_> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len());
        assert!(keys.iter().all(|key| !key.contains("-password")), "keys carry no secret");
    }

    #[test]
    fn refusals_by_credential_and_scope() {
        let credential = Credential::new("u", "p");
        assert_eq!(auth_failure(&endpoint("r", None), false), LookupError::AuthRequired);
        assert_eq!(auth_failure(&endpoint("r", Some(&credential)), false), LookupError::CredentialsRejected);
        assert_eq!(auth_failure(&endpoint("r", Some(&credential)), true), LookupError::Denied);
        assert_eq!(host_of("[::1]:5000"), "[::1]");
        assert_eq!(host_of("r.example"), "r.example");
    }
}
