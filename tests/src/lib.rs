pub mod certs;
pub mod fake;
pub mod registry;
pub mod seed;
pub mod webhook;
