//! Ways a user breaks a policy, and the fail-closed form each must end up in.

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::specs::*;

/// Ways a user breaks a policy. Those marked "manifests only" cannot reach the Kubernetes
/// source: the API server rejects them (a namespace that is not a string, no name) or never
/// serves them (an unknown version).
#[derive(Debug, Clone, Copy)]
pub(super) enum Corruption {
    UnknownSpecField,
    TypoInSource,
    BadCidr,
    BadPort,
    PrincipalsWithServiceAccounts,
    BadAction(usize),
    BadSelector(usize),
    SpecNotMapping,
    BrokenTargetRef,
    /// Manifests only.
    NamespaceNotString,
    /// Manifests only.
    UnknownVersion,
    /// Manifests only.
    NoName,
}

pub(super) const BAD_ACTIONS: [&str; 4] = ["allow", "Deny", "AUIDT", "CUSTOM"];

pub(super) fn corruption() -> impl Strategy<Value = Corruption> {
    prop_oneof![
        Just(Corruption::UnknownSpecField),
        Just(Corruption::TypoInSource),
        Just(Corruption::BadCidr),
        Just(Corruption::BadPort),
        Just(Corruption::PrincipalsWithServiceAccounts),
        (0..BAD_ACTIONS.len() + 1).prop_map(Corruption::BadAction),
        (0..4usize).prop_map(Corruption::BadSelector),
        Just(Corruption::SpecNotMapping),
        Just(Corruption::BrokenTargetRef),
        Just(Corruption::NamespaceNotString),
        Just(Corruption::UnknownVersion),
        Just(Corruption::NoName),
    ]
}

pub(super) fn spec_of(object: &mut Value) -> &mut Map<String, Value> {
    object["spec"].as_object_mut().unwrap()
}

/// The first rule, added if there is none (a broken rule is what is being tested).
pub(super) fn first_rule(object: &mut Value) -> &mut Map<String, Value> {
    let rules = spec_of(object)
        .entry("rules")
        .or_insert_with(|| json!([]))
        .as_array_mut()
        .unwrap();
    if rules.is_empty() {
        rules.push(json!({}));
    }
    rules[0].as_object_mut().unwrap()
}

pub(super) fn push_entry(rule: &mut Map<String, Value>, list: &str, entry: Value) {
    let list = rule.entry(list).or_insert_with(|| json!([]));
    list.as_array_mut().unwrap().push(entry);
}

impl Corruption {
    pub(super) fn reaches_kubernetes(self) -> bool {
        !matches!(
            self,
            Corruption::NamespaceNotString | Corruption::UnknownVersion | Corruption::NoName
        )
    }

    pub(super) fn apply(self, object: &mut Value) {
        match self {
            Corruption::UnknownSpecField => {
                spec_of(object).insert("rulez".into(), json!([{}]));
            }
            Corruption::TypoInSource => push_entry(
                first_rule(object),
                "from",
                json!({"source": {"principal": ["cluster.local/ns/shop/sa/web"]}}),
            ),
            Corruption::BadCidr => push_entry(
                first_rule(object),
                "from",
                json!({"source": {"ipBlocks": ["10.0.0.0/33"]}}),
            ),
            Corruption::BadPort => push_entry(
                first_rule(object),
                "to",
                json!({"operation": {"ports": ["70000"]}}),
            ),
            Corruption::PrincipalsWithServiceAccounts => push_entry(
                first_rule(object),
                "from",
                json!({"source": {"principals": ["*"], "serviceAccounts": ["shop/web"]}}),
            ),
            Corruption::BadAction(i) => {
                let action = BAD_ACTIONS.get(i).map_or(json!(1), |a| json!(a));
                spec_of(object).insert("action".into(), action);
            }
            Corruption::BadSelector(i) => {
                let selector = [
                    json!({"matchLabel": {"app": "web"}}),
                    json!({"matchLabels": {"app": ["web"]}}),
                    json!({"matchExpressions": []}),
                    json!("app=web"),
                ][i]
                    .clone();
                spec_of(object).insert("selector".into(), selector);
            }
            Corruption::SpecNotMapping => object["spec"] = json!(["rules"]),
            Corruption::BrokenTargetRef => {
                spec_of(object).insert("targetRefs".into(), json!([{"kind": "Gateway"}]));
            }
            Corruption::NamespaceNotString => object["metadata"]["namespace"] = json!(["shop"]),
            Corruption::UnknownVersion => object["apiVersion"] = json!("security.istio.io/v2"),
            Corruption::NoName => {
                object["metadata"].as_object_mut().unwrap().remove("name");
            }
        }
    }

    /// The reference fail-closed form of `intended` broken this way: what can still be read
    /// of it, allowing nothing (ALLOW) or denying everything (DENY, or an unreadable action).
    pub(super) fn fail_closed_form(self, intended: &PolicySpec) -> PolicySpec {
        let action_unreadable =
            matches!(self, Corruption::BadAction(_) | Corruption::SpecNotMapping);
        let selector_unreadable = matches!(
            self,
            Corruption::BadSelector(_) | Corruption::SpecNotMapping
        );
        let selector_present =
            intended.selector.is_some() || matches!(self, Corruption::BadSelector(_));
        let deny = intended.deny || action_unreadable;
        PolicySpec {
            name: intended.name.clone(),
            namespace: if matches!(self, Corruption::NamespaceNotString) {
                ROOT
            } else {
                intended.namespace
            },
            deny,
            explicit_action: true,
            selector: if selector_unreadable {
                None
            } else {
                intended.selector
            },
            target_ref: intended.target_ref
                && !selector_present
                && !matches!(
                    self,
                    Corruption::BrokenTargetRef | Corruption::SpecNotMapping
                ),
            // No rules allow nothing; one empty rule denies everything.
            rules: if deny {
                vec![RuleSpec::default()]
            } else {
                Vec::new()
            },
        }
    }
}
