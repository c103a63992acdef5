//! The status of HTTPRoutes and GRPCRoutes towards the parents the waypoint controller answers
//! for: Services (GAMMA) and Gateways of class `ambit-waypoint`.
//!
//! Per Service parentRef (group `""`, kind `Service`), in the order the checks run:
//! - `Accepted=False NoMatchingParent` when the Service does not exist, or when `port` /
//!   `sectionName` match none of its TCP ports (Istio's reason for a missing parent Service;
//!   the route then attaches nowhere, exactly as the route table does).
//! - `Accepted=False UnsupportedValue` when the route breaks the schema (discovery keeps it
//!   with field paths, and the route table serves none of it), or when no rule can serve a
//!   request (every rule has a filter Ambit cannot apply).
//! - otherwise `Accepted=True Accepted`; rules or backends that answer 500 because of such a
//!   filter are named in the message.
//!
//! `ResolvedRefs` covers every backendRef and mirror backendRef, resolved by the same function
//! the route table uses ([`crate::routes::resolve_route_backend`]: a consumer route may send to
//! its parent Service without a ReferenceGrant), so status and traffic never disagree. It is
//! `False` with the first problem's reason ([`crate::routes::BackendProblem::reason`]) and
//! every problem in the message. A rejected route has no rules left to resolve, so it gets no
//! `ResolvedRefs` condition.
//!
//! `ambit.dev/WaypointBound` (a domain-prefixed condition, as the API allows) says whether a
//! waypoint applies the route at all: a route on a Service that no waypoint is bound to
//! (`istio.io/use-waypoint`) is valid but has no effect, which `Accepted` alone cannot say.
//!
//! A parentRef naming a Gateway of class `ambit-waypoint` gets `Accepted=False
//! NotAllowedByListeners`: the waypoint's listener accepts no route kinds; routes reach a
//! waypoint through the Services bound to it. Gateway parents of class `ambit` belong to the
//! ingress controller (not built yet) and other parents to other controllers: they get no entry.
//! A route with no parent of ours is not listed; the controller writes it with no entries of
//! ours ([`released`]), which removes any it wrote before.

mod facts;

use discovery::gateway_api::ParentRef;
use discovery::{Protocol, Snapshot};

use super::types::{
    Condition, ConditionStatus, Conditions, ObjectMeta, ObjectStatus, ParentReference,
    RouteParentStatus, RouteStatus, Status, API_VERSION,
};
use super::{WAYPOINT_CLASS, WAYPOINT_CONTROLLER};
use crate::routes::{resolve_route_backend, BackendProblem, BackendTarget, RouteKind};
use facts::{grpc_facts, http_facts, RouteFacts};

pub(super) fn statuses(snapshot: &Snapshot, time: &str) -> Vec<ObjectStatus> {
    let view = snapshot.gateway_api();
    let http = view.http_routes().iter().map(|r| http_facts(snapshot, r));
    let grpc = view.grpc_routes().iter().map(|r| grpc_facts(snapshot, r));
    http.chain(grpc)
        .filter_map(|facts| route_status(snapshot, &facts, time))
        .collect()
}

/// Every route of the snapshot that [`statuses`] left out (none of its parents is ours), with an
/// empty parent list: a controller writing it removes the entries it wrote while the route
/// still had a parent of ours (a parentRef edited away, a waypoint Gateway deleted).
pub(super) fn released(snapshot: &Snapshot, listed: &[ObjectStatus]) -> Vec<ObjectStatus> {
    let view = snapshot.gateway_api();
    let http = view
        .http_routes()
        .iter()
        .map(|r| (RouteKind::Http, &r.namespace, &r.name));
    let grpc = view
        .grpc_routes()
        .iter()
        .map(|r| (RouteKind::Grpc, &r.namespace, &r.name));
    http.chain(grpc)
        .filter(|(kind, namespace, name)| {
            !listed.iter().any(|status| {
                status.kind == kind.kind()
                    && status.metadata.namespace.as_ref() == Some(*namespace)
                    && &status.metadata.name == *name
            })
        })
        .map(|(kind, namespace, name)| ObjectStatus {
            api_version: API_VERSION,
            kind: kind.kind(),
            metadata: ObjectMeta {
                namespace: Some(namespace.clone()),
                name: name.clone(),
            },
            status: Status::Route(RouteStatus {
                parents: Vec::new(),
            }),
        })
        .collect()
}

