//! HTTP transport for the registry API (distribution spec), with anonymous, basic and bearer
//! auth: this file sends requests and reads answers; its parts are the client (`client`),
//! authentication (`auth`), backoff (`backoff`), the classification of failures (`failure`) and
//! the tag list (`tags`).
//!
//! Why not oci-client's `Client` here (the README's "Why a request layer of its own"): it
//! hides response headers (`Docker-Content-Digest`, `Content-Type`, `Retry-After` are what tell a
//! schema 1 manifest, a rate limit or a lying registry apart), it fails on signed schema 1
//! manifests instead of letting us report them, and it keeps the first credentials it sees per
//! registry, which would leak one namespace's pull secret into another's lookups. This layer runs
//! on the same reqwest + rustls stack oci-client uses.

mod auth;
mod backoff;
mod client;
mod endpoint;
mod failure;
mod tags;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use pullguard_core::{
    config::{Config, RegistryConfig},
    glob,
    lookup::LookupError,
    manifest::ACCEPT,
};
use reqwest::{Method, StatusCode, header};
use tokio::sync::Semaphore;

use self::{
    auth::{
        Challenge, auth_failure, basic_value, challenge_of, check_realm_trusted, is_insufficient_scope,
        realm_url, token_key, token_of,
    },
    backoff::{BackoffReason, Backoffs, RATE_LIMIT_BACKOFF, SERVER_ERROR_BACKOFF, UNREACHABLE_BACKOFF},
    client::{ReadError, build_client, read_limited},
    failure::{Failure, describe, first_error_code, retry_after, status_class},
    tags::{MAX_TAG_PAGES, parse_next_link, tags_of},
};
pub use self::{
    client::TransportBuildError,
    endpoint::{Endpoint, Reply},
};
use super::address::AddressPolicy;
use crate::metrics::{HostLabels, Metrics, RegistryLabels};

/// Bearer tokens are bound to a realm, service, scope and credential; the token itself is a secret
/// and is never logged.
type TokenCache = moka::future::Cache<String, Arc<str>>;

pub struct Transport {
    default_client: reqwest::Client,
    clients_by_ca: HashMap<PathBuf, reqwest::Client>,
    registries: Vec<RegistryConfig>,
    challenges: Mutex<HashMap<String, Challenge>>,
    tokens: TokenCache,
    backoffs: Backoffs,
    max_body: u64,
    request_timeout: Duration,
    metrics: Arc<Metrics>,
    addresses: Arc<AddressPolicy>,
    in_flight: Mutex<HashMap<String, Arc<Semaphore>>>,
}

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
            backoffs: Backoffs::default(),
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
        self.registries.iter().find(|settings| glob::host_matches(&settings.host, registry))
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
            tags.extend(tags_of(&reply.body)?);
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
        self.backoffs.check(endpoint.api_host)?;
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
                    self.backoffs.start(endpoint.api_host, UNREACHABLE_BACKOFF, reason);
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
        let realm_url = realm_url(realm)?;
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
            check_realm_trusted(endpoint, self.settings(endpoint.registry), &realm_url)?;
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
        token_of(&body)
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
                let retry_after = retry_after(response.headers());
                self.backoffs.start(
                    endpoint.api_host,
                    retry_after.unwrap_or(RATE_LIMIT_BACKOFF),
                    BackoffReason::RateLimited,
                );
                Err(LookupError::RateLimited { retry_after })
            }
            status if status.is_server_error() => {
                let wait = retry_after(response.headers()).unwrap_or(SERVER_ERROR_BACKOFF);
                self.backoffs.start(endpoint.api_host, wait, BackoffReason::ServerError);
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

    /// How long the registry host is still left alone, if it is.
    pub fn backoff_remaining(&self, host: &str) -> Option<Duration> {
        self.backoffs.remaining(host)
    }

    /// Turns a transport error into the finding-relevant cause, asking the registry in plain
    /// HTTP when its answer to HTTPS was not TLS.
    async fn classify(&self, endpoint: &Endpoint<'_>, error: reqwest::Error) -> LookupError {
        match failure::classify(&error, self.request_timeout) {
            Failure::Known(cause) => cause,
            Failure::NotTls if self.speaks_plain_http(endpoint).await => LookupError::PlainHttp,
            Failure::NotTls => {
                LookupError::RegistryFailure { status: None, reason: "TLS handshake failed".into() }
            }
        }
    }

    async fn speaks_plain_http(&self, endpoint: &Endpoint<'_>) -> bool {
        let url = format!("http://{}/v2/", endpoint.api_host);
        matches!(
            tokio::time::timeout(self.request_timeout, self.default_client.get(url).send()).await,
            Ok(Ok(_))
        )
    }
}

fn header_text(response: &reqwest::Response, name: impl header::AsHeaderName) -> Option<String> {
    response.headers().get(name).and_then(|value| value.to_str().ok()).map(str::to_string)
}
