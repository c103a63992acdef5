#![allow(clippy::unwrap_used)]

use serde_yaml::Value;

use super::super::{authorization_policy_or_fail_closed, ConvertError, FailClosedScope};
use crate::policy::{Action, AuthorizationPolicy, Condition, Operation, Rule, StringMatch};

/// A waypoint policy using every L7 field; each case edits it once.
const BASE: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews, namespace: shop}
spec:
  targetRefs: [{kind: Service, group: '', name: reviews}]
  rules:
  - from:
    - source: {principals: [cluster.local/ns/shop/sa/web], notNamespaces: [test]}
    to:
    - operation:
        methods: [GET, 'PO*']
        notMethods: [DELETE]
        paths: [/api/*, /health]
        notPaths: ['*.secret']
        hosts: [Reviews.Shop, '*.example.com']
        notHosts: [admin.example.com]
        ports: ['9080']
    when:
    - {key: 'request.headers[X-User]', values: [alice, 'bob*'], notValues: ['*-test']}
    - {key: source.ip, values: [10.0.0.0/8], notValues: [10.0.0.9]}
    - {key: source.namespace, values: [shop]}
    - {key: source.principal, notValues: ['spiffe://cluster.local/ns/shop/sa/evil']}
    - {key: destination.port, values: ['9080']}
";

const SCOPE: FailClosedScope<'static> = FailClosedScope {
    root_namespace: "ambit-system",
    unnamed: "(unnamed)",
};

/// The manifest loader's path: decoded with field paths, converted, fail-closed on error.
fn read(yaml: &str) -> AuthorizationPolicy {
    let value: Value = serde_yaml::from_str(yaml).unwrap();
    let decoded = serde_path_to_error::deserialize(value.clone())
        .map_err(|e| ConvertError::new(e.path().to_string(), e.into_inner().to_string()));
    authorization_policy_or_fail_closed(decoded, || value, &SCOPE).unwrap()
}

fn rule(p: &AuthorizationPolicy) -> &Rule {
    &p.rules[0]
}

fn op(p: &AuthorizationPolicy) -> &Operation {
    &rule(p).to.as_ref().unwrap()[0]
}

fn exact(s: &str) -> StringMatch {
    StringMatch::Exact(s.into())
}

#[test]
fn every_l7_field_is_kept() {
    let p = read(BASE);
    assert!(p.invalid.is_none(), "{:?}", p.invalid);
    assert_eq!(p.target_refs[0].to_string(), "Service/reviews");
    assert!(p.target_refs[0].is_service("reviews"));
    let op = op(&p);
    assert_eq!(op.methods, [exact("GET"), StringMatch::Prefix("PO".into())]);
    assert_eq!(op.not_methods, [exact("DELETE")]);
    assert_eq!(
        op.paths,
        [StringMatch::Prefix("/api/".into()), exact("/health")]
    );
    assert_eq!(op.not_paths, [StringMatch::Suffix(".secret".into())]);
    assert_eq!(
        op.hosts,
        [
            exact("reviews.shop"),
            StringMatch::Suffix(".example.com".into())
        ],
        "hosts are lower-cased"
    );
    assert_eq!(op.not_hosts, [exact("admin.example.com")]);
    assert_eq!(op.ports, [9080]);
    let when = &rule(&p).when;
    assert_eq!(when.len(), 5);
    let Condition::RequestHeader { name, values } = &when[0] else {
        panic!("{:?}", when[0])
    };
    assert_eq!(name, "x-user", "header names are lower-cased");
    assert_eq!(
        values.values,
        [exact("alice"), StringMatch::Prefix("bob".into())]
    );
    assert_eq!(values.not_values, [StringMatch::Suffix("-test".into())]);
    let Condition::SourceIp(ips) = &when[1] else {
        panic!("{:?}", when[1])
    };
    assert_eq!(ips.not_values, ["10.0.0.9/32".parse().unwrap()]);
    assert!(matches!(&when[2], Condition::SourceNamespace(v) if v.values == [exact("shop")]));
    assert!(
        matches!(&when[3], Condition::SourcePrincipal(v) if v.not_values == [exact("cluster.local/ns/shop/sa/evil")]),
        "the spiffe:// scheme is dropped as for principals"
    );
    assert!(matches!(&when[4], Condition::DestinationPort(v) if v.values == [9080]));
    // ztunnel's view is unchanged: the same names, no L7 matching.
    assert!(rule(&p).has_l7_fields);
    assert_eq!(
        rule(&p).l7_fields,
        [
            "when",
            "hosts",
            "notHosts",
            "methods",
            "notMethods",
            "paths",
            "notPaths"
        ]
    );
    assert!(rule(&p).unsupported.is_empty());
}

#[test]
fn accepted_edits() {
    type Check = fn(&AuthorizationPolicy) -> bool;
    let cases: &[(&str, &str, &str, Check)] = &[
        (
            "gateway target",
            "{kind: Service, group: '', name: reviews}",
            "{kind: Gateway, group: gateway.networking.k8s.io, name: wp}",
            |p| p.target_refs[0].is_gateway("wp"),
        ),
        ("core group", "group: ''", "group: core", |p| {
            p.target_refs[0].is_service("reviews")
        }),
        ("no group for a Service", "group: '', ", "", |p| {
            p.target_refs[0].is_service("reviews")
        }),
        (
            "own namespace named",
            "name: reviews}",
            "name: reviews, namespace: shop}",
            |p| p.target_refs.len() == 1,
        ),
        (
            "older targetRef",
            "  targetRefs: [{kind: Service, group: '', name: reviews}]",
            "  targetRef: {kind: Service, name: reviews}",
            |p| p.target_refs[0].is_service("reviews"),
        ),
        (
            "ipv6 host",
            "notHosts: [admin.example.com]",
            "notHosts: ['[fd00::1]', '::1']",
            |p| op(p).not_hosts.len() == 2,
        ),
        (
            "any path",
            "paths: [/api/*, /health]",
            "paths: ['*']",
            |p| op(p).paths == [StringMatch::Any],
        ),
        (
            "custom method",
            "notMethods: [DELETE]",
            "notMethods: [PURGE, propfind]",
            |p| op(p).not_methods.len() == 2,
        ),
        (
            "JWT principals are unsupported",
            "notNamespaces: [test]",
            "requestPrincipals: ['issuer/*']",
            |p| {
                rule(p).unsupported == ["spec.rules[0].from[0].source.requestPrincipals"]
                    && rule(p).l7_fields.contains(&"requestPrincipals".to_owned())
            },
        ),
        (
            "remote IPs are unsupported",
            "notNamespaces: [test]",
            "notRemoteIpBlocks: [1.2.3.4]",
            |p| rule(p).unsupported == ["spec.rules[0].from[0].source.notRemoteIpBlocks"],
        ),
        (
            "an empty unsupported list constrains nothing",
            "notNamespaces: [test]",
            "requestPrincipals: []",
            |p| rule(p).unsupported.is_empty(),
        ),
        (
            "JWT claim key is unsupported",
            "{key: source.namespace, values: [shop]}",
            "{key: 'request.auth.claims[groups]', values: [admins]}",
            |p| {
                rule(p).when.len() == 4
                    && rule(p).unsupported
                        == ["spec.rules[0].when[2] (request.auth.claims[groups])"]
            },
        ),
        (
            "sni key is unsupported",
            "{key: source.namespace, values: [shop]}",
            "{key: connection.sni, values: [x]}",
            |p| rule(p).unsupported.len() == 1,
        ),
        (
            "pseudo-header is unsupported",
            "'request.headers[X-User]'",
            "'request.headers[:path]'",
            |p| rule(p).unsupported == ["spec.rules[0].when[0] (request.headers[:path])"],
        ),
        ("deny", "spec:\n", "spec:\n  action: DENY\n", |p| {
            p.action == Action::Deny
        }),
    ];
    for (case, from, to, check) in cases {
        assert!(BASE.contains(from), "{case}: edit does not apply");
        let p = read(&BASE.replacen(from, to, 1));
        assert!(p.invalid.is_none(), "{case}: {:?}", p.invalid);
        assert!(check(&p), "{case}: {p:?}");
    }
}

#[test]
fn bad_l7_fields_fail_closed_with_their_field() {
    let op = "spec.rules[0].to[0].operation";
    let when = "spec.rules[0].when";
    let refs = "spec.targetRefs[0]";
    let cases: &[(&str, &str, &str, &str, &str)] = &[
        // (case, edit from, edit to, field, words of the problem)
        (
            "lower-case method",
            "[GET, 'PO*']",
            "[get]",
            &format!("{op}.methods[0]"),
            "write GET",
        ),
        (
            "empty method",
            "notMethods: [DELETE]",
            "notMethods: ['']",
            &format!("{op}.notMethods[0]"),
            "not an HTTP method",
        ),
        (
            "method with a space",
            "notMethods: [DELETE]",
            "notMethods: ['DE LETE']",
            &format!("{op}.notMethods[0]"),
            "not an HTTP method",
        ),
        (
            "path without slash",
            "/health]",
            "health]",
            &format!("{op}.paths[1]"),
            "does not start with /",
        ),
        (
            "path with query",
            "/health]",
            "'/health?x=1']",
            &format!("{op}.paths[1]"),
            "without the query",
        ),
        (
            "path template",
            "/health]",
            "'/api/{*}/x']",
            &format!("{op}.paths[1]"),
            "path template",
        ),
        (
            "wildcard inside",
            "['*.secret']",
            "['/a/*/b']",
            &format!("{op}.notPaths[0]"),
            "* inside",
        ),
        (
            "wildcard at both ends",
            "['*.secret']",
            "['*secret*']",
            &format!("{op}.notPaths[0]"),
            "both ends",
        ),
        (
            "host with port",
            "[Reviews.Shop,",
            "['reviews:9080',",
            &format!("{op}.hosts[0]"),
            "has a port",
        ),
        (
            "empty host",
            "[admin.example.com]",
            "['']",
            &format!("{op}.notHosts[0]"),
            "empty",
        ),
        (
            "unknown key",
            "key: source.namespace",
            "key: source.namespaces",
            &format!("{when}[2].key"),
            "not a condition key",
        ),
        (
            "header key unclosed",
            "'request.headers[X-User]'",
            "'request.headers[X-User'",
            &format!("{when}[0].key"),
            "request.headers[<name>]",
        ),
        (
            "header name empty",
            "'request.headers[X-User]'",
            "'request.headers[]'",
            &format!("{when}[0].key"),
            "request.headers[<name>]",
        ),
        (
            "header name not a token",
            "'request.headers[X-User]'",
            "'request.headers[x user]'",
            &format!("{when}[0].key"),
            "not a header name",
        ),
        (
            "no values",
            "{key: source.namespace, values: [shop]}",
            "{key: source.namespace}",
            &format!("{when}[2].values"),
            "neither values nor notValues",
        ),
        (
            "empty values",
            "{key: source.namespace, values: [shop]}",
            "{key: source.namespace, values: []}",
            &format!("{when}[2].values"),
            "set at least one",
        ),
        (
            "bad source.ip",
            "notValues: [10.0.0.9]",
            "notValues: [10.0.0.300]",
            &format!("{when}[1].notValues[0]"),
            "not an IP address",
        ),
        (
            "bad destination.port",
            "values: ['9080']}",
            "values: ['http']}",
            &format!("{when}[4].values[0]"),
            "not a port number",
        ),
        (
            "condition typo",
            "notValues: ['*-test']",
            "notValue: ['*-test']",
            &format!("{when}[0].notValue"),
            "unknown field",
        ),
        (
            "operation typo",
            "notPaths:",
            "notPath:",
            &format!("{op}.notPath"),
            "unknown field",
        ),
        (
            "gateway without group",
            "{kind: Service, group: '', name: reviews}",
            "{kind: Gateway, name: wp}",
            &format!("{refs}.group"),
            "write group: gateway.networking.k8s.io",
        ),
        (
            "service with a group",
            "group: ''",
            "group: apps",
            &format!("{refs}.group"),
            "not the group of a Service",
        ),
        (
            "service entry",
            "kind: Service,",
            "kind: ServiceEntry,",
            &format!("{refs}.kind"),
            "no ServiceEntry",
        ),
        (
            "unknown kind",
            "kind: Service,",
            "kind: Deployment,",
            &format!("{refs}.kind"),
            "not a kind a policy can target",
        ),
        (
            "cross namespace",
            "name: reviews}",
            "name: reviews, namespace: other}",
            &format!("{refs}.namespace"),
            "its own namespace",
        ),
        (
            "empty name",
            "name: reviews}",
            "name: ''}",
            &format!("{refs}.name"),
            "must name",
        ),
        (
            "both target fields",
            "  targetRefs:",
            "  targetRef: {kind: Service, name: reviews}\n  targetRefs:",
            "spec.targetRef",
            "not both",
        ),
        (
            "class outside the root",
            "{kind: Service, group: '', name: reviews}",
            "{kind: GatewayClass, group: gateway.networking.k8s.io, name: ambit-waypoint}",
            "spec.targetRefs",
            "root namespace ambit-system",
        ),
    ];
    for (case, from, to, field, problem) in cases {
        assert!(BASE.contains(from), "{case}: edit does not apply");
        for deny in [false, true] {
            let mut yaml = BASE.replacen(from, to, 1);
            if deny {
                yaml = yaml.replacen("spec:\n", "spec:\n  action: DENY\n", 1);
            }
            let p = read(&yaml);
            let invalid = p
                .invalid
                .as_ref()
                .unwrap_or_else(|| panic!("{case}: understood: {p:?}"));
            assert_eq!(&invalid.field, field, "{case}: {invalid}");
            assert!(invalid.problem.contains(problem), "{case}: {invalid}");
            // The fail-closed form: allow nothing, or deny everything.
            let (action, rules) = if deny {
                (Action::Deny, vec![Rule::default()])
            } else {
                (Action::Allow, vec![])
            };
            assert_eq!((p.action, &p.rules), (action, &rules), "{case}");
        }
    }
}

