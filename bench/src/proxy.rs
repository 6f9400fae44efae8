//! A TCP proxy in front of the registry that holds every chunk the client sends for a fixed
//! delay before passing it on: a registry that is `delay` further away per request (HTTP/1.1
//! clients send each request in one write and wait for its answer, so one chunk is one request).
//! Answers flow back untouched. Connections end with either side; everything stops on drop.

use std::{net::SocketAddr, time::Duration};

use anyhow::Result;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::{JoinHandle, JoinSet},
};

pub struct DelayProxy {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl DelayProxy {
    pub async fn start(upstream: SocketAddr, delay: Duration) -> Result<DelayProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            // Owned by this task, so aborting it on drop also ends every open connection.
            let mut connections = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                connections.spawn(relay(client, upstream, delay));
                // Reap finished connections so a long run does not accumulate them.
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(DelayProxy { addr, task })
    }

    /// `127.0.0.1:PORT`, for image references and the registry settings.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(client: TcpStream, upstream: SocketAddr, delay: Duration) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    // Without this, Nagle would add its own delay to small writes and blur the injected one.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let requests = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let read = client_read.read(&mut buffer).await?;
            if read == 0 {
                return server_write.shutdown().await;
            }
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            server_write.write_all(&buffer[..read]).await?;
        }
    };
    let answers = async move {
        tokio::io::copy(&mut server_read, &mut client_write).await?;
        client_write.shutdown().await
    };
    // Either side failing ends the connection; there is nobody to report to.
    let _: std::io::Result<((), ())> = tokio::try_join!(requests, answers);
}
