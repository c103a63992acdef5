//! Waypoint Gateways: Accepted by their listeners, Programmed by their Service and pod.

use super::*;

const GATEWAYS: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: no-service, namespace: shop}
spec:
  gatewayClassName: ambit-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: no-pod, namespace: shop}
spec:
  gatewayClassName: ambit-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: v1
kind: Service
metadata: {name: no-pod, namespace: shop}
spec:
  clusterIP: 10.96.0.6
  selector: {gateway.networking.k8s.io/gateway-name: no-pod}
  ports: [{name: mesh, port: 15008}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: http-only, namespace: shop}
spec:
  gatewayClassName: ambit-waypoint
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: mixed, namespace: shop}
spec:
  gatewayClassName: ambit-waypoint
  listeners:
  - {name: mesh, port: 15008, protocol: HBONE}
  - {name: http, port: 80, protocol: HTTP}
  - {name: second-hbone, port: 15008, protocol: HBONE, hostname: x.example.com}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: with-kinds, namespace: shop}
spec:
  gatewayClassName: ambit-waypoint
  listeners:
  - {name: mesh, port: 15008, protocol: HBONE, allowedRoutes: {kinds: [{kind: HTTPRoute}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: addressed, namespace: shop}
spec:
  gatewayClassName: ambit-waypoint
  addresses: [{value: 10.9.9.9}]
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: parameters, namespace: shop}
spec:
  gatewayClassName: ambit-waypoint
  infrastructure: {parametersRef: {group: "", kind: ConfigMap, name: params}}
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: broken, namespace: shop}
spec:
  gatewayClassName: ambit-waypoint
  listeners: []
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: ingress, namespace: shop}
spec:
  gatewayClassName: ambit
  listeners: [{name: http, port: 80, protocol: HTTP}]
"#;

fn gateway<'a>(list: &'a [ObjectStatus], name: &str) -> &'a GatewayStatus {
    match find(list, "Gateway", &format!("shop/{name}")).map(|o| &o.status) {
        Some(Status::Gateway(status)) => status,
        other => panic!("no Gateway shop/{name}: {other:?}"),
    }
}

#[test]
fn gateway_conditions() {
    let list = statuses(GATEWAYS);
    #[rustfmt::skip]
    let table: &[(&str, &str, ConditionStatus, &str)] = &[
        ("waypoint",   "Accepted",   T, "Accepted"),
        ("waypoint",   "Programmed", T, "Programmed"),
        ("no-service", "Accepted",   T, "Accepted"),
        ("no-service", "Programmed", F, "NoResources"),
        ("no-pod",     "Programmed", F, "Pending"),
        ("http-only",  "Accepted",   F, "ListenersNotValid"),
        ("http-only",  "Programmed", F, "Invalid"),
        ("mixed",      "Accepted",   T, "ListenersNotValid"),
        ("mixed",      "Programmed", F, "NoResources"),
        ("with-kinds", "Accepted",   T, "Accepted"),
        ("addressed",  "Accepted",   F, "UnsupportedAddress"),
        ("parameters", "Accepted",   F, "InvalidParameters"),
        ("broken",     "Accepted",   F, "Invalid"),
        ("broken",     "Programmed", F, "Invalid"),
    ];
    let mut failures = Vec::new();
    for &(name, type_, status, reason) in table {
        let got = state(&gateway(&list, name).conditions, type_);
        if got != Some((status, reason.to_owned())) {
            failures.push(format!(
                "{name} {type_}: want {status:?}({reason}), got {got:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        find(&list, "Gateway", "shop/ingress").is_none(),
        "ingress Gateways are left to the ingress controller"
    );
    assert!(message(&gateway(&list, "no-pod").conditions, "Programmed").contains("no ready"));
}

#[test]
fn a_programmed_waypoint_lists_its_service_address() {
    let list = statuses(GATEWAYS);
    let ready = gateway(&list, "waypoint");
    assert_eq!(
        ready.addresses,
        [GatewayStatusAddress {
            type_: "IPAddress".into(),
            value: "10.96.0.5".into()
        }]
    );
    assert!(ready
        .conditions
        .iter()
        .all(|c| c.observed_generation == Some(2)));
    // Bound but not yet running: the address is known.
    assert_eq!(gateway(&list, "no-pod").addresses.len(), 1);
    assert!(gateway(&list, "no-service").addresses.is_empty());
}

#[test]
fn listener_conditions() {
    let list = statuses(GATEWAYS);
    #[rustfmt::skip]
    let table: &[(&str, &str, &str, ConditionStatus, &str)] = &[
        ("waypoint",   "mesh",  "Accepted",     T, "Accepted"),
        ("waypoint",   "mesh",  "Programmed",   T, "Programmed"),
        ("waypoint",   "mesh",  "ResolvedRefs", T, "ResolvedRefs"),
        ("waypoint",   "mesh",  "Conflicted",   F, "NoConflicts"),
        ("no-service", "mesh",  "Programmed",   F, "Pending"),
        ("http-only",  "http",  "Accepted",     F, "UnsupportedProtocol"),
        ("mixed",      "mesh",  "Accepted",     T, "Accepted"),
        ("mixed",      "http",  "Accepted",     F, "UnsupportedProtocol"),
        ("mixed",      "http",  "Programmed",   F, "Invalid"),
        ("mixed",      "second-hbone", "Accepted",     F, "UnsupportedProtocol"),
        ("with-kinds", "mesh",  "ResolvedRefs", F, "InvalidRouteKinds"),
    ];
    let mut failures = Vec::new();
    for &(name, listener, type_, status, reason) in table {
        let found = gateway(&list, name)
            .listeners
            .iter()
            .find(|l| l.name == listener);
        let got = found.and_then(|l| state(&l.conditions, type_));
        if got != Some((status, reason.to_owned())) {
            failures.push(format!(
                "{name} {listener} {type_}: want {status:?}({reason}), got {got:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for listener in &gateway(&list, "waypoint").listeners {
        assert!(listener.supported_kinds.is_empty());
        assert_eq!(listener.attached_routes, 0);
    }
}
