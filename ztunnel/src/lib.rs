//! ztunnel, the Ambit node agent, as a library: [`app::build`] starts a whole node agent in
//! the calling process (what `main` does after parsing the flags), and the planning step
//! ([`plan`]), the proxies' error type ([`error`]) and `/config_dump`'s shape ([`dump`]) are
//! reachable from tests and fuzz targets.
//!
//! Layout, one way only (no module imports one that imports it back):
//! - `app` starts everything; `admin` serves /config_dump, metrics and readiness.
//! - `agent` is the node's state; `pod` (enrollment), `reconcile` and `probes` act on it.
//! - The proxies — `outbound`, `inbound`, `dns` — take narrow inputs: a [`proxy::ProxyContext`]
//!   (or `dns::DnsContext`) and the [`enrolled::EnrolledPod`] they serve.
//! - `plan` decides, then the proxies act; `access_log` writes one line and the metrics per
//!   connection from a [`error::ProxyError`] or a completed copy.

pub mod access_log;
mod admin;
pub mod agent;
pub mod app;
pub mod config;
pub mod connections;
pub mod dns;
pub mod dump;
pub mod enrolled;
pub mod error;
pub mod fuzzing;
pub mod inbound;
mod keyed_lock;
pub mod metrics;
pub mod outbound;
pub mod plan;
mod pod;
mod pod_state;
pub mod ports;
mod probes;
pub mod proxy;
mod reconcile;
pub mod response;
mod revocable;
