//! HTTP transport for the registry API (distribution spec), with anonymous, basic and bearer auth.
//!
//! Why not oci-client's `Client` here (see CRATE-NOTES): it hides response headers
//! (`Docker-Content-Digest`, `Content-Type`, `Retry-After` are what tell a schema 1 manifest, a
//! rate limit or a lying registry apart), it fails on signed schema 1 manifests instead of letting
//! us report them, and it keeps the first credentials it sees per registry, which would leak one
//! namespace's pull secret into another's lookups. This layer runs on the same reqwest + rustls
//! stack oci-client uses, and the manifest types come from oci-client.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use reqwest::{Method, StatusCode, header};
use rustls::pki_types::{CertificateDer, pem::PemObject};
use serde::Deserialize;
use tokio::sync::Semaphore;

use pullguard_core::{
    config::{Config, RegistryConfig},
    credentials::Credential,
    lookup::LookupError,
    manifest::ACCEPT,
};

use super::address::{AddressPolicy, AddressRefused, GuardedResolver};
use crate::metrics::{HostLabels, Metrics, RegistryLabels};

#[derive(Debug, thiserror::Error)]
pub enum TransportBuildError {
    #[error("cannot read CA file {path}: {source}")]
    ReadCa {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("CA file {path} holds no usable PEM certificate")]
    BadCa { path: PathBuf },
    #[error("cannot build the TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// Where one lookup goes: the registry as the image names it, the host that serves its API, the
/// repository, and the credential to present (if any).
#[derive(Clone, Copy)]
pub struct Endpoint<'a> {
    pub registry: &'a str,
    pub api_host: &'a str,
    pub repository: &'a str,
    pub credential: Option<&'a Credential>,
}

/// A successful (2xx) or not-found (404) answer.
pub struct Reply {
    pub status: StatusCode,
    pub content_type: Option<String>,
    pub digest: Option<String>,
    /// The registry's error code on a 404 (`MANIFEST_UNKNOWN`, `NAME_UNKNOWN`, ...).
    pub error_code: Option<String>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn is_not_found(&self) -> bool {
        self.status == StatusCode::NOT_FOUND
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer { realm: String, service: Option<String> },
}

#[derive(Clone)]
enum BackoffReason {
    RateLimited,
    ServerError,
    /// Refused or timed out: the cause is kept so that the answers meanwhile still name it.
    Unreachable(Arc<str>),
}

#[derive(Deserialize)]
struct TokenReply {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorEntry>,
}

#[derive(Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    code: String,
}

#[derive(Deserialize)]
struct TagList {
    #[serde(default)]
    tags: Option<Vec<String>>,
}

/// Bearer tokens are bound to a realm, service, scope and credential; the token itself is a secret
/// and is never logged.
type TokenCache = moka::future::Cache<String, Arc<str>>;

pub struct Transport {
    default_client: reqwest::Client,
    clients_by_ca: HashMap<PathBuf, reqwest::Client>,
    registries: Vec<RegistryConfig>,
    challenges: Mutex<HashMap<String, Challenge>>,
    tokens: TokenCache,
    backoff: Mutex<HashMap<String, (Instant, BackoffReason)>>,
    max_body: u64,
    request_timeout: Duration,
    metrics: Arc<Metrics>,
    addresses: Arc<AddressPolicy>,
    in_flight: Mutex<HashMap<String, Arc<Semaphore>>>,
}

const USER_AGENT: &str = concat!("pullguard/", env!("CARGO_PKG_VERSION"));
const MAX_TAG_PAGES: usize = 20;
const SERVER_ERROR_BACKOFF: Duration = Duration::from_secs(2);
/// A registry that refuses connections or times out is left alone this long: during an outage
/// every other image of that registry would otherwise wait out its own `lookupTimeout`.
const UNREACHABLE_BACKOFF: Duration = Duration::from_secs(2);
const RATE_LIMIT_BACKOFF: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Requests in flight to one registry host. A rollout of many new images (or an audit) must not
/// open hundreds of connections to one registry; the admission deadline bounds the wait.
const MAX_REQUESTS_PER_REGISTRY: usize = 16;

