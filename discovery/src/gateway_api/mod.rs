//! The Gateway API kinds (v1.6.1): Gateway, HTTPRoute, GRPCRoute, TLSRoute, TCPRoute and
//! ReferenceGrant, from manifests and from the API server alike.
//!
//! - [`resource`]: the objects as written, for decoding (every field optional).
//! - [`convert`]: the schema's rules and defaults, applied by us (DESIGN §6: the API server's CRD
//!   defaulting is not assumed; an API server older than 1.25 does not even evaluate the CEL
//!   rules), each violation named by field path.
//! - [`model`]: what the route engine and the controller read. An invalid object is kept, marked
//!   rejected with its reasons, never silently dropped.
//!
//! Why hand-written types rather than the `gateway-api` crate: its current release (0.22) tracks
//! Gateway API v1.5.1 rather than the v1.6.1 CRDs served here, needs Rust 1.92 (the workspace's
//! floor is 1.85), and brings kube's `derive` and schemars (which k8s-openapi's `schemars` feature
//! then compiles into every crate of the workspace); and its typed enums refuse an unknown value
//! at decode time, where the mesh must keep the object and say which field is wrong.

pub(crate) mod convert;
pub mod model;
pub(crate) mod resource;
mod view;

pub use model::*;
pub(crate) use view::GatewayApiObjects;
pub use view::{GatewayApiDump, GatewayApiView, RejectedObject};
