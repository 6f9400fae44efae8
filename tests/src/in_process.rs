//! pullguard's routers driven in-process (`tower::ServiceExt::oneshot`), with no socket and no
//! TLS: what most webhook tests need, in a fraction of the time. `webhook::Webhook` serves the
//! same `App` over real HTTPS for the tests that are about the wire (TLS, HTTP/1 and 2, raw bytes).

use std::time::Duration;

use anyhow::{Context, Result};
use axum::{
    Router,
    body::{Body, to_bytes},
    http::{Method, Request, header},
};
use pullguard::app::App;
use pullguard_core::{config::Config, credentials::Keyring};
use tower::ServiceExt;

use crate::wait::eventually;

/// Answers are read whole; the webhook's own limit on what it reads is 3 MiB.
const MAX_ANSWER: usize = 16 << 20;

pub struct InProcess {
    pub app: App,
}

impl InProcess {
    pub fn start(config: Config, keyring: Keyring) -> Result<InProcess> {
        Ok(InProcess { app: App::new(config, keyring)? })
    }

    /// With the Kubernetes API behind it: namespaces and nodes come from there.
    pub fn start_with_cluster(config: Config, keyring: Keyring, client: kube::Client) -> Result<InProcess> {
        Ok(InProcess { app: App::with_cluster(config, keyring, client)? })
    }

    /// Any request to the webhook router: (HTTP status, body text).
    pub async fn request(&self, method: Method, path: &str, body: Vec<u8>) -> Result<(u16, String)> {
        send(self.app.router(), method, path, body).await
    }

    /// The admin router's `/readyz` status code.
    pub async fn readyz(&self) -> Result<u16> {
        Ok(send(self.app.admin_router(), Method::GET, "/readyz", Vec::new()).await?.0)
    }

    /// The admin router's `/metrics` text.
    pub async fn metrics(&self) -> Result<String> {
        Ok(send(self.app.admin_router(), Method::GET, "/metrics", Vec::new()).await?.1)
    }

    /// Waits (bounded) until `/readyz` answers 200.
    pub async fn wait_ready(&self, limit: Duration) -> Result<()> {
        eventually("readiness", limit, || async { self.readyz().await.is_ok_and(|status| status == 200) })
            .await
    }
}

impl crate::answer::Reviews for InProcess {
    async fn post_raw(&self, body: Vec<u8>) -> Result<(u16, String)> {
        self.request(Method::POST, "/validate", body).await
    }
}

async fn send(router: Router, method: Method, path: &str, body: Vec<u8>) -> Result<(u16, String)> {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))?;
    let response = router.oneshot(request).await.context("the router failed")?;
    let status = response.status().as_u16();
    let bytes = to_bytes(response.into_body(), MAX_ANSWER).await.context("reading the answer")?;
    Ok((status, String::from_utf8(bytes.to_vec()).context("the answer is not UTF-8")?))
}