fn route_status(snapshot: &Snapshot, facts: &RouteFacts<'_>, time: &str) -> Option<ObjectStatus> {
    let conditions = Conditions {
        generation: facts.generation,
        time: time.to_owned(),
    };
    // Route-level conditions are the same towards every parent: computed once.
    let resolved = facts
        .rejected
        .is_none()
        .then(|| resolved_refs(snapshot, facts, &conditions));
    let parents: Vec<RouteParentStatus> = facts
        .parents
        .iter()
        .filter_map(|parent| {
            let list = if is_service(parent) {
                service_parent(snapshot, facts, parent, &conditions, resolved.as_ref())
            } else if is_waypoint_gateway(snapshot, parent) {
                waypoint_gateway_parent(parent, &conditions, resolved.as_ref())
            } else {
                return None;
            };
            Some(RouteParentStatus {
                parent_ref: echo(parent),
                controller_name: WAYPOINT_CONTROLLER.to_owned(),
                conditions: list,
            })
        })
        .collect();
    if parents.is_empty() {
        return None;
    }
    Some(ObjectStatus {
        api_version: API_VERSION,
        kind: facts.kind.kind(),
        metadata: ObjectMeta {
            namespace: Some(facts.namespace.to_owned()),
            name: facts.name.to_owned(),
        },
        status: Status::Route(RouteStatus { parents }),
    })
}

fn is_service(parent: &ParentRef) -> bool {
    parent.group.is_empty() && parent.kind == "Service"
}

fn is_waypoint_gateway(snapshot: &Snapshot, parent: &ParentRef) -> bool {
    parent.group == discovery::gateway_api::GATEWAY_API_GROUP
        && parent.kind == "Gateway"
        && snapshot
            .gateway_api()
            .gateway(&parent.namespace, &parent.name)
            .is_some_and(|g| g.class_name == WAYPOINT_CLASS)
}

fn echo(parent: &ParentRef) -> ParentReference {
    ParentReference {
        group: parent.group.clone(),
        kind: parent.kind.clone(),
        namespace: parent.namespace.clone(),
        name: parent.name.clone(),
        section_name: parent.section_name.clone(),
        port: parent.port,
    }
}

fn service_parent(
    snapshot: &Snapshot,
    facts: &RouteFacts<'_>,
    parent: &ParentRef,
    conditions: &Conditions,
    resolved: Option<&Condition>,
) -> Vec<Condition> {
    let what = format!("{}/{}", parent.namespace, parent.name);
    let Some(service) = snapshot.service(&parent.namespace, &parent.name) else {
        let message = format!("parent Service {what} not found; create it or fix the parentRef");
        return vec![conditions.make(
            "Accepted",
            ConditionStatus::False,
            "NoMatchingParent",
            message,
        )];
    };
    let port_matches = service.ports.iter().any(|port| {
        port.protocol == Protocol::Tcp
            && parent.port.is_none_or(|p| p == port.port)
            && parent
                .section_name
                .as_deref()
                .is_none_or(|s| s == port.name)
    });
    let mut list = Vec::with_capacity(3);
    if !port_matches {
        let message = format!(
            "parent Service {what} has no TCP port matching{}{}; fix the parentRef's port or \
             sectionName",
            parent
                .port
                .map(|p| format!(" port {p}"))
                .unwrap_or_default(),
            parent
                .section_name
                .as_ref()
                .map(|s| format!(" sectionName {s}"))
                .unwrap_or_default(),
        );
        list.push(conditions.make(
            "Accepted",
            ConditionStatus::False,
            "NoMatchingParent",
            message,
        ));
    } else {
        list.push(accepted(facts, conditions));
    }
    list.extend(resolved.cloned());
    list.push(waypoint_bound(snapshot, service, conditions));
    list
}

