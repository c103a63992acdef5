use std::time::Duration;

use super::{assert_rejections, convert, convert_at, fields};
use crate::gateway_api::convert::http_route;
use crate::gateway_api::model::*;

fn route(spec: &str) -> HttpRoute {
    convert(
        http_route,
        "HTTPRoute",
        &format!("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: cart, namespace: shop, generation: 3}}\nspec:\n{spec}"),
    )
}

#[test]
fn a_full_route_converts_with_every_field() {
    let route = route(
        "  parentRefs: [{name: gw, namespace: infra, sectionName: http, port: 80}]
  hostnames: [shop.example.com, '*.example.org']
  rules:
  - name: checkout
    matches:
    - path: {type: Exact, value: /cart}
      headers: [{name: X-Version, value: two}, {name: x-version, value: ignored}, {type: RegularExpression, name: X-Re, value: '^a+$'}]
      queryParams: [{name: page, value: '1'}]
      method: POST
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: X-Set, value: a}], add: [{name: X-Add, value: b}], remove: [X-Remove]}
    - type: ResponseHeaderModifier
      responseHeaderModifier: {add: [{name: X-Resp, value: c}]}
    - type: RequestMirror
      requestMirror: {backendRef: {name: shadow, port: 8080}, fraction: {numerator: 25, denominator: 50}}
    - type: URLRewrite
      urlRewrite: {hostname: internal.example.com, path: {type: ReplaceFullPath, replaceFullPath: /v2/cart}}
    - type: CORS
      cors: {allowOrigins: ['https://*.example.com'], allowMethods: [GET, POST], allowCredentials: true}
    - type: ExtensionRef
      extensionRef: {group: example.com, kind: Custom, name: x}
    backendRefs:
    - name: cart-v1
      port: 8080
      weight: 90
      filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: Backend, value: v1}]}}]
    - {name: cart-v2, namespace: other, port: 8080, weight: 10}
    timeouts: {request: 10s, backendRequest: 500ms}
    retry: {attempts: 3, backoff: 100ms, codes: [502, 503]}
",
    );
    assert_eq!(route.rejected, None, "{:?}", route.rejected);
    assert_eq!(route.generation, Some(3));
    assert_eq!(
        route.parent_refs,
        [ParentRef {
            group: GATEWAY_API_GROUP.into(),
            kind: "Gateway".into(),
            namespace: "infra".into(),
            name: "gw".into(),
            section_name: Some("http".into()),
            port: Some(80),
        }]
    );
    let rule = &route.rules[0];
    assert_eq!(rule.name.as_deref(), Some("checkout"));
    let matched = &rule.matches[0];
    assert_eq!(matched.path, PathMatch::Exact("/cart".into()));
    assert_eq!(
        matched.headers.len(),
        2,
        "the later x-version duplicate is ignored"
    );
    assert_eq!(
        matched.headers[1].value,
        StringMatch::RegularExpression("^a+$".into())
    );
    assert_eq!(
        matched.query_params[0].value,
        StringMatch::Exact("1".into())
    );
    assert_eq!(matched.method.as_deref(), Some("POST"));
    assert_eq!(rule.filters.len(), 6);
    match &rule.filters[2] {
        HttpFilter::RequestMirror(mirror) => {
            assert_eq!(
                mirror.fraction,
                MirrorFraction {
                    numerator: 25,
                    denominator: 50
                }
            );
            assert_eq!(
                (mirror.backend.namespace.as_str(), mirror.backend.port),
                ("shop", Some(8080))
            );
        }
        other => panic!("{other:?}"),
    }
    match &rule.filters[4] {
        HttpFilter::Cors(cors) => {
            assert_eq!((cors.max_age_seconds, cors.allow_credentials), (5, true))
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(&rule.filters[5], HttpFilter::ExtensionRef(r) if r.kind == "Custom"));
    assert_eq!(rule.backends[0].backend.weight, 90);
    assert_eq!(rule.backends[0].filters.len(), 1);
    assert_eq!(rule.backends[1].backend.namespace, "other");
    assert_eq!(
        rule.timeouts.request,
        Some(Timeout::After(Duration::from_secs(10)))
    );
    assert_eq!(
        rule.timeouts.backend_request,
        Some(Timeout::After(Duration::from_millis(500)))
    );
    let retry = rule.retry.as_ref().unwrap();
    assert_eq!(
        (retry.attempts, retry.backoff, retry.codes.as_slice()),
        (
            Some(3),
            Some(Duration::from_millis(100)),
            &[502u16, 503][..]
        )
    );
}

