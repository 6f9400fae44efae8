//! Serves an axum router on `127.0.0.1:<free port>` until the handle is dropped: the in-process
//! token server and fake registries run on it.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Resolves once the server is dropped. Handlers that hold a request on purpose (stalls) wait
/// on it too, because a graceful shutdown waits for every request in flight.
#[derive(Clone, Debug)]
pub struct Stopping(watch::Receiver<bool>);

impl Stopping {
    pub async fn wait(mut self) {
        // An error means the server handle is gone, which is a stop as well.
        let _ = self.0.wait_for(|stopped| *stopped).await;
    }

    /// Sleeps for `limit`, or less if the server stops meanwhile.
    pub async fn sleep(self, limit: Duration) {
        tokio::select! {
            () = tokio::time::sleep(limit) => {}
            () = self.wait() => {}
        }
    }
}

/// A running server; stops accepting and ends its connections when dropped.
#[derive(Debug)]
pub struct LoopbackServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
}

impl LoopbackServer {
    /// Binds a free loopback port and serves `router`.
    pub async fn start(router: Router) -> Result<Self> {
        Ok(Self::start_with(|_| (router, ())).await?.0)
    }

    /// Like [`LoopbackServer::start`], for a router whose handlers bound their stalls by the
    /// [`Stopping`] they are given; `build` also returns what the caller keeps of its state.
    pub async fn start_with<T>(build: impl FnOnce(Stopping) -> (Router, T)) -> Result<(Self, T)> {
        let listener = TcpListener::bind("127.0.0.1:0").await.context("binding a loopback port")?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let (router, kept) = build(Stopping(stopped.clone()));
        tokio::spawn(async move {
            let shutdown = Stopping(stopped).wait();
            // A serve error ends a test's server early; the test then fails on its requests.
            let _ = axum::serve(listener, router).with_graceful_shutdown(shutdown).await;
        });
        Ok((Self { addr, stop }, kept))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}
