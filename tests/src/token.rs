//! An in-process Docker token server (the `auth.token` realm of a distribution registry).
//! Seeding a registry behind it goes through [`crate::seed::Seeder`] with [`crate::seed::Auth`].
//!
//! Tokens are ES256 JWTs signed with a P-256 key whose self-signed certificate is the registry's
//! `rootcertbundle`; the JWT header names the key by its libtrust key ID, which is how
//! distribution 2.8 picks the verification key. `GET /token?service=..&scope=..` with optional
//! basic credentials is the only endpoint; every request, on any path, is counted and logged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow, bail};
use axum::Json;
use axum::extract::State as Shared;
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse as _, Response};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use rcgen::{CertificateParams, DnType, KeyUsagePurpose, PublicKeyData as _, date_time_ymd};
use reqwest::Url;
use ring::rand::{SecureRandom as _, SystemRandom};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use serde_json::{Value, json};

use crate::loopback::LoopbackServer;
use crate::registry::http_client;
use crate::seed::{TokenReply, libtrust_key_id, request_token};

/// `service` (JWT `aud`) of a default [`TokenServer`].
pub const DEFAULT_SERVICE: &str = "pullguard-test-registry";
/// `iss` of a default [`TokenServer`].
pub const DEFAULT_ISSUER: &str = "pullguard-test-token-issuer";
/// Lifetime of issued tokens, in seconds (`expires_in`).
pub const DEFAULT_EXPIRES_IN: u64 = 300;
/// Repositories under this prefix are pullable anonymously by default.
pub const PUBLIC_PREFIX: &str = "public/";
/// Default user with pull, push and delete on every repository.
pub const ROBOT_USER: &str = "robot";
pub const ROBOT_PASSWORD: &str = "robot-secret";
/// Default user with pull on `public/*` only: authenticated, yet no better than anonymous.
pub const LIMITED_USER: &str = "limited";
pub const LIMITED_PASSWORD: &str = "limited-secret";

/// Actions on the repositories matching `pattern`: `*` (every repository), `prefix/*`
/// (everything under `prefix/`), or an exact repository name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessRule {
    pub pattern: String,
    /// `pull`, `push`, `delete`, or `*` for whatever is asked.
    pub actions: Vec<String>,
}

impl AccessRule {
    pub fn new(pattern: &str, actions: &[&str]) -> Self {
        Self { pattern: pattern.to_owned(), actions: actions.iter().map(|a| (*a).to_owned()).collect() }
    }

    fn matches(&self, repository: &str) -> bool {
        match self.pattern.strip_suffix('*') {
            Some(prefix) => repository.starts_with(prefix),
            None => repository == self.pattern,
        }
    }

    fn allows(&self, repository: &str, action: &str) -> bool {
        self.matches(repository) && self.actions.iter().any(|a| a == action || a == "*")
    }
}

/// A user of the token server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenUser {
    pub password: String,
    pub rules: Vec<AccessRule>,
}

/// Who may do what. [`TokenConfig::default`] is described on each field.
#[derive(Clone, Debug)]
pub struct TokenConfig {
    /// [`DEFAULT_SERVICE`]; requests naming another service are refused with 400.
    pub service: String,
    /// [`DEFAULT_ISSUER`].
    pub issuer: String,
    /// What requests without credentials get: pull on `public/*`.
    pub anonymous: Vec<AccessRule>,
    /// [`ROBOT_USER`] (pull, push, delete on `*`) and [`LIMITED_USER`] (pull on `public/*`).
    pub users: BTreeMap<String, TokenUser>,
    /// [`DEFAULT_EXPIRES_IN`].
    pub expires_in: u64,
}

impl Default for TokenConfig {
    fn default() -> Self {
        let public = format!("{PUBLIC_PREFIX}*");
        Self {
            service: DEFAULT_SERVICE.to_owned(),
            issuer: DEFAULT_ISSUER.to_owned(),
            anonymous: vec![AccessRule::new(&public, &["pull"])],
            users: BTreeMap::new(),
            expires_in: DEFAULT_EXPIRES_IN,
        }
        .with_user(ROBOT_USER, ROBOT_PASSWORD, vec![AccessRule::new("*", &["pull", "push", "delete"])])
        .with_user(LIMITED_USER, LIMITED_PASSWORD, vec![AccessRule::new(&public, &["pull"])])
    }
}

