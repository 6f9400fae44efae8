pub mod certs;
pub mod registry;
pub mod seed;
