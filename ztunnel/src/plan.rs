//! Decide, then act: where a captured connection goes, computed from the cluster snapshot and
//! the connection's facts alone — no sockets, no clock, no global state — so that every
//! decision can be table-tested over a fake snapshot. The proxies (`outbound`, `inbound`) carry
//! out the plan.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use certs::SpiffeId;
use discovery::{ConnectionAttrs, Decision, Snapshot, WaypointRef, Workload};

use crate::ports;
use crate::response::ResponseFlag;

/// Why a connection is refused before anything is dialled. The text goes into the access log:
/// it names the cause and what to check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The target is one of ztunnel's own ports on the pod itself or on loopback: serving it
    /// would make ztunnel connect to itself, again and again.
    #[error("refused: {target} is ztunnel's own port {port} on {whose}; connections to ztunnel's ports (15000, 15001, 15006, 15008, 15020, 15021, 15053) of a pod or of loopback would loop back into ztunnel — call the application's port instead", port = target.port())]
    SelfCall {
        target: SocketAddr,
        whose: &'static str,
    },
    #[error("service {service} port {port} has no ready endpoints; check that its selector matches running, ready pods")]
    NoReadyEndpoints { service: String, port: u16 },
    /// Traffic bound to a waypoint is never sent around it: without a ready waypoint pod it is
    /// refused (Istio fails closed the same way).
    #[error("{bound} is bound to waypoint {waypoint} (istio.io/use-waypoint), which has no ready endpoints; check that the waypoint's Service {waypoint} exists and its pods are ready")]
    WaypointUnavailable { bound: String, waypoint: String },
    /// The destination is reachable only through a waypoint, and this connection did not come
    /// from it: serving it would let clients skip the waypoint's L7 policy.
    #[error("refused: {destination} is bound to waypoint {waypoints} (istio.io/use-waypoint) and {client} did not come through it; send the traffic to the Service (ztunnel routes it via the waypoint), or remove the binding")]
    BypassedWaypoint {
        destination: String,
        waypoints: String,
        client: String,
    },
    #[error("pod {namespace}/{name} is no longer in the cluster view")]
    UnknownDestination { namespace: String, name: String },
    #[error("{0}")]
    Denied(String),
}

impl Refusal {
    pub fn flag(&self) -> ResponseFlag {
        match self {
            Refusal::SelfCall { .. }
            | Refusal::NoReadyEndpoints { .. }
            | Refusal::WaypointUnavailable { .. } => ResponseFlag::NoRoute,
            Refusal::UnknownDestination { .. }
            | Refusal::Denied(_)
            | Refusal::BypassedWaypoint { .. } => ResponseFlag::Denied,
        }
    }

    /// The HBONE answer for a refused CONNECT (DESIGN §3: 400 malformed, 401 denied).
    pub fn hbone_status(&self) -> hbone::RefusalStatus {
        match self {
            Refusal::SelfCall { .. } => hbone::RefusalStatus::BadRequest,
            Refusal::NoReadyEndpoints { .. } | Refusal::WaypointUnavailable { .. } => {
                hbone::RefusalStatus::Unavailable
            }
            Refusal::UnknownDestination { .. }
            | Refusal::Denied(_)
            | Refusal::BypassedWaypoint { .. } => hbone::RefusalStatus::Unauthorized,
        }
    }
}

impl Refusal {
    /// Whether trying again at once could succeed: no refusal here depends on luck (the
    /// cluster view has to change first).
    pub fn is_retryable(&self) -> bool {
        false
    }
}

/// Whether `target` would reach ztunnel itself: one of its ports on loopback, on the
/// unspecified address, or on one of `own_ips` (the pod's addresses).
fn self_call(target: SocketAddr, own_ips: &[IpAddr]) -> Option<Refusal> {
    if !ports::is_ztunnel_port(target.port()) {
        return None;
    }
    let ip = target.ip();
    let whose = if ip.is_loopback() || ip.is_unspecified() {
        "loopback"
    } else if own_ips.contains(&ip) {
        "the pod's own address"
    } else {
        return None;
    };
    Some(Refusal::SelfCall { target, whose })
}

/// The pod a connection comes from (outbound) or goes to (inbound).
#[derive(Debug, Clone, Copy)]
pub struct PodFacts<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    /// The pod's own addresses.
    pub ips: &'a [IpAddr],
}

