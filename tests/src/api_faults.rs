//! Faults a real kube-apiserver does not produce on demand: a proxy in front of the control
//! plane ([`crate::control_plane`]) that forwards every request unchanged, counts what clients
//! ask, and on command answers 503, stalls, answers slowly or drops the open watches.
//!
//! Everything a client sees apart from the injected fault comes from the real API server (its
//! lists, watches, bookmarks, errors, admission), so a test that passes here does not rely on
//! an imitation's idea of the API. Clients reach it over plain HTTP without credentials; the
//! proxy adds the admin token upstream.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    http::{HeaderName, StatusCode, header},
    response::{IntoResponse, Response},
};
use futures::StreamExt as _;
use tokio::sync::watch;

use crate::control_plane::ControlPlane;

const MAX_BODY_BYTES: usize = 8 << 20;

/// What the proxy does to requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Fault {
    /// Forward unchanged.
    #[default]
    None,
    /// Answer 503 with a `Status`, as an API server that is shutting down or overloaded.
    Unavailable,
    /// Hold every request without answering until the fault changes.
    Stall,
    /// Wait this long before forwarding.
    Latency(Duration),
}

/// One request as a client sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
}

impl RecordedRequest {
    pub fn is_watch(&self) -> bool {
        self.query
            .as_deref()
            .is_some_and(|query| query.split('&').any(|pair| pair == "watch=true" || pair == "watch=1"))
    }
}

struct Shared {
    upstream: String,
    token: String,
    client: reqwest::Client,
    fault: watch::Sender<Fault>,
    watches_dropped: watch::Sender<u64>,
    requests: Mutex<Vec<RecordedRequest>>,
}

/// The running proxy; stops when dropped.
pub struct ApiFaults {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for ApiFaults {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl ApiFaults {
    /// Starts forwarding to `control_plane` on a free loopback port.
    pub async fn start(control_plane: &ControlPlane) -> Result<ApiFaults> {
        let ca = std::fs::read_to_string(&control_plane.ca_path)?;
        let client = crate::registry::http_client(Some(&ca))?;
        let shared = Arc::new(Shared {
            upstream: control_plane.url.clone(),
            token: control_plane.token().to_owned(),
            client,
            fault: watch::Sender::new(Fault::None),
            watches_dropped: watch::Sender::new(0),
            requests: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding the API proxy")?;
        let addr = listener.local_addr()?;
        let router = Router::new().fallback(forward).with_state(shared.clone());
        let server = tokio::spawn(async move {
            // Ends when the task is aborted; an accept error only ends the proxy.
            let _ = axum::serve(listener, router).await;
        });
        Ok(ApiFaults { addr, shared, server })
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig with the proxy as its server and no credentials.
    pub fn write_kubeconfig(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: proxy\n  cluster:\n    server: {}\n\
                 users:\n- name: proxy\n  user: {{}}\ncontexts:\n- name: proxy\n  context:\n    cluster: proxy\n    \
                 user: proxy\ncurrent-context: proxy\n",
                self.url()
            ),
        )?;
        Ok(path)
    }

    /// A `kube` client through the proxy. Must be called inside a Tokio runtime.
    pub fn client(&self) -> Result<kube::Client> {
        // kube's rustls connector is built even for plain http and needs a process-wide provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Ok(kube::Client::try_from(kube::Config::new(self.url().parse()?))?)
    }

    /// A client that shows a 503 instead of retrying it (kube retries 429, 503 and 504 by
    /// default, with backoff, for as long as they last).
    pub fn client_without_retries(&self) -> Result<kube::Client> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut config = kube::Config::new(self.url().parse()?);
        config.default_retry = false;
        Ok(kube::Client::try_from(config)?)
    }

    /// Turning [`Fault::Unavailable`] on also ends the open watches: clients of an API server
    /// that went down lose them.
    pub fn set_fault(&self, fault: Fault) {
        self.shared.fault.send_replace(fault);
        if fault == Fault::Unavailable {
            self.drop_watches();
        }
    }

    /// Ends every watch (and other streaming answer) open now, as a load balancer or an API
    /// server restart does; later ones are untouched.
    pub fn drop_watches(&self) {
        self.shared.watches_dropped.send_modify(|generation| *generation += 1);
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// Requests whose path starts with `prefix`.
    pub fn request_count(&self, prefix: &str) -> usize {
        lock(&self.shared.requests).iter().filter(|request| request.path.starts_with(prefix)).count()
    }

    pub fn clear_requests(&self) {
        lock(&self.shared.requests).clear();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    (code, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

// Hop-by-hop headers and those the proxy sets itself.
const NOT_FORWARDED: [HeaderName; 5] = [
    header::HOST,
    header::AUTHORIZATION,
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::CONTENT_LENGTH,
];

async fn forward(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    lock(&shared.requests).push(RecordedRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
    });

    let mut fault = shared.fault.subscribe();
    loop {
        let current = *fault.borrow_and_update();
        match current {
            Fault::None => break,
            Fault::Unavailable => {
                return status(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    "injected: unavailable",
                );
            }
            Fault::Latency(delay) => {
                tokio::time::sleep(delay).await;
                break;
            }
            Fault::Stall => {
                if fault.changed().await.is_err() {
                    return status(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", "proxy stopped");
                }
            }
        }
    }

    let Ok(body) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return status(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            "body too large for the proxy",
        );
    };
    let path_and_query = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut upstream = shared
        .client
        .request(parts.method.clone(), format!("{}{path_and_query}", shared.upstream))
        .bearer_auth(&shared.token)
        // Watches stay open for minutes; the client's own timeout is for the others.
        .timeout(Duration::from_secs(3600))
        .body(body);
    for (name, value) in &parts.headers {
        if !NOT_FORWARDED.contains(name) {
            upstream = upstream.header(name, value);
        }
    }
    let answer = match upstream.send().await {
        Ok(answer) => answer,
        Err(error) => return status(StatusCode::BAD_GATEWAY, "InternalError", &format!("upstream: {error}")),
    };

    let mut response = Response::builder().status(answer.status().as_u16());
    for (name, value) in answer.headers() {
        if !NOT_FORWARDED.contains(name) {
            response = response.header(name, value);
        }
    }
    let mut dropped = shared.watches_dropped.subscribe();
    dropped.borrow_and_update();
    let ended = async move {
        // A stopped proxy ends its streams too.
        let _ = dropped.changed().await;
    };
    let stream = answer.bytes_stream().take_until(ended);
    response.body(Body::from_stream(stream)).unwrap_or_else(|error| {
        status(StatusCode::BAD_GATEWAY, "InternalError", &format!("building the answer: {error}"))
    })
}
