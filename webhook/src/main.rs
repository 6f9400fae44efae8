#![forbid(unsafe_code)]

use clap::Parser;
use pullguard::cli::{self, Cli, LogFormat};
use tracing_subscriber::EnvFilter;

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    // reqwest is built without a default provider; without this it panics at the first request.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli::run(cli).await {
        Ok(status) => std::process::ExitCode::from(u8::try_from(status).unwrap_or(2)),
        Err(error) => {
            eprintln!("pullguard: {error}");
            std::process::ExitCode::from(2)
        }
    }
}
