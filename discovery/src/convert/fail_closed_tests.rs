#![allow(clippy::unwrap_used)]

use identity::SpiffeId;

use super::*;
use crate::policy::{authorize, ConnectionAttrs, Decision};

const BASE: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p, namespace: shop}
spec:
  selector: {matchLabels: {app: db}}
  rules:
  - from:
    - source: {principals: [cluster.local/ns/shop/sa/web], ipBlocks: [10.0.0.0/8]}
    to:
    - operation: {ports: ['5432']}
";

const SCOPE: FailClosedScope<'static> = FailClosedScope {
    root_namespace: "ambit-system",
    unnamed: "(unnamed)",
};

/// The manifest loader's path: a plain value, decoded with field paths, then converted.
fn read(yaml: &str) -> Result<AuthorizationPolicy, ConvertError> {
    let value: Value = serde_yaml::from_str(yaml).unwrap();
    let decoded = serde_path_to_error::deserialize(value.clone())
        .map_err(|e| ConvertError::new(e.path().to_string(), e.into_inner().to_string()));
    authorization_policy_or_fail_closed(decoded, || value, &SCOPE)
}

fn web_to(port: u16) -> (SpiffeId, u16) {
    (SpiffeId::new("cluster.local", "shop", "web").unwrap(), port)
}

fn decide(policies: &[&AuthorizationPolicy], (id, port): &(SpiffeId, u16)) -> Decision {
    authorize(
        policies.iter().copied(),
        &ConnectionAttrs {
            src_ip: "10.0.0.5".parse().unwrap(),
            src_identity: Some(id),
            dst_port: *port,
        },
    )
}

/// What the fail-closed form should be.
struct Want {
    action: Action,
    selector: Option<&'static str>,
    namespace: &'static str,
    target_refs: &'static [&'static str],
    field: &'static str,
    enforced: &'static str,
}

