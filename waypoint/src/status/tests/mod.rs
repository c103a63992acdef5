//! Status over snapshots built from real manifests (YAML through discovery's `--manifests`
//! loader), as tables: object, parent or listener, condition → expected status and reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod conformance;
mod gateways;
mod routes;

use std::time::{Duration, SystemTime};

use super::*;
use crate::routes::tests::load;

/// 2024-05-01T12:00:00Z: every condition's lastTransitionTime in these tests.
fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_714_564_800)
}

const NOW: &str = "2024-05-01T12:00:00Z";

/// Namespace `shop` (ambient, bound to waypoint `shop/waypoint`), the waypoint's Gateway,
/// Service and ready pod; Services `shop/cart` (ports `http` 80, `grpc` 7070) and
/// `shop/cart-v1`; `other/billing` (no ReferenceGrant); `legacy/batch` (no waypoint).
const CLUSTER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: shop, generation: 2}
spec:
  gatewayClassName: ambit-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: v1
kind: Service
metadata: {name: waypoint, namespace: shop}
spec:
  clusterIP: 10.96.0.5
  selector: {gateway.networking.k8s.io/gateway-name: waypoint}
  ports: [{name: mesh, port: 15008}]
---
apiVersion: v1
kind: Pod
metadata: {name: waypoint-0, namespace: shop, labels: {gateway.networking.k8s.io/gateway-name: waypoint}}
spec: {nodeName: node-a, serviceAccountName: waypoint, containers: [{name: waypoint}]}
status: {podIP: 10.1.0.5}
---
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80}, {name: grpc, port: 7070, appProtocol: grpc}]
---
apiVersion: v1
kind: Service
metadata: {name: cart-v1, namespace: shop}
spec:
  clusterIP: 10.96.0.11
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: billing, namespace: other}
spec:
  clusterIP: 10.96.0.20
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: batch, namespace: legacy}
spec:
  clusterIP: 10.96.0.30
  ports: [{name: http, port: 80}]
"#;

/// The status of every object for `CLUSTER` plus `extra`.
fn statuses(extra: &str) -> Vec<ObjectStatus> {
    compute(&load(&format!("{CLUSTER}\n---\n{extra}")), now())
}

fn find<'a>(list: &'a [ObjectStatus], kind: &str, name: &str) -> Option<&'a ObjectStatus> {
    let (namespace, name) = match name.split_once('/') {
        Some((ns, n)) => (Some(ns), n),
        None => (None, name),
    };
    list.iter().find(|o| {
        o.kind == kind && o.metadata.name == name && o.metadata.namespace.as_deref() == namespace
    })
}

/// `(status, reason)` of condition `type_` in `conditions`, or `None` when absent.
fn state(conditions: &[Condition], type_: &str) -> Option<(ConditionStatus, String)> {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status, c.reason.clone()))
}

fn message<'a>(conditions: &'a [Condition], type_: &str) -> &'a str {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map_or("", |c| c.message.as_str())
}

const T: ConditionStatus = ConditionStatus::True;
const F: ConditionStatus = ConditionStatus::False;

#[test]
fn our_classes_are_always_listed_and_accepted() {
    let list = compute(&load(""), now());
    let classes: Vec<_> = list.iter().filter(|o| o.kind == "GatewayClass").collect();
    assert_eq!(classes.len(), 2, "{list:#?}");
    for (class, controller) in [
        ("ambit", "ambit.dev/gateway-controller"),
        ("ambit-waypoint", "ambit.dev/waypoint-controller"),
    ] {
        let object = find(&list, "GatewayClass", class).unwrap();
        let Status::GatewayClass(status) = &object.status else {
            panic!("{object:?}")
        };
        assert_eq!(
            state(&status.conditions, "Accepted"),
            Some((T, "Accepted".into()))
        );
        assert!(message(&status.conditions, "Accepted").contains(controller));
        assert_eq!(status.conditions[0].observed_generation, None);
    }
}

#[test]
fn output_has_the_kubernetes_shape() {
    let list = statuses(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: good, namespace: shop, generation: 3}
spec:
  parentRefs: [{group: "", kind: Service, name: cart, port: 80}]
  rules: [{backendRefs: [{name: cart-v1, port: 80}]}]
"#,
    );
    let route = find(&list, "HTTPRoute", "shop/good").unwrap();
    let yaml = serde_yaml::to_string(route).unwrap();
    let expected = format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  namespace: shop
  name: good
status:
  parents:
  - parentRef:
      group: ''
      kind: Service
      namespace: shop
      name: cart
      port: 80
    controllerName: ambit.dev/waypoint-controller
    conditions:
    - type: Accepted
      status: 'True'
      reason: Accepted
      message: route accepted
      observedGeneration: 3
      lastTransitionTime: {NOW}
    - type: ResolvedRefs
      status: 'True'
      reason: ResolvedRefs
      message: all references resolved
      observedGeneration: 3
      lastTransitionTime: {NOW}
    - type: ambit.dev/WaypointBound
      status: 'True'
      reason: WaypointBound
      message: Service shop/cart is bound to waypoint shop/waypoint
      observedGeneration: 3
      lastTransitionTime: {NOW}
"#
    );
    assert_eq!(yaml, expected);
    // Order: classes, Gateways, then routes.
    let kinds: Vec<&str> = list.iter().map(|o| o.kind).collect();
    assert_eq!(
        kinds,
        ["GatewayClass", "GatewayClass", "Gateway", "HTTPRoute"]
    );
}

#[test]
fn unchanged_conditions_keep_their_transition_time() {
    let list = statuses("");
    let Status::Gateway(gateway) = &find(&list, "Gateway", "shop/waypoint").unwrap().status else {
        panic!()
    };
    let mut existing = gateway.conditions.clone();
    existing[0].last_transition_time = "2020-01-01T00:00:00Z".into();
    existing[1].status = ConditionStatus::Unknown;
    existing[1].last_transition_time = "2020-01-01T00:00:00Z".into();
    let mut computed = gateway.conditions.clone();
    carry_transition_times(&mut computed, &existing);
    assert_eq!(computed[0].last_transition_time, "2020-01-01T00:00:00Z");
    assert!(computed[0].same_state(&existing[0]));
    assert_eq!(computed[1].last_transition_time, NOW, "its status changed");
    assert!(!computed[1].same_state(&existing[1]));
}
