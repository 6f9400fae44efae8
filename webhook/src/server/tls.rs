//! Serving certificate: loaded and checked before binding, served through a resolver that can
//! swap certificates atomically (so a rotated Secret never needs a restart), or generated at
//! start for the zero-set-up default.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::{
    ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key")]
    NoKey { path: PathBuf },
    #[error("private key {path} is not usable: {source}")]
    BadKey {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("certificate and private key do not belong together: {0}")]
    Mismatch(rustls::Error),
    #[error("cannot generate the self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The certificate currently served; readers never block a swap for long.
#[derive(Debug)]
pub struct CertStore {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertStore {
    pub fn new(key: CertifiedKey) -> CertStore {
        CertStore { current: RwLock::new(Arc::new(key)) }
    }

    pub fn replace(&self, key: CertifiedKey) {
        if let Ok(mut current) = self.current.write() {
            *current = Arc::new(key);
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|current| current.clone())
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS 1.2+ with ALPN for HTTP/2 (what the API server speaks) and HTTP/1.1.
pub fn server_config(store: Arc<CertStore>) -> Result<ServerConfig, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Reads a PEM chain and key and proves they match before anything is served.
pub fn load_pem_files(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, TlsError> {
    let cert_pem = std::fs::read(cert_path)
        .map_err(|source| TlsError::Read { path: cert_path.to_path_buf(), source })?;
    let key_pem =
        std::fs::read(key_path).map_err(|source| TlsError::Read { path: key_path.to_path_buf(), source })?;
    certified_key(&cert_pem, &key_pem, cert_path, key_path)
}

pub fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert_pem).filter_map(Result::ok).collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: cert_path.to_path_buf() });
    }
    let key: PrivateKeyDer<'static> = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|_| TlsError::NoKey { path: key_path.to_path_buf() })?;
    let signing_key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|source| TlsError::BadKey { path: key_path.to_path_buf(), source })?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(TlsError::Mismatch)?;
    Ok(certified)
}

/// A fresh CA and a serving certificate it signed, for `serve` without `--tls-cert`.
pub struct SelfSigned {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

pub fn self_signed(sans: &[String]) -> Result<SelfSigned, TlsError> {
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name.push(DnType::CommonName, "pullguard self-signed CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, "pullguard");
    params.subject_alt_names = sans
        .iter()
        .map(|san| match san.trim_matches(|c| c == '[' || c == ']').parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => san.clone().try_into().map(SanType::DnsName),
        })
        .collect::<Result<_, rcgen::Error>>()?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(SelfSigned { ca_pem: ca_cert.pem(), cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// SANs of the generated certificate: loopback names plus whatever the operator adds.
pub fn default_sans(extra: &[String]) -> Vec<String> {
    let mut sans: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
    for san in extra {
        if !sans.contains(san) {
            sans.push(san.clone());
        }
    }
    sans
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_material_loads_and_matches() {
        let material = self_signed(&default_sans(&["pullguard.pullguard.svc".into()])).unwrap();
        let key = certified_key(
            material.cert_pem.as_bytes(),
            material.key_pem.as_bytes(),
            Path::new("cert"),
            Path::new("key"),
        )
        .unwrap();
        assert_eq!(key.cert.len(), 1);
        assert!(material.ca_pem.contains("BEGIN CERTIFICATE"));
    }

    #[test]
    fn mismatched_or_missing_material_is_refused() {
        let one = self_signed(&default_sans(&[])).unwrap();
        let two = self_signed(&default_sans(&[])).unwrap();
        let error =
            certified_key(one.cert_pem.as_bytes(), two.key_pem.as_bytes(), Path::new("c"), Path::new("k"))
                .unwrap_err();
        assert!(matches!(error, TlsError::Mismatch(_)), "{error}");
        assert!(matches!(
            certified_key(b"", one.key_pem.as_bytes(), Path::new("c"), Path::new("k")),
            Err(TlsError::NoCertificate { .. })
        ));
        assert!(matches!(
            certified_key(one.cert_pem.as_bytes(), b"nope", Path::new("c"), Path::new("k")),
            Err(TlsError::NoKey { .. })
        ));
    }
}
