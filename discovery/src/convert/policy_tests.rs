#![allow(clippy::unwrap_used)]

use super::super::test_support::from_yaml;
use super::*;

const BASE: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-web, namespace: shop}
spec:
  selector: {matchLabels: {app: db}}
  rules:
  - from:
    - source: {principals: ['cluster.local/ns/shop/sa/web', 'spiffe://x/ns/a/sa/b'], ipBlocks: [10.0.0.0/8, 192.168.1.1]}
    - source: {serviceAccounts: [shop/api], notNamespaces: [test*]}
    to:
    - operation: {ports: ['5432', 5433]}
";

#[test]
fn converts_an_l4_policy() {
    let p = authorization_policy(&from_yaml(BASE)).unwrap();
    assert_eq!(p.action, Action::Allow);
    assert_eq!(p.selector.unwrap()["app"], "db");
    let rule = &p.rules[0];
    assert!(!rule.has_l7_fields);
    let from = rule.from.as_ref().unwrap();
    assert_eq!(
        from[0].principals[1],
        StringMatch::Exact("x/ns/a/sa/b".into())
    );
    assert_eq!(
        from[0].ip_blocks[1],
        "192.168.1.1/32".parse::<IpNet>().unwrap()
    );
    assert_eq!(
        from[1].principals[0],
        StringMatch::Suffix("/ns/shop/sa/api".into())
    );
    assert_eq!(
        from[1].not_namespaces[0],
        StringMatch::Prefix("test".into())
    );
    assert_eq!(rule.to.as_ref().unwrap()[0].ports, vec![5432, 5433]);
}

#[test]
fn policy_table() {
    type Check = fn(&AuthorizationPolicy) -> bool;
    let cases: &[(&str, &str, &str, Result<Check, &str>)] = &[
        (
            "deny",
            "spec:\n",
            "spec:\n  action: DENY\n",
            Ok(|p| p.action == Action::Deny),
        ),
        (
            "l7 methods",
            "ports: ['5432', 5433]",
            "ports: ['5432'], methods: [GET]",
            Ok(|p| p.rules[0].has_l7_fields && p.rules[0].l7_fields == ["methods"]),
        ),
        (
            "l7 when",
            "  rules:\n",
            "  rules:\n  - when: [{key: 'request.headers[x]', values: [y]}]\n",
            Ok(|p| p.rules[0].l7_fields == ["when"] && !p.rules[1].has_l7_fields),
        ),
        (
            "l7 request principals",
            "notNamespaces: [test*]",
            "requestPrincipals: ['*']",
            Ok(|p| p.rules[0].l7_fields == ["requestPrincipals"]),
        ),
        ("unknown field", "  rules:\n", "  rulez:\n", Err("<decode>")),
        (
            "audit rejected",
            "spec:\n",
            "spec:\n  action: AUDIT\n",
            Err("spec.action"),
        ),
        (
            "typo action",
            "spec:\n",
            "spec:\n  action: allow\n",
            Err("spec.action"),
        ),
        (
            "bad port",
            "5433]",
            "70000]",
            Err("spec.rules[0].to[0].operation.ports[1]"),
        ),
        (
            "bad ip block",
            "192.168.1.1",
            "192.168.1.300",
            Err("spec.rules[0].from[0].source.ipBlocks[1]"),
        ),
        (
            "bad service account",
            "[shop/api]",
            "[shop]",
            Err("spec.rules[0].from[1].source.serviceAccounts[0]"),
        ),
        (
            "selector with target",
            "spec:\n",
            "spec:\n  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: wp}]\n",
            Err("spec.selector"),
        ),
    ];
    for (case, from, to, want) in cases {
        assert!(BASE.contains(from), "{case}: edit does not apply");
        let edited = BASE.replacen(from, to, 1);
        // Unknown fields fail at decode time, the others in conversion.
        let resource: Result<AuthorizationPolicyResource, _> = serde_yaml::from_str(&edited);
        let got = match resource {
            Ok(resource) => authorization_policy(&resource),
            Err(err) => Err(ConvertError::new("<decode>", err.to_string())),
        };
        match (got, want) {
            (Ok(p), Ok(check)) => assert!(check(&p), "{case}: {p:?}"),
            (Err(err), Err(field)) => assert_eq!(err.field, *field, "{case}: {err}"),
            (got, _) => panic!("{case}: unexpected {got:?}"),
        }
    }
}

#[test]
fn empty_spec_is_allow_nothing() {
    let p = authorization_policy(&from_yaml(
        "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata: {name: deny-all}\nspec: {}",
    ))
    .unwrap();
    assert_eq!(
        (p.action, p.rules.len(), p.namespace.as_str()),
        (Action::Allow, 0, "default")
    );
}
