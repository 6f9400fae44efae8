//! Command line: `serve` (the webhook) and `check` (CI). Flags and `PULLGUARD_*` variables are
//! the same settings as the config file; see `cli::Overrides`.

mod audit;
mod check;
mod manifests;
mod overrides;
mod report;
mod serve;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use pullguard_core::credentials::Keyring;

pub use self::overrides::Overrides;
pub use self::{audit::AuditArgs, check::CheckArgs, serve::ServeArgs};

#[derive(Debug, Parser)]
#[command(
    name = "pullguard",
    version,
    about = "Stops container images that cannot be pulled, at admission time"
)]
pub struct Cli {
    #[command(flatten)]
    pub overrides: Overrides,
    /// Log format on stderr.
    #[arg(long, env = "PULLGUARD_LOG_FORMAT", global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the validating admission webhook over HTTPS.
    Serve(ServeArgs),
    /// Check images or manifests (CI): exit 0 without errors, 1 with errors, 2 when the check failed.
    Check(CheckArgs),
    /// Check every workload of a live cluster (read-only): exit 0/1/2 as for check.
    Audit(AuditArgs),
}

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

/// Credentials from a docker config file: the named one, or the user's own when it exists.
fn load_keyring(explicit: Option<&PathBuf>) -> Result<Keyring, CliError> {
    let path = match explicit {
        Some(path) => path.clone(),
        None => match default_docker_config() {
            Some(path) if path.is_file() => path,
            _ => return Ok(Keyring::default()),
        },
    };
    let bytes = std::fs::read(&path)
        .map_err(|error| CliError::DockerConfig { path: path.clone(), message: error.to_string() })?;
    Keyring::from_docker_config(&bytes, &path.display().to_string())
        .map_err(|error| CliError::DockerConfig { path, message: error.to_string() })
}

fn default_docker_config() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker").join("config.json"))
}

/// Runs the command; the returned number is the process exit status.
pub async fn run(cli: Cli) -> Result<i32, CliError> {
    let config = cli.overrides.load()?;
    match cli.command {
        Command::Serve(args) => serve::run(config, args).await.map(|()| 0),
        Command::Check(args) => check::run(config, args).await,
        Command::Audit(args) => audit::run(config, args).await,
    }
}
