//! Serving-certificate hot reload. Mounted Secrets change by a `..data` symlink swap, which a
//! watch on the file path misses, so the files are polled: re-read, hashed, and on a change
//! validated and swapped in. A broken new pair is logged and the last good certificate stays.

use std::{path::PathBuf, sync::Arc, time::Duration};

use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::tls::{CertStore, certified_key};
use crate::metrics::{Metrics, ReloadLabels};

/// What a reload attempt did, for logs, metrics and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    Unchanged,
    Swapped { fingerprint: String },
    Rejected { reason: String },
}

pub struct CertReloader {
    cert_path: PathBuf,
    key_path: PathBuf,
    store: Arc<CertStore>,
    last_seen: Option<[u8; 32]>,
    metrics: Option<Arc<Metrics>>,
}

impl CertReloader {
    /// `loaded` is the pair already being served, so the first poll does not swap it again.
    pub fn new(cert_path: PathBuf, key_path: PathBuf, store: Arc<CertStore>) -> CertReloader {
        let mut reloader = CertReloader { cert_path, key_path, store, last_seen: None, metrics: None };
        reloader.last_seen = reloader.read().ok().map(|(_, _, hash)| hash);
        reloader
    }

    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> CertReloader {
        self.metrics = Some(metrics);
        self
    }

    fn count(&self, result: &str) {
        if let Some(metrics) = &self.metrics {
            metrics.certificate_reloads.get_or_create(&ReloadLabels { result: result.into() }).inc();
        }
    }

    fn read(&self) -> std::io::Result<(Vec<u8>, Vec<u8>, [u8; 32])> {
        let cert = std::fs::read(&self.cert_path)?;
        let key = std::fs::read(&self.key_path)?;
        let mut hasher = Sha256::new();
        hasher.update(&cert);
        hasher.update([0]);
        hasher.update(&key);
        Ok((cert, key, hasher.finalize().into()))
    }

    /// One poll: swap in a changed, valid pair; keep the current one otherwise.
    pub fn poll(&mut self) -> Reload {
        let (cert, key, hash) = match self.read() {
            Ok(read) => read,
            // Mid-swap a path can vanish for an instant; the next poll sees the new files.
            Err(error) => {
                return Reload::Rejected { reason: format!("cannot read the certificate files: {error}") };
            }
        };
        if self.last_seen == Some(hash) {
            return Reload::Unchanged;
        }
        self.last_seen = Some(hash);
        match certified_key(&cert, &key, &self.cert_path, &self.key_path) {
            Ok(certified) => {
                let fingerprint = certified
                    .cert
                    .first()
                    .map(|leaf| hex::encode(&Sha256::digest(leaf.as_ref())[..8]))
                    .unwrap_or_default();
                self.store.replace(certified);
                Reload::Swapped { fingerprint }
            }
            Err(error) => Reload::Rejected { reason: error.to_string() },
        }
    }

    /// Polls forever on the runtime; the task ends with the process.
    pub fn spawn(mut self, interval: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                match self.poll() {
                    Reload::Unchanged => {}
                    Reload::Swapped { fingerprint } => {
                        self.count("swapped");
                        info!(cert = %self.cert_path.display(), %fingerprint, "serving certificate reloaded")
                    }
                    Reload::Rejected { reason } => {
                        self.count("rejected");
                        warn!(cert = %self.cert_path.display(), %reason, "new serving certificate rejected; keeping the current one")
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::tls::{default_sans, self_signed};

    #[test]
    fn swaps_good_pairs_and_keeps_the_last_good_one() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let first = self_signed(&default_sans(&[])).unwrap();
        std::fs::write(&cert, &first.cert_pem).unwrap();
        std::fs::write(&key, &first.key_pem).unwrap();
        let store = Arc::new(CertStore::new(
            certified_key(first.cert_pem.as_bytes(), first.key_pem.as_bytes(), &cert, &key).unwrap(),
        ));
        let mut reloader = CertReloader::new(cert.clone(), key.clone(), store);
        assert_eq!(reloader.poll(), Reload::Unchanged);

        let second = self_signed(&default_sans(&[])).unwrap();
        std::fs::write(&cert, &second.cert_pem).unwrap();
        std::fs::write(&key, &second.key_pem).unwrap();
        assert!(matches!(reloader.poll(), Reload::Swapped { .. }));
        assert_eq!(reloader.poll(), Reload::Unchanged);

        std::fs::write(&key, &first.key_pem).unwrap();
        assert!(matches!(reloader.poll(), Reload::Rejected { .. }), "mismatched pair");
        std::fs::write(&cert, "garbage").unwrap();
        assert!(matches!(reloader.poll(), Reload::Rejected { .. }));
        std::fs::remove_file(&cert).unwrap();
        assert!(matches!(reloader.poll(), Reload::Rejected { .. }));
    }
}
