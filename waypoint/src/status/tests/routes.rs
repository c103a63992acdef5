//! HTTPRoutes and GRPCRoutes towards Service parents and waypoint Gateway parents.

use super::*;

/// One route per row of [`route_conditions`]; each sends to `shop/cart-v1:80` unless its
/// name says otherwise.
const ROUTES: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: good, namespace: shop, generation: 7}
spec:
  parentRefs: [{group: "", kind: Service, name: cart, port: 80}]
  rules: [{backendRefs: [{name: cart-v1, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: missing-parent, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: nope}]
  rules: [{backendRefs: [{name: cart-v1, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: wrong-port, namespace: shop}
spec:
  parentRefs:
  - {group: "", kind: Service, name: cart, port: 9999}
  - {group: "", kind: Service, name: cart, sectionName: grpc}
  rules: [{backendRefs: [{name: cart-v1, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: backend-missing, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: cart}]
  rules:
  - backendRefs: [{name: cart-v1, port: 80}, {name: ghost, port: 80}, {name: cart-v1, port: 81}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: cross-namespace, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: cart}]
  rules: [{backendRefs: [{name: billing, namespace: other, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: wrong-kind, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: cart}]
  rules: [{backendRefs: [{group: example.com, kind: Bucket, name: b}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: mirror-missing, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: cart}]
  rules:
  - filters: [{type: RequestMirror, requestMirror: {backendRef: {name: ghost, port: 80}}}]
    backendRefs: [{name: cart-v1, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: invalid, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: cart}]
  rules: [{matches: [{path: {type: Exact, value: no-slash}}], backendRefs: [{name: cart-v1, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: extension-only, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: cart}]
  rules:
  - filters: [{type: ExtensionRef, extensionRef: {group: example.com, kind: Magic, name: m}}]
    backendRefs: [{name: cart-v1, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: extension-partly, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: cart}]
  rules:
  - filters: [{type: ExtensionRef, extensionRef: {group: example.com, kind: Magic, name: m}}]
    backendRefs: [{name: cart-v1, port: 80}]
  - backendRefs: [{name: cart-v1, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: to-waypoint, namespace: shop}
spec:
  parentRefs: [{name: waypoint}]
  rules: [{backendRefs: [{name: cart-v1, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: mixed-parents, namespace: shop}
spec:
  parentRefs: [{name: ingress}, {group: "", kind: Service, name: cart}, {name: absent}]
  rules: [{backendRefs: [{name: cart-v1, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: ingress-only, namespace: shop}
spec:
  parentRefs: [{name: ingress}]
  rules: [{backendRefs: [{name: cart-v1, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: ingress, namespace: shop}
spec:
  gatewayClassName: ambit
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: consumer, namespace: client}
spec:
  parentRefs: [{group: "", kind: Service, name: cart, namespace: shop}]
  rules: [{backendRefs: [{name: cart, namespace: shop, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: unbound, namespace: legacy}
spec:
  parentRefs: [{group: "", kind: Service, name: batch}]
  rules: [{backendRefs: [{name: batch, port: 80}]}]
---
apiVersion: v1
kind: Service
metadata: {name: lost, namespace: shop, labels: {istio.io/use-waypoint: gone}}
spec:
  clusterIP: 10.96.0.40
  ports: [{name: http, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: lost-waypoint, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: lost}]
  rules: [{backendRefs: [{name: lost, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: grpc, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: cart, sectionName: grpc}]
  rules: [{backendRefs: [{name: cart, port: 7070}, {name: ghost, port: 7070}]}]
"#;

fn parents<'a>(list: &'a [ObjectStatus], kind: &str, name: &str) -> &'a [RouteParentStatus] {
    match find(list, kind, name).map(|o| &o.status) {
        Some(Status::Route(status)) => &status.parents,
        other => panic!("no {kind} {name}: {other:?}"),
    }
}

#[test]
fn route_conditions() {
    let list = statuses(ROUTES);
    // (kind, route, parent index in status.parents, condition, status and reason or None).
    type Row<'a> = (
        &'a str,
        &'a str,
        usize,
        &'a str,
        Option<(ConditionStatus, &'a str)>,
    );
    #[rustfmt::skip]
    let table: &[Row<'_>] = &[
        ("HTTPRoute", "shop/good",             0, "Accepted",     Some((T, "Accepted"))),
        ("HTTPRoute", "shop/good",             0, "ResolvedRefs", Some((T, "ResolvedRefs"))),
        ("HTTPRoute", "shop/missing-parent",   0, "Accepted",     Some((F, "NoMatchingParent"))),
        ("HTTPRoute", "shop/wrong-port",       0, "Accepted",     Some((F, "NoMatchingParent"))),
        ("HTTPRoute", "shop/wrong-port",       1, "Accepted",     Some((T, "Accepted"))),
        ("HTTPRoute", "shop/backend-missing",  0, "Accepted",     Some((T, "Accepted"))),
        ("HTTPRoute", "shop/backend-missing",  0, "ResolvedRefs", Some((F, "BackendNotFound"))),
        ("HTTPRoute", "shop/cross-namespace",  0, "ResolvedRefs", Some((F, "RefNotPermitted"))),
        ("HTTPRoute", "shop/wrong-kind",       0, "ResolvedRefs", Some((F, "InvalidKind"))),
        ("HTTPRoute", "shop/mirror-missing",   0, "ResolvedRefs", Some((F, "BackendNotFound"))),
        ("HTTPRoute", "shop/invalid",          0, "Accepted",     Some((F, "UnsupportedValue"))),
        ("HTTPRoute", "shop/invalid",          0, "ResolvedRefs", None),
        ("HTTPRoute", "shop/extension-only",   0, "Accepted",     Some((F, "UnsupportedValue"))),
        ("HTTPRoute", "shop/extension-partly", 0, "Accepted",     Some((T, "Accepted"))),
        ("HTTPRoute", "shop/to-waypoint",      0, "Accepted",     Some((F, "NotAllowedByListeners"))),
        ("HTTPRoute", "shop/mixed-parents",    0, "Accepted",     Some((T, "Accepted"))),
        ("HTTPRoute", "client/consumer",       0, "Accepted",     Some((T, "Accepted"))),
        ("HTTPRoute", "client/consumer",       0, "ResolvedRefs", Some((T, "ResolvedRefs"))),
        ("HTTPRoute", "shop/good",             0, "ambit.dev/WaypointBound", Some((T, "WaypointBound"))),
        ("HTTPRoute", "legacy/unbound",        0, "ambit.dev/WaypointBound", Some((F, "NoWaypoint"))),
        ("HTTPRoute", "shop/lost-waypoint",    0, "ambit.dev/WaypointBound", Some((F, "WaypointNotFound"))),
        ("GRPCRoute", "shop/grpc",             0, "Accepted",     Some((T, "Accepted"))),
        ("GRPCRoute", "shop/grpc",             0, "ResolvedRefs", Some((F, "BackendNotFound"))),
    ];
    let mut failures = Vec::new();
    for &(kind, route, parent, type_, want) in table {
        let got = parents(&list, kind, route)
            .get(parent)
            .and_then(|p| state(&p.conditions, type_));
        let want = want.map(|(s, r)| (s, r.to_owned()));
        if got != want {
            failures.push(format!(
                "{kind} {route} parent {parent} {type_}: want {want:?}, got {got:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn only_our_parents_get_entries() {
    let list = statuses(ROUTES);
    assert!(
        find(&list, "HTTPRoute", "shop/ingress-only").is_none(),
        "ingress parents are the ingress controller's"
    );
    let mixed = parents(&list, "HTTPRoute", "shop/mixed-parents");
    assert_eq!(mixed.len(), 1, "{mixed:#?}");
    assert_eq!(mixed[0].parent_ref.kind, "Service");
    assert_eq!(mixed[0].controller_name, "ambit.dev/waypoint-controller");
    let to_waypoint = &parents(&list, "HTTPRoute", "shop/to-waypoint")[0].parent_ref;
    assert_eq!(
        (
            to_waypoint.group.as_str(),
            to_waypoint.kind.as_str(),
            to_waypoint.namespace.as_str()
        ),
        ("gateway.networking.k8s.io", "Gateway", "shop"),
        "the parentRef is echoed with its defaults"
    );
}

#[test]
fn the_controller_lists_routes_it_no_longer_answers_for_with_no_entries_of_ours() {
    let snapshot = load(&format!("{CLUSTER}\n---\n{ROUTES}"));
    let for_controller = compute_for_controller(&snapshot, now());
    // The ingress-only route: nothing of ours, so whatever we wrote before is taken back.
    let released = find(&for_controller, "HTTPRoute", "shop/ingress-only").unwrap();
    assert_eq!(
        released.status,
        Status::Route(RouteStatus { parents: vec![] })
    );
    // Routes we answer for are as `compute` says, listed once.
    let good = |list: &[ObjectStatus]| find(list, "HTTPRoute", "shop/good").cloned();
    assert_eq!(good(&for_controller), good(&compute(&snapshot, now())));
    let goods = for_controller
        .iter()
        .filter(|o| o.kind == "HTTPRoute" && o.metadata.name == "good")
        .count();
    assert_eq!(goods, 1);
}

#[test]
fn messages_name_the_field_and_the_fix() {
    let list = statuses(ROUTES);
    let condition = |route: &str, type_: &str| {
        message(&parents(&list, "HTTPRoute", route)[0].conditions, type_).to_owned()
    };
    let missing = condition("shop/backend-missing", "ResolvedRefs");
    assert!(
        missing.contains("spec.rules[0].backendRefs[1]: backend shop/ghost port 80: no such Service")
            && missing.contains("spec.rules[0].backendRefs[2]: backend shop/cart-v1 port 81: the Service has no such port"),
        "{missing}"
    );
    let mirror = condition("shop/mirror-missing", "ResolvedRefs");
    assert!(mirror.starts_with("spec.rules[0].filters[0]: "), "{mirror}");
    let invalid = condition("shop/invalid", "Accepted");
    assert!(
        invalid.contains("spec.rules[0].matches[0].path.value"),
        "{invalid}"
    );
    let partly = condition("shop/extension-partly", "Accepted");
    assert!(
        partly.contains("spec.rules[0].filters[0]: extensionRef"),
        "{partly}"
    );
    let parent = condition("shop/missing-parent", "Accepted");
    assert!(parent.contains("shop/nope not found"), "{parent}");
    let generation = &parents(&list, "HTTPRoute", "shop/good")[0].conditions;
    assert!(generation.iter().all(|c| c.observed_generation == Some(7)));
}
