//! The status of Gateways of class `ambit-waypoint`.
//!
//! - **Accepted**: the Gateway follows the schema, sets no `infrastructure.parametersRef` (no
//!   parameter kind is supported) and no `spec.addresses` (a waypoint's address is its
//!   Service's cluster IP), and has a listener on port 15008 with protocol `HBONE` — the shape
//!   Istio's waypoints have (`name: mesh`), so the same Gateway works with either mesh. Other
//!   listeners are not accepted (`UnsupportedProtocol`, Istio's reason and message); the
//!   Gateway is then `Accepted=True` with reason `ListenersNotValid` if the HBONE listener is
//!   there, `False` if not (the upstream rule for partly and wholly invalid listener sets).
//! - **Programmed**: the waypoint's Service (named like the Gateway, in its namespace — what the
//!   controller creates and the test harness writes) exists, has a cluster IP, and has a ready
//!   endpoint: the waypoint pod. `status.addresses` lists the Service's cluster IPs.
//! - **Listeners**: `supportedKinds` is empty and `attachedRoutes` 0. Routes reach a waypoint
//!   through Service parentRefs (GAMMA); attachment is defined by parentRefs naming the Gateway,
//!   and a route naming a waypoint Gateway is refused ([`super::route`]), so nothing attaches.
//!
//! Gateways of class `ambit` (the ingress) are left out on purpose: no controller serves them
//! yet, and leaving their status alone keeps the API server's default, `Accepted=Unknown`
//! (`Pending`), which is the truth until the ingress exists.

use std::net::IpAddr;

use discovery::gateway_api::{Gateway, Listener, ListenerProtocol};
use discovery::Snapshot;

use super::types::{
    Condition, ConditionStatus, Conditions, GatewayStatus, GatewayStatusAddress, ListenerStatus,
    ObjectMeta, ObjectStatus, Status, API_VERSION,
};
use super::WAYPOINT_CLASS;
use crate::HBONE_PORT;

/// The listener protocol of a waypoint (Istio's name for HTTP/2 CONNECT over mTLS).
pub const HBONE_PROTOCOL: &str = "HBONE";

pub(super) fn statuses(snapshot: &Snapshot, time: &str) -> Vec<ObjectStatus> {
    snapshot
        .gateway_api()
        .gateways()
        .iter()
        .filter(|gateway| gateway.class_name == WAYPOINT_CLASS)
        .map(|gateway| ObjectStatus {
            api_version: API_VERSION,
            kind: "Gateway",
            metadata: ObjectMeta {
                namespace: Some(gateway.namespace.clone()),
                name: gateway.name.clone(),
            },
            status: Status::Gateway(waypoint_status(snapshot, gateway, time)),
        })
        .collect()
}

/// Whether `listener` is the one listener a waypoint serves.
fn is_hbone(listener: &Listener) -> bool {
    listener.port == HBONE_PORT
        && matches!(&listener.protocol, ListenerProtocol::Other(p) if p == HBONE_PROTOCOL)
}

/// Whether a waypoint Gateway is accepted.
enum Acceptance {
    Accepted,
    /// Accepted, but some listeners are not served: `Accepted=True`, reason `ListenersNotValid`.
    Partly(String),
    Refused(&'static str, String),
}

fn waypoint_status(snapshot: &Snapshot, gateway: &Gateway, time: &str) -> GatewayStatus {
    let conditions = Conditions {
        generation: gateway.generation,
        time: time.to_owned(),
    };
    // Only the first HBONE listener is served; a second one (another hostname, say) is refused
    // like any other listener rather than silently merged.
    let served = gateway.listeners.iter().position(is_hbone);
    let acceptance = acceptance(gateway, served);
    let (programmed, addresses) = match &acceptance {
        // An unaccepted Gateway is not programmed, whatever its Service says.
        Acceptance::Refused(_, message) => (
            Some((
                "Invalid",
                format!("not programmed because not accepted: {message}"),
            )),
            Vec::new(),
        ),
        _ => programmed_problem(snapshot, gateway),
    };
    let gateway_programmed = programmed.is_none();
    let accepted = match acceptance {
        Acceptance::Accepted => conditions.make(
            "Accepted",
            ConditionStatus::True,
            "Accepted",
            "accepted as a waypoint",
        ),
        Acceptance::Partly(message) => conditions.make(
            "Accepted",
            ConditionStatus::True,
            "ListenersNotValid",
            message,
        ),
        Acceptance::Refused(reason, message) => {
            conditions.make("Accepted", ConditionStatus::False, reason, message)
        }
    };
    let programmed = conditions.check(
        "Programmed",
        (
            "Programmed",
            "the waypoint is running and reachable at its Service",
        ),
        programmed,
    );
    let listeners = gateway
        .listeners
        .iter()
        .enumerate()
        .map(|(i, listener)| {
            let listener_ok = Some(i) == served && gateway.rejected.is_none();
            listener_status(&conditions, listener, listener_ok, gateway_programmed)
        })
        .collect();
    GatewayStatus {
        addresses,
        conditions: vec![accepted, programmed],
        listeners,
    }
}

fn acceptance(gateway: &Gateway, served: Option<usize>) -> Acceptance {
    if let Some(rejection) = &gateway.rejected {
        return Acceptance::Refused("Invalid", rejection.to_string());
    }
    let parameters = gateway
        .infrastructure
        .as_ref()
        .and_then(|i| i.parameters_ref.as_ref());
    if let Some(parameters) = parameters {
        return Acceptance::Refused(
            "InvalidParameters",
            format!(
                "spec.infrastructure.parametersRef: {} {} is not supported (waypoints take no \
                 parameters); remove it",
                parameters.kind, parameters.name
            ),
        );
    }
    if !gateway.addresses.is_empty() {
        return Acceptance::Refused(
            "UnsupportedAddress",
            "spec.addresses: a waypoint's address is the cluster IP of its Service; remove \
             spec.addresses"
                .to_owned(),
        );
    }
    let refused: Vec<&str> = gateway
        .listeners
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != served)
        .map(|(_, l)| l.name.as_str())
        .collect();
    match (served, refused.is_empty()) {
        (Some(_), true) => Acceptance::Accepted,
        (Some(_), false) => Acceptance::Partly(format!(
            "listener(s) {} not served: a waypoint serves one listener, port {HBONE_PORT} \
             protocol {HBONE_PROTOCOL}",
            refused.join(", ")
        )),
        (None, _) => Acceptance::Refused(
            "ListenersNotValid",
            format!(
                "no listener with port {HBONE_PORT} and protocol {HBONE_PROTOCOL}; a waypoint \
                 needs exactly that listener (Istio's is named mesh)"
            ),
        ),
    }
}

