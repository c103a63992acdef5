use super::{assert_rejections, convert, convert_at, fields};
use crate::gateway_api::convert::{grpc_route, reference_grant, tcp_route, tls_route};
use crate::gateway_api::model::*;

fn grpc(spec: &str) -> GrpcRoute {
    convert(
        grpc_route,
        "GRPCRoute",
        &format!("metadata: {{name: g, namespace: shop}}\nspec:\n{spec}"),
    )
}

#[test]
fn grpc_routes_match_services_methods_and_headers() {
    let route = grpc(
        "  parentRefs: [{name: gw}]
  hostnames: [grpc.example.com]
  rules:
  - matches:
    - method: {service: gateway_api_conformance.echo_basic.grpcecho.GrpcEcho, method: Echo}
      headers: [{name: version, value: two}]
    - method: {type: RegularExpression, service: 'echo\\..*'}
    filters: [{type: RequestHeaderModifier, requestHeaderModifier: {add: [{name: x, value: y}]}}]
    backendRefs:
    - {name: grpc-v1, port: 8080, weight: 70, filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {remove: [x]}}]}
    - {name: grpc-v2, port: 8080, weight: 30}
  - backendRefs: [{name: fallback, port: 8080}]
",
    );
    assert_eq!(route.rejected, None, "{:?}", route.rejected);
    let rule = &route.rules[0];
    assert_eq!(
        rule.matches[0].method,
        Some(GrpcMethodMatch::Exact {
            service: Some("gateway_api_conformance.echo_basic.grpcecho.GrpcEcho".into()),
            method: Some("Echo".into()),
        })
    );
    assert!(matches!(
        rule.matches[1].method,
        Some(GrpcMethodMatch::RegularExpression { method: None, .. })
    ));
    assert_eq!(
        rule.matches[0].headers[0].value,
        StringMatch::Exact("two".into())
    );
    assert!(matches!(
        rule.filters[..],
        [GrpcFilter::RequestHeaderModifier(_)]
    ));
    assert!(matches!(
        rule.backends[0].filters[..],
        [GrpcFilter::ResponseHeaderModifier(_)]
    ));
    assert_eq!(
        (
            rule.backends[0].backend.weight,
            rule.backends[1].backend.weight
        ),
        (70, 30)
    );
    assert!(
        route.rules[1].matches.is_empty(),
        "no matches: every request"
    );
}

#[test]
fn each_invalid_grpc_field_is_named() {
    let table: &[(&str, &str, &str)] = &[
        (
            "neither service nor method",
            "  rules: [{matches: [{method: {type: Exact}}]}]",
            "spec.rules[0].matches[0].method",
        ),
        (
            "service syntax",
            "  rules: [{matches: [{method: {service: 'a/b'}}]}]",
            "spec.rules[0].matches[0].method.service",
        ),
        (
            "method syntax",
            "  rules: [{matches: [{method: {method: '1x'}}]}]",
            "spec.rules[0].matches[0].method.method",
        ),
        (
            "method regex",
            "  rules: [{matches: [{method: {type: RegularExpression, method: '('}}]}]",
            "spec.rules[0].matches[0].method.method",
        ),
        (
            "match type",
            "  rules: [{matches: [{method: {type: Prefix, method: a}}]}]",
            "spec.rules[0].matches[0].method.type",
        ),
        (
            "http-only filter",
            "  rules: [{filters: [{type: URLRewrite, urlRewrite: {}}]}]",
            "spec.rules[0].filters[0].type",
        ),
        (
            "header name",
            "  rules: [{matches: [{headers: [{name: 'a b', value: c}]}]}]",
            "spec.rules[0].matches[0].headers[0].name",
        ),
        (
            "backend weight",
            "  rules: [{backendRefs: [{name: a, port: 1, weight: 1000001}]}]",
            "spec.rules[0].backendRefs[0].weight",
        ),
    ];
    assert_rejections(table, |spec| grpc(&format!("{spec}\n")).rejected);
}

fn tls_at(version: &str, spec: &str) -> TlsRoute {
    convert_at(
        tls_route,
        "TLSRoute",
        version,
        &format!("metadata: {{name: t, namespace: shop}}\nspec:\n{spec}"),
    )
    .unwrap()
}

