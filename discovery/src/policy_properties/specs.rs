//! The generated policies: a small universe of peers, workloads and patterns, policy specs
//! over it, and the Kubernetes objects a user would write for them.

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use crate::snapshot::DEFAULT_ROOT_NAMESPACE;

pub(super) const ROOT: &str = DEFAULT_ROOT_NAMESPACE;

// The universe. Patterns and blocks are chosen so that each hits some connections and misses
// others.
pub(super) const PRINCIPALS: [&str; 6] = [
    "cluster.local/ns/shop/sa/web",
    "*",
    "cluster.local/ns/shop/*",
    "*/sa/web",
    "spiffe://cluster.local/ns/other/sa/web",
    "other.td/ns/shop/sa/web",
];
pub(super) const SERVICE_ACCOUNTS: [&str; 2] = ["shop/web", "other/db"];
pub(super) const NAMESPACE_PATTERNS: [&str; 4] = ["shop", "sh*", "*er", "*"];
pub(super) const IP_BLOCKS: [&str; 5] = [
    "10.0.0.0/8",
    "10.0.0.5",
    "192.168.0.0/16",
    "fd00::/16",
    "10.1.0.0/24",
];
pub(super) const PORTS: [u16; 3] = [80, 5432, 9090];
/// (trust domain, namespace, service account) of each peer; `None` is a plaintext client.
pub(super) type Peer = Option<(&'static str, &'static str, &'static str)>;
pub(super) const PEERS: [Peer; 5] = [
    None,
    Some(("cluster.local", "shop", "web")),
    Some(("cluster.local", "shop", "db")),
    Some(("cluster.local", "other", "web")),
    Some(("other.td", "shop", "web")),
];
pub(super) const SOURCE_IPS: [&str; 4] = ["10.0.0.5", "10.1.0.9", "192.168.1.1", "fd00::5"];
/// (namespace, name, `app` label) of each destination.
pub(super) const WORKLOADS: [(&str, &str, &str); 4] = [
    ("shop", "web", "web"),
    ("shop", "db", "db"),
    ("other", "web", "web"),
    (ROOT, "gw", "web"),
];
pub(super) const POLICY_NAMESPACES: [&str; 3] = ["shop", "other", ROOT];

#[derive(Debug, Clone, Default)]
pub(super) struct SourceSpec {
    pub(super) principals: Vec<&'static str>,
    pub(super) not_principals: Vec<&'static str>,
    pub(super) service_accounts: Vec<&'static str>,
    pub(super) namespaces: Vec<&'static str>,
    pub(super) not_namespaces: Vec<&'static str>,
    pub(super) ip_blocks: Vec<&'static str>,
    pub(super) not_ip_blocks: Vec<&'static str>,
    /// `requestPrincipals`, an L7 field.
    pub(super) request_principals: bool,
}

#[derive(Debug, Clone, Default)]
pub(super) struct OpSpec {
    pub(super) ports: Vec<u16>,
    pub(super) not_ports: Vec<u16>,
    /// `methods`, an L7 field.
    pub(super) methods: bool,
}

#[derive(Debug, Clone, Default)]
pub(super) struct RuleSpec {
    pub(super) from: Option<Vec<SourceSpec>>,
    pub(super) to: Option<Vec<OpSpec>>,
    /// A `when` condition, L7 for ztunnel.
    pub(super) when: bool,
}

#[derive(Debug, Clone)]
pub(super) struct PolicySpec {
    pub(super) name: String,
    pub(super) namespace: &'static str,
    pub(super) deny: bool,
    /// Whether an ALLOW policy spells out `action: ALLOW` (the default).
    pub(super) explicit_action: bool,
    /// `matchLabels: {app: …}`.
    pub(super) selector: Option<&'static str>,
    /// Bound to a waypoint by `targetRefs` (never with a selector).
    pub(super) target_ref: bool,
    pub(super) rules: Vec<RuleSpec>,
}

/// Mostly empty lists, so that rules match often enough to be interesting.
pub(super) fn some_of<T: Clone + std::fmt::Debug + 'static>(
    items: &'static [T],
    max: usize,
) -> impl Strategy<Value = Vec<T>> {
    prop_oneof![3 => Just(Vec::new()), 1 => prop::sample::subsequence(items, 1..=max)]
}

pub(super) fn source() -> impl Strategy<Value = SourceSpec> {
    (
        some_of(&PRINCIPALS, 2),
        some_of(&PRINCIPALS, 1),
        some_of(&SERVICE_ACCOUNTS, 1),
        some_of(&NAMESPACE_PATTERNS, 2),
        some_of(&NAMESPACE_PATTERNS, 1),
        some_of(&IP_BLOCKS, 2),
        some_of(&IP_BLOCKS, 1),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(p, np, sa, ns, nns, ip, nip, rp)| SourceSpec {
            // principals and serviceAccounts may not share a source (a conversion error).
            service_accounts: if p.is_empty() { sa } else { Vec::new() },
            principals: p,
            not_principals: np,
            namespaces: ns,
            not_namespaces: nns,
            ip_blocks: ip,
            not_ip_blocks: nip,
            request_principals: rp,
        })
}

