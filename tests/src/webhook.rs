//! Runs pullguard's webhook in this process over real HTTPS (self-signed certificate, HTTP/2
//! client), for the tests about the wire; `in_process` drives the same routers without a socket.
//! Also loads the captured AdmissionReview fixtures.

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use pullguard::{
    app::App,
    server::{self, Running, tls},
};
use pullguard_core::{
    config::{Config, RegistryConfig},
    credentials::Keyring,
};
use serde_json::Value;

use crate::{answer::Reviews, registry::RegistryProcess, wait::eventually};

pub struct Webhook {
    pub running: Running,
    pub ca_pem: String,
    pub app: App,
    pub client: reqwest::Client,
}

impl Webhook {
    pub async fn start(config: Config, keyring: Keyring) -> Result<Webhook> {
        Webhook::start_app(App::new(config, keyring)?)
    }

    /// With a (served) Kubernetes API behind it: namespaces and nodes come from there.
    pub async fn start_with_cluster(
        config: Config,
        keyring: Keyring,
        client: kube::Client,
    ) -> Result<Webhook> {
        Webhook::start_app(App::with_cluster(config, keyring, client)?)
    }

    fn start_app(app: App) -> Result<Webhook> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let material = tls::self_signed(&tls::default_sans(&[]))?;
        let certified = tls::certified_key(
            material.cert_pem.as_bytes(),
            material.key_pem.as_bytes(),
            std::path::Path::new("cert"),
            std::path::Path::new("key"),
        )?;
        let running = server::start(
            app.router(),
            app.admin_router(),
            "127.0.0.1:0".parse()?,
            "127.0.0.1:0".parse()?,
            Arc::new(tls::CertStore::new(certified)),
        )?;
        let client = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(material.ca_pem.as_bytes())?])
            .http2_prior_knowledge()
            .no_proxy()
            .build()?;
        Ok(Webhook { running, ca_pem: material.ca_pem, app, client })
    }

    /// The admin port's `/readyz` status code.
    pub async fn readyz(&self) -> Result<u16> {
        let url = format!("http://{}/readyz", self.running.admin_addr);
        Ok(reqwest::Client::builder().no_proxy().build()?.get(url).send().await?.status().as_u16())
    }

    /// The admin port's `/metrics` text.
    pub async fn metrics(&self) -> Result<String> {
        let url = format!("http://{}/metrics", self.running.admin_addr);
        Ok(reqwest::Client::builder().no_proxy().build()?.get(url).send().await?.text().await?)
    }

    /// Waits (bounded) until `/readyz` answers 200.
    pub async fn wait_ready(&self, limit: Duration) -> Result<()> {
        eventually("readiness", limit, || async { self.readyz().await.is_ok_and(|status| status == 200) })
            .await
    }

    pub fn url(&self) -> String {
        format!("https://localhost:{}/validate", self.running.addr.port())
    }

    /// Any request to the webhook port: (HTTP status, body text).
    pub async fn request(&self, method: reqwest::Method, path: &str, body: Vec<u8>) -> Result<(u16, String)> {
        let url = self.url().replace("/validate", path);
        let response = self
            .client
            .request(method, url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        Ok((response.status().as_u16(), response.text().await?))
    }
}

impl Reviews for Webhook {
    async fn post_raw(&self, body: Vec<u8>) -> Result<(u16, String)> {
        self.request(reqwest::Method::POST, "/validate", body).await
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.running.shutdown();
    }
}

pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data")
}

/// A captured AdmissionReview from `tests/data/`.
pub fn fixture(name: &str) -> Result<Value> {
    let path = data_dir().join(name);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

/// JSON pointer to the pod spec inside `request.object` for a fixture's kind.
pub fn spec_pointer(review: &Value, which: &str) -> String {
    let kind = review.pointer("/request/kind/kind").and_then(Value::as_str).unwrap_or_default();
    let inner = match kind {
        "Pod" => "/spec",
        "CronJob" => "/spec/jobTemplate/spec/template/spec",
        _ => "/spec/template/spec",
    };
    format!("/request/{which}{inner}")
}

/// Points every container (init, app) of the review's object at `image`, keeping names.
pub fn set_all_images(review: &mut Value, which: &str, image: &str) {
    let pointer = spec_pointer(review, which);
    if let Some(spec) = review.pointer_mut(&pointer) {
        for list in ["containers", "initContainers"] {
            if let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) {
                for container in containers {
                    container["image"] = Value::String(image.to_string());
                }
            }
        }
    }
}

/// Settings for the test registries: the plain one is declared insecure, the TLS one gets its CA.
pub fn registry_settings(registry: &RegistryProcess) -> RegistryConfig {
    RegistryConfig {
        host: registry.host(),
        insecure: !registry.is_tls(),
        ca_file: registry.ca_path().map(PathBuf::from),
        ..RegistryConfig::default()
    }
}

/// A docker config JSON keyring with the registry's credentials (optionally a wrong password).
pub fn keyring_for(registry: &RegistryProcess, password_override: Option<&str>) -> Result<Keyring> {
    use base64::Engine;
    let (user, password) = registry.credentials().context("registry has no credentials")?;
    let password = password_override.unwrap_or(password);
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let json = serde_json::json!({"auths": {registry.host(): {"auth": auth}}});
    Ok(Keyring::from_docker_config(json.to_string().as_bytes(), "test docker config")?)
}
