//! The IO-free route engine (DESIGN §6): each discovery snapshot compiles into one immutable
//! [`RouteTable`]; a request looks its rule up in the table it started with.
//!
//! Today the table holds GAMMA routes: HTTPRoutes and GRPCRoutes whose parentRef is a Service.
//! A lookup is [`RouteTable::service_routes`] (which routes apply to this Service port for this
//! client), then [`PortRoutes::find`] (which rule this request takes, by Gateway API
//! precedence). Both are hash probes and scans over pre-sorted lists: nothing is allocated per
//! request (except to percent-decode a query parameter that a match reads and that has escapes).
//!
//! Modules: [`id`] and [`backend`] are leaves (the filters name backends through them);
//! `matching` compiles and evaluates match conditions; `rule` compiles rules; `port_routes`
//! orders them; `table` attaches routes to Service ports; `dump` is the `/config_dump` view.

pub mod backend;
mod dump;
pub mod id;
mod matching;
mod port_routes;
mod rule;
mod table;

pub use backend::{resolve_backend, resolve_route_backend, BackendProblem, BackendTarget};
pub use dump::{PortDump, RouteTableDump};
pub use id::{RouteId, RouteKind, ServiceKey};
pub use matching::MatchProblem;
pub use port_routes::{PortRoutes, RouteMatch};
pub use rule::{Backend, Rule};
pub use table::{compile, RouteTable};

/// What of a request the route engine reads.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub method: &'a http::Method,
    /// The path without the query, as received.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a http::HeaderMap,
    /// `content-type: application/grpc…`: the request tries GRPCRoutes first; the gRPC service
    /// and method are read from the path, `/<service>/<method>`.
    pub grpc: bool,
}

#[cfg(test)]
pub(crate) mod tests;