pub(super) fn operation() -> impl Strategy<Value = OpSpec> {
    (
        some_of(&PORTS, 2),
        some_of(&PORTS, 1),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(ports, not_ports, methods)| OpSpec {
            ports,
            not_ports,
            methods,
        })
}

pub(super) fn rule() -> impl Strategy<Value = RuleSpec> {
    (
        prop::option::of(prop::collection::vec(source(), 0..=2)),
        prop::option::of(prop::collection::vec(operation(), 0..=2)),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(from, to, when)| RuleSpec { from, to, when })
}

pub(super) fn policy() -> impl Strategy<Value = PolicySpec> {
    (
        prop::sample::select(&POLICY_NAMESPACES[..]),
        any::<bool>(),
        any::<bool>(),
        prop::option::of(prop::sample::select(&["web", "db"][..])),
        prop::bool::weighted(0.15),
        prop::collection::vec(rule(), 0..=3),
    )
        .prop_map(
            |(namespace, deny, explicit_action, selector, target_ref, rules)| PolicySpec {
                name: String::new(),
                namespace,
                deny,
                explicit_action,
                selector: if target_ref { None } else { selector },
                target_ref,
                rules,
            },
        )
}

pub(super) fn policies() -> impl Strategy<Value = Vec<PolicySpec>> {
    prop::collection::vec(policy(), 0..=4).prop_map(|mut list| {
        for (i, p) in list.iter_mut().enumerate() {
            p.name = format!("p{i}");
        }
        list
    })
}

pub(super) fn to_json(p: &PolicySpec) -> Value {
    let mut spec = Map::new();
    if p.deny {
        spec.insert("action".into(), json!("DENY"));
    } else if p.explicit_action {
        spec.insert("action".into(), json!("ALLOW"));
    }
    if let Some(app) = p.selector {
        spec.insert("selector".into(), json!({"matchLabels": {"app": app}}));
    }
    if p.target_ref {
        spec.insert(
            "targetRefs".into(),
            json!([{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "wp"}]),
        );
    }
    if !p.rules.is_empty() {
        spec.insert(
            "rules".into(),
            p.rules.iter().map(rule_json).collect::<Vec<_>>().into(),
        );
    }
    json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": p.name, "namespace": p.namespace},
        "spec": spec,
    })
}

pub(super) fn rule_json(r: &RuleSpec) -> Value {
    let mut rule = Map::new();
    if let Some(from) = &r.from {
        let from: Vec<Value> = from
            .iter()
            .map(|s| {
                let mut source = Map::new();
                for (key, list) in [
                    ("principals", &s.principals),
                    ("notPrincipals", &s.not_principals),
                    ("serviceAccounts", &s.service_accounts),
                    ("namespaces", &s.namespaces),
                    ("notNamespaces", &s.not_namespaces),
                    ("ipBlocks", &s.ip_blocks),
                    ("notIpBlocks", &s.not_ip_blocks),
                ] {
                    if !list.is_empty() {
                        source.insert(key.into(), json!(list));
                    }
                }
                if s.request_principals {
                    source.insert("requestPrincipals".into(), json!(["*"]));
                }
                json!({ "source": source })
            })
            .collect();
        rule.insert("from".into(), from.into());
    }
    if let Some(to) = &r.to {
        let to: Vec<Value> = to
            .iter()
            .map(|o| {
                // Istio types ports as strings; numbers are accepted too.
                let ports = |list: &[u16]| -> Value {
                    list.iter()
                        .map(|p| {
                            if *p == 5432 {
                                json!(p)
                            } else {
                                json!(p.to_string())
                            }
                        })
                        .collect::<Vec<_>>()
                        .into()
                };
                let mut operation = Map::new();
                if !o.ports.is_empty() {
                    operation.insert("ports".into(), ports(&o.ports));
                }
                if !o.not_ports.is_empty() {
                    operation.insert("notPorts".into(), ports(&o.not_ports));
                }
                if o.methods {
                    operation.insert("methods".into(), json!(["GET"]));
                }
                json!({ "operation": operation })
            })
            .collect();
        rule.insert("to".into(), to.into());
    }
    if r.when {
        rule.insert(
            "when".into(),
            json!([{"key": "request.headers[x-user]", "values": ["a"]}]),
        );
    }
    rule.into()
}
