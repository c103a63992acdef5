#![allow(clippy::unwrap_used)]

use super::*;

fn policy(action: Action, rules: Vec<Rule>) -> AuthorizationPolicy {
    AuthorizationPolicy {
        name: "p".into(),
        namespace: "shop".into(),
        action,
        selector: None,
        target_refs: vec![],
        rules,
        invalid: None,
    }
}

fn from_principal(p: &str) -> Rule {
    Rule {
        from: Some(vec![Source {
            principals: vec![StringMatch::parse(p)],
            ..Source::default()
        }]),
        ..Rule::default()
    }
}

fn to_port(port: u16) -> Rule {
    Rule {
        to: Some(vec![Operation {
            ports: vec![port],
            ..Operation::default()
        }]),
        ..Rule::default()
    }
}

fn l7(mut rule: Rule) -> Rule {
    rule.has_l7_fields = true;
    rule.l7_fields = vec!["methods".into()];
    rule
}

#[test]
fn decisions_follow_istio_semantics() {
    let web = SpiffeId::new("cluster.local", "shop", "web").unwrap();
    let conn = |id: Option<&'static SpiffeId>, port| ConnectionAttrs {
        src_ip: "10.0.0.5".parse().unwrap(),
        src_identity: id,
        dst_port: port,
    };
    let web: &'static SpiffeId = Box::leak(Box::new(web));
    let allow_web = policy(
        Action::Allow,
        vec![from_principal("cluster.local/ns/shop/sa/web")],
    );
    let allow_ns_prefix = policy(
        Action::Allow,
        vec![Rule {
            from: Some(vec![Source {
                namespaces: vec![StringMatch::parse("sh*")],
                ..Source::default()
            }]),
            ..Rule::default()
        }],
    );
    let deny_port = policy(Action::Deny, vec![to_port(9090)]);
    let deny_l7_port = policy(Action::Deny, vec![l7(to_port(8080))]);
    let allow_l7 = policy(Action::Allow, vec![l7(Rule::default())]);
    let allow_nothing = policy(Action::Allow, vec![]);
    let allow_all = policy(Action::Allow, vec![Rule::default()]);
    let allow_block = policy(
        Action::Allow,
        vec![Rule {
            from: Some(vec![Source {
                ip_blocks: vec!["10.0.0.0/24".parse().unwrap()],
                not_ip_blocks: vec!["10.0.0.9/32".parse().unwrap()],
                ..Source::default()
            }]),
            ..Rule::default()
        }],
    );
    let denied = Decision::DeniedBy(PolicyRef {
        namespace: "shop".into(),
        name: "p".into(),
        invalid: None,
    });
    let cases: Vec<(&str, Vec<&AuthorizationPolicy>, ConnectionAttrs, Decision)> = vec![
        ("no policies", vec![], conn(None, 80), Decision::Allow),
        (
            "principal allowed",
            vec![&allow_web],
            conn(Some(web), 80),
            Decision::Allow,
        ),
        (
            "plaintext not allowed",
            vec![&allow_web],
            conn(None, 80),
            Decision::NotAllowed,
        ),
        (
            "namespace prefix",
            vec![&allow_ns_prefix],
            conn(Some(web), 80),
            Decision::Allow,
        ),
        (
            "deny wins",
            vec![&allow_web, &deny_port],
            conn(Some(web), 9090),
            denied.clone(),
        ),
        (
            "deny other port",
            vec![&deny_port],
            conn(None, 80),
            Decision::Allow,
        ),
        (
            "deny with l7 applies",
            vec![&deny_l7_port],
            conn(None, 8080),
            denied,
        ),
        (
            "allow with l7 matches nothing",
            vec![&allow_l7],
            conn(Some(web), 80),
            Decision::NotAllowed,
        ),
        (
            "allow without rules",
            vec![&allow_nothing],
            conn(Some(web), 80),
            Decision::NotAllowed,
        ),
        (
            "allow empty rule",
            vec![&allow_all],
            conn(None, 80),
            Decision::Allow,
        ),
        (
            "ip block",
            vec![&allow_block],
            conn(None, 80),
            Decision::Allow,
        ),
    ];
    for (name, policies, conn, want) in cases {
        assert_eq!(authorize(policies, &conn), want, "{name}");
    }
    let excluded = ConnectionAttrs {
        src_ip: "10.0.0.9".parse().unwrap(),
        src_identity: None,
        dst_port: 80,
    };
    assert_eq!(authorize([&allow_block], &excluded), Decision::NotAllowed);
}

