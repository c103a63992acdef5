//! Which rule a request takes when several match (beyond the conformance tables).

use super::*;

/// `(case, request target, request headers, the rule it takes)`.
type Row = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
);

fn route(name: &str, namespace: &str, rules: &str) -> String {
    format!(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  parentRefs: [{{group: "", kind: Service, name: cart, namespace: shop, port: 80}}]
  rules:
{rules}
---
"#
    )
}

#[test]
fn paths_exact_then_longest_prefix_then_regex() {
    let rules = r#"
  - {name: regex, matches: [{path: {type: RegularExpression, value: "/foo.*"}}]}
  - {name: foo, matches: [{path: {type: PathPrefix, value: /foo}}]}
  - {name: foo-bar-slash, matches: [{path: {type: PathPrefix, value: /foo/bar/}}]}
  - {name: exact, matches: [{path: {type: Exact, value: /foo/bar}}]}
  - {name: regex-only, matches: [{path: {type: RegularExpression, value: "/r[0-9]+"}}]}
"#;
    let table = table(&route("paths", "shop", rules));
    let cases = [
        ("exact beats every prefix", "GET /foo/bar", "exact"),
        (
            "trailing slash of the prefix ignored",
            "GET /foo/bar/",
            "foo-bar-slash",
        ),
        ("longest prefix", "GET /foo/bar/baz", "foo-bar-slash"),
        (
            "prefix is element-wise: only the regex matches",
            "GET /foobar",
            "regex",
        ),
        ("prefix matches itself", "GET /foo", "foo"),
        ("and with a slash", "GET /foo/", "foo"),
        ("exact is exact", "GET /foo/bar?x=1", "exact"),
        ("any prefix beats a regex", "GET /foo/x", "foo"),
        ("regex must match the whole path", "GET /r12", "regex-only"),
        ("partial regex match is not one", "GET /r12x", "404"),
    ];
    for (case, target, want) in cases {
        let got = outcome(&table, "shop/cart", 80, None, &request(target, &[]));
        assert_eq!(got, want, "{case}");
    }
}

#[test]
fn method_then_headers_then_query_break_ties() {
    let rules = r#"
  - {name: plain, matches: [{path: {type: PathPrefix, value: /api}}]}
  - {name: one-query, matches: [{path: {type: PathPrefix, value: /api}, queryParams: [{name: q, value: "1"}]}]}
  - name: two-headers
    matches: [{path: {type: PathPrefix, value: /api}, headers: [{name: a, value: "1"}, {name: b, value: "1"}]}]
  - {name: one-header, matches: [{path: {type: PathPrefix, value: /api}, headers: [{name: a, value: "1"}]}]}
  - {name: method, matches: [{path: {type: PathPrefix, value: /api}, method: GET}]}
"#;
    let table = table(&route("ties", "shop", rules));
    let cases: [Row; 6] = [
        (
            "method outranks headers",
            "GET /api?q=1",
            &[("a", "1"), ("b", "1")],
            "method",
        ),
        (
            "more headers win",
            "POST /api?q=1",
            &[("a", "1"), ("b", "1")],
            "two-headers",
        ),
        (
            "header names are case-insensitive",
            "POST /api",
            &[("A", "1")],
            "one-header",
        ),
        (
            "headers outrank query",
            "POST /api?q=1",
            &[("a", "1")],
            "one-header",
        ),
        ("query outranks nothing", "POST /api?q=1", &[], "one-query"),
        (
            "query names are case-sensitive",
            "POST /api?Q=1",
            &[],
            "plain",
        ),
    ];
    for (case, target, headers, want) in cases {
        let got = outcome(&table, "shop/cart", 80, None, &request(target, headers));
        assert_eq!(got, want, "{case}");
    }
}

