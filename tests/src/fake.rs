//! An in-process "registry" for faults a real one cannot produce on demand: fixed statuses
//! (403, 429, 5xx), garbage bodies, and stalls. Every connection is answered the same way and
//! counted; the listener stops when the value is dropped.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::Result;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    task::JoinHandle,
};

#[derive(Clone, Debug)]
pub enum Behaviour {
    /// Answer every request with this status, extra headers and body.
    Respond { status: u16, headers: Vec<(String, String)>, body: String },
    /// Accept the connection, read the request, never answer (bounded by `limit`).
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
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Waited before answering.
    pub delay: Duration,
}

impl Route {
    pub fn new(path_contains: &str, status: u16, body: &str) -> Route {
        Route { path_contains: path_contains.into(), status, body: body.into(), ..Route::default() }
    }
}

pub struct FakeRegistry {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl FakeRegistry {
    pub async fn start(behaviour: Behaviour) -> Result<FakeRegistry> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let behaviour = behaviour.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 16 * 1024];
                    let mut read = 0;
                    // Read up to the end of the headers; requests here have no body.
                    while read < buffer.len() {
                        match stream.read(&mut buffer[read..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => read += n,
                        }
                        if buffer[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                    match behaviour {
                        Behaviour::Stall { limit } => tokio::time::sleep(limit).await,
                        Behaviour::StallMidBody { declared, limit } => {
                            let head = format!(
                                "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {declared}\r\n\r\n{{\"schemaVersion\":2,"
                            );
                            let _ = stream.write_all(head.as_bytes()).await;
                            tokio::time::sleep(limit).await;
                        }
                        Behaviour::RedirectLoop => {
                            let request = String::from_utf8_lossy(&buffer[..read]).to_string();
                            let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
                            let response = format!(
                                "HTTP/1.1 302 Found\r\nLocation: {path}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            );
                            let _ = stream.write_all(response.as_bytes()).await;
                            let _ = stream.shutdown().await;
                        }
                        Behaviour::Respond { status, headers, body } => {
                            respond(&mut stream, status, &headers, &body).await;
                        }
                        Behaviour::Routes(routes) => {
                            let request = String::from_utf8_lossy(&buffer[..read]).to_string();
                            let mut words = request.split_whitespace();
                            let method = words.next().unwrap_or_default();
                            let path = words.next().unwrap_or("/");
                            let route = routes.iter().find(|route| {
                                (route.method.is_empty() || route.method == method)
                                    && path.contains(&route.path_contains)
                            });
                            let Some(route) = route else {
                                respond(&mut stream, 404, &[], "").await;
                                return;
                            };
                            tokio::time::sleep(route.delay).await;
                            let mut headers = route.headers.clone();
                            headers.push(("Content-Type".into(), "application/json".into()));
                            // A HEAD answer declares the body's length without sending it.
                            let body = if method == "HEAD" { "" } else { route.body.as_str() };
                            respond(&mut stream, route.status, &headers, body).await;
                        }
                    }
                });
            }
        });
        Ok(FakeRegistry { addr, requests, task })
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn respond(stream: &mut tokio::net::TcpStream, status: u16, headers: &[(String, String)], body: &str) {
    let mut response =
        format!("HTTP/1.1 {status} Fake\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for (name, value) in headers {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    response.push_str("\r\n");
    response.push_str(body);
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// A port nothing listens on (bound, then released).
pub async fn closed_port() -> Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    drop(listener);
    Ok(addr.to_string())
}
