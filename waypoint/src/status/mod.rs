//! Gateway API status, computed from a snapshot alone (decide, then act: DESIGN §2).
//!
//! [`compute`] is pure: snapshot and clock in, one [`ObjectStatus`] per object out, in a
//! stable order (GatewayClasses, then Gateways, HTTPRoutes and GRPCRoutes by namespace/name).
//! `waypoint status --manifests DIR` prints it ([`command`]); a controller in Kubernetes mode
//! will compute the same list, carry over unchanged transition times
//! ([`carry_transition_times`]), diff against what the objects show
//! ([`Condition::same_state`]) and PATCH the `status` subresource of those that differ, under
//! our `controllerName` only.
//!
//! What is listed (each module says why):
//! - [`classes`]: our two GatewayClasses, always, `Accepted=True`.
//! - [`gateway`]: Gateways of class `ambit-waypoint`; those of class `ambit` (the ingress)
//!   are left out until the ingress exists.
//! - [`route`]: HTTPRoutes and GRPCRoutes with a Service parent, or a waypoint Gateway
//!   parent; one `status.parents` entry for each such parentRef.
//!
//! Not covered yet: ListenerSets, BackendTLSPolicies, TLSRoutes and TCPRoutes (the waypoint
//! serves none of them), `UnsupportedProtocol` for backends, and GatewayClass
//! `SupportedVersion` (it needs the installed CRD bundle version, which the snapshot lacks).

mod classes;
pub mod command;
mod gateway;
mod route;
mod types;

use std::time::SystemTime;

use discovery::Snapshot;

pub use gateway::HBONE_PROTOCOL;
pub use types::{
    carry_transition_times, Condition, ConditionStatus, GatewayClassStatus, GatewayStatus,
    GatewayStatusAddress, ListenerStatus, ObjectMeta, ObjectStatus, ParentReference,
    RouteGroupKind, RouteParentStatus, RouteStatus, Status, API_VERSION,
};

/// The ingress GatewayClass and its controller (DESIGN §3).
pub const INGRESS_CLASS: &str = "ambit";
pub const INGRESS_CONTROLLER: &str = "ambit.dev/gateway-controller";
/// The waypoint GatewayClass and its controller: the one this module writes for.
pub const WAYPOINT_CLASS: &str = "ambit-waypoint";
pub const WAYPOINT_CONTROLLER: &str = "ambit.dev/waypoint-controller";

/// The status of every object the waypoint controller answers for. `now` becomes every
/// condition's `lastTransitionTime` (a controller replaces it with the object's own where the
/// condition's status did not change).
pub fn compute(snapshot: &Snapshot, now: SystemTime) -> Vec<ObjectStatus> {
    let time = humantime::format_rfc3339_seconds(now).to_string();
    let mut out = classes::statuses(&time);
    out.extend(gateway::statuses(snapshot, &time));
    out.extend(route::statuses(snapshot, &time));
    out
}

/// What the waypoint controller writes: [`compute`], plus every route with no parent of ours
/// and an empty list of our entries, so that entries written while a route still had such a
/// parent are removed once it has none. (`waypoint status` prints [`compute`]: what we
/// answer for.)
pub fn compute_for_controller(snapshot: &Snapshot, now: SystemTime) -> Vec<ObjectStatus> {
    let mut out = compute(snapshot, now);
    let released = route::released(snapshot, &out);
    out.extend(released);
    out
}

#[cfg(test)]
mod tests;