#[test]
fn broken_policies_are_kept_fail_closed() {
    let allow = |field, selector, enforced| Want {
        action: Action::Allow,
        selector,
        namespace: "shop",
        target_refs: &[],
        field,
        enforced,
    };
    let deny = |field, selector, enforced| Want {
        action: Action::Deny,
        ..allow(field, selector, enforced)
    };
    let ip = "spec.rules[0].from[0].source.ipBlocks[0]";
    let cases: Vec<(&str, &str, &str, Want)> = vec![
        ("typo field", "principals:", "principal:", allow("spec.rules[0].from[0].source.principal", Some("db"), "allows nothing to the workloads labelled app=db in namespace shop")),
        ("unknown field", "  rules:", "  rulez:", allow("spec.rulez", Some("db"), "allows nothing")),
        ("bad cidr", "10.0.0.0/8", "10.0.0.0/33", allow(ip, Some("db"), "other ALLOW policies still apply")),
        ("bad action", "spec:\n", "spec:\n  action: allow\n", deny("spec.action", Some("db"), "denies every connection to the workloads labelled app=db in namespace shop; its action is not ALLOW or DENY")),
        ("bad action type", "spec:\n", "spec:\n  action: [DENY]\n", deny("spec.action", Some("db"), "may have been meant as DENY")),
        ("custom", "spec:\n", "spec:\n  action: CUSTOM\n  provider: {name: ext}\n", deny("spec.action", Some("db"), "no external authorizer")),
        ("bad selector", "matchLabels", "matchLabel", allow("spec.selector.matchLabel", None, "allows nothing to every workload in namespace shop, while other ALLOW policies still apply; its selector could not be read")),
        ("selector label not a string", "{app: db}", "{app: [db]}", allow("spec.selector.matchLabels.app", None, "every workload in namespace shop")),
        ("deny with bad cidr", "spec:\n", "spec:\n  action: DENY\n", deny("", Some("db"), "denies every connection to the workloads labelled app=db")),
        ("deny with bad selector", "spec:\n  selector: {matchLabels: {app: db}}", "spec:\n  action: DENY\n  selector: {matchExpressions: []}", deny("spec.selector.matchExpressions", None, "denies every connection to every workload in namespace shop")),
        ("spec not a mapping", "spec:\n  selector", "spec: [x]\nx:\n  selector", deny("spec", None, "its spec is not a mapping")),
        ("in the root namespace", "namespace: shop", "namespace: ambit-system", Want { namespace: "ambit-system", ..allow(ip, Some("db"), "in every namespace (it is in the root namespace ambit-system)") }),
        ("namespace unreadable", "namespace: shop", "namespace: [shop]", Want { namespace: "ambit-system", ..allow("metadata.namespace", Some("db"), "placed in the root namespace") }),
        ("no name", "name: p, ", "", Want { namespace: "shop", ..allow("metadata.name", Some("db"), "allows nothing") }),
        ("targetRefs kept", "  selector: {matchLabels: {app: db}}", "  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: wp}]", Want { selector: None, target_refs: &["Gateway/wp"], ..allow(ip, None, "its targets Gateway/wp") }),
        ("targetRefs with a selector", "spec:\n", "spec:\n  targetRef: {kind: Service, name: db}\n", allow("spec.selector", Some("db"), "targetRefs could not be read or come with a selector")),
        ("targetRefs unreadable", "  selector: {matchLabels: {app: db}}", "  targetRefs: [{kind: Gateway}]", allow("spec.targetRefs[0]", None, "every workload in namespace shop")),
    ];
    for (case, from, to, want) in cases {
        assert!(BASE.contains(from), "{case}: edit does not apply");
        let mut yaml = BASE.replacen(from, to, 1);
        // Some cases break more than one thing on purpose (a DENY with a bad CIDR).
        if [
            "deny with bad cidr",
            "in the root namespace",
            "targetRefs kept",
        ]
        .contains(&case)
        {
            yaml = yaml.replacen("10.0.0.0/8", "10.0.0.0/33", 1);
        }
        let policy = read(&yaml).unwrap_or_else(|e| panic!("{case}: left out: {e}"));
        let invalid = policy
            .invalid
            .clone()
            .unwrap_or_else(|| panic!("{case}: understood: {policy:?}"));
        let field = if want.field.is_empty() {
            ip
        } else {
            want.field
        };
        assert_eq!(invalid.field, field, "{case}: {invalid}");
        assert!(
            invalid.enforced_as.contains(want.enforced),
            "{case}: {:?} lacks {:?}",
            invalid.enforced_as,
            want.enforced
        );
        assert_eq!(policy.action, want.action, "{case}");
        assert_eq!(
            policy.selector.as_ref().map(|s| s["app"].as_str()),
            want.selector,
            "{case}"
        );
        assert_eq!(policy.namespace, want.namespace, "{case}");
        let target_refs: Vec<String> = policy.target_refs.iter().map(ToString::to_string).collect();
        assert_eq!(target_refs, want.target_refs, "{case}");
        assert_eq!(
            policy.rules.len(),
            usize::from(want.action == Action::Deny),
            "{case}: allow-nothing or deny-all"
        );

        // The intended rule would have allowed web on 5432: the broken form refuses it and
        // names itself, and never widens what another ALLOW policy allows.
        let denied = decide(&[&policy], &web_to(5432));
        match &denied {
            Decision::DeniedBy(by) => {
                assert_eq!(by.invalid.as_ref(), Some(&invalid), "{case}");
                assert!(
                    by.to_string().contains("could not be understood"),
                    "{case}: {by}"
                );
            }
            other => panic!("{case}: {other:?}"),
        }
        let allow_all = read("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: all, namespace: shop}\nspec: {rules: [{}]}").unwrap();
        let with_allow_all = decide(&[&policy, &allow_all], &web_to(9999));
        let want_with = match want.action {
            Action::Allow => Decision::Allow,
            Action::Deny => denied.clone(),
        };
        assert_eq!(with_allow_all, want_with, "{case}");
    }
}

#[test]
fn broken_audit_policies_are_left_out_and_valid_ones_untouched() {
    let audit = read(&BASE.replacen("spec:\n", "spec:\n  action: AUDIT\n", 1)).unwrap_err();
    assert_eq!(audit.field, "spec.action");
    assert!(audit.problem.contains("never changes access"), "{audit}");
    let broken_audit = BASE
        .replacen("spec:\n", "spec:\n  action: AUDIT\n", 1)
        .replacen("  rules:", "  rulez:", 1);
    let error = read(&broken_audit).unwrap_err();
    assert_eq!(error.field, "spec.rulez", "{error}");
    assert!(
        error
            .problem
            .contains("as an AUDIT policy it never changes access"),
        "{error}"
    );

    let valid = read(BASE).unwrap();
    assert!(valid.invalid.is_none());
    assert_eq!(valid.rules.len(), 1);
    assert_eq!(decide(&[&valid], &web_to(5432)), Decision::Allow);
}

#[test]
fn the_reason_names_field_cause_and_effect() {
    let policy = read(&BASE.replacen("10.0.0.0/8", "10.0.0.0/33", 1)).unwrap();
    let reason = policy.invalid.unwrap().to_string();
    assert_eq!(
        reason,
        "field spec.rules[0].from[0].source.ipBlocks[0]: \"10.0.0.0/33\" is not an IP address or CIDR block such as 10.0.0.0/16; \
         until it is fixed the policy allows nothing to the workloads labelled app=db in namespace shop, while other ALLOW policies still apply"
    );
}