impl Transport {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Transport, TransportBuildError> {
        let timeout = config.lookup_timeout.0;
        let addresses = Arc::new(AddressPolicy::from_config(config));
        let default_client = build_client(None, timeout, &addresses)?;
        let mut clients_by_ca = HashMap::new();
        for registry in &config.registries {
            if let Some(path) = &registry.ca_file
                && !clients_by_ca.contains_key(path)
            {
                clients_by_ca.insert(path.clone(), build_client(Some(path), timeout, &addresses)?);
            }
        }
        Ok(Transport {
            default_client,
            clients_by_ca,
            registries: config.registries.clone(),
            challenges: Mutex::new(HashMap::new()),
            tokens: moka::future::Cache::builder()
                .max_capacity(10_000)
                // Registries issue tokens for minutes; a short local life keeps revoked access honest.
                .time_to_live(Duration::from_secs(50))
                .build(),
            backoff: Mutex::new(HashMap::new()),
            max_body: config.max_manifest_size.0,
            request_timeout: timeout,
            metrics,
            addresses,
            in_flight: Mutex::new(HashMap::new()),
        })
    }

    fn in_flight_limit(&self, api_host: &str) -> Arc<Semaphore> {
        let fresh = || Arc::new(Semaphore::new(MAX_REQUESTS_PER_REGISTRY));
        match self.in_flight.lock() {
            // Looked up by `&str` first: the host string is allocated once per host, not per request.
            Ok(mut map) => match map.get(api_host) {
                Some(limit) => limit.clone(),
                None => map.entry(api_host.to_string()).or_insert_with(fresh).clone(),
            },
            // A poisoned map only loses the bound, never the request.
            Err(_) => fresh(),
        }
    }

    fn settings(&self, registry: &str) -> Option<&RegistryConfig> {
        self.registries.iter().find(|settings| pullguard_core::glob::host_matches(&settings.host, registry))
    }

    fn client_for(&self, registry: &str) -> &reqwest::Client {
        self.settings(registry)
            .and_then(|settings| settings.ca_file.as_ref())
            .and_then(|path| self.clients_by_ca.get(path))
            .unwrap_or(&self.default_client)
    }

    fn base_url(&self, endpoint: &Endpoint<'_>) -> String {
        let insecure = self.settings(endpoint.registry).is_some_and(|settings| settings.insecure);
        format!("{}://{}", if insecure { "http" } else { "https" }, endpoint.api_host)
    }

    pub async fn head_manifest(
        &self,
        endpoint: &Endpoint<'_>,
        reference: &str,
    ) -> Result<Reply, LookupError> {
        let path = format!("/v2/{}/manifests/{}", endpoint.repository, reference);
        self.send(endpoint, Method::HEAD, &path, Some(ACCEPT), 0).await
    }

    pub async fn get_manifest(&self, endpoint: &Endpoint<'_>, reference: &str) -> Result<Reply, LookupError> {
        let path = format!("/v2/{}/manifests/{}", endpoint.repository, reference);
        self.send(endpoint, Method::GET, &path, Some(ACCEPT), self.max_body).await
    }

    pub async fn get_blob(&self, endpoint: &Endpoint<'_>, digest: &str) -> Result<Reply, LookupError> {
        let path = format!("/v2/{}/blobs/{}", endpoint.repository, digest);
        self.send(endpoint, Method::GET, &path, None, self.max_body).await
    }

    /// Every tag of the repository (following `Link` pages, bounded). `RepositoryNotFound` when
    /// the registry says the name is unknown.
    pub async fn list_tags(&self, endpoint: &Endpoint<'_>) -> Result<Vec<String>, LookupError> {
        let mut path = format!("/v2/{}/tags/list", endpoint.repository);
        let mut tags = Vec::new();
        for _ in 0..MAX_TAG_PAGES {
            let (reply, next) = self.send_with_link(endpoint, &path).await?;
            if reply.is_not_found() {
                return Err(if reply.error_code.as_deref() == Some("NAME_UNKNOWN") || tags.is_empty() {
                    LookupError::RepositoryNotFound
                } else {
                    LookupError::RegistryFailure {
                        status: Some(404),
                        reason: "tag list page vanished".into(),
                    }
                });
            }
            let page: TagList =
                serde_json::from_slice(&reply.body).map_err(|error| LookupError::RegistryFailure {
                    status: None,
                    reason: format!("tag list is not valid JSON: {error}"),
                })?;
            tags.extend(page.tags.unwrap_or_default());
            match next {
                Some(next) => path = next,
                None => break,
            }
        }
        Ok(tags)
    }

