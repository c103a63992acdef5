//! Decide, then act: what a tunnel that reached the waypoint is for, from the snapshot and the
//! CONNECT authority alone (DESIGN §2). ztunnel sends the waypoint the address the client
//! dialled — a Service VIP and port, or a pod's own address — and the waypoint serves only what
//! is bound to it (`istio.io/use-waypoint`), so no client can use it as an open relay into
//! workloads that chose another waypoint or none.

use std::net::SocketAddr;
use std::sync::Arc;

use discovery::{Service, ServicePort, Snapshot, WaypointRef, Workload};

use crate::config::GatewayName;
use crate::routes::ServiceKey;

/// How the waypoint treats the bytes of a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Traffic {
    /// Requests: routes, L7 policy, per-request balancing.
    Http,
    /// A byte stream passed through at L4 (non-HTTP ports, server-first protocols).
    Tcp,
}

/// How the waypoint speaks to a backend port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    Http1,
    /// HTTP/2 with prior knowledge (h2c): gRPC and `kubernetes.io/h2c` ports.
    Http2,
}

/// Where a tunnel is bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The client dialled a Service VIP.
    Service { key: ServiceKey, port: u16 },
    /// The client dialled a pod's address directly.
    Workload(Arc<Workload>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub target: Target,
    /// The CONNECT authority: what the client dialled.
    pub authority: SocketAddr,
    pub traffic: Traffic,
}

/// Why the waypoint will not serve a tunnel; the text goes to the log and names what to check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    #[error("{authority} is neither a Service VIP and port nor a pod address this waypoint knows; check the Service exists (the waypoint's cluster view may lag briefly)")]
    Unknown { authority: SocketAddr },
    #[error("{what} is bound to waypoint {bound_to}, not to this one ({this}); ztunnel sent it to the wrong waypoint, or the binding changed")]
    BoundElsewhere {
        what: String,
        bound_to: WaypointRef,
        this: GatewayName,
    },
    #[error("{what} is not bound to any waypoint; label it (or its namespace) istio.io/use-waypoint={} to have this waypoint serve it", this.name)]
    NotBound { what: String, this: GatewayName },
}

/// Resolves a CONNECT authority for the waypoint `this`.
pub fn resolve(
    snapshot: &Snapshot,
    this: &GatewayName,
    authority: SocketAddr,
) -> Result<Destination, DestinationError> {
    if let Some((service, port)) = snapshot.service_by_vip(authority.ip(), authority.port()) {
        let what = format!("service {}/{}", service.namespace, service.name);
        check_binding(snapshot.service_waypoint(service), this, what)?;
        return Ok(Destination {
            target: Target::Service {
                key: ServiceKey {
                    namespace: service.namespace.clone(),
                    name: service.name.clone(),
                },
                port: port.port,
            },
            authority,
            traffic: traffic_of(port),
        });
    }
    let Some(workload) = snapshot.workload_by_ip(authority.ip()) else {
        return Err(DestinationError::Unknown { authority });
    };
    let what = format!("pod {}/{}", workload.namespace, workload.name);
    let guards = snapshot.workload_waypoints(workload);
    let bound = guards
        .iter()
        .find(|w| w.namespace == this.namespace && w.name == this.name)
        .or(guards.first())
        .cloned();
    check_binding(bound, this, what)?;
    // A pod port is HTTP when a Service selecting the pod says so for that target port.
    let traffic = snapshot
        .services()
        .filter(|service| {
            service.namespace == workload.namespace && service.selects(&workload.labels)
        })
        .flat_map(|service| service.ports.iter().map(move |port| (service, port)))
        .find(|(_, port)| {
            workload.resolve_target_port(&port.target_port, port.protocol) == Some(authority.port())
        })
        .map_or(Traffic::Tcp, |(_, port)| traffic_of(port));
    Ok(Destination {
        target: Target::Workload(workload.clone()),
        authority,
        traffic,
    })
}

fn check_binding(
    bound: Option<WaypointRef>,
    this: &GatewayName,
    what: String,
) -> Result<(), DestinationError> {
    match bound {
        Some(bound) if bound.namespace == this.namespace && bound.name == this.name => Ok(()),
        Some(bound_to) => Err(DestinationError::BoundElsewhere {
            what,
            bound_to,
            this: this.clone(),
        }),
        None => Err(DestinationError::NotBound {
            what,
            this: this.clone(),
        }),
    }
}

/// Istio's protocol selection: `appProtocol` first, then the port name's prefix
/// (`http-web`, `grpc`); anything else is opaque TCP.
pub fn traffic_of(port: &ServicePort) -> Traffic {
    match protocol_hint(port) {
        Some(_) => Traffic::Http,
        None => Traffic::Tcp,
    }
}

/// How to speak to a backend port; HTTP/1.1 unless the port says HTTP/2.
pub fn upstream_protocol(port: &ServicePort) -> UpstreamProtocol {
    protocol_hint(port).unwrap_or(UpstreamProtocol::Http1)
}

fn protocol_hint(port: &ServicePort) -> Option<UpstreamProtocol> {
    let hint = port.app_protocol.as_deref().unwrap_or(&port.name);
    let lower = hint.to_ascii_lowercase();
    let base = lower.split(['-', '_']).next().unwrap_or("");
    match (lower.as_str(), base) {
        ("kubernetes.io/h2c" | "h2c", _) | (_, "grpc" | "http2" | "h2c") => {
            Some(UpstreamProtocol::Http2)
        }
        ("kubernetes.io/ws" | "kubernetes.io/wss", _) | (_, "http" | "ws") => {
            Some(UpstreamProtocol::Http1)
        }
        _ => None,
    }
}

/// The Service port a backend reference names, if the snapshot has it.
pub fn service_port<'a>(
    snapshot: &'a Snapshot,
    key: &ServiceKey,
    port: u16,
) -> Option<(&'a Service, &'a ServicePort)> {
    let service = snapshot.service(&key.namespace, &key.name)?;
    let port = service.ports.iter().find(|p| p.port == port)?;
    Some((service, port))
}

#[cfg(test)]
#[path = "destination_tests.rs"]
mod tests;
