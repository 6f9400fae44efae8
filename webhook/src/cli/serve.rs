//! `pullguard serve`.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use pullguard_core::config::Config;
use tracing::info;

use super::{docker_config::load_keyring, error::CliError};
use crate::{
    app::App,
    cluster,
    server::{
        self,
        reload::CertReloader,
        tls::{self, CertStore},
    },
};

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// HTTPS address of the webhook.
    #[arg(long, env = "PULLGUARD_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Plain-HTTP address of /livez and /readyz.
    #[arg(long, env = "PULLGUARD_ADMIN_LISTEN", default_value = "0.0.0.0:8080")]
    pub admin_listen: SocketAddr,
    /// Serving certificate (PEM chain). Without it and --tls-key, a self-signed one is generated.
    #[arg(long, env = "PULLGUARD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key of the serving certificate (PEM).
    #[arg(long, env = "PULLGUARD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// How often the certificate files are re-read (a rotated Secret is served without a restart).
    #[arg(long, env = "PULLGUARD_TLS_RELOAD_INTERVAL", default_value = "10s")]
    pub tls_reload_interval: pullguard_core::config::HumanDuration,
    /// Extra subject alternative names for the generated certificate (repeatable).
    #[arg(long = "tls-san")]
    pub tls_sans: Vec<String>,
    /// Where the generated certificate's CA is written (PEM), for curl --cacert or a caBundle.
    #[arg(long, env = "PULLGUARD_SELF_SIGNED_CA_OUT", default_value = "pullguard-ca.pem")]
    pub self_signed_ca_out: PathBuf,
    /// Kubernetes API access (default: the in-cluster service account, else $KUBECONFIG, else none).
    #[arg(long, env = "PULLGUARD_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Docker config JSON with credentials the nodes themselves have (node-level pull credentials).
    #[arg(long, env = "PULLGUARD_DOCKER_CONFIG")]
    pub docker_config: Option<PathBuf>,
}

pub async fn run(config: Config, args: ServeArgs) -> Result<(), CliError> {
    let certified = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => tls::load_pem_files(cert, key)?,
        _ => {
            let sans = tls::default_sans(&args.tls_sans);
            let material = tls::self_signed(&sans)?;
            std::fs::write(&args.self_signed_ca_out, &material.ca_pem)
                .map_err(|source| CliError::Write { path: args.self_signed_ca_out.clone(), source })?;
            info!(
                ca = %args.self_signed_ca_out.display(),
                sans = %sans.join(","),
                "no --tls-cert given: serving a generated certificate; its CA is in the file named here"
            );
            eprintln!("pullguard: self-signed CA written to {}", args.self_signed_ca_out.display());
            tls::certified_key(
                material.cert_pem.as_bytes(),
                material.key_pem.as_bytes(),
                std::path::Path::new("<generated>"),
                std::path::Path::new("<generated>"),
            )?
        }
    };
    let keyring = load_keyring(args.docker_config.as_ref())?;
    let app = match cluster::connect(args.kubeconfig.as_deref()).await? {
        Some((client, source)) => {
            info!(?source, "Kubernetes API configured; namespace modes are read from it");
            App::with_cluster(config, keyring, client)?
        }
        None => {
            info!("no Kubernetes API configured: serving without namespace modes");
            App::new(config, keyring)?
        }
    };
    info!(mode = %app.config.mode, deadline = ?app.config.deadline.0, "configuration loaded");
    let certs = Arc::new(CertStore::new(certified));
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        CertReloader::new(cert.clone(), key.clone(), certs.clone())
            .with_metrics(app.metrics.clone())
            .spawn(args.tls_reload_interval.0);
    }
    let running = server::start(app.router(), app.admin_router(), args.listen, args.admin_listen, certs)?;
    eprintln!("pullguard: serving https://{}/validate (admin http://{})", running.addr, running.admin_addr);
    shutdown_signal().await;
    info!("shutting down");
    running.shutdown();
    running.wait().await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
