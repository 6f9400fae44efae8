//! How the seeder authenticates: nothing, basic credentials, a fixed bearer token, or the
//! token dance of distribution's `auth.token` (401 with a Bearer challenge, a token from the
//! realm it names, the same request again with that token).

use std::fmt;

use anyhow::{Context, Result, anyhow, ensure};
use reqwest::StatusCode;
use serde_json::Value;

/// Credentials of a [`super::Seeder`]. `Debug` never shows a password or a token.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Auth {
    #[default]
    Anonymous,
    /// `Authorization: Basic` on every request (an htpasswd registry).
    Basic { user: String, password: String },
    /// One fixed bearer token on every request and no challenge followed, so seeding leaves
    /// the token server's counters alone when the token was minted without HTTP.
    Bearer(String),
    /// The token dance: a request answered with a Bearer challenge is sent again with a token
    /// fetched from the challenge's realm with these basic credentials.
    Token { user: String, password: String },
}

impl Auth {
    pub fn basic(user: &str, password: &str) -> Self {
        Self::Basic { user: user.to_owned(), password: password.to_owned() }
    }

    pub fn bearer(token: &str) -> Self {
        Self::Bearer(token.to_owned())
    }

    pub fn token(user: &str, password: &str) -> Self {
        Self::Token { user: user.to_owned(), password: password.to_owned() }
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Anonymous => f.write_str("Anonymous"),
            Self::Basic { user, .. } => write!(f, "Basic {{ user: {user:?}, password: <redacted> }}"),
            Self::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Self::Token { user, .. } => write!(f, "Token {{ user: {user:?}, password: <redacted> }}"),
        }
    }
}

/// A parsed `WWW-Authenticate: Bearer ...` challenge.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BearerChallenge {
    pub realm: String,
    pub service: Option<String>,
    pub scope: Option<String>,
    /// `insufficient_scope` or `invalid_token` when a token was sent and refused.
    pub error: Option<String>,
}

impl BearerChallenge {
    /// `None` unless the scheme is Bearer and a realm is given. Quoted values may hold commas
    /// (`scope="repository:a:pull,push"`), so this does not split on them blindly.
    pub fn parse(header: &str) -> Option<Self> {
        let (scheme, params) = header.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let mut challenge = Self::default();
        let mut realm = None;
        let mut rest = params.trim();
        while !rest.is_empty() {
            let (name, after) = rest.split_once('=')?;
            let (value, after) = match after.strip_prefix('"') {
                Some(quoted) => {
                    let close = quoted.find('"')?;
                    (&quoted[..close], &quoted[close + 1..])
                }
                None => after.split_once(',').map_or((after, ""), |(v, a)| (v, a)),
            };
            let value = value.to_owned();
            match name.trim().to_ascii_lowercase().as_str() {
                "realm" => realm = Some(value),
                "service" => challenge.service = Some(value),
                "scope" => challenge.scope = Some(value),
                "error" => challenge.error = Some(value),
                _ => {}
            }
            rest = after.trim_start().trim_start_matches(',').trim_start();
        }
        challenge.realm = realm?;
        Some(challenge)
    }

    /// The challenge of a response, if it carries one.
    pub fn from_response(response: &reqwest::Response) -> Option<Self> {
        response.headers().get("www-authenticate")?.to_str().ok().and_then(Self::parse)
    }
}

/// A token endpoint's answer, whatever its status.
#[derive(Clone, Debug)]
pub struct TokenReply {
    pub status: StatusCode,
    pub body: Value,
}

impl TokenReply {
    /// `token` (or the OAuth2 `access_token`) of a successful reply.
    pub fn token(&self) -> Result<String> {
        ensure!(self.status == StatusCode::OK, "token endpoint answered {}: {}", self.status, self.body);
        self.body["token"]
            .as_str()
            .or_else(|| self.body["access_token"].as_str())
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no token in {}", self.body))
    }
}

/// Asks a token endpoint the way registry clients do: `GET realm?scope=..&service=..&account=..`,
/// with basic credentials when given.
pub async fn request_token(
    client: &reqwest::Client,
    realm: &str,
    service: Option<&str>,
    scopes: &[&str],
    credentials: Option<(&str, &str)>,
) -> Result<TokenReply> {
    let mut query: Vec<(&str, &str)> = scopes.iter().map(|scope| ("scope", *scope)).collect();
    if let Some(service) = service {
        query.push(("service", service));
    }
    if let Some((user, _)) = credentials {
        query.push(("account", user));
    }
    let mut request = client.get(realm).query(&query);
    if let Some((user, password)) = credentials {
        request = request.basic_auth(user, Some(password));
    }
    let response = request.send().await.with_context(|| format!("requesting a token from {realm}"))?;
    let status = response.status();
    let body = response.bytes().await?;
    let body = serde_json::from_slice(&body)
        .with_context(|| format!("token endpoint answered {status} with non-JSON"))?;
    Ok(TokenReply { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_keep_commas_inside_quotes() {
        let parsed = BearerChallenge::parse(
            r#"Bearer realm="http://127.0.0.1:1/token",service="svc",scope="repository:a:pull,push",error="insufficient_scope""#,
        )
        .unwrap();
        assert_eq!(parsed.realm, "http://127.0.0.1:1/token");
        assert_eq!(parsed.service.as_deref(), Some("svc"));
        assert_eq!(parsed.scope.as_deref(), Some("repository:a:pull,push"));
        assert_eq!(parsed.error.as_deref(), Some("insufficient_scope"));
        assert!(BearerChallenge::parse(r#"Basic realm="x""#).is_none());
        assert!(BearerChallenge::parse(r#"Bearer service="x""#).is_none());
    }

    #[test]
    fn debug_hides_secrets() {
        for auth in [Auth::basic("u", "pw-1"), Auth::bearer("tok-2"), Auth::token("u", "pw-3")] {
            let printed = format!("{auth:?}");
            assert!(!printed.contains("pw-") && !printed.contains("tok-"), "{printed}");
        }
    }
}
