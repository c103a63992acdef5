//! Which routes apply to which Service port and client (GAMMA attachment, consumer routes).

use super::*;

/// One route per way of naming a parent: by port, by section name, the whole Service, a
/// Gateway (ignored), a Service that does not exist (ignored).
const PARENTS: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: by-port, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: cart-v1, port: 80}]
  rules: [{backendRefs: [{name: cart-v1, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: by-section, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: cart, sectionName: http-alt}]
  rules: [{backendRefs: [{name: cart, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: whole-service, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: cart-v2}]
  rules: [{backendRefs: [{name: cart-v2, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: via-gateway, namespace: other}
spec:
  parentRefs: [{name: some-gateway}]
  rules: [{backendRefs: [{name: billing, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: ghost-parent, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: no-such-service}]
  rules: [{backendRefs: [{name: cart, port: 80}]}]
"#;

#[test]
fn parent_refs_attach_to_the_ports_they_name() {
    let table = table(PARENTS);
    let get = request("GET /", &[]);
    let cases = [
        ("port 80 named", "shop/cart-v1", 80, "by-port#0"),
        (
            "port of the Service not named",
            "shop/cart-v1",
            8080,
            "no route",
        ),
        (
            "section http-alt is port 8080",
            "shop/cart",
            8080,
            "by-section#0",
        ),
        ("section names the other port", "shop/cart", 80, "no route"),
        ("no port: every port", "shop/cart-v2", 80, "whole-service#0"),
        (
            "a Gateway parent is not the waypoint's",
            "other/billing",
            80,
            "no route",
        ),
        ("a Service without routes", "shop/unknown", 80, "no route"),
    ];
    for (case, service, port, want) in cases {
        assert_eq!(outcome(&table, service, port, None, &get), want, "{case}");
    }
    // Rules of routes that attach to nothing are not compiled.
    assert_eq!(table.route_count(), 3);
}

/// MeshConsumerRoute, extended: a producer route on `shop/cart` for every client, a consumer
/// route from `client` for port 80 only.
const CONSUMER: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: producer, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: cart}]
  rules: [{backendRefs: [{name: cart-v1, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: consumer, namespace: client}
spec:
  parentRefs: [{group: "", kind: Service, name: cart, namespace: shop, port: 80}]
  rules: [{backendRefs: [{name: cart-v2, namespace: shop, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: consumer-only, namespace: client}
spec:
  parentRefs: [{group: "", kind: Service, name: billing, namespace: other}]
  rules: [{backendRefs: [{name: billing, namespace: other, port: 80}]}]
"#;

#[test]
fn consumer_routes_replace_producer_routes_for_their_namespace_only() {
    let table = table(CONSUMER);
    let get = request("GET /", &[]);
    let cases = [
        (
            "producer's own namespace",
            "shop/cart",
            80,
            Some("shop"),
            "producer#0",
        ),
        (
            "the consumer namespace",
            "shop/cart",
            80,
            Some("client"),
            "consumer#0",
        ),
        (
            "a third namespace",
            "shop/cart",
            80,
            Some("elsewhere"),
            "producer#0",
        ),
        (
            "client namespace unknown",
            "shop/cart",
            80,
            None,
            "producer#0",
        ),
        (
            "the consumer route names port 80 only",
            "shop/cart",
            8080,
            Some("client"),
            "producer#0",
        ),
        (
            "consumer route without producer: the consumer",
            "other/billing",
            80,
            Some("client"),
            "consumer-only#0",
        ),
        (
            "consumer route without producer: anyone else",
            "other/billing",
            80,
            Some("other"),
            "no route",
        ),
    ];
    for (case, service, port, client, want) in cases {
        assert_eq!(outcome(&table, service, port, client, &get), want, "{case}");
    }
}

#[test]
fn rejected_routes_are_never_served() {
    // A PathPrefix that is not a path: discovery keeps the route, rejected, without rules.
    let snapshot = load(&format!(
        "{BASE}\n---\n{}",
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: broken, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: cart}]
  rules: [{matches: [{path: {type: PathPrefix, value: "no-slash"}}], backendRefs: [{name: cart, port: 80}]}]
"#
    ));
    assert_eq!(snapshot.gateway_api().rejected().len(), 1);
    let table = compile(&snapshot);
    assert!(table.service_routes(&key("shop/cart"), 80, None).is_none());
    assert_eq!(table.route_count(), 0);
}

#[test]
fn a_route_listing_one_port_twice_is_entered_once() {
    let table = table(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: twice, namespace: shop}
spec:
  parentRefs:
  - {group: "", kind: Service, name: cart, port: 80}
  - {group: "", kind: Service, name: cart, sectionName: http}
  rules: [{backendRefs: [{name: cart, port: 80}]}]
"#,
    );
    let routes = table.service_routes(&key("shop/cart"), 80, None).unwrap();
    assert_eq!(routes.dump().len(), 1);
}

#[test]
fn the_dump_lists_each_port_in_precedence_order() {
    let table = table(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: a, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: cart, port: 80}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /short}}]
    backendRefs: [{name: cart-v1, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /much/longer}}]
    backendRefs: [{name: nowhere, port: 80}]
  - matches: [{path: {type: Exact, value: /exact}}]
    filters: [{type: ExtensionRef, extensionRef: {group: example.com, kind: Magic, name: m}}]
"#,
    );
    let dump = serde_json::to_value(&table).unwrap();
    assert_eq!(dump["rules"], 3);
    let port = &dump["ports"][0];
    assert_eq!(port["service"], "shop/cart");
    assert_eq!(port["port"], 80);
    let paths: Vec<&str> = port["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let path = &e["match"]["path"];
            path.get("Exact")
                .or(path.get("PathPrefix"))
                .unwrap()
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(paths, ["/exact", "/much/longer", "/short"]);
    let text = dump.to_string();
    assert!(text.contains("BackendNotFound"), "{text}");
    assert!(
        text.contains("shop/nowhere port 80: no such Service"),
        "{text}"
    );
    assert!(text.contains("not implemented by Ambit"), "{text}");
}