#[test]
fn the_crd_defaults_are_applied() {
    // No rules at all: one rule matching everything (and no backends).
    let bare = route("  parentRefs: [{name: gw}]\n");
    assert_eq!(bare.rules.len(), 1);
    assert_eq!(
        bare.rules[0].matches[0].path,
        PathMatch::PathPrefix("/".into())
    );
    assert_eq!(
        bare.parent_refs[0].namespace, "shop",
        "a parent in the route's namespace"
    );
    assert_eq!(bare.parent_refs[0].kind, "Gateway");

    let route = route(
        "  rules:
  - backendRefs: [{name: web, port: 80}]
  - matches: [{headers: [{name: a, value: b}]}, {path: {value: /x}}, {path: {type: Exact}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: https}}, {type: RequestMirror, requestMirror: {backendRef: {name: m, port: 1}}}]
    timeouts: {request: 0s}
",
    );
    assert_eq!(route.rejected, None, "{:?}", route.rejected);
    let backend = &route.rules[0].backends[0].backend;
    assert_eq!(
        (
            backend.group.as_str(),
            backend.kind.as_str(),
            backend.weight
        ),
        ("", "Service", 1)
    );
    assert_eq!(
        route.rules[0].matches[0].path,
        PathMatch::PathPrefix("/".into())
    );
    let matches = &route.rules[1].matches;
    assert_eq!(
        matches[0].path,
        PathMatch::PathPrefix("/".into()),
        "a match without a path"
    );
    assert_eq!(matches[0].headers[0].value, StringMatch::Exact("b".into()));
    assert_eq!(matches[1].path, PathMatch::PathPrefix("/x".into()));
    assert_eq!(matches[2].path, PathMatch::Exact("/".into()));
    match &route.rules[1].filters[..] {
        [HttpFilter::RequestRedirect(redirect), HttpFilter::RequestMirror(mirror)] => {
            assert_eq!(redirect.status_code, 302);
            assert_eq!(
                mirror.fraction,
                MirrorFraction {
                    numerator: 1,
                    denominator: 1
                },
                "every request"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(route.rules[1].timeouts.request, Some(Timeout::Disabled));
}

#[test]
fn each_invalid_field_is_named_and_the_route_kept_without_rules() {
    let table: &[(&str, &str, &str)] = &[
        ("relative path", "  rules: [{matches: [{path: {type: PathPrefix, value: cart}}]}]", "spec.rules[0].matches[0].path.value"),
        ("dot segment", "  rules: [{matches: [{}, {path: {type: Exact, value: /a/../b}}]}]", "spec.rules[0].matches[1].path.value"),
        ("encoded slash", "  rules: [{matches: [{path: {value: /a%2fb}}]}]", "spec.rules[0].matches[0].path.value"),
        ("bad regex", "  rules: [{matches: [{path: {type: RegularExpression, value: '(a'}}]}]", "spec.rules[0].matches[0].path.value"),
        ("unknown path type", "  rules: [{matches: [{path: {type: Glob, value: /a}}]}]", "spec.rules[0].matches[0].path.type"),
        ("header name", "  rules: [{matches: [{headers: [{name: 'bad name', value: x}]}]}]", "spec.rules[0].matches[0].headers[0].name"),
        ("header value", "  rules: [{matches: [{headers: [{name: a, value: 'x '}]}]}]", "spec.rules[0].matches[0].headers[0].value"),
        ("header without value", "  rules: [{matches: [{headers: [{name: a}]}]}]", "spec.rules[0].matches[0].headers[0].value"),
        ("query regex", "  rules: [{matches: [{queryParams: [{type: RegularExpression, name: q, value: '['}]}]}]", "spec.rules[0].matches[0].queryParams[0].value"),
        ("method", "  rules: [{matches: [{method: FETCH}]}]", "spec.rules[0].matches[0].method"),
        ("hostname", "  hostnames: [Shop.Example.com]", "spec.hostnames[0]"),
        ("wildcard inside", "  hostnames: ['a.*.com']", "spec.hostnames[0]"),
        ("parent port", "  parentRefs: [{name: gw, port: 0}]", "spec.parentRefs[0].port"),
        ("parent namespace", "  parentRefs: [{name: gw, namespace: Infra}]", "spec.parentRefs[0].namespace"),
        ("parent without name", "  parentRefs: [{sectionName: http}]", "spec.parentRefs[0].name"),
        ("same parent twice", "  parentRefs: [{name: gw}, {name: gw, sectionName: b}]", "spec.parentRefs[1]"),
        ("backend without port", "  rules: [{backendRefs: [{name: web}]}]", "spec.rules[0].backendRefs[0].port"),
        ("backend weight", "  rules: [{backendRefs: [{name: web, port: 80, weight: -1}]}]", "spec.rules[0].backendRefs[0].weight"),
        ("unknown filter type", "  rules: [{filters: [{type: Teleport}]}]", "spec.rules[0].filters[0].type"),
        ("filter without its config", "  rules: [{filters: [{type: RequestHeaderModifier}]}]", "spec.rules[0].filters[0].requestHeaderModifier"),
        ("config of another type", "  rules: [{filters: [{type: RequestRedirect, requestRedirect: {}, urlRewrite: {}}]}]", "spec.rules[0].filters[0].urlRewrite"),
        ("filter twice", "  rules: [{filters: [{type: CORS, cors: {}}, {type: CORS, cors: {}}]}]", "spec.rules[0].filters[1].type"),
        ("redirect and rewrite", "  rules: [{filters: [{type: RequestRedirect, requestRedirect: {}}, {type: URLRewrite, urlRewrite: {}}]}]", "spec.rules[0].filters"),
        ("redirect with backends", "  rules: [{filters: [{type: RequestRedirect, requestRedirect: {}}], backendRefs: [{name: a, port: 1}]}]", "spec.rules[0].filters"),
        ("redirect status", "  rules: [{filters: [{type: RequestRedirect, requestRedirect: {statusCode: 304}}]}]", "spec.rules[0].filters[0].requestRedirect.statusCode"),
        ("redirect scheme", "  rules: [{filters: [{type: RequestRedirect, requestRedirect: {scheme: ftp}}]}]", "spec.rules[0].filters[0].requestRedirect.scheme"),
        ("redirect wildcard host", "  rules: [{filters: [{type: RequestRedirect, requestRedirect: {hostname: '*.a.com'}}]}]", "spec.rules[0].filters[0].requestRedirect.hostname"),
        ("prefix replace without prefix match", "  rules: [{matches: [{path: {type: Exact, value: /a}}], filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}}}]}]", "spec.rules[0].matches"),
        ("path modifier mismatch", "  rules: [{filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replacePrefixMatch: /b}}}]}]", "spec.rules[0].filters[0].urlRewrite.path.replacePrefixMatch"),
        ("header set twice", "  rules: [{filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: a, value: b}, {name: a, value: c}]}}]}]", "spec.rules[0].filters[0].requestHeaderModifier.set[1].name"),
        ("mirror percent", "  rules: [{filters: [{type: RequestMirror, requestMirror: {backendRef: {name: m, port: 1}, percent: 101}}]}]", "spec.rules[0].filters[0].requestMirror.percent"),
        ("mirror percent and fraction", "  rules: [{filters: [{type: RequestMirror, requestMirror: {backendRef: {name: m, port: 1}, percent: 1, fraction: {numerator: 1}}}]}]", "spec.rules[0].filters[0].requestMirror.percent"),
        ("mirror fraction over one", "  rules: [{filters: [{type: RequestMirror, requestMirror: {backendRef: {name: m, port: 1}, fraction: {numerator: 3, denominator: 2}}}]}]", "spec.rules[0].filters[0].requestMirror.fraction.numerator"),
        ("mirror without backend", "  rules: [{filters: [{type: RequestMirror, requestMirror: {percent: 5}}]}]", "spec.rules[0].filters[0].requestMirror.backendRef"),
        ("cors star with others", "  rules: [{filters: [{type: CORS, cors: {allowOrigins: ['*', 'https://a.com']}}]}]", "spec.rules[0].filters[0].cors.allowOrigins"),
        ("cors origin", "  rules: [{filters: [{type: CORS, cors: {allowOrigins: ['ftp://a.com']}}]}]", "spec.rules[0].filters[0].cors.allowOrigins[0]"),
        ("extensionRef without group", "  rules: [{filters: [{type: ExtensionRef, extensionRef: {kind: K, name: n}}]}]", "spec.rules[0].filters[0].extensionRef.group"),
        ("timeout syntax", "  rules: [{timeouts: {request: 1.5s}}]", "spec.rules[0].timeouts.request"),
        ("backend timeout over request", "  rules: [{timeouts: {request: 1s, backendRequest: 2s}}]", "spec.rules[0].timeouts.backendRequest"),
        ("retry code", "  rules: [{retry: {codes: [200]}}]", "spec.rules[0].retry.codes[0]"),
        ("retry attempts", "  rules: [{retry: {attempts: 0}}]", "spec.rules[0].retry.attempts"),
        ("rule names unique", "  rules: [{name: a}, {name: a}]", "spec.rules[1]"),
        ("rule name syntax", "  rules: [{name: Checkout}]", "spec.rules[0].name"),
        ("too many rules", &format!("  rules: [{}]", vec!["{}"; 17].join(", ")), "spec.rules"),
        ("wrong type", "  rules: [{matches: {path: /}}]", "spec.rules[0].matches"),
    ];
    assert_rejections(table, |spec| {
        let parents = if spec.contains("parentRefs") {
            ""
        } else {
            "  parentRefs: [{name: gw}]\n"
        };
        let route = route(&format!("{parents}{spec}\n"));
        if route.rejected.is_some() {
            assert!(
                route.rules.is_empty(),
                "a rejected route keeps no rules: {route:?}"
            );
        }
        route.rejected
    });
}

#[test]
fn a_route_that_does_not_decode_keeps_its_parents_for_status() {
    let route = route("  parentRefs: [{name: gw, sectionName: web}]\n  hostnames: {not: a list}\n");
    assert_eq!(fields(&route.rejected), ["spec.hostnames"]);
    assert!(route
        .rejected
        .as_ref()
        .unwrap()
        .to_string()
        .contains("gateway.networking.k8s.io/v1 HTTPRoute schema"));
    assert_eq!(route.parent_refs[0].section_name.as_deref(), Some("web"));
    assert!(route.rules.is_empty());

    let missing = convert(http_route, "HTTPRoute", "metadata: {name: r}");
    assert_eq!(fields(&missing.rejected), ["spec"]);
    assert_eq!(missing.namespace, "default");

    let unnamed = convert_at(
        http_route,
        "HTTPRoute",
        "v1",
        "metadata: {namespace: shop}\nspec: {}",
    );
    assert_eq!(
        unnamed.unwrap_err().field,
        "metadata.name",
        "an object without a name cannot be reported on"
    );
}