impl TokenConfig {
    /// Adds or replaces a user.
    pub fn with_user(mut self, name: &str, password: &str, rules: Vec<AccessRule>) -> Self {
        self.users.insert(name.to_owned(), TokenUser { password: password.to_owned(), rules });
        self
    }

    pub fn with_anonymous(mut self, rules: Vec<AccessRule>) -> Self {
        self.anonymous = rules;
        self
    }
}

/// One `access` entry of a token: the actions granted on one resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// `repository`, or `registry` for `registry:catalog:*`.
    pub resource_type: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl Grant {
    pub fn repository(name: &str, actions: &[&str]) -> Self {
        Self {
            resource_type: "repository".to_owned(),
            name: name.to_owned(),
            actions: actions.iter().map(|a| (*a).to_owned()).collect(),
        }
    }

    /// Parses a scope, `type:name:action[,action]`. The name is everything between the first
    /// and the last colon, so a name with a colon in it is not cut short.
    pub fn parse_scope(scope: &str) -> Option<Self> {
        let (resource_type, rest) = scope.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        if resource_type.is_empty() || name.is_empty() {
            return None;
        }
        let actions = actions.split(',').filter(|a| !a.is_empty()).map(str::to_owned).collect();
        Some(Self { resource_type: resource_type.to_owned(), name: name.to_owned(), actions })
    }

    fn to_json(&self) -> Value {
        json!({"type": self.resource_type, "name": self.name, "actions": self.actions})
    }
}

/// What one request to the token server looked like and how it was answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRequest {
    pub method: String,
    /// Request target, query included.
    pub target: String,
    pub service: Option<String>,
    pub scopes: Vec<String>,
    pub account: Option<String>,
    /// The user named by `Authorization: Basic` (whether or not the password was right).
    pub user: Option<String>,
    pub had_credentials: bool,
    pub status: u16,
}

struct Signer {
    key: EcdsaKeyPair,
    key_id: String,
    rng: SystemRandom,
    issuer: String,
    service: String,
    expires_in: u64,
}

impl Signer {
    fn issue(&self, subject: &str, access: &[Grant]) -> Result<String> {
        // A clock before 1970 is not worth a failure here.
        let now = u64::try_from(crate::time::unix_now()).unwrap_or(0);
        let mut jti = [0u8; 16];
        self.rng.fill(&mut jti).map_err(|_| anyhow!("no randomness for a token id"))?;
        let header = json!({"typ": "JWT", "alg": "ES256", "kid": self.key_id});
        let claims = json!({
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": now + self.expires_in,
            // A little slack for clocks, as real token servers give.
            "nbf": now.saturating_sub(10),
            "iat": now,
            "jti": hex::encode(jti),
            "access": access.iter().map(Grant::to_json).collect::<Vec<_>>(),
        });
        let signing_input = format!(
            "{}.{}",
            B64URL.encode(serde_json::to_vec(&header)?),
            B64URL.encode(serde_json::to_vec(&claims)?)
        );
        // The fixed (r || s) encoding is what JWS ES256 and libtrust expect, not DER.
        let signature =
            self.key.sign(&self.rng, signing_input.as_bytes()).map_err(|_| anyhow!("signing a token"))?;
        Ok(format!("{signing_input}.{}", B64URL.encode(signature.as_ref())))
    }
}

struct State {
    signer: Signer,
    anonymous: Vec<AccessRule>,
    users: BTreeMap<String, TokenUser>,
    requests: AtomicUsize,
    with_credentials: AtomicUsize,
    log: Mutex<Vec<TokenRequest>>,
}

/// A token server on `127.0.0.1:<free port>`, plain HTTP; stops when dropped.
pub struct TokenServer {
    server: LoopbackServer,
    state: Arc<State>,
    cert_pem: String,
    cert_path: PathBuf,
    // Last field so the directory outlives everything that points into it.
    _dir: tempfile::TempDir,
}