/// Where an outbound connection goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboundPlan {
    /// Through an HBONE tunnel to an ambient workload's node.
    Tunnel(Tunnel),
    /// Through an HBONE tunnel to the waypoint the destination is bound to: the CONNECT
    /// authority is the address the client dialled (the Service VIP or the pod), and the
    /// waypoint picks the backend.
    Waypoint {
        tunnel: Tunnel,
        /// The waypoint, `namespace/name` of its Gateway (and Service).
        waypoint: String,
    },
    /// In plain TCP, to a destination outside the mesh.
    Passthrough(Passthrough),
    Refuse(Refusal),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunnel {
    /// The workload address inside the tunnel (the CONNECT authority): `<pod ip>:<app port>`.
    pub target: SocketAddr,
    /// Where the tunnel is dialled: `<pod ip>:15008`.
    pub hbone_addr: SocketAddr,
    pub workload: Arc<Workload>,
    /// The identity the destination must prove.
    pub identity: SpiffeId,
    /// `name.namespace` when the client dialled a Service VIP.
    pub service: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passthrough {
    pub target: SocketAddr,
    /// The pod behind the target, when the cluster knows it (a pod outside the mesh).
    pub workload: Option<Arc<Workload>>,
    pub service: Option<String>,
}

/// Plans a connection an enrolled pod made to `original` (its original destination).
/// `pick` chooses among a service's ready endpoints (random in production, fixed in tests).
pub fn plan_outbound(
    snapshot: &Snapshot,
    source: PodFacts<'_>,
    original: SocketAddr,
    trust_domain: &str,
    mut pick: impl FnMut(&[&discovery::Endpoint]) -> usize,
) -> OutboundPlan {
    if let Some(refusal) = self_call(original, source.ips) {
        return OutboundPlan::Refuse(refusal);
    }
    let (target, workload, service) = match snapshot.service_by_vip(original.ip(), original.port())
    {
        Some((service, port)) => {
            let name = format!("{}.{}", service.name, service.namespace);
            if let Some(waypoint) = snapshot.service_waypoint(service) {
                let bound = format!("service {}/{}", service.namespace, service.name);
                let context = WaypointContext {
                    waypoint,
                    bound,
                    service: Some(name.clone()),
                };
                if let Some(plan) =
                    via_waypoint(snapshot, source, original, context, trust_domain, &mut pick)
                {
                    return plan;
                }
            }
            let ready: Vec<&discovery::Endpoint> = snapshot
                .endpoints_for(service, port)
                .iter()
                .filter(|endpoint| endpoint.workload.as_ref().is_none_or(|w| w.ready))
                .collect();
            let Some(endpoint) = ready.get(pick(&ready)).or(ready.first()) else {
                return OutboundPlan::Refuse(Refusal::NoReadyEndpoints {
                    service: name,
                    port: port.port,
                });
            };
            (endpoint.addr, endpoint.workload.clone(), Some(name))
        }
        None => {
            let workload = snapshot.workload_by_ip(original.ip()).cloned();
            if let Some(pod) = workload.as_deref().filter(|w| w.ambient) {
                if let Some(waypoint) = snapshot.workload_waypoints(pod).into_iter().next() {
                    let bound = format!("pod {}/{}", pod.namespace, pod.name);
                    let context = WaypointContext {
                        waypoint,
                        bound,
                        service: None,
                    };
                    if let Some(plan) =
                        via_waypoint(snapshot, source, original, context, trust_domain, &mut pick)
                    {
                        return plan;
                    }
                }
            }
            (original, workload, None)
        }
    };
    // A Service may resolve to the pod itself on one of ztunnel's ports.
    if let Some(refusal) = self_call(target, source.ips) {
        return OutboundPlan::Refuse(refusal);
    }
    let in_mesh = workload
        .as_ref()
        .filter(|w| w.ambient)
        .and_then(|w| w.identity(trust_domain).ok().map(|id| (w.clone(), id)));
    match in_mesh {
        Some((workload, identity)) => {
            // Inside an ambient pod these ports are ztunnel's listeners, never the app's: the
            // destination would refuse the tunnel, so do not open one.
            if ports::is_ztunnel_port(target.port()) {
                return OutboundPlan::Refuse(Refusal::SelfCall {
                    target,
                    whose: "an ambient pod (its ztunnel's listener)",
                });
            }
            OutboundPlan::Tunnel(Tunnel {
                target,
                hbone_addr: SocketAddr::new(target.ip(), ports::HBONE),
                workload,
                identity,
                service,
            })
        }
        None => OutboundPlan::Passthrough(Passthrough {
            target,
            workload,
            service,
        }),
    }
}

/// What a waypoint binding applies to.
struct WaypointContext {
    waypoint: WaypointRef,
    /// The bound object, for messages: `service shop/cart`, `pod shop/cart-0`.
    bound: String,
    service: Option<String>,
}

/// Plans the tunnel to a waypoint pod for traffic bound to it, or `None` when the source is
/// that waypoint (what it sends on after routing goes straight to the backend). The waypoint
/// is reached through its Service (`<gateway name>` in its namespace, as the waypoint
/// controller creates it); without a ready waypoint pod the connection is refused.
fn via_waypoint(
    snapshot: &Snapshot,
    source: PodFacts<'_>,
    original: SocketAddr,
    context: WaypointContext,
    trust_domain: &str,
    pick: &mut impl FnMut(&[&discovery::Endpoint]) -> usize,
) -> Option<OutboundPlan> {
    let waypoint = context.waypoint.to_string();
    let unavailable = || {
        Some(OutboundPlan::Refuse(Refusal::WaypointUnavailable {
            bound: context.bound.clone(),
            waypoint: waypoint.clone(),
        }))
    };
    let Some(waypoint_service) =
        snapshot.service(&context.waypoint.namespace, &context.waypoint.name)
    else {
        return unavailable();
    };
    let ready: Vec<&discovery::Endpoint> = waypoint_service
        .ports
        .iter()
        .flat_map(|port| snapshot.endpoints_for(waypoint_service, port))
        .filter(|endpoint| endpoint.workload.as_ref().is_some_and(|w| w.ready))
        .collect();
    if ready.iter().any(|e| source.ips.contains(&e.addr.ip())) {
        return None;
    }
    let Some(endpoint) = ready.get(pick(&ready)).or(ready.first()) else {
        return unavailable();
    };
    let Some(pod) = endpoint.workload.clone() else {
        return unavailable();
    };
    let Ok(identity) = pod.identity(trust_domain) else {
        return unavailable();
    };
    Some(OutboundPlan::Waypoint {
        tunnel: Tunnel {
            target: original,
            hbone_addr: SocketAddr::new(endpoint.addr.ip(), ports::HBONE),
            workload: pod,
            identity,
            service: context.service,
        },
        waypoint,
    })
}

/// Picks uniformly at random; the production choice for [`plan_outbound`].
pub fn pick_random(endpoints: &[&discovery::Endpoint]) -> usize {
    match endpoints.len() {
        0 => 0,
        len => rand::random_range(0..len),
    }
}

/// What an inbound connection (HBONE or plaintext) asks for, as far as ztunnel knows it.
#[derive(Debug, Clone, Copy)]
pub struct InboundFacts<'a> {
    pub destination: PodFacts<'a>,
    /// Where the client wants to go inside the pod (the CONNECT authority, or the original
    /// destination of a redirected plaintext connection).
    pub target: SocketAddr,
    /// The TCP peer's address: the only source address authorization trusts.
    pub peer_ip: IpAddr,
    /// The peer's verified identity; `None` for plaintext.
    pub peer_identity: Option<&'a SpiffeId>,
}