#[test]
fn a_broken_policy_stays_bound_to_the_object_its_author_named() {
    let cases = [
        // A Gateway target without its group is refused, yet still binds to that Gateway.
        ("{kind: Gateway, name: wp}", "Gateway/wp"),
        (
            "{kind: Gateway, group: gateway.networking.k8s.io, name: wp, namespace: other}",
            "Gateway/wp",
        ),
        (
            "{kind: Service, group: apps, name: reviews}",
            "Service/reviews",
        ),
    ];
    for (target, shown) in cases {
        let p = read(&BASE.replacen("{kind: Service, group: '', name: reviews}", target, 1));
        assert!(p.invalid.is_some(), "{target}");
        assert_eq!(p.target_refs.len(), 1, "{target}");
        let r = &p.target_refs[0];
        assert_eq!(r.to_string(), shown);
        assert!(
            r.is_gateway("wp") || r.is_service("reviews"),
            "{target}: {r:?}"
        );
    }
}

#[test]
fn a_gateway_class_policy_in_the_root_namespace_converts() {
    let p = read(
        &BASE
            .replacen("namespace: shop", "namespace: ambit-system", 1)
            .replacen(
                "{kind: Service, group: '', name: reviews}",
                "{kind: GatewayClass, group: gateway.networking.k8s.io, name: ambit-waypoint}",
                1,
            ),
    );
    assert!(p.invalid.is_none(), "{:?}", p.invalid);
    assert!(p.target_refs[0].is_gateway_class("ambit-waypoint"));
}
