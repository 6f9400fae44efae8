//! The floor: pullguard's own listener (`pullguard::server::start`, the same rustls config, ALPN,
//! axum and hyper) with a `POST /validate` that reads the body and allows everything. Whatever
//! pullguard costs above this is the price of its checks, not of TLS or HTTP/2.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use axum::{
    Router,
    body::Bytes,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::{get, post},
};
use pullguard::server::{self, tls};

/// A fixed allowed AdmissionReview; the uid is not echoed, which only makes the floor lower.
const ALLOWED: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"00000000-0000-0000-0000-000000000000","allowed":true}}"#;

/// What `run` looks for on the floor's stderr, in the same shape as `pullguard serve` prints it.
pub const SERVING_PREFIX: &str = "serving https://";

#[derive(clap::Args)]
pub struct FloorArgs {
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:0")]
    admin_listen: SocketAddr,
    /// Where the generated certificate's CA is written (PEM), for clients that verify.
    #[arg(long)]
    self_signed_ca_out: Option<std::path::PathBuf>,
    /// The floor exits on its own after this many seconds, even if its parent died.
    #[arg(long, default_value_t = 600)]
    lifetime_seconds: u64,
}

async fn allow(body: Bytes) -> impl IntoResponse {
    // Reading the body is part of the floor: the API server always sends one.
    drop(body);
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], ALLOWED)
}

pub async fn serve(args: FloorArgs) -> Result<()> {
    let material = tls::self_signed(&tls::default_sans(&[]))?;
    if let Some(path) = &args.self_signed_ca_out {
        std::fs::write(path, &material.ca_pem).with_context(|| format!("writing {}", path.display()))?;
    }
    let certified = tls::certified_key(
        material.cert_pem.as_bytes(),
        material.key_pem.as_bytes(),
        Path::new("<generated>"),
        Path::new("<generated>"),
    )?;
    let router = Router::new().route("/validate", post(allow));
    let admin = Router::new().route("/livez", get(|| async { "ok" }));
    let running = server::start(
        router,
        admin,
        args.listen,
        args.admin_listen,
        Arc::new(tls::CertStore::new(certified)),
    )
    .context("starting the floor server")?;
    eprintln!("floor: {SERVING_PREFIX}{}/validate (admin http://{})", running.addr, running.admin_addr);
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(args.lifetime_seconds)) => {
            eprintln!("floor: lifetime of {}s over, stopping", args.lifetime_seconds);
        }
        _ = tokio::signal::ctrl_c() => {}
    }
    running.shutdown();
    running.wait().await?;
    Ok(())
}
