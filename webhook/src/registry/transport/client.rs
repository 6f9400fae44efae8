//! The HTTP client a registry is asked with: rustls with the web's roots plus the registry's own
//! CA file, the address policy in its resolver, and bodies read with a size limit.

use std::{path::PathBuf, sync::Arc, time::Duration};

use rustls::pki_types::{CertificateDer, pem::PemObject};

use crate::registry::address::{AddressPolicy, GuardedResolver};

#[derive(Debug, thiserror::Error)]
pub enum TransportBuildError {
    #[error("cannot read CA file {path}: {source}")]
    ReadCa {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("CA file {path} holds no usable PEM certificate")]
    BadCa { path: PathBuf },
    #[error("cannot build the TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

const USER_AGENT: &str = concat!("pullguard/", env!("CARGO_PKG_VERSION"));

pub enum ReadError {
    TooLarge,
    Http(reqwest::Error),
}

/// Reads a body but never more than `limit` bytes: a registry must not make us buffer gigabytes.
pub async fn read_limited(mut response: reqwest::Response, limit: u64) -> Result<Vec<u8>, ReadError> {
    if response.content_length().is_some_and(|length| length > limit) {
        return Err(ReadError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(ReadError::Http)? {
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(ReadError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

pub fn build_client(
    ca_file: Option<&PathBuf>,
    timeout: Duration,
    addresses: &Arc<AddressPolicy>,
) -> Result<reqwest::Client, TransportBuildError> {
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .map_err(|source| TransportBuildError::ReadCa { path: path.clone(), source })?;
        let mut added = 0;
        for certificate in CertificateDer::pem_slice_iter(&pem).flatten() {
            if roots.add(certificate).is_ok() {
                added += 1;
            }
        }
        if added == 0 {
            return Err(TransportBuildError::BadCa { path: path.clone() });
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .user_agent(USER_AGENT)
        .connect_timeout(timeout)
        .timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .redirect(reqwest::redirect::Policy::limited(5))
        .dns_resolver(Arc::new(GuardedResolver::new(addresses.clone())))
        .build()?)
}

#[cfg(test)]
mod tests {
    use pullguard_core::config::Config;

    use super::*;

    fn build(ca_file: Option<&PathBuf>) -> Result<reqwest::Client, TransportBuildError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let addresses = Arc::new(AddressPolicy::from_config(&Config::default()));
        build_client(ca_file, Duration::from_secs(1), &addresses)
    }

    /// A registry's CA file that cannot be used stops start-up with its path named.
    #[test]
    fn ca_files_are_read_or_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        assert!(
            matches!(build(Some(&missing)), Err(TransportBuildError::ReadCa { path, .. }) if path == missing)
        );
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").unwrap();
        assert!(matches!(build(Some(&garbage)), Err(TransportBuildError::BadCa { path }) if path == garbage));
        let ca = dir.path().join("ca.pem");
        let material = crate::server::tls::self_signed(&["localhost".to_string()]).unwrap();
        std::fs::write(&ca, material.ca_pem).unwrap();
        assert!(build(Some(&ca)).is_ok());
        assert!(build(None).is_ok());
    }

    fn response(body: &'static str) -> reqwest::Response {
        reqwest::Response::from(http::Response::new(body))
    }

    /// A body that states no length, as a chunked answer does.
    struct Chunked(std::collections::VecDeque<&'static str>);

    impl http_body::Body for Chunked {
        type Data = &'static [u8];
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
            let chunk = self.get_mut().0.pop_front();
            std::task::Poll::Ready(chunk.map(|chunk| Ok(http_body::Frame::data(chunk.as_bytes()))))
        }
    }

    fn streamed(chunks: &'static [&'static str]) -> reqwest::Response {
        let body = reqwest::Body::wrap(Chunked(chunks.iter().copied().collect()));
        reqwest::Response::from(http::Response::new(body))
    }

    /// Refused before reading when the length is known, while reading when it is not.
    #[tokio::test]
    async fn bodies_are_read_up_to_the_limit() {
        assert_eq!(read_limited(response("12345"), 5).await.ok(), Some(b"12345".to_vec()));
        assert!(matches!(read_limited(response("123456"), 5).await, Err(ReadError::TooLarge)));
        assert_eq!(read_limited(response(""), 0).await.ok(), Some(Vec::new()));
        assert_eq!(read_limited(streamed(&["12", "345"]), 5).await.ok(), Some(b"12345".to_vec()));
        assert!(matches!(read_limited(streamed(&["123", "456"]), 5).await, Err(ReadError::TooLarge)));
    }
}