#[test]
fn equal_matches_go_to_the_first_route_by_namespace_and_name_then_rule_order() {
    let same = r#"
  - {name: first, matches: [{path: {type: PathPrefix, value: /same}}]}
  - {name: second, matches: [{path: {type: PathPrefix, value: /same}}]}
"#;
    let manifests = [
        route("zebra", "shop", same)
            .replace("first", "z1")
            .replace("second", "z2"),
        route("alpha", "shop", same),
    ]
    .concat();
    let table = table(&manifests);
    let got = outcome(&table, "shop/cart", 80, None, &request("GET /same", &[]));
    assert_eq!(
        got, "first",
        "alpha sorts before zebra; its first rule wins"
    );
}

#[test]
fn header_and_query_values_match_exactly_or_by_whole_regex() {
    let rules = r#"
  - name: regex-header
    matches: [{headers: [{name: version, type: RegularExpression, value: "v[0-9]+"}]}]
  - name: encoded-query
    matches: [{queryParams: [{name: who, value: "a b"}]}]
"#;
    let table = table(&route("values", "shop", rules));
    let cases: [Row; 6] = [
        (
            "regex header",
            "GET /",
            &[("version", "v12")],
            "regex-header",
        ),
        ("regex is anchored", "GET /", &[("version", "xv12")], "404"),
        (
            "any of repeated headers",
            "GET /",
            &[("version", "x"), ("version", "v1")],
            "regex-header",
        ),
        ("query decoded", "GET /?who=a%20b", &[], "encoded-query"),
        (
            "first of repeated params",
            "GET /?who=x&who=a%20b",
            &[],
            "404",
        ),
        ("plus is not a space", "GET /?who=a+b", &[], "404"),
    ];
    for (case, target, headers, want) in cases {
        let got = outcome(&table, "shop/cart", 80, None, &request(target, headers));
        assert_eq!(got, want, "{case}");
    }
}

const GRPC: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: grpc, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: cart, port: 80}]
  rules:
  - name: any-method-of-service
    matches: [{method: {service: shop.Cart}}]
  - name: exact-method
    matches: [{method: {service: shop.Cart, method: Add}}]
  - name: regex-method
    matches: [{method: {type: RegularExpression, service: "shop\\.Ca.*", method: "Re.*"}}]
  - name: method-only
    matches: [{method: {method: Ping}}]
  - name: header
    matches: [{headers: [{name: tier, value: gold}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: http, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: cart, port: 80}]
  rules:
  - {name: http-fallback, matches: [{path: {type: PathPrefix, value: /}}]}
"#;

#[test]
fn grpc_requests_try_grpc_routes_first_then_http_routes() {
    let table = table(GRPC);
    let cases: [(&str, Request, &str); 9] = [
        (
            "exact method beats service only",
            grpc("shop.Cart/Add", &[]),
            "exact-method",
        ),
        (
            "service only",
            grpc("shop.Cart/List", &[]),
            "any-method-of-service",
        ),
        (
            "longer service regex beats a shorter exact one",
            grpc("shop.Cart/Remove", &[]),
            "regex-method",
        ),
        (
            "method only, any service",
            grpc("other.Svc/Ping", &[]),
            "method-only",
        ),
        (
            "headers alone",
            grpc("other.Svc/Get", &[("tier", "gold")]),
            "header",
        ),
        (
            "service characters outrank headers",
            grpc("shop.Cart/List", &[("tier", "gold")]),
            "any-method-of-service",
        ),
        (
            "no gRPC rule: HTTP routes",
            grpc("other.Svc/Get", &[]),
            "http-fallback",
        ),
        (
            "not gRPC: HTTP routes only",
            request("POST /shop.Cart/Add", &[]),
            "http-fallback",
        ),
        (
            "a path that is no gRPC method",
            grpc("shop.Cart", &[]),
            "http-fallback",
        ),
    ];
    for (case, request, want) in cases {
        assert_eq!(
            outcome(&table, "shop/cart", 80, None, &request),
            want,
            "{case}"
        );
    }
}
