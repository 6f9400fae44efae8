#![forbid(unsafe_code)]

use clap::Parser;
use pullguard::cli::{self, Cli, LogFormat};
use pullguard::json_log::JsonLines;
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::{EnvFilter, fmt::format::JsonFields};

/// Log lines queued for the writer thread before new ones are dropped.
const LOG_QUEUE_LINES: usize = 64 * 1024;
const LOG_BUFFER_BYTES: usize = 64 * 1024;

/// Admissions never wait on the log: lines go through a bounded queue to a writer thread, so a
/// slow disk or a full pipe behind stderr cannot stall the request path; when the queue is full,
/// lines are dropped rather than admissions delayed. The guard flushes the queue when dropped.
fn init_logging(format: LogFormat) -> WorkerGuard {
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("pullguard-log")
        // The writer thread flushes after each batch it drains: one write per batch instead of
        // one per line when admissions come in thousands per second, and no line waits longer.
        .finish(std::io::BufWriter::with_capacity(LOG_BUFFER_BYTES, std::io::stderr()));
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    match format {
        LogFormat::Json => builder.fmt_fields(JsonFields::new()).event_format(JsonLines).init(),
        LogFormat::Text => builder.init(),
    }
    guard
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let log_guard = init_logging(cli.log_format);
    // reqwest is built without a default provider; without this it panics at the first request.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let result = cli::run(cli).await;
    // Queued log lines go out before the final word.
    drop(log_guard);
    match result {
        Ok(status) => std::process::ExitCode::from(u8::try_from(status).unwrap_or(2)),
        Err(error) => {
            eprintln!("pullguard: {error}");
            std::process::ExitCode::from(2)
        }
    }
}