    async fn send_with_link(
        &self,
        endpoint: &Endpoint<'_>,
        path: &str,
    ) -> Result<(Reply, Option<String>), LookupError> {
        let response = self.execute(endpoint, Method::GET, path, None).await?;
        let next = response
            .headers()
            .get(header::LINK)
            .and_then(|value| value.to_str().ok())
            .and_then(parse_next_link);
        let reply = self.finish(endpoint, response, self.max_body).await?;
        Ok((reply, next))
    }

    async fn send(
        &self,
        endpoint: &Endpoint<'_>,
        method: Method,
        path: &str,
        accept: Option<&str>,
        body_limit: u64,
    ) -> Result<Reply, LookupError> {
        let response = self.execute(endpoint, method, path, accept).await?;
        self.finish(endpoint, response, body_limit).await
    }

    /// Sends one request, answering an auth challenge at most once. Hosts remember their
    /// challenge, so later requests carry the answer up front and cost no extra round trip.
    async fn execute(
        &self,
        endpoint: &Endpoint<'_>,
        method: Method,
        path: &str,
        accept: Option<&str>,
    ) -> Result<reqwest::Response, LookupError> {
        self.check_backoff(endpoint.api_host)?;
        self.addresses
            .check_literal(endpoint.api_host)
            .map_err(|refused| LookupError::AddressRefused { reason: refused.to_string() })?;
        let url = format!("{}{}", self.base_url(endpoint), path);
        let known = self.challenges.lock().ok().and_then(|map| map.get(endpoint.api_host).cloned());
        let authorization = match &known {
            Some(challenge) => self.authorization_for(endpoint, challenge).await?,
            None => None,
        };
        let response = self.request(endpoint, method.clone(), &url, accept, authorization.as_deref()).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let Some(challenge) = challenge_of(&response) else {
            return Err(auth_failure(endpoint, false));
        };
        if authorization.is_some() && known.as_ref() == Some(&challenge) {
            // The remembered answer was refused (a token revoked or expired early): forget it so
            // the next lookup fetches a fresh one instead of failing for the token's whole life.
            if let Challenge::Bearer { realm, service } = &challenge {
                self.tokens.invalidate(&token_key(endpoint, realm, service.as_deref())).await;
            }
            return Err(auth_failure(endpoint, is_insufficient_scope(&response)));
        }
        if let Ok(mut map) = self.challenges.lock() {
            map.insert(endpoint.api_host.to_string(), challenge.clone());
        }
        let Some(authorization) = self.authorization_for(endpoint, &challenge).await? else {
            return Err(LookupError::AuthRequired);
        };
        let response = self.request(endpoint, method, &url, accept, Some(&authorization)).await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            return Err(auth_failure(endpoint, is_insufficient_scope(&response)));
        }
        Ok(response)
    }

    async fn request(
        &self,
        endpoint: &Endpoint<'_>,
        method: Method,
        url: &str,
        accept: Option<&str>,
        authorization: Option<&str>,
    ) -> Result<reqwest::Response, LookupError> {
        let mut request = self.client_for(endpoint.registry).request(method, url);
        if let Some(accept) = accept {
            request = request.header(header::ACCEPT, accept);
        }
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        let limit = self.in_flight_limit(endpoint.api_host);
        let started = std::time::Instant::now();
        let permit = limit.acquire_owned().await;
        let sent = request.send().await;
        drop(permit);
        let result = match sent {
            Ok(response) => Ok(response),
            Err(error) => {
                let unreachable = error.is_connect() || error.is_timeout();
                let cause = self.classify(endpoint, error).await;
                if let (true, LookupError::Unreachable { reason }) = (unreachable, &cause) {
                    let reason = BackoffReason::Unreachable(reason.as_str().into());
                    self.start_backoff(endpoint.api_host, UNREACHABLE_BACKOFF, reason);
                }
                Err(cause)
            }
        };
        let outcome = match &result {
            Ok(response) => status_class(response.status()),
            Err(error) => error.metric_label().to_string(),
        };
        let host = endpoint.api_host.to_string();
        self.metrics
            .registry_requests
            .get_or_create(&RegistryLabels { registry: host.clone(), outcome })
            .inc();
        self.metrics
            .registry_duration
            .get_or_create(&HostLabels { registry: host })
            .observe(started.elapsed().as_secs_f64());
        result
    }

    /// The `Authorization` value for a challenge: basic credentials as they are, or a bearer token
    /// fetched from the realm (anonymously when there is no credential, as registries allow for
    /// public repositories). `None` when the challenge cannot be answered.
    async fn authorization_for(
        &self,
        endpoint: &Endpoint<'_>,
        challenge: &Challenge,
    ) -> Result<Option<String>, LookupError> {
        match challenge {
            Challenge::Basic => Ok(endpoint.credential.map(basic_value)),
            Challenge::Bearer { realm, service } => {
                let token = self.token(endpoint, realm, service.as_deref()).await?;
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

    async fn token(
        &self,
        endpoint: &Endpoint<'_>,
        realm: &str,
        service: Option<&str>,
    ) -> Result<Arc<str>, LookupError> {
        let scope = format!("repository:{}:pull", endpoint.repository);
        let key = token_key(endpoint, realm, service);
        self.tokens
            .try_get_with(key, self.fetch_token(endpoint, realm, service, &scope))
            .await
            .map_err(|error| (*error).clone())
    }

    async fn fetch_token(
        &self,
        endpoint: &Endpoint<'_>,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<Arc<str>, LookupError> {
        let realm_url = reqwest::Url::parse(realm).map_err(|_| LookupError::RegistryFailure {
            status: None,
            reason: "token realm is not a URL".into(),
        })?;
        if !matches!(realm_url.scheme(), "https" | "http") {
            return Err(LookupError::RegistryFailure {
                status: None,
                reason: "token realm is not HTTP(S)".into(),
            });
        }
        if let Some(host) = realm_url.host_str() {
            let authority = match realm_url.port() {
                Some(port) => format!("{host}:{port}"),
                None => host.to_string(),
            };
            self.addresses.check_literal(&authority).map_err(|refused| LookupError::AddressRefused {
                reason: format!(
                    "token realm: {refused} (a token service you trust goes under registries[].tokenRealmHosts)"
                ),
            })?;
        }
        let mut query: Vec<(&str, &str)> = vec![("scope", scope)];
        if let Some(service) = service {
            query.push(("service", service));
        }
        let mut request = self.client_for(endpoint.registry).get(realm_url.clone()).query(&query);
        if let Some(credential) = endpoint.credential {
            // Any registry can name any realm in its challenge: credentials matched for this
            // registry go only where its operator (or the built-in Docker Hub pair) says they belong.
            self.check_realm_trusted(endpoint, &realm_url)?;
            request = request.basic_auth(credential.username(), Some(credential.password()));
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return Err(self.classify(endpoint, error).await),
        };
        match response.status() {
            status if status.is_success() => {}
            StatusCode::UNAUTHORIZED => return Err(auth_failure(endpoint, false)),
            StatusCode::FORBIDDEN => return Err(LookupError::Denied),
            status => {
                return Err(LookupError::RegistryFailure {
                    status: Some(status.as_u16()),
                    reason: format!("token endpoint answered {status}"),
                });
            }
        }
        let body = read_limited(response, 1 << 20).await.map_err(|error| match error {
            ReadError::TooLarge => {
                LookupError::RegistryFailure { status: None, reason: "token response too large".into() }
            }
            ReadError::Http(error) => LookupError::Unreachable { reason: describe(&error) },
        })?;
        let reply: TokenReply = serde_json::from_slice(&body).map_err(|_| LookupError::RegistryFailure {
            status: None,
            reason: "token response is not valid JSON".into(),
        })?;
        reply.token.or(reply.access_token).filter(|token| !token.is_empty()).map(Arc::from).ok_or_else(|| {
            LookupError::RegistryFailure { status: None, reason: "token response has no token".into() }
        })
    }

    fn check_realm_trusted(&self, endpoint: &Endpoint<'_>, realm: &reqwest::Url) -> Result<(), LookupError> {
        let realm_host = realm.host_str().unwrap_or_default();
        let settings = self.settings(endpoint.registry);
        let registry_host = host_of(endpoint.api_host);
        let trusted = realm_host.eq_ignore_ascii_case(registry_host)
            || (registry_host == DOCKER_HUB_API_HOST && realm_host == DOCKER_HUB_TOKEN_HOST)
            || settings.is_some_and(|settings| {
                settings
                    .token_realm_hosts
                    .iter()
                    .any(|pattern| pullguard_core::glob::host_matches(pattern, realm_host))
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

    async fn finish(
        &self,
        endpoint: &Endpoint<'_>,
        response: reqwest::Response,
        body_limit: u64,
    ) -> Result<Reply, LookupError> {
        let status = response.status();
        let forbidden_is_missing =
            self.settings(endpoint.registry).is_some_and(|settings| settings.forbidden_means_not_found);
        if status.is_success() || status == StatusCode::NOT_FOUND {
            let content_type = header_text(&response, header::CONTENT_TYPE);
            let digest = header_text(&response, "docker-content-digest");
            let body = if body_limit > 0 || status == StatusCode::NOT_FOUND {
                read_limited(response, body_limit.max(64 << 10)).await.map_err(|error| match error {
                    ReadError::TooLarge => LookupError::RegistryFailure {
                        status: Some(status.as_u16()),
                        reason: format!("response larger than the {body_limit}-byte limit"),
                    },
                    ReadError::Http(error) => LookupError::Unreachable { reason: describe(&error) },
                })?
            } else {
                Vec::new()
            };
            let error_code = (status == StatusCode::NOT_FOUND).then(|| first_error_code(&body)).flatten();
            return Ok(Reply { status, content_type, digest, error_code, body });
        }
        match status {
            StatusCode::FORBIDDEN if forbidden_is_missing => Ok(Reply {
                status: StatusCode::NOT_FOUND,
                content_type: None,
                digest: None,
                error_code: None,
                body: Vec::new(),
            }),
            StatusCode::FORBIDDEN => Err(LookupError::Denied),
            StatusCode::UNAUTHORIZED => Err(auth_failure(endpoint, false)),
            StatusCode::TOO_MANY_REQUESTS => {
                let retry_after = retry_after(&response);
                self.start_backoff(
                    endpoint.api_host,
                    retry_after.unwrap_or(RATE_LIMIT_BACKOFF),
                    BackoffReason::RateLimited,
                );
                Err(LookupError::RateLimited { retry_after })
            }
            status if status.is_server_error() => {
                let wait = retry_after(&response).unwrap_or(SERVER_ERROR_BACKOFF);
                self.start_backoff(endpoint.api_host, wait, BackoffReason::ServerError);
                Err(LookupError::RegistryFailure {
                    status: Some(status.as_u16()),
                    reason: format!("registry answered {status}"),
                })
            }
            status => Err(LookupError::RegistryFailure {
                status: Some(status.as_u16()),
                reason: format!("unexpected answer {status}"),
            }),
        }
    }

    fn start_backoff(&self, host: &str, wait: Duration, reason: BackoffReason) {
        if let Ok(mut map) = self.backoff.lock() {
            map.insert(host.to_string(), (Instant::now() + wait.min(MAX_BACKOFF), reason));
        }
    }

    /// How long the registry host is still left alone, if it is.
    pub fn backoff_remaining(&self, host: &str) -> Option<Duration> {
        let map = self.backoff.lock().ok()?;
        let (until, _) = map.get(host)?;
        until.checked_duration_since(Instant::now()).filter(|remaining| !remaining.is_zero())
    }

    /// While a registry told us to back off, answer from memory instead of adding to its load.
    fn check_backoff(&self, host: &str) -> Result<(), LookupError> {
        let Ok(mut map) = self.backoff.lock() else {
            return Ok(());
        };
        let Some((until, reason)) = map.get(host).cloned() else {
            return Ok(());
        };
        let now = Instant::now();
        if now >= until {
            map.remove(host);
            return Ok(());
        }
        let remaining = until - now;
        Err(match reason {
            BackoffReason::RateLimited => LookupError::RateLimited { retry_after: Some(remaining) },
            BackoffReason::ServerError => LookupError::RegistryFailure {
                status: None,
                reason: format!("registry failing, backing off for {}ms", remaining.as_millis()),
            },
            BackoffReason::Unreachable(cause) => LookupError::Unreachable {
                reason: format!("{cause} (next attempt in {}ms)", remaining.as_millis()),
            },
        })
    }

    /// Turns a transport error into the finding-relevant cause. TLS failures need care: an
    /// unknown CA is PG503, while a plain-HTTP server on an HTTPS request is PG502, which we
    /// confirm by asking it in plain HTTP.
    async fn classify(&self, endpoint: &Endpoint<'_>, error: reqwest::Error) -> LookupError {
        if error.is_timeout() {
            return LookupError::Unreachable {
                reason: format!("timed out after {:?}", self.request_timeout),
            };
        }
        if let Some(refused) = find_in_chain::<AddressRefused>(&error) {
            return LookupError::AddressRefused { reason: refused.to_string() };
        }
        if error.is_redirect() {
            return LookupError::RegistryFailure { status: None, reason: "too many redirects".into() };
        }
        let text = describe(&error);
        let tls = find_tls_error(&error);
        // Some layers box the rustls error so that it cannot be downcast; its text is stable.
        let certificate = matches!(tls, Some(rustls::Error::InvalidCertificate(_)))
            || text.contains("invalid peer certificate");
        let not_tls = matches!(
            tls,
            Some(rustls::Error::InvalidMessage(_)) | Some(rustls::Error::InappropriateMessage { .. })
        ) || text.contains("InvalidContentType")
            || text.contains("corrupt message");
        if certificate {
            let reason = match tls {
                Some(rustls::Error::InvalidCertificate(cause)) => format!("{cause:?}"),
                _ => text,
            };
            return LookupError::UntrustedCertificate { reason };
        }
        if not_tls {
            if self.speaks_plain_http(endpoint).await {
                return LookupError::PlainHttp;
            }
            return LookupError::RegistryFailure { status: None, reason: "TLS handshake failed".into() };
        }
        if let Some(other) = tls {
            return LookupError::RegistryFailure { status: None, reason: format!("TLS failure: {other}") };
        }
        LookupError::Unreachable { reason: text }
    }

    async fn speaks_plain_http(&self, endpoint: &Endpoint<'_>) -> bool {
        let url = format!("http://{}/v2/", endpoint.api_host);
        matches!(
            tokio::time::timeout(self.request_timeout, self.default_client.get(url).send()).await,
            Ok(Ok(_))
        )
    }
}

/// Statuses worth telling apart on a dashboard; the rest by class.
fn status_class(status: StatusCode) -> String {
    match status.as_u16() {
        200..=299 => "2xx".into(),
        code @ (401 | 403 | 404 | 429) => code.to_string(),
        500..=599 => "5xx".into(),
        _ => "other".into(),
    }
}

fn auth_failure(endpoint: &Endpoint<'_>, insufficient_scope: bool) -> LookupError {
    match (endpoint.credential, insufficient_scope) {
        (None, _) => LookupError::AuthRequired,
        (Some(_), true) => LookupError::Denied,
        (Some(_), false) => LookupError::CredentialsRejected,
    }
}

const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";
const DOCKER_HUB_TOKEN_HOST: &str = "auth.docker.io";

/// `host` of `host[:port]`, also for `[v6]:port`.
fn host_of(authority: &str) -> &str {
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// Tokens are bound to the realm, service, repository scope and credential they were issued for.
fn token_key(endpoint: &Endpoint<'_>, realm: &str, service: Option<&str>) -> String {
    let identity = endpoint.credential.map_or("anonymous", Credential::identity);
    format!("{realm}\u{0}{}\u{0}{}\u{0}{identity}", service.unwrap_or(""), endpoint.repository)
}

fn challenge_of(response: &reqwest::Response) -> Option<Challenge> {
    response
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .and_then(|value| value.to_str().ok())
        .and_then(parse_challenge)
}

fn is_insufficient_scope(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.contains("insufficient_scope"))
}

fn basic_value(credential: &Credential) -> String {
    use base64::Engine;
    let raw = format!("{}:{}", credential.username(), credential.password());
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
}

fn header_text(response: &reqwest::Response, name: impl header::AsHeaderName) -> Option<String> {
    response.headers().get(name).and_then(|value| value.to_str().ok()).map(str::to_string)
}

fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let value = response.headers().get(header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

fn first_error_code(body: &[u8]) -> Option<String> {
    let body: ErrorBody = serde_json::from_slice(body).ok()?;
    body.errors.into_iter().next().map(|entry| entry.code)
}

enum ReadError {
    TooLarge,
    Http(reqwest::Error),
}

/// Reads a body but never more than `limit` bytes: a registry must not make us buffer gigabytes.
async fn read_limited(mut response: reqwest::Response, limit: u64) -> Result<Vec<u8>, ReadError> {
    if response.content_length().is_some_and(|length| length > limit) {
        return Err(ReadError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(ReadError::Http)? {
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(ReadError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `WWW-Authenticate: Bearer realm="...",service="...",scope="..."` or `Basic realm="..."`.
fn parse_challenge(value: &str) -> Option<Challenge> {
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

/// `Link: </v2/app/tags/list?last=x&n=100>; rel="next"`, kept only when it stays on this registry.
fn parse_next_link(value: &str) -> Option<String> {
    let start = value.find('<')? + 1;
    let end = value[start..].find('>')? + start;
    let target = &value[start..end];
    (value[end..].contains("rel=\"next\"") && target.starts_with("/v2/")).then(|| target.to_string())
}

/// The first error of type `E` in a source chain, looking inside `io::Error`s too.
fn find_in_chain<'a, E: std::error::Error + 'static>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a E> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = current {
        if let Some(found) = error.downcast_ref::<E>() {
            return Some(found);
        }
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(found) = inner.downcast_ref::<E>()
        {
            return Some(found);
        }
        current = error.source();
    }
    None
}

fn find_tls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = current {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        // io::Error::source() skips the error it wraps, so look inside explicitly.
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(tls) = inner.downcast_ref::<rustls::Error>()
        {
            return Some(tls);
        }
        current = error.source();
    }
    None
}

/// The innermost cause, which is the one that says what happened (DNS, refused, reset).
fn describe(error: &reqwest::Error) -> String {
    let mut message =
        if error.is_connect() { "connection failed".to_string() } else { "request failed".to_string() };
    let mut current: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    let mut last = None;
    while let Some(cause) = current {
        last = Some(cause.to_string());
        current = cause.source();
    }
    if let Some(last) = last {
        message.push_str(": ");
        message.push_str(&last);
    }
    message
}

fn build_client(
    ca_file: Option<&PathBuf>,
    timeout: Duration,
    addresses: &Arc<AddressPolicy>,
) -> Result<reqwest::Client, TransportBuildError> {
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .map_err(|source| TransportBuildError::ReadCa { path: path.clone(), source })?;
        let mut added = 0;
        for certificate in CertificateDer::pem_slice_iter(&pem).flatten() {
            if roots.add(certificate).is_ok() {
                added += 1;
            }
        }
        if added == 0 {
            return Err(TransportBuildError::BadCa { path: path.clone() });
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .user_agent(USER_AGENT)
        .connect_timeout(timeout)
        .timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .redirect(reqwest::redirect::Policy::limited(5))
        .dns_resolver(Arc::new(GuardedResolver::new(addresses.clone())))
        .build()?)
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn next_links_stay_on_the_registry() {
        assert_eq!(
            parse_next_link(r#"</v2/app/tags/list?last=b&n=2>; rel="next""#),
            Some("/v2/app/tags/list?last=b&n=2".into())
        );
        assert_eq!(parse_next_link(r#"<https://evil.example/x>; rel="next""#), None);
        assert_eq!(parse_next_link("garbage"), None);
    }

    #[test]
    fn error_codes() {
        assert_eq!(
            first_error_code(
                br#"{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known"}]}"#
            ),
            Some("NAME_UNKNOWN".into())
        );
        assert_eq!(first_error_code(b"<html>"), None);
    }
}
