//! Deciding which status to write: the computed status ([`crate::status::compute`]) against
//! the one the live object shows. Pure; [`super::status_write`] reads and PATCHes.
//!
//! The rules of `metav1.Condition` and of Gateway API status ownership:
//! - a condition whose `status` did not change keeps the object's `lastTransitionTime`
//!   ([`carry_transition_times`]); if, after that, the status says the same as the object's,
//!   nothing is written — so a controller restart or a resync writes nothing;
//! - a GatewayClass's and a Gateway's status belong to their controller: ours is written
//!   whole, and only for a class whose `spec.controllerName` is ours;
//! - a route's `status.parents` is shared with every controller its parentRefs reach: only
//!   the entries with our `controllerName` are replaced, the others are kept as they are.

use serde_json::{json, Value};

use crate::status::{
    carry_transition_times, Condition, GatewayClassStatus, GatewayStatus, ListenerStatus,
    RouteParentStatus, RouteStatus, WAYPOINT_CONTROLLER,
};

/// Reads what the object shows; an entry that does not parse is treated as absent (and so
/// rewritten), never as an error: the object's status is ours to fix.
fn lenient<T: serde::de::DeserializeOwned + Default>(value: &Value) -> T {
    serde_json::from_value(value.clone()).unwrap_or_default()
}

/// The class status to write (`conditions` only), or `None` when the class shows it already.
/// `generation` is the live class's `metadata.generation` (the snapshot holds no classes).
pub fn class_status(
    mut computed: GatewayClassStatus,
    live_status: &Value,
    generation: Option<i64>,
) -> Option<Value> {
    for condition in &mut computed.conditions {
        condition.observed_generation = generation;
    }
    let existing: Vec<Condition> = lenient(&live_status["conditions"]);
    carry_transition_times(&mut computed.conditions, &existing);
    if computed.conditions == existing {
        return None;
    }
    Some(json!({ "conditions": computed.conditions }))
}

/// The Gateway status to write, or `None` when the Gateway shows it already.
pub fn gateway_status(mut computed: GatewayStatus, live_status: &Value) -> Option<Value> {
    let existing = GatewayStatus {
        addresses: lenient(&live_status["addresses"]),
        conditions: lenient(&live_status["conditions"]),
        listeners: lenient::<Vec<ListenerStatus>>(&live_status["listeners"]),
    };
    carry_transition_times(&mut computed.conditions, &existing.conditions);
    for listener in &mut computed.listeners {
        if let Some(old) = existing.listeners.iter().find(|l| l.name == listener.name) {
            carry_transition_times(&mut listener.conditions, &old.conditions);
        }
    }
    if computed == existing {
        return None;
    }
    let mut status = serde_json::to_value(&computed).ok()?;
    // A merge patch leaves out what it does not mention: say that no address is bound.
    if computed.addresses.is_empty() {
        status["addresses"] = Value::Null;
    }
    Some(status)
}

/// The route status to write (`parents`: the other controllers' entries, then ours), or
/// `None` when the route shows ours already.
pub fn route_status(mut computed: RouteStatus, live_status: &Value) -> Option<Value> {
    let live: Vec<Value> = lenient(&live_status["parents"]);
    let (ours, theirs): (Vec<Value>, Vec<Value>) = live
        .into_iter()
        .partition(|entry| entry["controllerName"] == WAYPOINT_CONTROLLER);
    let ours: Vec<RouteParentStatus> = ours.iter().filter_map(parse).collect();
    for parent in &mut computed.parents {
        if let Some(old) = ours.iter().find(|o| o.parent_ref == parent.parent_ref) {
            carry_transition_times(&mut parent.conditions, &old.conditions);
        }
    }
    if computed.parents == ours {
        return None;
    }
    let mut parents = theirs;
    for parent in &computed.parents {
        parents.push(serde_json::to_value(parent).ok()?);
    }
    Some(json!({ "parents": parents }))
}

fn parse<T: serde::de::DeserializeOwned>(value: &Value) -> Option<T> {
    serde_json::from_value(value.clone()).ok()
}

#[cfg(test)]
#[path = "status_plan_tests.rs"]
mod tests;
