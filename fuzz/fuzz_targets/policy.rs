//! AuthorizationPolicy conversion (discovery/src/convert/policy.rs and the fail-closed form in
//! convert/fail_closed.rs): one object as YAML or JSON, decoded and converted as both sources
//! do (`discovery::fuzzing::convert_policy`).
//!
//! Contract (DESIGN §7, a policy we cannot parse never allows more than it would have): never
//! panics; a policy that converts is enforced as converted and is not marked invalid; one that
//! does not is either left out (only an AUDIT policy, which never changes access) or enforced
//! fail-closed and marked invalid — an ALLOW without rules, which allows no connection by
//! itself, or a DENY that denies every connection; and evaluating any policy works.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use certs::SpiffeId;
use discovery::fuzzing::convert_policy;
use discovery::{authorize, Action, AuthorizationPolicy, ConnectionAttrs, Decision};
use libfuzzer_sys::fuzz_target;

const ROOT_NAMESPACE: &str = "istio-system";

/// A spread of connections: with and without an identity, v4 and v6, common and odd ports.
fn connections(identities: &[SpiffeId]) -> Vec<ConnectionAttrs<'_>> {
    let mut conns = Vec::new();
    for src_ip in [
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        IpAddr::V4(Ipv4Addr::new(192, 168, 7, 9)),
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1)),
    ] {
        for dst_port in [80, 443, 8080, 1, 65535] {
            conns.push(ConnectionAttrs {
                src_ip,
                src_identity: None,
                dst_port,
            });
            for identity in identities {
                conns.push(ConnectionAttrs {
                    src_ip,
                    src_identity: Some(identity),
                    dst_port,
                });
            }
        }
    }
    conns
}

fn check_fail_closed(policy: &AuthorizationPolicy, conns: &[ConnectionAttrs<'_>]) {
    let invalid = policy.invalid.as_ref().expect("marked invalid");
    assert!(!invalid.enforced_as.is_empty() && !invalid.problem.is_empty());
    assert!(!policy.name.is_empty() && !policy.namespace.is_empty());
    match policy.action {
        Action::Allow => assert!(policy.rules.is_empty(), "a broken ALLOW keeps rules"),
        Action::Deny => {}
    }
    for conn in conns {
        let decision = authorize([policy], conn);
        match policy.action {
            Action::Allow => assert_ne!(decision, Decision::Allow, "broken ALLOW allowed {conn:?}"),
            Action::Deny => assert!(
                matches!(decision, Decision::DeniedBy(_)),
                "broken DENY did not deny {conn:?}: {decision:?}"
            ),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some(conversion) = convert_policy(text, ROOT_NAMESPACE) else {
        return;
    };
    let identities = [
        SpiffeId::new("cluster.local", "shop", "web").expect("identity"),
        SpiffeId::new("cluster.local", "istio-system", "default").expect("identity"),
        SpiffeId::new("other.domain", "shop", "web").expect("identity"),
    ];
    let conns = connections(&identities);
    match (&conversion.strict, &conversion.enforced) {
        (Some(Ok(strict)), enforced) => {
            assert!(strict.invalid.is_none(), "converted yet marked invalid");
            assert_eq!(
                enforced.as_ref(),
                Ok(strict),
                "enforced differs from converted"
            );
            assert!(!strict.name.is_empty() && !strict.namespace.is_empty());
            for conn in &conns {
                let _ = authorize([strict], conn);
            }
        }
        (_, Ok(enforced)) => check_fail_closed(enforced, &conns),
        (_, Err(left_out)) => {
            assert!(!left_out.problem.is_empty());
            // Only AUDIT may be left out: it never changes access.
            let mut value: serde_yaml::Value = serde_yaml::from_str(text).expect("parsed before");
            value.apply_merge().expect("merged before");
            let action = value
                .get("spec")
                .and_then(|spec| spec.get("action"))
                .and_then(serde_yaml::Value::as_str);
            assert_eq!(
                action,
                Some("AUDIT"),
                "left out a non-AUDIT policy: {left_out}"
            );
        }
    }
});