/// Why the waypoint is not programmed, and the addresses bound to it.
fn programmed_problem(
    snapshot: &Snapshot,
    gateway: &Gateway,
) -> (Option<(&'static str, String)>, Vec<GatewayStatusAddress>) {
    let what = format!("{}/{}", gateway.namespace, gateway.name);
    let Some(service) = snapshot.service(&gateway.namespace, &gateway.name) else {
        let message = format!(
            "Service {what} not found: the waypoint controller creates it; in local mode add a \
             Service named like the Gateway, port {HBONE_PORT}, selecting the waypoint pod"
        );
        return (Some(("NoResources", message)), Vec::new());
    };
    let addresses: Vec<GatewayStatusAddress> = service
        .vips
        .iter()
        .map(|ip: &IpAddr| GatewayStatusAddress {
            type_: "IPAddress".to_owned(),
            value: ip.to_string(),
        })
        .collect();
    if addresses.is_empty() {
        let message = format!(
            "Service {what} has no cluster IP (headless?); ztunnel reaches a waypoint by its \
             cluster IP, so give the Service one"
        );
        return (Some(("AddressNotAssigned", message)), addresses);
    }
    let ready = service
        .ports
        .iter()
        .any(|port| !snapshot.endpoints_for(service, port).is_empty());
    if !ready {
        let message = format!(
            "Service {what} has no ready endpoint: the waypoint pod is not running or not \
             ready yet (check its selector and the pod's readiness)"
        );
        return (Some(("Pending", message)), addresses);
    }
    (None, addresses)
}

fn listener_status(
    conditions: &Conditions,
    listener: &Listener,
    served: bool,
    gateway_programmed: bool,
) -> ListenerStatus {
    let accepted = (!served).then(|| {
        (
            "UnsupportedProtocol",
            format!(
                "expected a single listener on port {HBONE_PORT} with protocol \
                 \"{HBONE_PROTOCOL}\""
            ),
        )
    });
    let resolved = (!listener.allowed_routes.kinds.is_empty()).then(|| {
        (
            "InvalidRouteKinds",
            "a waypoint listener takes no route kinds: routes reach a waypoint through a \
             Service parentRef; remove allowedRoutes.kinds"
                .to_owned(),
        )
    });
    let programmed = match (served, gateway_programmed) {
        (true, true) => None,
        (false, _) => Some(("Invalid", "the listener is not accepted".to_owned())),
        (true, false) => Some((
            "Pending",
            "the Gateway is not programmed yet (see its Programmed condition)".to_owned(),
        )),
    };
    let list: Vec<Condition> = vec![
        conditions.check("Accepted", ("Accepted", "listener accepted"), accepted),
        conditions.make(
            "Conflicted",
            ConditionStatus::False,
            "NoConflicts",
            "no conflicts",
        ),
        conditions.check(
            "Programmed",
            ("Programmed", "listener programmed"),
            programmed,
        ),
        conditions.check(
            "ResolvedRefs",
            ("ResolvedRefs", "all references resolved"),
            resolved,
        ),
    ];
    ListenerStatus {
        name: listener.name.clone(),
        supported_kinds: Vec::new(),
        attached_routes: 0,
        conditions: list,
    }
}
