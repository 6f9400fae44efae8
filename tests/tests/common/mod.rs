//! Shared by the test files that run pullguard's inspector against registries: the vocabulary
//! they both use (`use common::*`), an inspector built from settings, and a lookup of one image
//! with its finding codes.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)] // tests fail loudly by design; not every file uses every helper

use std::sync::Arc;

pub use pullguard::inspect::{InspectOptions, PodContext};
use pullguard::{
    inspect::{Inspection, Inspector},
    registry::Registry,
};
pub use pullguard_core::{
    checks::Placement,
    config::{Config, HumanDuration, RegistryConfig},
    credentials::Keyring,
    finding::{Code, Severity},
    pod_credentials::PodCredentials,
    workload::{ContainerImage, ContainerKind},
};
use pullguard_tests::fake::FakeRegistry;
pub use pullguard_tests::registry::RegistryProcess;
pub use tokio::time::Instant;

pub fn inspector(registries: Vec<RegistryConfig>, keyring: Keyring) -> Inspector {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = Config { registries, ..Config::default() };
    inspector_with(config, keyring)
}

pub fn inspector_with(config: Config, keyring: Keyring) -> Inspector {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = Arc::new(config);
    let registry = Arc::new(
        Registry::new(&config, Arc::new(pullguard::metrics::Metrics::new())).expect("registry client"),
    );
    Inspector::new(config, registry, keyring)
}

/// An in-process fake registry (plain HTTP) declared insecure, with every other setting default.
pub fn fake_config(fake: &FakeRegistry) -> Config {
    Config {
        registries: vec![RegistryConfig { host: fake.host(), insecure: true, ..RegistryConfig::default() }],
        ..Config::default()
    }
}

pub async fn inspect(inspector: &Inspector, image: &str) -> Inspection {
    let containers = vec![ContainerImage::new("app", image, ContainerKind::App)];
    let deadline = Instant::now() + inspector.config().deadline.0;
    let credentials = PodCredentials::none();
    let context = PodContext { targets: None, credentials: &credentials, placement: Placement::Scheduled };
    inspector
        .inspect(&containers, context, InspectOptions { offline: false, deadline, image_reports: true })
        .await
}

pub fn codes(inspection: &Inspection) -> Vec<Code> {
    let mut codes: Vec<Code> = inspection.findings.iter().map(|finding| finding.code).collect();
    codes.sort();
    codes
}
