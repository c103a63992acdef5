//! A bookinfo-like mesh behind the waypoint `shop/wp`: the policies as an operator writes them,
//! loaded from manifests, looked up as the request path does, decided per request.

use super::*;

const MESH: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: wp}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: wp, namespace: shop}
spec: {gatewayClassName: ambit-waypoint, listeners: [{name: mesh, port: 15008, protocol: HBONE}]}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec: {clusterIP: 10.96.0.20, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: shop}
spec: {clusterIP: 10.96.0.21, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: details, namespace: shop}
spec: {clusterIP: 10.96.0.22, ports: [{name: http, port: 9080}]}
---
# Nobody deletes reviews.
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-delete, namespace: shop}
spec:
  action: DENY
  targetRefs: [{kind: Service, name: reviews}]
  rules: [{to: [{operation: {methods: [DELETE]}}]}]
---
# productpage reads reviews; the ops namespace administers them.
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-read, namespace: shop}
spec:
  targetRefs: [{kind: Service, name: reviews}]
  rules:
  - from: [{source: {principals: [cluster.local/ns/shop/sa/productpage]}}]
    to: [{operation: {methods: [GET, HEAD], paths: [/reviews/*]}}]
  - from: [{source: {namespaces: [ops]}}]
    to: [{operation: {paths: [/admin, /admin/*]}}]
---
# On every Service of the waypoint: no debug header from outside shop.
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-debug, namespace: shop}
spec:
  action: DENY
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: wp}]
  rules:
  - from: [{source: {notNamespaces: [shop]}}]
    when: [{key: 'request.headers[x-debug]', values: ['*']}]
---
# ratings by its own names on its port, never /internal.
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-ratings, namespace: shop}
spec:
  targetRefs: [{kind: Service, name: ratings}]
  rules:
  - to: [{operation: {hosts: [ratings, ratings.shop.svc.cluster.local], ports: ['9080'], notPaths: ['/internal*']}}]
---
# A workload policy: ztunnel's, not the waypoint's.
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: pods-only, namespace: shop}
spec: {action: DENY, rules: [{}]}
";

/// What the request path does: the policies for (gateway, service), then the evaluator.
fn decide<'s>(snapshot: &'s Snapshot, req: &Req) -> Decision<'s> {
    let policies = snapshot.waypoint_policies(("shop", "wp"), Some(("shop", req.service)));
    authorize(policies, &req.l7())
}

#[test]
fn bookinfo_behind_a_waypoint() {
    let mesh = load(MESH);
    let ratings = |path: &str| req("GET", path).to("ratings").host("ratings");
    let cases: Vec<(&str, Req, Want)> = vec![
        (
            "GET /reviews/1 from productpage is allowed by allow-read",
            req("GET", "/reviews/1"),
            Want::AllowedBy("shop/allow-read"),
        ),
        (
            "HEAD /reviews/1 from productpage is allowed",
            req("HEAD", "/reviews/1"),
            Want::AllowedBy("shop/allow-read"),
        ),
        (
            "POST /reviews/1 from productpage matches no ALLOW rule",
            req("POST", "/reviews/1"),
            Want::NotAllowed,
        ),
        (
            "GET /reviews/1 from another account is not allowed",
            req("GET", "/reviews/1").from("shop/ratings"),
            Want::NotAllowed,
        ),
        (
            "GET /reviews/1 without an identity is not allowed",
            req("GET", "/reviews/1").plaintext(),
            Want::NotAllowed,
        ),
        (
            "DELETE /reviews/1 from productpage is denied by deny-delete",
            req("DELETE", "/reviews/1"),
            Want::DeniedBy("shop/deny-delete"),
        ),
        (
            "DELETE /admin from ops is denied by deny-delete",
            req("DELETE", "/admin").from("ops/admin"),
            Want::DeniedBy("shop/deny-delete"),
        ),
        (
            "GET /admin from ops is allowed",
            req("GET", "/admin").from("ops/admin"),
            Want::AllowedBy("shop/allow-read"),
        ),
        (
            "POST /admin/users from ops is allowed (any method)",
            req("POST", "/admin/users").from("ops/admin"),
            Want::AllowedBy("shop/allow-read"),
        ),
        (
            "GET /administrator from ops is not /admin nor /admin/*",
            req("GET", "/administrator").from("ops/admin"),
            Want::NotAllowed,
        ),
        (
            "GET /admin from productpage is not allowed",
            req("GET", "/admin"),
            Want::NotAllowed,
        ),
        (
            "GET /reviews/../admin from productpage is /admin: not allowed",
            req("GET", "/reviews/../admin"),
            Want::NotAllowed,
        ),
        (
            "GET /%72eviews/1 from productpage is /reviews/1: allowed",
            req("GET", "/%72eviews/1"),
            Want::AllowedBy("shop/allow-read"),
        ),
        (
            "x-debug from ops is denied on every Service by deny-debug",
            req("GET", "/admin")
                .from("ops/admin")
                .header("x-debug", b"1"),
            Want::DeniedBy("shop/deny-debug"),
        ),
        (
            "x-debug from ops to details too",
            req("GET", "/")
                .to("details")
                .from("ops/admin")
                .header("x-debug", b""),
            Want::DeniedBy("shop/deny-debug"),
        ),
        (
            "x-debug from productpage (shop) is fine",
            req("GET", "/reviews/1").header("x-debug", b"1"),
            Want::AllowedBy("shop/allow-read"),
        ),
        (
            "details has no ALLOW policy: allowed, pods-only is ztunnel's",
            req("DELETE", "/x").to("details").plaintext(),
            Want::Allowed,
        ),
        (
            "GET ratings /ratings/1 on 9080 is allowed",
            ratings("/ratings/1"),
            Want::AllowedBy("shop/allow-ratings"),
        ),
        (
            "ratings by its full name, in capitals",
            ratings("/").host("RATINGS.shop.svc.cluster.local"),
            Want::AllowedBy("shop/allow-ratings"),
        ),
        (
            "ratings by another name is not allowed",
            ratings("/").host("ratings.other"),
            Want::NotAllowed,
        ),
        (
            "ratings /internal/x is not allowed",
            ratings("/internal/x"),
            Want::NotAllowed,
        ),
        (
            "ratings /internal is not allowed",
            ratings("/internal"),
            Want::NotAllowed,
        ),
        (
            "ratings on another port is not allowed",
            ratings("/").port(8080),
            Want::NotAllowed,
        ),
    ];
    for (case, req, want) in cases {
        assert_decision(case, decide(&mesh, &req), want);
    }
}

#[test]
fn a_broken_policy_on_the_waypoint_refuses_and_says_why() {
    let broken = "
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-typo, namespace: shop}
spec:
  action: DENY
  targetRefs: [{kind: Service, name: details}]
  rules: [{to: [{operation: {method: [DELETE]}}]}]
";
    let mesh = load(&format!("{MESH}{broken}"));
    let get = req("GET", "/").to("details");
    let decision = decide(&mesh, &get);
    assert_decision(
        "a DENY that cannot be read denies all of details",
        decision,
        Want::DeniedBy("shop/deny-typo"),
    );
    let reason = decision.to_string();
    assert!(
        reason.starts_with("denied by shop/deny-typo, which could not be understood (field spec.rules[0].to[0].operation.method:"),
        "{reason}"
    );
    assert!(
        reason.contains("denies every connection to its targets Service/details"),
        "{reason}"
    );
    assert_decision(
        "reviews is not affected",
        decide(&mesh, &req("GET", "/reviews/1")),
        Want::AllowedBy("shop/allow-read"),
    );
}

#[test]
fn decisions_read_as_log_reasons() {
    let mesh = load(MESH);
    let cases = [
        (
            req("DELETE", "/reviews/1"),
            "denied by DENY policy shop/deny-delete",
        ),
        (
            req("POST", "/reviews/1"),
            "denied: no ALLOW policy matched (shop/allow-read applies)",
        ),
        (req("GET", "/reviews/1"), "allowed by shop/allow-read"),
        (
            req("GET", "/").to("details"),
            "allowed: no ALLOW policy applies",
        ),
    ];
    for (req, want) in cases {
        assert_eq!(decide(&mesh, &req).to_string(), want);
    }
    assert_eq!(
        (DENIED_STATUS.as_u16(), DENIED_BODY),
        (403, "RBAC: access denied")
    );
}
