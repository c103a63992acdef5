//! Ambit's L7 proxy (DESIGN §6). One engine, two faces: a Gateway of class `ambit-waypoint` is a
//! waypoint for the Services and pods bound to it (GAMMA: routes whose parent is a Service); a
//! Gateway of class `ambit` will be an ingress gateway on the same engine.
//!
//! - [`routes`]: the IO-free route engine. Each discovery snapshot compiles into a route table
//!   (Gateway API precedence, defaults applied by us) that is swapped whole ([`state`]); a
//!   request looks its route up in the table it started with.
//! - [`filters`]: the Gateway API filters as pure functions over request/response heads.
//! - [`destination`]: what a tunnel from ztunnel is for (decide, then act).
//! - [`proxy`]: the request path as ordered phases with one [`error::ProxyError`].
//! - [`upstream`], [`balance`], [`endpoints`]: HBONE to the chosen endpoint, pooled, picked
//!   by random-of-two least-request with passive outlier ejection.
//! - [`traces`]: `traceparent` propagation and OTLP span export.
//! - [`server`], [`tcp`], [`app`], [`admin`]: the HBONE listener, L4 pass-through, start-up
//!   and the admin endpoints.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod app;
pub mod authz;
pub mod balance;
pub mod config;
pub mod controller;
pub mod destination;
pub mod endpoints;
pub mod error;
pub mod filters;
pub mod metrics;
pub mod proxy;
pub mod routes;
pub mod server;
pub mod state;
pub mod status;
pub mod tcp;
pub mod traces;
pub mod upstream;

pub use config::Config;

/// The HBONE port of every pod and waypoint (DESIGN §3), defined once, in `hbone`.
pub use hbone::config::HBONE_PORT;
