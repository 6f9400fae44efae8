pub mod certs;
pub mod fake;
pub mod kubeapi;
pub mod registry;
pub mod secret_volume;
pub mod seed;
pub mod token;
pub mod webhook;
