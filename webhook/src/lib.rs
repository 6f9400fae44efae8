//! pullguard: a validating admission webhook that stops container images which cannot be pulled.
#![forbid(unsafe_code)]

pub mod admission;
pub mod app;
pub mod checks;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod credentials;
pub mod finding;
pub mod glob;
pub mod inspect;
pub mod json_log;
pub mod metrics;
pub mod platform;
pub mod pod_credentials;
pub mod reference;
pub mod registry;
pub mod scheduling;
pub mod server;
pub mod verdict;
