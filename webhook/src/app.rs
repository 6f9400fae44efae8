//! `App`: everything `serve` needs, built from one `Config`. Tests build it the same way and
//! drive `router()` in-process or over a real socket.

use std::sync::Arc;

use axum::Router;

use crate::{
    admission::Admission,
    config::Config,
    credentials::Keyring,
    inspect::Inspector,
    registry::{Registry, TransportBuildError},
    server,
};

pub struct App {
    pub config: Arc<Config>,
    pub inspector: Arc<Inspector>,
    pub admission: Arc<Admission>,
}

impl App {
    pub fn new(config: Config, keyring: Keyring) -> Result<App, TransportBuildError> {
        let config = Arc::new(config);
        let registry = Arc::new(Registry::new(&config)?);
        let inspector = Arc::new(Inspector::new(config.clone(), registry, keyring));
        let admission = Arc::new(Admission::new(inspector.clone()));
        Ok(App { config, inspector, admission })
    }

    pub fn router(&self) -> Router {
        server::router(self.admission.clone())
    }
}
