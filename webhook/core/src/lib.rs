//! pullguard's decisions, with no I/O: what an image reference, a manifest, a node, a pull
//! secret and a workload say, and what follows from them (findings and the verdict).
//!
//! The edges (`pullguard`'s `registry`, `cluster`, `admission`, `server`) translate the outside
//! world into these types and are the only code that talks to it. This crate's dependency list
//! holds that line: no HTTP, no Kubernetes client, no async runtime, so a rule cannot reach the
//! network by accident, and every rule is tested here in microseconds.
#![forbid(unsafe_code)]

pub mod checks;
pub mod config;
pub mod credentials;
pub mod facts;
pub mod finding;
pub mod glob;
pub mod lookup;
pub mod manifest;
pub mod namespaces;
pub mod node_targets;
pub mod nodes;
pub mod platform;
pub mod pod_credentials;
pub mod reference;
pub mod scheduling;
pub mod verdict;
pub mod watched;
pub mod workload;
