//! pullguard: a validating admission webhook that stops container images which cannot be pulled.
#![forbid(unsafe_code)]

pub mod checks;
pub mod config;
pub mod credentials;
pub mod finding;
pub mod glob;
pub mod reference;
pub mod registry;
