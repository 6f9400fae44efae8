//! A throw-away certificate authority for TLS in tests.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, date_time_ymd,
};

/// A self-signed CA that issues server certificates.
pub struct TestCa {
    /// The CA certificate, PEM encoded: what clients must trust.
    pub ca_pem: String,
    /// The CA's private key (PKCS#8 PEM), for programs that sign with it (a controller
    /// manager's certificate signer).
    pub key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A leaf certificate and its private key, both PEM encoded.
#[derive(Clone, Debug)]
pub struct ServerCert {
    pub cert_pem: String,
    /// PKCS#8 private key.
    pub key_pem: String,
}

impl TestCa {
    pub fn new(common_name: &str) -> Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        set_validity(&mut params);
        let key = KeyPair::generate().context("generating the CA key")?;
        let cert = params.self_signed(&key).context("self-signing the CA")?;
        Ok(Self { ca_pem: cert.pem(), key_pem: key.serialize_pem(), issuer: Issuer::new(params, key) })
    }

    /// Issues a v3 server leaf: Go and rustls both refuse a CA certificate (or a CN without
    /// SAN) as a serving certificate, so this is `CA:FALSE` with explicit SANs.
    ///
    /// Each SAN becomes an IP SAN when it parses as an IP address, a DNS SAN otherwise.
    /// Returns `(cert_pem, key_pem)`.
    pub fn issue_server(&self, sans: &[&str]) -> Result<(String, String)> {
        let cert = self.issue_server_cert(sans)?;
        Ok((cert.cert_pem, cert.key_pem))
    }

    /// Same as [`TestCa::issue_server`], as a struct with file helpers.
    pub fn issue_server_cert(&self, sans: &[&str]) -> Result<ServerCert> {
        anyhow::ensure!(!sans.is_empty(), "a server certificate needs at least one SAN");
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans
            .iter()
            .map(|san| match san.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName((*san).to_owned().try_into()?)),
            })
            .collect::<Result<Vec<_>, rcgen::Error>>()?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, sans[0]);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params);
        let key = KeyPair::generate().context("generating the leaf key")?;
        let cert = params.signed_by(&key, &self.issuer).context("signing the leaf")?;
        Ok(ServerCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// Writes the CA certificate as `<dir>/ca.crt` and returns that path.
    ///
    /// Keep `dir` free of other files if it is handed to skopeo/containers as a `--cert-dir`:
    /// a `*.key` there is taken for a client key.
    pub fn write_to(&self, dir: &Path) -> Result<PathBuf> {
        write_file(dir, "ca.crt", &self.ca_pem)
    }
}

impl ServerCert {
    /// Writes `<dir>/<stem>.crt` and `<dir>/<stem>.key`, returning `(cert_path, key_path)`.
    pub fn write_to(&self, dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf)> {
        let cert = write_file(dir, &format!("{stem}.crt"), &self.cert_pem)?;
        let key = write_file(dir, &format!("{stem}.key"), &self.key_pem)?;
        Ok((cert, key))
    }
}

// Fixed dates rather than rcgen's 1975..4096 default: some verifiers choke on far-future
// GeneralizedTime, and tests must not depend on the wall clock being "reasonable".
fn set_validity(params: &mut CertificateParams) {
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = date_time_ymd(2099, 12, 31);
}

fn write_file(dir: &Path, name: &str, contents: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(name);
    std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
