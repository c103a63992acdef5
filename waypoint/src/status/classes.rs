//! The status of our two GatewayClasses (DESIGN §3).
//!
//! Both are always listed, `Accepted=True`. The snapshot holds no GatewayClass objects
//! (discovery does not read the kind): the CA creates both classes whenever the CRDs are
//! served (ca/src/gateway_classes.rs) and never changes them, so "ours" is known without
//! reading them. Because the object is not read, `observedGeneration` is left out; a controller
//! writing this status must fill it in from the object it PATCHes (and skip a class that is
//! absent, i.e. answers 404).
//!
//! The ingress class is accepted too: accepting a class says the controller handles it, and
//! its Gateways say for themselves that they are not served yet (see [`super::gateway`]).

use super::types::{
    ConditionStatus, Conditions, GatewayClassStatus, ObjectMeta, ObjectStatus, Status, API_VERSION,
};
use super::{INGRESS_CLASS, INGRESS_CONTROLLER, WAYPOINT_CLASS, WAYPOINT_CONTROLLER};

pub(super) fn statuses(time: &str) -> Vec<ObjectStatus> {
    let conditions = Conditions {
        generation: None,
        time: time.to_owned(),
    };
    [
        (INGRESS_CLASS, INGRESS_CONTROLLER),
        (WAYPOINT_CLASS, WAYPOINT_CONTROLLER),
    ]
    .into_iter()
    .map(|(class, controller)| ObjectStatus {
        api_version: API_VERSION,
        kind: "GatewayClass",
        metadata: ObjectMeta {
            namespace: None,
            name: class.to_owned(),
        },
        status: Status::GatewayClass(GatewayClassStatus {
            conditions: vec![conditions.make(
                "Accepted",
                ConditionStatus::True,
                "Accepted",
                format!("Handled by {controller}"),
            )],
        }),
    })
    .collect()
}
