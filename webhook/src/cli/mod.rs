//! Command line: `serve` (the webhook) and `check` (CI). Flags and `PULLGUARD_*` variables are
//! the same settings as the config file; see `cli::Overrides`.

mod audit;
mod check;
mod docker_config;
mod error;
mod manifests;
mod overrides;
mod report;
mod serve;

use clap::{Parser, Subcommand, ValueEnum};

pub use self::{audit::AuditArgs, check::CheckArgs, error::CliError, overrides::Overrides, serve::ServeArgs};

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

/// Runs the command; the returned number is the process exit status.
pub async fn run(cli: Cli) -> Result<i32, CliError> {
    let config = cli.overrides.load()?;
    match cli.command {
        Command::Serve(args) => serve::run(config, args).await.map(|()| 0),
        Command::Check(args) => check::run(config, args).await,
        Command::Audit(args) => audit::run(config, args).await,
    }
}
