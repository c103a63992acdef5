//! The request path (DESIGN §6), as ordered phases with one error type:
//! match → authorize → request filters / redirect → pick backend → forward (timeouts, retries)
//! → response filters → log. Every phase but forwarding is a pure function of the request and
//! the [`Compiled`] configuration the request started with.

mod finish;
mod forward;
mod headers;
mod phases;
mod upgrade;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use certs::SpiffeId;
use http::{Request, Response};
use hyper::body::Incoming;

use crate::access_log::RequestLog;
use crate::balance::Balancer;
use crate::config::GatewayName;
use crate::destination::{Destination, Target};
use crate::metrics::RequestMetrics;
use crate::state::{Compiled, SharedState};
use crate::traces::Tracer;
use crate::upstream::{Body, Upstreams};

pub use crate::endpoints::ForwardTarget;
pub use headers::{authority as authority_of, is_grpc};
pub use phases::respond_with_error;

/// Settings of the request path, from the command line.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub trust_domain: String,
    /// When a route sets no `timeouts.request`.
    pub default_request_timeout: Duration,
    /// The largest request body kept for retries and mirrors.
    pub retry_body_limit: usize,
}

/// What every request of the waypoint shares.
pub struct Proxy {
    pub gateway: GatewayName,
    pub identity: SpiffeId,
    pub state: SharedState,
    pub upstreams: Arc<Upstreams>,
    pub balancer: Balancer,
    pub metrics: RequestMetrics,
    pub settings: ProxySettings,
    /// Set when spans are exported (`--otlp-endpoint`).
    pub tracer: Option<Tracer>,
}

/// The tunnel a request arrived in.
#[derive(Debug, Clone)]
pub struct Downstream {
    /// The identity ztunnel presented: the client workload's.
    pub peer_identity: SpiffeId,
    /// The TCP peer (the client pod, dialling from its own network namespace).
    pub peer_addr: SocketAddr,
    pub destination: Destination,
}

impl Proxy {
    /// The AuthorizationPolicies this waypoint enforces for `destination` (those targeting
    /// its Gateway, its class, or the addressed Service), and the port they match against.
    pub fn policies_for<'a>(
        &'a self,
        compiled: &'a Compiled,
        destination: &'a Destination,
    ) -> (
        impl Iterator<Item = &'a discovery::AuthorizationPolicy> + 'a,
        u16,
    ) {
        let (service, port) = match &destination.target {
            Target::Service { key, port } => {
                (Some((key.namespace.as_str(), key.name.as_str())), *port)
            }
            Target::Workload(_) => (None, destination.authority.port()),
        };
        let gateway = (self.gateway.namespace.as_str(), self.gateway.name.as_str());
        (compiled.snapshot.waypoint_policies(gateway, service), port)
    }

    /// Serves one request; never fails (errors become responses with their status). The
    /// access line and metrics are written when the response body has been sent.
    pub async fn handle(
        self: Arc<Self>,
        downstream: Arc<Downstream>,
        request: Request<Incoming>,
    ) -> Result<Response<Body>, std::convert::Infallible> {
        let started = Instant::now();
        let compiled = self.state.current();
        let (mut parts, body) = request.into_parts();
        let span = self.tracer.as_ref().map(|t| t.start(&mut parts.headers));
        let grpc = headers::is_grpc(&parts.headers);
        let authority = headers::authority(&parts.uri, &parts.headers)
            .unwrap_or_else(|| downstream.destination.authority.to_string());
        let mut log = RequestLog::start(
            downstream.peer_addr,
            downstream.peer_identity.to_string(),
            authority,
            &parts,
            grpc,
        );
        log.trace_id = span.as_ref().map(|s| s.context.trace_id.to_string());
        let request = Request::from_parts(parts, body);
        let response = match phases::serve(&self, &compiled, &downstream, request, &mut log).await {
            Ok(response) => response,
            Err(error) => {
                log.fail(&error);
                respond_with_error(&error, grpc)
            }
        };
        Ok(finish::on_completion(
            self, compiled, log, span, started, response,
        ))
    }
}

/// `namespace/name` of where a request was sent, for logs and `destination_service`.
pub fn forward_target_name(target: &ForwardTarget) -> String {
    match target {
        ForwardTarget::Service { key, .. } => key.to_string(),
        ForwardTarget::Workload { workload, .. } => {
            format!("{}/{}", workload.namespace, workload.name)
        }
    }
}
