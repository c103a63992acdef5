#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;

use super::*;
use crate::status::{ConditionStatus, ParentReference};

fn condition(type_: &str, status: ConditionStatus, reason: &str, time: &str) -> Condition {
    Condition {
        type_: type_.into(),
        status,
        reason: reason.into(),
        message: format!("{type_} {reason}"),
        observed_generation: Some(1),
        last_transition_time: time.into(),
    }
}

const OLD: &str = "2024-01-01T00:00:00Z";
const NOW: &str = "2024-05-01T12:00:00Z";

#[test]
fn an_unchanged_class_is_not_written_and_a_new_generation_is() {
    let computed = || GatewayClassStatus {
        conditions: vec![Condition {
            observed_generation: None,
            ..condition("Accepted", ConditionStatus::True, "Accepted", NOW)
        }],
    };
    // The CRD's default status: Unknown/Pending. Written, observedGeneration from the object.
    let pending = json!({"conditions": [{"type": "Accepted", "status": "Unknown",
        "reason": "Pending", "message": "Waiting for controller",
        "lastTransitionTime": "1970-01-01T00:00:00Z"}]});
    let written = class_status(computed(), &pending, Some(1)).unwrap();
    assert_eq!(written["conditions"][0]["status"], "True");
    assert_eq!(written["conditions"][0]["observedGeneration"], 1);
    assert_eq!(written["conditions"][0]["lastTransitionTime"], NOW);
    // Written once: the next pass (a later clock) finds it and writes nothing...
    let mut later = computed();
    later.conditions[0].last_transition_time = "2024-06-01T00:00:00Z".into();
    assert_eq!(class_status(later, &written, Some(1)), None);
    // ...until the class's generation moves.
    let bumped = class_status(computed(), &written, Some(2)).unwrap();
    assert_eq!(bumped["conditions"][0]["observedGeneration"], 2);
    assert_eq!(bumped["conditions"][0]["lastTransitionTime"], NOW);
}

fn gateway(programmed: ConditionStatus, time: &str) -> GatewayStatus {
    GatewayStatus {
        addresses: Vec::new(),
        conditions: vec![
            condition("Accepted", ConditionStatus::True, "Accepted", time),
            condition("Programmed", programmed, "Pending", time),
        ],
        listeners: vec![ListenerStatus {
            name: "mesh".into(),
            supported_kinds: Vec::new(),
            attached_routes: 0,
            conditions: vec![condition(
                "Accepted",
                ConditionStatus::True,
                "Accepted",
                time,
            )],
        }],
    }
}

#[test]
fn gateway_transition_times_move_only_with_the_status() {
    let live = serde_json::to_value(gateway(ConditionStatus::False, OLD)).unwrap();
    assert_eq!(
        gateway_status(gateway(ConditionStatus::False, NOW), &live),
        None
    );
    let changed = gateway_status(gateway(ConditionStatus::True, NOW), &live).unwrap();
    let conditions = &changed["conditions"];
    assert_eq!(conditions[0]["lastTransitionTime"], OLD, "Accepted kept");
    assert_eq!(conditions[1]["lastTransitionTime"], NOW, "Programmed moved");
    assert_eq!(
        changed["listeners"][0]["conditions"][0]["lastTransitionTime"],
        OLD
    );
    // No address any more: the merge patch removes the old ones.
    assert_eq!(changed["addresses"], Value::Null);
    assert!(changed.as_object().unwrap().contains_key("addresses"));
}

fn parent(controller: &str, service: &str, time: &str) -> RouteParentStatus {
    RouteParentStatus {
        parent_ref: ParentReference {
            group: String::new(),
            kind: "Service".into(),
            namespace: "shop".into(),
            name: service.into(),
            section_name: None,
            port: None,
        },
        controller_name: controller.into(),
        conditions: vec![condition(
            "Accepted",
            ConditionStatus::True,
            "Accepted",
            time,
        )],
    }
}

#[test]
fn route_entries_of_other_controllers_are_kept() {
    let istio = serde_json::to_value(parent("istio.io/gateway-controller", "cart", OLD)).unwrap();
    let ours_old = serde_json::to_value(parent(WAYPOINT_CONTROLLER, "cart", OLD)).unwrap();
    let live = json!({"parents": [istio.clone(), ours_old.clone()]});
    let computed = |service: &str| RouteStatus {
        parents: vec![parent(WAYPOINT_CONTROLLER, service, NOW)],
    };
    assert_eq!(route_status(computed("cart"), &live), None);
    // Our parent changed: ours replaced, Istio's untouched and first.
    let written = route_status(computed("cart-v2"), &live).unwrap();
    let parents = written["parents"].as_array().unwrap();
    assert_eq!(parents.len(), 2);
    assert_eq!(parents[0], istio);
    assert_eq!(parents[1]["parentRef"]["name"], "cart-v2");
    assert_eq!(parents[1]["conditions"][0]["lastTransitionTime"], NOW);
    // A route nobody wrote yet.
    let fresh = route_status(computed("cart"), &Value::Null).unwrap();
    assert_eq!(fresh["parents"].as_array().unwrap().len(), 1);
}

#[test]
fn a_route_we_no_longer_answer_for_loses_our_entries_and_keeps_the_others() {
    let istio = serde_json::to_value(parent("istio.io/gateway-controller", "cart", OLD)).unwrap();
    let ours = serde_json::to_value(parent(WAYPOINT_CONTROLLER, "cart", OLD)).unwrap();
    let released = || RouteStatus { parents: vec![] };
    let written = route_status(released(), &json!({"parents": [istio.clone(), ours]})).unwrap();
    assert_eq!(written["parents"], json!([istio.clone()]));
    // Nothing of ours there: nothing written (no PATCH for every foreign route on each pass).
    assert_eq!(route_status(released(), &json!({"parents": [istio]})), None);
    assert_eq!(route_status(released(), &Value::Null), None);
}
