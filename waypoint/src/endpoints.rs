//! The endpoints a request (or a TCP stream) can go to: the ready, in-mesh pods behind a
//! Service port, or the one pod a client dialled by address — each with the identity it must
//! prove and the HTTP version it speaks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use discovery::Workload;

use crate::balance::Balancer;
use crate::destination::{service_port, upstream_protocol, Destination, Target, UpstreamProtocol};
use crate::error::ProxyError;
use crate::routes::ServiceKey;
use crate::state::Compiled;
use crate::upstream::Endpoint;

/// Where the request goes after routing.
#[derive(Debug, Clone)]
pub enum ForwardTarget {
    Service {
        key: ServiceKey,
        port: u16,
    },
    /// A pod the client dialled by address, at that port.
    Workload {
        workload: Arc<Workload>,
        port: u16,
    },
}

impl ForwardTarget {
    /// Where a request goes when no route sends it elsewhere: the Service (or pod) the
    /// client addressed.
    pub fn addressed(destination: &Destination) -> ForwardTarget {
        match &destination.target {
            Target::Service { key, port } => ForwardTarget::Service {
                key: key.clone(),
                port: *port,
            },
            Target::Workload(workload) => ForwardTarget::Workload {
                workload: workload.clone(),
                port: destination.authority.port(),
            },
        }
    }
}

/// One of `endpoints` for the next attempt, by the balancer (random-of-two least-request,
/// ejected endpoints last), avoiding those that already `failed` while others remain.
pub fn pick<'a>(
    balancer: &Balancer,
    endpoints: &'a [Endpoint],
    failed: &[SocketAddr],
) -> Option<&'a Endpoint> {
    let all: Vec<SocketAddr> = endpoints.iter().map(|e| e.addr).collect();
    let fresh: Vec<SocketAddr> = all
        .iter()
        .copied()
        .filter(|addr| !failed.contains(addr))
        .collect();
    let candidates = if fresh.is_empty() { &all } else { &fresh };
    let random = (
        rand::random::<u32>() as usize,
        rand::random::<u32>() as usize,
    );
    balancer
        .pick(candidates, Instant::now(), random)
        .and_then(|addr| endpoints.iter().find(|e| e.addr == addr))
}

/// The ready, in-mesh endpoints of a target, with the identity each must prove.
pub fn endpoints(
    compiled: &Compiled,
    target: &ForwardTarget,
    trust_domain: &str,
) -> Result<Vec<Endpoint>, ProxyError> {
    let snapshot = &compiled.snapshot;
    match target {
        ForwardTarget::Service { key, port } => {
            let Some((service, service_port)) = service_port(snapshot, key, *port) else {
                return Err(ProxyError::NoHealthyEndpoints {
                    service: key.to_string(),
                    port: *port,
                });
            };
            let protocol = upstream_protocol(service_port);
            let endpoints: Vec<Endpoint> = snapshot
                .endpoints_for(service, service_port)
                .iter()
                .filter_map(|endpoint| {
                    let workload = endpoint
                        .workload
                        .as_ref()
                        .filter(|w| w.ready && w.ambient)?;
                    Some(Endpoint {
                        addr: endpoint.addr,
                        identity: workload.identity(trust_domain).ok()?,
                        protocol,
                    })
                })
                .collect();
            if endpoints.is_empty() {
                return Err(ProxyError::NoHealthyEndpoints {
                    service: key.to_string(),
                    port: *port,
                });
            }
            Ok(endpoints)
        }
        ForwardTarget::Workload { workload, port } => {
            let identity =
                workload
                    .identity(trust_domain)
                    .map_err(|e| ProxyError::UpstreamConnect {
                        endpoint: format!("{}/{}", workload.namespace, workload.name),
                        reason: e.to_string(),
                    })?;
            let protocol = pod_protocol(snapshot, workload, *port);
            Ok(workload
                .ips
                .first()
                .map(|ip| Endpoint {
                    addr: SocketAddr::new(*ip, *port),
                    identity,
                    protocol,
                })
                .into_iter()
                .collect())
        }
    }
}

/// A pod port speaks HTTP/2 when a Service selecting the pod says so for that target port.
fn pod_protocol(
    snapshot: &discovery::Snapshot,
    workload: &Workload,
    port: u16,
) -> UpstreamProtocol {
    snapshot
        .services()
        .filter(|s| s.namespace == workload.namespace && s.selects(&workload.labels))
        .flat_map(|s| s.ports.iter())
        .find(|p| workload.resolve_target_port(&p.target_port, p.protocol) == Some(port))
        .map_or(UpstreamProtocol::Http1, upstream_protocol)
}