impl TokenServer {
    /// The default users and rules of [`TokenConfig::default`].
    pub async fn start() -> Result<Self> {
        Self::start_with(TokenConfig::default()).await
    }

    pub async fn start_with(config: TokenConfig) -> Result<Self> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| anyhow!("generating the token signing key"))?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|e| anyhow!("loading the token signing key: {e}"))?;
        let cert_key =
            rcgen::KeyPair::try_from(pkcs8.as_ref()).context("loading the token key into rcgen")?;
        let key_id = libtrust_key_id(&cert_key.subject_public_key_info());
        let cert_pem = root_certificate(&cert_key, &config.issuer)?;

        let dir = tempfile::Builder::new().prefix("pullguard-token-").tempdir()?;
        let cert_path = dir.path().join("root.crt");
        std::fs::write(&cert_path, &cert_pem).with_context(|| format!("writing {}", cert_path.display()))?;

        let state = Arc::new(State {
            signer: Signer {
                key,
                key_id,
                rng,
                issuer: config.issuer,
                service: config.service,
                expires_in: config.expires_in,
            },
            anonymous: config.anonymous,
            users: config.users,
            requests: AtomicUsize::new(0),
            with_credentials: AtomicUsize::new(0),
            log: Mutex::new(Vec::new()),
        });
        let shared = state.clone();
        let server =
            LoopbackServer::start(axum::Router::new().fallback(token_endpoint).with_state(shared)).await?;
        Ok(Self { server, state, cert_pem, cert_path, _dir: dir })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// The token endpoint, `http://127.0.0.1:PORT/token`: the registry's `auth.token.realm`.
    pub fn realm(&self) -> String {
        format!("{}/token", self.base_url())
    }

    pub fn service(&self) -> &str {
        &self.state.signer.service
    }

    pub fn issuer(&self) -> &str {
        &self.state.signer.issuer
    }

    /// libtrust key ID of the signing key: the `kid` of every token.
    pub fn key_id(&self) -> &str {
        &self.state.signer.key_id
    }

    /// Self-signed certificate of the signing key (the registry's `rootcertbundle`), PEM.
    pub fn root_cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn root_cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// HTTP requests received so far, on any path and whatever the outcome.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Requests that carried an `Authorization` header.
    pub fn requests_with_credentials(&self) -> usize {
        self.state.with_credentials.load(Ordering::SeqCst)
    }

    /// Every request so far, oldest first.
    pub fn request_log(&self) -> Vec<TokenRequest> {
        self.state.log.lock().map(|log| log.clone()).unwrap_or_default()
    }

    /// Signs a token with exactly `access`, without going through HTTP (so it is not counted).
    pub fn issue(&self, subject: &str, access: &[Grant]) -> Result<String> {
        self.state.signer.issue(subject, access)
    }

    /// A token with pull, push and delete on each of `repos`, for seeding; not counted.
    pub fn push_token(&self, repos: &[&str]) -> Result<String> {
        let access: Vec<Grant> =
            repos.iter().map(|repo| Grant::repository(repo, &["pull", "push", "delete"])).collect();
        self.issue(ROBOT_USER, &access)
    }

    /// Asks the endpoint over HTTP, the way a registry client does, and returns whatever it
    /// answered. Counted like any other request.
    pub async fn request_token(
        &self,
        service: Option<&str>,
        scopes: &[&str],
        credentials: Option<(&str, &str)>,
    ) -> Result<TokenReply> {
        request_token(&http_client(None)?, &self.realm(), service, scopes, credentials).await
    }

    /// A token for `scope` from this server's own service, over HTTP; fails unless 200.
    pub async fn fetch_token(&self, scope: &str, credentials: Option<(&str, &str)>) -> Result<String> {
        self.request_token(Some(self.service()), &[scope], credentials).await?.token()
    }
}

