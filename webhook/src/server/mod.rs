//! The webhook's HTTPS listener (`POST /validate`) and the plain-HTTP admin listener
//! (`/livez`, `/readyz`).

pub mod reload;
pub mod tls;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, RawQuery, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use axum_server::{
    Handle,
    accept::NoDelayAcceptor,
    tls_rustls::{RustlsAcceptor, RustlsConfig},
};
use tokio::time::Instant;
use tracing::{info, warn};

use self::tls::CertStore;
use crate::{
    admission::{self, Admission, ReviewAnswer, ReviewRequest},
    metrics::{AdmissionLabels, Metrics},
};

/// The API server caps request bodies near 3 MiB; anything larger is not a review it sent.
pub const MAX_BODY_BYTES: usize = 3 << 20;

/// The API server sends its headers at once; anything slower is not the API server.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("server stopped: {0}")]
    Serve(#[source] std::io::Error),
}

#[derive(Clone)]
struct WebhookState {
    admission: Arc<Admission>,
    metrics: Arc<Metrics>,
}

pub fn router(admission: Arc<Admission>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/validate", post(validate))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(WebhookState { admission, metrics })
}

async fn validate(State(state): State<WebhookState>, RawQuery(query): RawQuery, body: Bytes) -> Response {
    let started = Instant::now();
    // The API server says how long it waits (`?timeout=10s`, the webhook's timeoutSeconds).
    let caller_timeout = query.as_deref().and_then(admission::timeout::from_query);
    let request = match ReviewRequest::decode(&body) {
        Ok(request) => request,
        Err(error) => {
            warn!(%error, bytes = body.len(), "undecodable admission review");
            state
                .metrics
                .admissions
                .get_or_create(&AdmissionLabels {
                    kind: "".into(),
                    operation: "".into(),
                    verdict: "invalid".into(),
                })
                .inc();
            let answer = ReviewAnswer::invalid(&error.to_string());
            return json_answer(StatusCode::BAD_REQUEST, &answer);
        }
    };
    let (review, outcome) = state.admission.review(&request, caller_timeout).await;
    let elapsed = started.elapsed();
    admission::log_outcome(&request, &outcome, elapsed);
    admission::record_outcome(&state.metrics, &request, &outcome, elapsed);
    json_answer(StatusCode::OK, &review)
}

/// The answer as JSON, written once into a buffer of about its size (axum's `Json` starts at
/// 128 bytes and grows, copying, for every answer with findings).
fn json_answer(status: StatusCode, answer: &ReviewAnswer) -> Response {
    let mut body = Vec::with_capacity(answer.size_hint());
    match serde_json::to_writer(&mut body, answer) {
        Ok(()) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        // Not reachable: every field is a string, bool, number or map with string keys.
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

/// Liveness says the process answers; readiness says it can judge admissions.
pub fn admin_router(ready: Arc<AtomicBool>, metrics: Arc<Metrics>) -> Router {
    let metrics_route = get(move || {
        let metrics = metrics.clone();
        async move {
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )],
                metrics.encode(),
            )
        }
    });
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/metrics", metrics_route)
        .route(
            "/readyz",
            get(|State(ready): State<Arc<AtomicBool>>| async move {
                if ready.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                }
            }),
        )
        .with_state(ready)
}

/// A running pair of listeners; dropping it does not stop them, `shutdown` does.
pub struct Running {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub certs: Arc<CertStore>,
    handle: Handle<SocketAddr>,
    admin_handle: Handle<SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<Result<(), std::io::Error>>>,
}

impl Running {
    pub fn shutdown(&self) {
        // In-flight admissions finish; the API server retries nothing, so cutting them would deny by timeout.
        self.handle.graceful_shutdown(Some(Duration::from_secs(10)));
        self.admin_handle.graceful_shutdown(Some(Duration::from_secs(1)));
    }

    /// Waits until both listeners stop (after `shutdown`, or on a fatal error).
    pub async fn wait(self) -> Result<(), ServerError> {
        for task in self.tasks {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => return Err(ServerError::Serve(error)),
                Err(join) => return Err(ServerError::Serve(std::io::Error::other(join.to_string()))),
            }
        }
        Ok(())
    }
}

fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, ServerError> {
    let listener = std::net::TcpListener::bind(addr).map_err(|source| ServerError::Bind { addr, source })?;
    listener.set_nonblocking(true).map_err(|source| ServerError::Bind { addr, source })?;
    Ok(listener)
}

/// Binds both listeners (so a port conflict fails start-up, not the first request) and serves.
pub fn start(
    app_router: Router,
    admin: Router,
    listen: SocketAddr,
    admin_listen: SocketAddr,
    certs: Arc<CertStore>,
) -> Result<Running, ServerError> {
    let listener = bind(listen)?;
    let admin_listener = bind(admin_listen)?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind { addr: listen, source })?;
    let admin_addr =
        admin_listener.local_addr().map_err(|source| ServerError::Bind { addr: admin_listen, source })?;
    let rustls = RustlsConfig::from_config(Arc::new(tls::server_config(certs.clone())?));
    let handle = Handle::new();
    let admin_handle = Handle::new();
    let mut server = axum_server::from_tcp_rustls(listener, rustls)
        .map_err(|source| ServerError::Bind { addr, source })?
        // Nagle would hold each small response back for the peer's delayed ACK: tens of
        // milliseconds per admission on an otherwise idle keep-alive connection.
        .map(|tls: RustlsAcceptor| tls.acceptor(NoDelayAcceptor))
        .handle(handle.clone());
    // A client that trickles its headers (slowloris) is cut off instead of holding a connection.
    server.http_builder().http1().header_read_timeout(HEADER_READ_TIMEOUT);
    let admin_server = axum_server::from_tcp(admin_listener)
        .map_err(|source| ServerError::Bind { addr: admin_addr, source })?
        .handle(admin_handle.clone());
    let tasks = vec![
        tokio::spawn(server.serve(app_router.into_make_service())),
        tokio::spawn(admin_server.serve(admin.into_make_service())),
    ];
    info!(%addr, %admin_addr, "serving");
    Ok(Running { addr, admin_addr, certs, handle, admin_handle, tasks })
}
