//! Pushes synthetic images, indexes, schema 1 manifests and artifacts through the registry
//! HTTP API, so tests need no container engine; one client for every auth mode a test registry
//! has ([`Auth`]).

mod auth;
mod images;
pub mod media;
mod schema1;
mod spec;

use std::sync::Mutex;

use anyhow::{Context, Result, anyhow, bail, ensure};
use reqwest::header::{ACCEPT, CONTENT_TYPE, LOCATION};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use sha2::{Digest as _, Sha256};

pub use self::auth::{Auth, BearerChallenge, TokenReply, request_token};
pub use self::schema1::{libtrust_key_id, sign_pretty_jws};
pub use self::spec::{
    Descriptor, FetchedManifest, Format, ImageSpec, IndexEntry, LayerSpec, PushedImage, PushedIndex,
    SBOM_ARTIFACT_TYPE, WINDOWS_FOREIGN_LAYER_URL,
};
use crate::registry::{RegistryProcess, http_client};

/// Seeds a registry through its HTTP API.
pub struct Seeder {
    client: reqwest::Client,
    base: Url,
    auth: Auth,
    /// The last token of the dance ([`Auth::Token`]), tried first on the next request.
    token: Mutex<Option<String>>,
}

impl Seeder {
    /// Trusts the registry's CA and uses its basic credentials, if any.
    pub fn new(registry: &RegistryProcess) -> Result<Self> {
        Self::for_url(&registry.base_url(), registry.ca_pem(), registry.credentials())
    }

    /// Trusts the registry's CA and authenticates with `auth` (a token registry needs
    /// [`Auth::Bearer`] or [`Auth::Token`]).
    pub fn with_auth(registry: &RegistryProcess, auth: Auth) -> Result<Self> {
        Self::connect(&registry.base_url(), registry.ca_pem(), auth)
    }

    pub fn for_url(base_url: &str, ca_pem: Option<&str>, credentials: Option<(&str, &str)>) -> Result<Self> {
        let auth = credentials.map_or(Auth::Anonymous, |(user, password)| Auth::basic(user, password));
        Self::connect(base_url, ca_pem, auth)
    }

    pub fn connect(base_url: &str, ca_pem: Option<&str>, auth: Auth) -> Result<Self> {
        Ok(Self {
            client: http_client(ca_pem)?,
            base: Url::parse(base_url).with_context(|| format!("registry URL {base_url:?}"))?,
            auth,
            token: Mutex::new(None),
        })
    }

    fn url(&self, path: &str) -> Result<Url> {
        Ok(self.base.join(path)?)
    }

    fn authorized(&self, request: RequestBuilder) -> RequestBuilder {
        match &self.auth {
            Auth::Anonymous => request,
            Auth::Basic { user, password } => request.basic_auth(user, Some(password)),
            Auth::Bearer(token) => request.bearer_auth(token),
            Auth::Token { .. } => match self.token.lock().ok().and_then(|token| token.clone()) {
                Some(token) => request.bearer_auth(token),
                None => request,
            },
        }
    }

    /// Sends `request` with this seeder's credentials; in the token dance, a Bearer challenge
    /// (no token yet, or one without the scope this request needs) is answered once.
    async fn send(&self, request: RequestBuilder) -> Result<Response> {
        let again = request.try_clone();
        let response = self.authorized(request).send().await?;
        let Auth::Token { user, password } = &self.auth else { return Ok(response) };
        let (StatusCode::UNAUTHORIZED, Some(challenge), Some(again)) =
            (response.status(), BearerChallenge::from_response(&response), again)
        else {
            return Ok(response);
        };
        let scopes: Vec<&str> = challenge.scope.as_deref().into_iter().collect();
        let token = request_token(
            &self.client,
            &challenge.realm,
            challenge.service.as_deref(),
            &scopes,
            Some((user, password)),
        )
        .await?
        .token()?;
        if let Ok(mut last) = self.token.lock() {
            *last = Some(token.clone());
        }
        Ok(again.bearer_auth(token).send().await?)
    }