fn waypoint_gateway_parent(
    parent: &ParentRef,
    conditions: &Conditions,
    resolved: Option<&Condition>,
) -> Vec<Condition> {
    let message = format!(
        "Gateway {}/{} is a waypoint: its listener takes no routes; attach the route to a \
         Service bound to the waypoint (parentRef group \"\" kind Service) instead",
        parent.namespace, parent.name
    );
    let mut list = vec![conditions.make(
        "Accepted",
        ConditionStatus::False,
        "NotAllowedByListeners",
        message,
    )];
    list.extend(resolved.cloned());
    list
}

/// `Accepted` once the parent is known to match.
fn accepted(facts: &RouteFacts<'_>, conditions: &Conditions) -> Condition {
    if let Some(rejection) = facts.rejected {
        return conditions.make(
            "Accepted",
            ConditionStatus::False,
            "UnsupportedValue",
            format!(
                "the route breaks the Gateway API schema, so none of it is served: {rejection}"
            ),
        );
    }
    let listed = facts
        .unsupported
        .iter()
        .map(|(field, why)| format!("{field}: {why}"))
        .collect::<Vec<_>>()
        .join("; ");
    // The API: a route is accepted if at least one of its rules is implemented.
    if facts.rules > 0 && facts.unusable_rules.len() >= facts.rules {
        return conditions.make(
            "Accepted",
            ConditionStatus::False,
            "UnsupportedValue",
            format!("no rule can be served (requests get a 500): {listed}"),
        );
    }
    let message = if listed.is_empty() {
        "route accepted".to_owned()
    } else {
        format!("route accepted; requests reaching these filters get a 500: {listed}")
    };
    conditions.make("Accepted", ConditionStatus::True, "Accepted", message)
}

fn resolved_refs(
    snapshot: &Snapshot,
    facts: &RouteFacts<'_>,
    conditions: &Conditions,
) -> Condition {
    let problems: Vec<(String, BackendProblem)> = facts
        .references
        .iter()
        .filter_map(|(field, backend)| {
            match resolve_route_backend(
                snapshot,
                facts.kind,
                facts.namespace,
                facts.parents,
                backend,
            ) {
                BackendTarget::Invalid(problem) => Some((field.clone(), problem)),
                BackendTarget::Service { .. } => None,
            }
        })
        .collect();
    let Some((_, first)) = problems.first() else {
        return conditions.make(
            "ResolvedRefs",
            ConditionStatus::True,
            "ResolvedRefs",
            "all references resolved",
        );
    };
    let message = problems
        .iter()
        .map(|(field, problem)| format!("{field}: {problem}"))
        .collect::<Vec<_>>()
        .join("; ");
    conditions.make(
        "ResolvedRefs",
        ConditionStatus::False,
        first.reason(),
        message,
    )
}

/// Whether a waypoint applies routes of `service` (see the module docs).
fn waypoint_bound(
    snapshot: &Snapshot,
    service: &discovery::Service,
    conditions: &Conditions,
) -> Condition {
    const TYPE: &str = "ambit.dev/WaypointBound";
    let what = format!("{}/{}", service.namespace, service.name);
    let Some(waypoint) = snapshot.service_waypoint(service) else {
        return conditions.make(
            TYPE,
            ConditionStatus::False,
            "NoWaypoint",
            format!(
                "Service {what} is not bound to a waypoint, so no proxy applies this route; \
                 label it or its namespace istio.io/use-waypoint=<waypoint name>"
            ),
        );
    };
    let gateway = snapshot
        .gateway_api()
        .gateway(&waypoint.namespace, &waypoint.name);
    match gateway {
        Some(g) if g.class_name == WAYPOINT_CLASS => conditions.make(
            TYPE,
            ConditionStatus::True,
            "WaypointBound",
            format!("Service {what} is bound to waypoint {waypoint}"),
        ),
        _ => conditions.make(
            TYPE,
            ConditionStatus::False,
            "WaypointNotFound",
            format!(
                "Service {what} is bound to waypoint {waypoint}, but there is no Gateway \
                 {waypoint} of class {WAYPOINT_CLASS}; create it or fix istio.io/use-waypoint"
            ),
        ),
    }
}
