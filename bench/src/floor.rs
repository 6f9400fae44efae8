//! The floor: pullguard's own listener (`pullguard::server::start`, the same rustls config, ALPN,
//! axum and hyper) with a `POST /validate` that allows everything, as the least a working
//! admission webhook does: it reads the review and echoes its uid (the API server rejects an
//! answer whose uid differs). Whatever pullguard costs above this is the price of its checks,
//! not of TLS, HTTP/2 or reading the review. `--constant` answers a fixed body without reading
//! the review, which no API server accepts: it shows the transport alone.

use std::{borrow::Cow, net::SocketAddr, path::Path, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use axum::{
    Router,
    body::Bytes,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use pullguard::server::{self, tls};
use serde::{Deserialize, Serialize};

/// The fixed answer of `--constant`.
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
    /// Answer a fixed body without reading the review (transport only).
    #[arg(long)]
    constant: bool,
}

#[derive(Deserialize)]
struct Review<'a> {
    #[serde(borrow)]
    request: Request<'a>,
}

#[derive(Deserialize)]
struct Request<'a> {
    #[serde(borrow)]
    uid: Cow<'a, str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Answer<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: Allowed<'a>,
}

#[derive(Serialize)]
struct Allowed<'a> {
    uid: &'a str,
    allowed: bool,
}

/// Allowed, for the review's uid. Written from borrowed fields into one buffer: the floor is the
/// comparison, so it does no work a webhook need not do.
async fn allow(body: Bytes) -> Response {
    let answer = serde_json::from_slice::<Review<'_>>(&body).and_then(|review| {
        serde_json::to_vec(&Answer {
            api_version: "admission.k8s.io/v1",
            kind: "AdmissionReview",
            response: Allowed { uid: &review.request.uid, allowed: true },
        })
    });
    match answer {
        Ok(answer) => (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], answer).into_response(),
        Err(error) => (StatusCode::BAD_REQUEST, error.to_string()).into_response(),
    }
}

async fn allow_constant(body: Bytes) -> Response {
    // The body is received in full either way: HTTP/2 flow control needs it read.
    drop(body);
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], ALLOWED).into_response()
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
    let handler = if args.constant { post(allow_constant) } else { post(allow) };
    let router = Router::new().route("/validate", handler);
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