    /// Uploads a blob (POST + PUT) and returns its descriptor, typed `application/octet-stream`.
    pub async fn push_blob(&self, repo: &str, bytes: &[u8]) -> Result<Descriptor> {
        let digest = sha256_digest(bytes);
        let start = self
            .send(self.client.post(self.url(&format!("/v2/{repo}/blobs/uploads/"))?))
            .await
            .with_context(|| format!("starting a blob upload to {repo}"))?;
        if start.status() != StatusCode::ACCEPTED {
            bail!("POST /v2/{repo}/blobs/uploads/ -> {}", failure(start).await);
        }
        let location = start
            .headers()
            .get(LOCATION)
            .ok_or_else(|| anyhow!("blob upload to {repo}: 202 without Location"))?
            .to_str()?;
        // Location may be absolute or relative, and usually already carries `_state`.
        let mut url = self.base.join(location)?;
        url.query_pairs_mut().append_pair("digest", &digest);
        let put = self
            .send(self.client.put(url).header(CONTENT_TYPE, media::OCTET_STREAM).body(bytes.to_vec()))
            .await
            .with_context(|| format!("finishing the blob upload to {repo}"))?;
        if put.status() != StatusCode::CREATED {
            bail!("PUT blob {digest} to {repo} -> {}", failure(put).await);
        }
        Ok(Descriptor { media_type: media::OCTET_STREAM.to_owned(), digest, size: bytes.len() as u64 })
    }

    /// PUTs a manifest as-is under `reference` (a tag or its digest) and returns the
    /// sha256 of `body`.
    pub async fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Result<String> {
        let digest = sha256_digest(body);
        let served = self.put_manifest(repo, reference, media_type, body).await?;
        // Schema 1 is digested without its signatures; everything else must match.
        if media_type != media::SCHEMA1_SIGNED
            && let Some(served) = served
        {
            ensure!(served == digest, "registry digested {repo}:{reference} as {served}, expected {digest}");
        }
        Ok(digest)
    }

    /// PUTs a manifest and returns the digest the registry reports, if it does.
    async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Result<Option<String>> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"))?;
        let response = self
            .send(self.client.put(url).header(CONTENT_TYPE, media_type).body(body.to_vec()))
            .await
            .with_context(|| format!("pushing manifest {repo}:{reference}"))?;
        let digest = header_string(&response, "docker-content-digest");
        if response.status() != StatusCode::CREATED {
            bail!("PUT /v2/{repo}/manifests/{reference} ({media_type}) -> {}", failure(response).await);
        }
        Ok(digest)
    }

    /// Deletes a manifest by digest (the registry refuses deletion by tag).
    pub async fn delete_manifest(&self, repo: &str, digest: &str) -> Result<()> {
        let url = self.url(&format!("/v2/{repo}/manifests/{digest}"))?;
        let response =
            self.send(self.client.delete(url)).await.with_context(|| format!("deleting {repo}@{digest}"))?;
        if response.status() != StatusCode::ACCEPTED {
            bail!("DELETE /v2/{repo}/manifests/{digest} -> {}", failure(response).await);
        }
        Ok(())
    }

    /// GET a manifest with [`media::FULL_ACCEPT`]; any status is returned, not an error.
    pub async fn get_manifest(&self, repo: &str, reference: &str) -> Result<FetchedManifest> {
        self.fetch_manifest(Method::GET, repo, reference, Some(media::FULL_ACCEPT)).await
    }

    /// HEAD a manifest with [`media::FULL_ACCEPT`].
    pub async fn head_manifest(&self, repo: &str, reference: &str) -> Result<FetchedManifest> {
        self.fetch_manifest(Method::HEAD, repo, reference, Some(media::FULL_ACCEPT)).await
    }

    /// GET or HEAD a manifest with a chosen `Accept` (none when `accept` is `None`).
    pub async fn fetch_manifest(
        &self,
        method: Method,
        repo: &str,
        reference: &str,
        accept: Option<&str>,
    ) -> Result<FetchedManifest> {
        let mut request =
            self.client.request(method, self.url(&format!("/v2/{repo}/manifests/{reference}"))?);
        if let Some(accept) = accept {
            request = request.header(ACCEPT, accept);
        }
        let response = self.send(request).await.with_context(|| format!("fetching {repo}:{reference}"))?;
        Ok(FetchedManifest {
            status: response.status(),
            content_type: header_string(&response, "content-type"),
            digest: header_string(&response, "docker-content-digest"),
            content_length: header_string(&response, "content-length").and_then(|v| v.parse().ok()),
            body: response.bytes().await?.to_vec(),
        })
    }
}

fn header_string(response: &Response, name: &str) -> Option<String> {
    response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

// A refused token is explained by the challenge, not by the body.
async fn failure(response: Response) -> String {
    let status = response.status();
    let challenge =
        header_string(&response, "www-authenticate").map(|value| format!("[{value}] ")).unwrap_or_default();
    format!("{status}: {challenge}{}", response.text().await.unwrap_or_default())
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}