#[test]
fn stream_routes_convert_and_follow_their_versions_rules() {
    let tls = tls_at("v1", "  parentRefs: [{name: gw, sectionName: tls}]\n  hostnames: [abc.example.com]\n  rules: [{backendRefs: [{name: tls-backend, port: 443}]}]\n");
    assert_eq!(tls.rejected, None, "{:?}", tls.rejected);
    assert_eq!(tls.hostnames, ["abc.example.com"]);
    assert_eq!(tls.rules[0].backends[0].weight, 1);

    let two_rules = "  hostnames: [a.com]\n  rules: [{backendRefs: [{name: a, port: 1}]}, {backendRefs: [{name: b, port: 1}]}]\n";
    assert_eq!(
        fields(&tls_at("v1", two_rules).rejected),
        ["spec.rules"],
        "one rule from v1 on"
    );
    assert_eq!(
        tls_at("v1alpha2", two_rules).rejected,
        None,
        "v1alpha2 allowed 16"
    );
    let no_hostnames = "  rules: [{backendRefs: [{name: a, port: 1}]}]\n";
    assert_eq!(
        fields(&tls_at("v1", no_hostnames).rejected),
        ["spec.hostnames"]
    );
    assert_eq!(tls_at("v1alpha2", no_hostnames).rejected, None);
    assert_eq!(
        fields(
            &tls_at(
                "v1",
                "  hostnames: ['10.0.0.1']\n  rules: [{backendRefs: [{name: a, port: 1}]}]\n"
            )
            .rejected
        ),
        ["spec.hostnames[0]"]
    );

    let tcp = convert(tcp_route, "TCPRoute", "metadata: {name: t}\nspec:\n  parentRefs: [{name: gw, port: 5432}]\n  rules: [{backendRefs: [{name: db, port: 5432, weight: 0}]}]\n");
    assert_eq!(tcp.rejected, None, "{:?}", tcp.rejected);
    assert_eq!(
        (tcp.parent_refs[0].port, tcp.rules[0].backends[0].weight),
        (Some(5432), 0)
    );
    let table: &[(&str, &str, &str)] = &[
        ("no rules", "  parentRefs: [{name: gw}]", "spec.rules"),
        ("no backends", "  rules: [{}]", "spec.rules[0].backendRefs"),
        (
            "backend port",
            "  rules: [{backendRefs: [{name: db}]}]",
            "spec.rules[0].backendRefs[0].port",
        ),
        (
            "hostnames on tcp",
            "  hostnames: [a.com]\n  rules: [{backendRefs: [{name: db, port: 1}]}]",
            "spec.hostnames",
        ),
    ];
    assert_rejections(table, |spec| {
        convert(
            tcp_route,
            "TCPRoute",
            &format!("metadata: {{name: t}}\nspec:\n{spec}\n"),
        )
        .rejected
    });
}

#[test]
fn reference_grants_convert_and_a_broken_one_grants_nothing() {
    let grant = convert(
        reference_grant,
        "ReferenceGrant",
        "metadata: {name: g, namespace: backends}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: shop}]\n  to: [{group: '', kind: Service, name: cart}]\n",
    );
    assert_eq!(grant.rejected, None, "{:?}", grant.rejected);
    assert!(grant.permits(
        (GATEWAY_API_GROUP, "HTTPRoute", "shop"),
        ("", "Service", "cart")
    ));
    let table: &[(&str, &str, &str)] = &[
        ("no from", "  to: [{group: '', kind: Service}]", "spec.from"),
        (
            "from without namespace",
            "  from: [{group: g, kind: HTTPRoute}]\n  to: [{group: '', kind: Service}]",
            "spec.from[0].namespace",
        ),
        (
            "to without group",
            "  from: [{group: g, kind: K, namespace: n}]\n  to: [{kind: Service}]",
            "spec.to[0].group",
        ),
        (
            "kind syntax",
            "  from: [{group: g, kind: 'a b', namespace: n}]\n  to: [{group: '', kind: Service}]",
            "spec.from[0].kind",
        ),
    ];
    assert_rejections(table, |spec| {
        let grant = convert(
            reference_grant,
            "ReferenceGrant",
            &format!("metadata: {{name: g}}\nspec:\n{spec}\n"),
        );
        assert!(grant.from.is_empty() && grant.to.is_empty(), "{grant:?}");
        grant.rejected
    });
}
