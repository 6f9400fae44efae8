//! An in-process "registry" for faults a real one cannot produce on demand: fixed statuses
//! (403, 429, 5xx), garbage bodies, stalls, canned routes. Every request is counted; the server
//! stops when the value is dropped.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::Result;
use axum::{
    Router,
    body::{Body, Bytes},
    extract::State,
    http::{HeaderName, HeaderValue, Method, StatusCode, Uri, header},
    response::Response,
};
use futures::stream;
use tokio::net::TcpListener;

use crate::loopback::{LoopbackServer, Stopping};

#[derive(Clone, Debug)]
pub enum Behaviour {
    /// Answer every request with this status, extra headers and body.
    Respond { status: u16, headers: Vec<(String, String)>, body: String },
    /// Read the request and answer nothing for `limit` (longer than any deadline under test),
    /// then 504, so that a forgotten fake ends instead of holding a connection forever.
    Stall { limit: Duration },
    /// Send headers promising `declared` bytes, then part of the body, then go silent.
    StallMidBody { declared: usize, limit: Duration },
    /// Redirect every request to itself.
    RedirectLoop,
    /// Answer each request by the first route whose text its path contains; 404 otherwise.
    Routes(Vec<Route>),
}

/// One canned answer of `Behaviour::Routes`.
#[derive(Clone, Debug, Default)]
pub struct Route {
    /// Any method when empty.
    pub method: String,
    pub path_contains: String,
    pub status: u16,
    /// `Content-Type: application/json` unless these name another.
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Waited before answering.
    pub delay: Duration,
}

impl Route {
    pub fn new(path_contains: &str, status: u16, body: &str) -> Route {
        Route { path_contains: path_contains.into(), status, body: body.into(), ..Route::default() }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Route {
        self.headers.push((name.into(), value.into()));
        self
    }

    fn matches(&self, method: &Method, path: &str) -> bool {
        (self.method.is_empty() || self.method == method.as_str()) && path.contains(&self.path_contains)
    }
}

struct Fake {
    behaviour: Behaviour,
    requests: AtomicUsize,
    stopping: Stopping,
}

pub struct FakeRegistry {
    server: LoopbackServer,
    fake: Arc<Fake>,
}

impl FakeRegistry {
    pub async fn start(behaviour: Behaviour) -> Result<FakeRegistry> {
        let (server, fake) = LoopbackServer::start_with(|stopping| {
            let fake = Arc::new(Fake { behaviour, requests: AtomicUsize::new(0), stopping });
            (Router::new().fallback(answer).with_state(fake.clone()), fake)
        })
        .await?;
        Ok(FakeRegistry { server, fake })
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.server.addr().to_string()
    }

    pub fn requests(&self) -> usize {
        self.fake.requests.load(Ordering::SeqCst)
    }
}

async fn answer(State(fake): State<Arc<Fake>>, method: Method, uri: Uri) -> Response {
    fake.requests.fetch_add(1, Ordering::SeqCst);
    match &fake.behaviour {
        Behaviour::Respond { status, headers, body } => respond(*status, headers, body.clone()),
        Behaviour::Stall { limit } => {
            fake.stopping.clone().sleep(*limit).await;
            respond(504, &[], String::new())
        }
        Behaviour::StallMidBody { declared, limit } => stall_mid_body(*declared, *limit, &fake.stopping),
        Behaviour::RedirectLoop => {
            let target = uri.path_and_query().map_or_else(|| uri.path().to_owned(), ToString::to_string);
            respond(302, &[("Location".into(), target)], String::new())
        }
        Behaviour::Routes(routes) => {
            let Some(route) = routes.iter().find(|route| route.matches(&method, uri.path())) else {
                return respond(404, &[], String::new());
            };
            tokio::time::sleep(route.delay).await;
            let mut headers = route.headers.clone();
            if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("content-type")) {
                headers.push(("Content-Type".into(), "application/json".into()));
            }
            // For HEAD, axum declares the body's length and then drops the body, as a registry
            // declares the manifest's length in answer to HEAD.
            respond(route.status, &headers, route.body.clone())
        }
    }
}

fn respond(status: u16, headers: &[(String, String)], body: String) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

// Broken bytes on purpose: a `Content-Length` the body never reaches, and a body that stops
// mid-way until the limit (or the server's stop) cuts the connection.
fn stall_mid_body(declared: usize, limit: Duration, stopping: &Stopping) -> Response {
    let stopping = stopping.clone();
    let start = stream::once(async { Ok::<_, std::io::Error>(Bytes::from_static(b"{\"schemaVersion\":2,")) });
    let silence = stream::once(async move {
        stopping.sleep(limit).await;
        Err(std::io::Error::other("the fake registry stalled mid-body"))
    });
    let mut response = Response::new(Body::from_stream(futures::StreamExt::chain(start, silence)));
    let headers = response.headers_mut();
    headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/vnd.oci.image.manifest.v1+json"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(declared));
    response
}

/// A port nothing listens on (bound, then released).
pub async fn closed_port() -> Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    drop(listener);
    Ok(addr.to_string())
}