fn root_certificate(key: &rcgen::KeyPair, issuer: &str) -> Result<String> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, issuer);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // Same fixed window as certs.rs, for the same reasons; distribution only takes the key.
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = date_time_ymd(2099, 12, 31);
    Ok(params.self_signed(key).context("self-signing the token root certificate")?.pem())
}

struct Answer {
    status: u16,
    headers: Vec<(HeaderName, String)>,
    body: Value,
}

impl Answer {
    fn error(status: u16, code: &str, message: &str) -> Self {
        Self { status, headers: Vec::new(), body: json!({"errors": [{"code": code, "message": message}]}) }
    }
}

async fn token_endpoint(
    Shared(state): Shared<Arc<State>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let target = uri.path_and_query().map_or_else(|| uri.path().to_owned(), |target| target.to_string());
    // A header that is not text counts as credentials that are not basic ones.
    let authorization = headers.get(AUTHORIZATION).map(|value| value.to_str().unwrap_or_default().to_owned());
    let (record, answer) = answer(method.as_str(), &target, authorization, &state);
    state.requests.fetch_add(1, Ordering::SeqCst);
    if record.had_credentials {
        state.with_credentials.fetch_add(1, Ordering::SeqCst);
    }
    if let Ok(mut log) = state.log.lock() {
        log.push(record);
    }
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, Json(answer.body)).into_response();
    for (name, value) in answer.headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

fn answer(
    method: &str,
    target: &str,
    authorization: Option<String>,
    state: &State,
) -> (TokenRequest, Answer) {
    let credentials = authorization.as_deref().map(basic_credentials);

    let mut record = TokenRequest {
        method: method.to_owned(),
        target: target.to_owned(),
        service: None,
        scopes: Vec::new(),
        account: None,
        user: credentials.clone().flatten().map(|(user, _)| user),
        had_credentials: authorization.is_some(),
        status: 0,
    };
    let answer = match Url::parse(&format!("http://token.invalid{target}")) {
        Err(_) => Answer::error(400, "INVALID_REQUEST", "unparsable request target"),
        Ok(url) => {
            for (name, value) in url.query_pairs() {
                match &*name {
                    "service" => record.service = Some(value.into_owned()),
                    // Clients may repeat `scope`, or join several with spaces.
                    "scope" => record.scopes.extend(value.split(' ').map(str::to_owned)),
                    "account" => record.account = Some(value.into_owned()),
                    _ => {}
                }
            }
            if url.path() != "/token" {
                Answer::error(404, "NOT_FOUND", "no such endpoint")
            } else if method != "GET" {
                Answer::error(405, "UNSUPPORTED", "only GET is implemented")
            } else {
                issue_for(&record, credentials, state)
            }
        }
    };
    record.status = answer.status;
    (record, answer)
}

fn issue_for(record: &TokenRequest, credentials: Option<Option<(String, String)>>, state: &State) -> Answer {
    let signer = &state.signer;
    if record.service.as_deref().is_some_and(|s| s != signer.service) {
        return Answer::error(400, "INVALID_REQUEST", "unknown service");
    }
    let (subject, rules) = match credentials {
        None => (String::new(), &state.anonymous),
        Some(None) => return unauthorized(signer, "malformed basic credentials"),
        Some(Some((user, password))) => match state.users.get(&user) {
            Some(known) if known.password == password => (user, &known.rules),
            _ => return unauthorized(signer, "invalid username or password"),
        },
    };
    let mut access = Vec::new();
    for scope in &record.scopes {
        let Some(requested) = Grant::parse_scope(scope) else {
            return Answer::error(400, "INVALID_REQUEST", &format!("malformed scope {scope:?}"));
        };
        let granted: Vec<String> = requested
            .actions
            .iter()
            .filter(|action| {
                requested.resource_type == "repository"
                    && rules.iter().any(|rule| rule.allows(&requested.name, action))
            })
            .cloned()
            .collect();
        access.push(Grant { actions: granted, ..requested });
    }
    match signer.issue(&subject, &access) {
        Ok(token) => Answer {
            status: 200,
            headers: Vec::new(),
            body: json!({
                "token": token,
                "access_token": token,
                "expires_in": signer.expires_in,
                "issued_at": crate::time::now_rfc3339(),
            }),
        },
        Err(e) => Answer::error(500, "UNKNOWN", &format!("{e:#}")),
    }
}

