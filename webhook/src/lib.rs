//! pullguard: a validating admission webhook that stops container images which cannot be pulled.
//!
//! This crate is the edges and the wiring: the registry client, the Kubernetes API, the
//! AdmissionReview wire format, the HTTPS server and the CLI. The decisions live in
//! `pullguard_core`, which does no I/O.
#![forbid(unsafe_code)]

pub mod admission;
pub mod app;
pub mod cli;
pub mod cluster;
pub mod inspect;
pub mod json_log;
pub mod metrics;
pub mod registry;
pub mod server;