/// Where an inbound connection goes: to the app at `target`, or nowhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundPlan {
    Forward { target: SocketAddr },
    Refuse(Refusal),
}

/// Plans an inbound connection: never to ztunnel's own ports, then the destination's
/// AuthorizationPolicies.
pub fn plan_inbound(snapshot: &Snapshot, facts: &InboundFacts<'_>) -> InboundPlan {
    let destination = facts.destination;
    if let Some(refusal) = self_call(facts.target, destination.ips) {
        return InboundPlan::Refuse(refusal);
    }
    let Some(workload) = snapshot.workload(destination.namespace, destination.name) else {
        return InboundPlan::Refuse(Refusal::UnknownDestination {
            namespace: destination.namespace.to_owned(),
            name: destination.name.to_owned(),
        });
    };
    if let Some(refusal) = bypassed_waypoint(snapshot, workload, facts) {
        return InboundPlan::Refuse(refusal);
    }
    let attrs = ConnectionAttrs {
        src_ip: facts.peer_ip,
        src_identity: facts.peer_identity,
        dst_port: facts.target.port(),
    };
    let source = facts
        .peer_identity
        .map(|id| id.to_string())
        .unwrap_or_else(|| format!("plaintext client {}", facts.peer_ip));
    match discovery::authorize(snapshot.policies_for(workload), &attrs) {
        Decision::Allow => InboundPlan::Forward {
            target: facts.target,
        },
        Decision::DeniedBy(policy) => InboundPlan::Refuse(Refusal::Denied(format!(
            "denied by AuthorizationPolicy {policy}: {source} may not connect to port {}",
            attrs.dst_port
        ))),
        Decision::NotAllowed => InboundPlan::Refuse(Refusal::Denied(format!(
            "denied: ALLOW policies apply to {}/{} and none allows {source} on port {}",
            destination.namespace, destination.name, attrs.dst_port
        ))),
    }
}

/// Refuses a connection to a waypoint-guarded workload ([`Snapshot::workload_waypoints`])
/// unless its verified peer is a pod of one of those waypoints.
fn bypassed_waypoint(
    snapshot: &Snapshot,
    workload: &Workload,
    facts: &InboundFacts<'_>,
) -> Option<Refusal> {
    let guards = snapshot.workload_waypoints(workload);
    if guards.is_empty() {
        return None;
    }
    let from_guard = facts.peer_identity.is_some_and(|peer| {
        guards.iter().any(|guard| {
            let Some(service) = snapshot.service(&guard.namespace, &guard.name) else {
                return false;
            };
            service
                .ports
                .iter()
                .flat_map(|port| snapshot.endpoints_for(service, port))
                .filter_map(|endpoint| endpoint.workload.as_ref())
                .any(|pod| {
                    pod.ips.contains(&facts.peer_ip)
                        && pod
                            .identity(peer.trust_domain())
                            .is_ok_and(|id| &id == peer)
                })
        })
    });
    if from_guard {
        return None;
    }
    let waypoints: Vec<String> = guards.iter().map(ToString::to_string).collect();
    Some(Refusal::BypassedWaypoint {
        destination: format!("pod {}/{}", workload.namespace, workload.name),
        waypoints: waypoints.join(" or "),
        client: facts
            .peer_identity
            .map(|id| id.to_string())
            .unwrap_or_else(|| format!("plaintext client {}", facts.peer_ip)),
    })
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