#[test]
fn string_match_patterns() {
    let cases = [
        ("*", "x", true),
        ("*", "", false),
        ("a*", "abc", true),
        ("*c", "abc", true),
        ("*c", "abd", false),
        ("abc", "abc", true),
        ("abc", "ab", false),
    ];
    for (pattern, value, want) in cases {
        assert_eq!(
            StringMatch::parse(pattern).matches(value),
            want,
            "{pattern} vs {value}"
        );
    }
}

fn broken(action: Action, rules: Vec<Rule>) -> AuthorizationPolicy {
    AuthorizationPolicy {
        name: "broken".into(),
        invalid: Some(Invalid {
            field: "spec.rules[0].from[0].source.ipBlocks[0]".into(),
            problem: "\"10.0.0.0/33\" is not an IP address or CIDR block".into(),
            enforced_as: "fails closed".into(),
        }),
        ..policy(action, rules)
    }
}

#[test]
fn policies_that_could_not_be_understood_fail_closed_and_say_so() {
    let conn = ConnectionAttrs {
        src_ip: "10.0.0.5".parse().unwrap(),
        src_identity: None,
        dst_port: 80,
    };
    // Decided by the mark, whatever rules the policy carries: a broken DENY denies even
    // without rules, a broken ALLOW allows nothing even with a match-everything rule.
    let broken_deny = broken(Action::Deny, vec![]);
    let broken_allow = broken(Action::Allow, vec![Rule::default()]);
    let allow_all = policy(Action::Allow, vec![Rule::default()]);
    let allow_other_port = policy(Action::Allow, vec![to_port(9090)]);
    let by_broken = |p: &AuthorizationPolicy| {
        Decision::DeniedBy(PolicyRef {
            namespace: "shop".into(),
            name: "broken".into(),
            invalid: p.invalid.clone(),
        })
    };
    let cases: Vec<(&str, Vec<&AuthorizationPolicy>, Decision)> = vec![
        ("broken deny", vec![&broken_deny], by_broken(&broken_deny)),
        (
            "broken deny beats allow",
            vec![&allow_all, &broken_deny],
            by_broken(&broken_deny),
        ),
        (
            "broken allow alone",
            vec![&broken_allow],
            by_broken(&broken_allow),
        ),
        (
            "broken allow with a non-matching allow",
            vec![&allow_other_port, &broken_allow],
            by_broken(&broken_allow),
        ),
        (
            "broken allow only narrows",
            vec![&broken_allow, &allow_all],
            Decision::Allow,
        ),
    ];
    for (case, policies, want) in cases {
        assert_eq!(authorize(policies, &conn), want, "{case}");
    }
    let Decision::DeniedBy(by) = authorize([&broken_deny], &conn) else {
        panic!("not denied")
    };
    assert_eq!(
        by.to_string(),
        "shop/broken, which could not be understood (field spec.rules[0].from[0].source.ipBlocks[0]: \
         \"10.0.0.0/33\" is not an IP address or CIDR block; until it is fixed the policy fails closed)"
    );
    let valid = PolicyRef {
        namespace: "shop".into(),
        name: "p".into(),
        invalid: None,
    };
    assert_eq!(
        valid.to_string(),
        "shop/p",
        "the access log's wording for valid policies"
    );
}
