//! What a command can fail with; `main` prints it and exits 2.

use std::path::PathBuf;

use super::manifests;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] pullguard_core::config::ConfigError),
    #[error("docker config {path}: {message}")]
    DockerConfig { path: PathBuf, message: String },
    #[error(transparent)]
    Registry(#[from] crate::registry::TransportBuildError),
    #[error(transparent)]
    Server(#[from] crate::server::ServerError),
    #[error(transparent)]
    Tls(#[from] crate::server::tls::TlsError),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("{0}")]
    Usage(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Manifests(#[from] manifests::ManifestError),
}
