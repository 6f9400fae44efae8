//! A minimal registry for filling pullguard's cache fast: HTTP/1.1 with keep-alive, where every
//! `/v2/<repo>/manifests/<reference>` is one fixed single-platform OCI manifest (with its
//! `Docker-Content-Digest` and `Content-Type`) and `/v2/<repo>/blobs/<config digest>` its config.
//! Any repository and tag exists, so 100,000 distinct images cost no seeding. The real registry
//! would spend minutes on that; this answers in microseconds. Stops on drop.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use anyhow::Result;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::{JoinHandle, JoinSet},
};

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// Requests are small GETs; anything with a header block larger than this is not ours.
const MAX_HEADER_BYTES: usize = 64 * 1024;

struct Content {
    manifest: Vec<u8>,
    manifest_digest: String,
    config: Vec<u8>,
    config_digest: String,
}

pub struct FakeRegistry {
    addr: SocketAddr,
    requests: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl FakeRegistry {
    pub async fn start() -> Result<FakeRegistry> {
        let content = Arc::new(content()?);
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let requests = Arc::new(AtomicU64::new(0));
        let counter = requests.clone();
        let task = tokio::spawn(async move {
            // Owned here, so aborting the listener task also closes every connection.
            let mut connections = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                connections.spawn(serve(stream, content.clone(), counter.clone()));
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(FakeRegistry { addr, requests, task })
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn content() -> Result<Content> {
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [sha256(b"layer")]},
    }))?;
    let config_digest = sha256(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": config_digest, "size": config.len()},
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": sha256(b"layer.tar.gz"),
            "size": 31_457_280,
        }],
    }))?;
    let manifest_digest = sha256(&manifest);
    Ok(Content { manifest, manifest_digest, config, config_digest })
}

async fn serve(mut stream: TcpStream, content: Arc<Content>, requests: Arc<AtomicU64>) {
    let _ = stream.set_nodelay(true);
    let mut buffer: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        // Every complete request in the buffer is answered before reading more (keep-alive).
        while let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
            buffer.drain(..end + 4);
            requests.fetch_add(1, Ordering::Relaxed);
            let response = answer(&head, &content);
            if stream.write_all(&response).await.is_err() {
                return;
            }
        }
        if buffer.len() > MAX_HEADER_BYTES {
            return;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
        }
    }
}

fn answer(head: &str, content: &Content) -> Vec<u8> {
    let mut request_line = head.lines().next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default();
    let path = request_line.next().unwrap_or_default();
    let path = path.split('?').next().unwrap_or_default();
    let with_body = method != "HEAD";
    let rest = path.strip_prefix("/v2/").unwrap_or_default();
    if path == "/v2/" || path == "/v2" {
        return response(200, "application/json", None, b"{}", with_body);
    }
    if rest.contains("/manifests/") {
        return response(200, MANIFEST_TYPE, Some(&content.manifest_digest), &content.manifest, with_body);
    }
    if let Some((_, digest)) = rest.split_once("/blobs/")
        && digest == content.config_digest
    {
        return response(200, "application/octet-stream", Some(digest), &content.config, with_body);
    }
    let error = br#"{"errors":[{"code":"NOT_FOUND","message":"not served by the benchmark registry"}]}"#;
    response(404, "application/json", None, error, with_body)
}

fn response(status: u16, content_type: &str, digest: Option<&str>, body: &[u8], with_body: bool) -> Vec<u8> {
    let reason = if status == 200 { "OK" } else { "Not Found" };
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Docker-Distribution-Api-Version: registry/2.0\r\n",
        body.len()
    );
    if let Some(digest) = digest {
        head.push_str(&format!("Docker-Content-Digest: {digest}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    if with_body {
        bytes.extend_from_slice(body);
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_carry_their_digest_and_blobs_their_config() {
        let content = content().unwrap();
        let manifest = String::from_utf8(answer("GET /v2/a/b/manifests/t1 HTTP/1.1", &content)).unwrap();
        assert!(manifest.contains(&format!("Docker-Content-Digest: {}", content.manifest_digest)));
        assert!(manifest.contains(MANIFEST_TYPE));
        assert!(manifest.ends_with(std::str::from_utf8(&content.manifest).unwrap()));
        let head = answer("HEAD /v2/a/manifests/t1 HTTP/1.1", &content);
        assert!(String::from_utf8(head).unwrap().ends_with("\r\n\r\n"));
        let blob = format!("GET /v2/a/blobs/{} HTTP/1.1", content.config_digest);
        assert!(String::from_utf8(answer(&blob, &content)).unwrap().starts_with("HTTP/1.1 200"));
        assert!(
            String::from_utf8(answer("GET /v2/a/blobs/sha256:00 HTTP/1.1", &content))
                .unwrap()
                .starts_with("HTTP/1.1 404")
        );
    }
}