fn unauthorized(signer: &Signer, message: &str) -> Answer {
    let mut answer = Answer::error(401, "UNAUTHORIZED", message);
    answer.headers.push((WWW_AUTHENTICATE, format!("Basic realm=\"{}\"", signer.issuer)));
    answer
}

// `None` for a non-basic scheme or garbage, which must not fall back to anonymous.
fn basic_credentials(value: &str) -> Option<(String, String)> {
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(B64.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Decodes a JWT's header and claims without checking the signature, for assertions.
pub fn decode_jwt(token: &str) -> Result<(Value, Value)> {
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        bail!("not a compact JWS: {token:?}");
    };
    let header = serde_json::from_slice(&B64URL.decode(header)?).context("JWT header")?;
    let claims = serde_json::from_slice(&B64URL.decode(claims)?).context("JWT claims")?;
    Ok((header, claims))
}

#[cfg(test)]
mod tests {
    use ring::signature::KeyPair as _;

    use super::*;

    #[test]
    fn scopes_split_on_outer_colons() {
        let grant = Grant::parse_scope("repository:public/base:pull,push").unwrap();
        assert_eq!(grant, Grant::repository("public/base", &["pull", "push"]));
        let catalog = Grant::parse_scope("registry:catalog:*").unwrap();
        assert_eq!((catalog.resource_type.as_str(), catalog.actions), ("registry", vec!["*".to_owned()]));
        assert_eq!(Grant::parse_scope("repository:app:").unwrap().actions, Vec::<String>::new());
        assert!(Grant::parse_scope("repository").is_none());
        assert!(Grant::parse_scope("repository::pull").is_none());
    }

    #[test]
    fn rule_patterns() {
        let public = AccessRule::new("public/*", &["pull"]);
        assert!(public.allows("public/base", "pull"));
        assert!(!public.allows("public/base", "push"));
        assert!(!public.allows("publicity", "pull"));
        let exact = AccessRule::new("app", &["*"]);
        assert!(exact.allows("app", "delete"));
        assert!(!exact.allows("application", "pull"));
        assert!(AccessRule::new("*", &["pull"]).allows("a/b/c", "pull"));
    }

    #[test]
    fn basic_credentials_are_strict() {
        let value = format!("Basic {}", B64.encode("robot:pa:ss"));
        assert_eq!(basic_credentials(&value), Some(("robot".to_owned(), "pa:ss".to_owned())));
        assert_eq!(basic_credentials("Bearer abc"), None);
        assert_eq!(basic_credentials("Basic !!!"), None);
    }

    #[tokio::test]
    async fn tokens_are_es256_with_the_certificate_key_id() {
        let server = TokenServer::start().await.unwrap();
        let token = server.push_token(&["app"]).unwrap();
        let (header, claims) = decode_jwt(&token).unwrap();
        assert_eq!(header, json!({"typ": "JWT", "alg": "ES256", "kid": server.key_id()}));
        assert_eq!(
            claims["access"],
            json!([{"type": "repository", "name": "app", "actions": ["pull", "push", "delete"]}])
        );
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["nbf"].as_u64().unwrap(),
            DEFAULT_EXPIRES_IN + 10
        );
        let signature = B64URL.decode(token.rsplit('.').next().unwrap()).unwrap();
        assert_eq!(signature.len(), 64);

        // rcgen's SPKI must be Go's MarshalPKIXPublicKey: the generic P-256 header + point.
        let point = server.state.signer.key.public_key().as_ref().to_vec();
        let mut spki = vec![
            0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
            0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
        ];
        spki.extend_from_slice(&point);
        assert_eq!(server.key_id(), libtrust_key_id(&spki));
        let public =
            ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, point);
        let (input, _) = token.rsplit_once('.').unwrap();
        public.verify(input.as_bytes(), &signature).unwrap();
    }
}
