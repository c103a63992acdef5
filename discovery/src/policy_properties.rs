//! Property tests (DESIGN §4 and §7).
//!
//! Policies are generated as specs ([`PolicySpec`]), written as the objects a user would write,
//! read by both sources' conversions (the manifest loader, and the Kubernetes source's path for
//! a watched object), and evaluated the way ztunnel does (`Snapshot::policies_for`, then
//! [`authorize`]) for every connection of a small universe: destination workloads × peers ×
//! source IPs × ports. The reference model evaluates the specs directly, by Istio's L4 rules as
//! written in `crate::policy`'s docs, sharing no code with the implementation.
//!
//! (a) For valid policies, the implementation allows exactly what the reference allows.
//! (b) A policy corrupted so that it fails to convert never allows more than its intended
//!     form would, nor more than if it were absent, and allows exactly what its fail-closed form
//!     (allow-nothing or deny-all for the scope it could have had) allows.
//!
//! `PROPTEST_CASES` raises the case count for a longer run by hand.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::path::Path;
use std::sync::OnceLock;

use ::kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::*;
use crate::decode::Collector;
use crate::model::Workload;
use crate::snapshot::{Snapshot, SnapshotOptions, DEFAULT_ROOT_NAMESPACE};

const ROOT: &str = DEFAULT_ROOT_NAMESPACE;

// The universe. Patterns and blocks are chosen so that each hits some connections and misses
// others.
const PRINCIPALS: [&str; 6] = [
    "cluster.local/ns/shop/sa/web",
    "*",
    "cluster.local/ns/shop/*",
    "*/sa/web",
    "spiffe://cluster.local/ns/other/sa/web",
    "other.td/ns/shop/sa/web",
];
const SERVICE_ACCOUNTS: [&str; 2] = ["shop/web", "other/db"];
const NAMESPACE_PATTERNS: [&str; 4] = ["shop", "sh*", "*er", "*"];
const IP_BLOCKS: [&str; 5] = [
    "10.0.0.0/8",
    "10.0.0.5",
    "192.168.0.0/16",
    "fd00::/16",
    "10.1.0.0/24",
];
const PORTS: [u16; 3] = [80, 5432, 9090];
/// (trust domain, namespace, service account) of each peer; `None` is a plaintext client.
type Peer = Option<(&'static str, &'static str, &'static str)>;
const PEERS: [Peer; 5] = [
    None,
    Some(("cluster.local", "shop", "web")),
    Some(("cluster.local", "shop", "db")),
    Some(("cluster.local", "other", "web")),
    Some(("other.td", "shop", "web")),
];
const SOURCE_IPS: [&str; 4] = ["10.0.0.5", "10.1.0.9", "192.168.1.1", "fd00::5"];
/// (namespace, name, `app` label) of each destination.
const WORKLOADS: [(&str, &str, &str); 4] = [
    ("shop", "web", "web"),
    ("shop", "db", "db"),
    ("other", "web", "web"),
    (ROOT, "gw", "web"),
];
const POLICY_NAMESPACES: [&str; 3] = ["shop", "other", ROOT];

#[derive(Debug, Clone, Default)]
struct SourceSpec {
    principals: Vec<&'static str>,
    not_principals: Vec<&'static str>,
    service_accounts: Vec<&'static str>,
    namespaces: Vec<&'static str>,
    not_namespaces: Vec<&'static str>,
    ip_blocks: Vec<&'static str>,
    not_ip_blocks: Vec<&'static str>,
    /// `requestPrincipals`, an L7 field.
    request_principals: bool,
}

#[derive(Debug, Clone, Default)]
struct OpSpec {
    ports: Vec<u16>,
    not_ports: Vec<u16>,
    /// `methods`, an L7 field.
    methods: bool,
}

#[derive(Debug, Clone, Default)]
struct RuleSpec {
    from: Option<Vec<SourceSpec>>,
    to: Option<Vec<OpSpec>>,
    /// A `when` condition, L7 for ztunnel.
    when: bool,
}

#[derive(Debug, Clone)]
struct PolicySpec {
    name: String,
    namespace: &'static str,
    deny: bool,
    /// Whether an ALLOW policy spells out `action: ALLOW` (the default).
    explicit_action: bool,
    /// `matchLabels: {app: …}`.
    selector: Option<&'static str>,
    /// Bound to a waypoint by `targetRefs` (never with a selector).
    target_ref: bool,
    rules: Vec<RuleSpec>,
}

// ---- generation

/// Mostly empty lists, so that rules match often enough to be interesting.
fn some_of<T: Clone + std::fmt::Debug + 'static>(
    items: &'static [T],
    max: usize,
) -> impl Strategy<Value = Vec<T>> {
    prop_oneof![3 => Just(Vec::new()), 1 => prop::sample::subsequence(items, 1..=max)]
}

fn source() -> impl Strategy<Value = SourceSpec> {
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

fn operation() -> impl Strategy<Value = OpSpec> {
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

fn rule() -> impl Strategy<Value = RuleSpec> {
    (
        prop::option::of(prop::collection::vec(source(), 0..=2)),
        prop::option::of(prop::collection::vec(operation(), 0..=2)),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(from, to, when)| RuleSpec { from, to, when })
}

fn policy() -> impl Strategy<Value = PolicySpec> {
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

fn policies() -> impl Strategy<Value = Vec<PolicySpec>> {
    prop::collection::vec(policy(), 0..=4).prop_map(|mut list| {
        for (i, p) in list.iter_mut().enumerate() {
            p.name = format!("p{i}");
        }
        list
    })
}

// ---- the specs as Kubernetes objects

fn to_json(p: &PolicySpec) -> Value {
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

fn rule_json(r: &RuleSpec) -> Value {
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

// ---- the reference model

/// Istio's string match: `*` is any non-empty value, `*x` a suffix, `x*` a prefix.
fn pattern_matches(pattern: &str, value: &str) -> bool {
    if pattern == "*" {
        !value.is_empty()
    } else if let Some(suffix) = pattern.strip_prefix('*') {
        value.ends_with(suffix)
    } else if let Some(prefix) = pattern.strip_suffix('*') {
        value.starts_with(prefix)
    } else {
        value == pattern
    }
}

fn block_contains(block: &str, ip: IpAddr) -> bool {
    match block.parse::<ipnet::IpNet>() {
        Ok(net) => net.contains(&ip),
        Err(_) => block.parse::<IpAddr>() == Ok(ip),
    }
}

#[derive(Debug, Clone, Copy)]
struct Conn {
    workload: usize,
    peer: usize,
    ip: IpAddr,
    port: u16,
}

fn universe() -> &'static [Conn] {
    static UNIVERSE: OnceLock<Vec<Conn>> = OnceLock::new();
    UNIVERSE.get_or_init(|| {
        let mut all = Vec::new();
        for workload in 0..WORKLOADS.len() {
            for peer in 0..PEERS.len() {
                for ip in SOURCE_IPS {
                    for port in PORTS {
                        let ip = ip.parse().unwrap();
                        all.push(Conn {
                            workload,
                            peer,
                            ip,
                            port,
                        });
                    }
                }
            }
        }
        all
    })
}

fn source_matches(s: &SourceSpec, c: &Conn) -> bool {
    let peer = PEERS[c.peer];
    let principal = peer.map_or(String::new(), |(td, ns, sa)| {
        format!("{td}/ns/{ns}/sa/{sa}")
    });
    let namespace = peer.map_or("", |(_, ns, _)| ns);
    // Ambit also accepts principals written with the spiffe:// scheme.
    let principal_hit = |p: &&str| pattern_matches(p.trim_start_matches("spiffe://"), &principal);
    let account_hit = |sa: &&str| {
        let (ns, name) = sa.split_once('/').unwrap();
        peer.is_some_and(|(_, peer_ns, peer_sa)| peer_ns == ns && peer_sa == name)
    };
    let who = (s.principals.is_empty() && s.service_accounts.is_empty())
        || s.principals.iter().any(principal_hit)
        || s.service_accounts.iter().any(account_hit);
    who && !s.not_principals.iter().any(principal_hit)
        && (s.namespaces.is_empty() || s.namespaces.iter().any(|p| pattern_matches(p, namespace)))
        && !s
            .not_namespaces
            .iter()
            .any(|p| pattern_matches(p, namespace))
        && (s.ip_blocks.is_empty() || s.ip_blocks.iter().any(|b| block_contains(b, c.ip)))
        && !s.not_ip_blocks.iter().any(|b| block_contains(b, c.ip))
}

fn op_matches(o: &OpSpec, port: u16) -> bool {
    (o.ports.is_empty() || o.ports.contains(&port)) && !o.not_ports.contains(&port)
}

fn rule_matches(r: &RuleSpec, c: &Conn, deny: bool) -> bool {
    let l7 = r.when
        || r.to.iter().flatten().any(|o| o.methods)
        || r.from.iter().flatten().any(|s| s.request_principals);
    // ztunnel cannot check L7 conditions: an ALLOW rule with them allows nothing, a DENY rule
    // is applied without them.
    if l7 && !deny {
        return false;
    }
    // An absent or empty list constrains nothing.
    let from = r.from.as_deref().unwrap_or_default();
    let to = r.to.as_deref().unwrap_or_default();
    (from.is_empty() || from.iter().any(|s| source_matches(s, c)))
        && (to.is_empty() || to.iter().any(|o| op_matches(o, c.port)))
}

fn reference_allows(policies: &[PolicySpec], c: &Conn) -> bool {
    let (namespace, _, app) = WORKLOADS[c.workload];
    let applies: Vec<&PolicySpec> = policies
        .iter()
        .filter(|p| !p.target_ref)
        .filter(|p| p.namespace == namespace || p.namespace == ROOT)
        .filter(|p| p.selector.is_none_or(|s| s == app))
        .collect();
    let matches = |p: &PolicySpec| p.rules.iter().any(|r| rule_matches(r, c, p.deny));
    if applies.iter().any(|p| p.deny && matches(p)) {
        return false;
    }
    let allows: Vec<&&PolicySpec> = applies.iter().filter(|p| !p.deny).collect();
    allows.is_empty() || allows.iter().any(|p| matches(p))
}

fn reference_set(policies: &[PolicySpec]) -> Vec<bool> {
    universe()
        .iter()
        .map(|c| reference_allows(policies, c))
        .collect()
}

// ---- the implementation, through both sources

fn options() -> SnapshotOptions {
    SnapshotOptions::default()
}

fn workloads() -> &'static [Workload] {
    static WORKLOADS_CONVERTED: OnceLock<Vec<Workload>> = OnceLock::new();
    WORKLOADS_CONVERTED.get_or_init(|| {
        let mut collector = Collector::new(&options());
        for (i, (ns, name, app)) in WORKLOADS.iter().enumerate() {
            let pod = format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{app: {app}}}}}\n\
                 spec: {{nodeName: node-a, containers: [{{name: c}}]}}\nstatus: {{podIP: 10.9.0.{}}}",
                i + 1
            );
            collector.add_file(Path::new("pods.yaml"), &pod);
        }
        collector.into_objects().unwrap().workloads
    })
}

fn ids() -> &'static [Option<SpiffeId>] {
    static IDS: OnceLock<Vec<Option<SpiffeId>>> = OnceLock::new();
    IDS.get_or_init(|| {
        PEERS
            .iter()
            .map(|peer| peer.map(|(td, ns, sa)| SpiffeId::new(td, ns, sa).unwrap()))
            .collect()
    })
}

fn snapshot_of(policies: Vec<AuthorizationPolicy>) -> Snapshot {
    let objects = crate::snapshot::Objects {
        workloads: workloads().to_vec(),
        policies,
        ..Default::default()
    };
    Snapshot::build(objects, &options()).0
}

/// The manifest loader: each policy in its own file.
fn local_policies(objects: &[Value]) -> Vec<AuthorizationPolicy> {
    let mut collector = Collector::new(&options());
    for (i, object) in objects.iter().enumerate() {
        let text = serde_yaml::to_string(object).unwrap();
        collector.add_file(Path::new(&format!("/m/{i}.yaml")), &text);
    }
    let mut policies = collector.into_objects().unwrap().policies;
    policies.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    policies
}

/// The Kubernetes source's conversion of watched objects.
fn kube_policies(objects: &[Value]) -> Vec<AuthorizationPolicy> {
    let gvk = GroupVersionKind::gvk("security.istio.io", "v1", "AuthorizationPolicy");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "authorizationpolicies");
    let mut policies: Vec<AuthorizationPolicy> = objects
        .iter()
        .filter_map(|object| {
            let object: DynamicObject = serde_json::from_value(object.clone()).unwrap();
            crate::kube::authorization_policy(&object, &resource, ROOT).unwrap()
        })
        .collect();
    policies.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    policies
}

/// The policies as enforced: a broken one's field and problem text may differ between the
/// sources (serde_json and serde_yaml word some decode errors differently), not its effect.
fn enforced(mut policies: Vec<AuthorizationPolicy>) -> Vec<AuthorizationPolicy> {
    for policy in &mut policies {
        if let Some(invalid) = &mut policy.invalid {
            invalid.field.clear();
            invalid.problem.clear();
        }
    }
    policies
}

fn allowed_set(snapshot: &Snapshot) -> Vec<bool> {
    universe()
        .iter()
        .map(|c| {
            let (ns, name, _) = WORKLOADS[c.workload];
            let workload = snapshot.workload(ns, name).unwrap();
            let attrs = ConnectionAttrs {
                src_ip: c.ip,
                src_identity: ids()[c.peer].as_ref(),
                dst_port: c.port,
            };
            authorize(snapshot.policies_for(workload), &attrs) == Decision::Allow
        })
        .collect()
}

/// The first connection `got` allows that `limit` does not, if any.
fn allowed_beyond(got: &[bool], limit: &[bool]) -> Option<Conn> {
    universe()
        .iter()
        .zip(got.iter().zip(limit))
        .find(|(_, (got, limit))| **got && !**limit)
        .map(|(c, _)| *c)
}

fn first_difference(got: &[bool], want: &[bool]) -> Option<(Conn, bool)> {
    universe()
        .iter()
        .zip(got.iter().zip(want))
        .find(|(_, (got, want))| got != want)
        .map(|(c, (got, _))| (*c, *got))
}

// ---- corruptions

/// Ways a user breaks a policy. Those marked "manifests only" cannot reach the Kubernetes
/// source: the API server rejects them (a namespace that is not a string, no name) or never
/// serves them (an unknown version).
#[derive(Debug, Clone, Copy)]
enum Corruption {
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

const BAD_ACTIONS: [&str; 4] = ["allow", "Deny", "AUIDT", "CUSTOM"];

fn corruption() -> impl Strategy<Value = Corruption> {
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

fn spec_of(object: &mut Value) -> &mut Map<String, Value> {
    object["spec"].as_object_mut().unwrap()
}

/// The first rule, added if there is none (a broken rule is what is being tested).
fn first_rule(object: &mut Value) -> &mut Map<String, Value> {
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

fn push_entry(rule: &mut Map<String, Value>, list: &str, entry: Value) {
    let list = rule.entry(list).or_insert_with(|| json!([]));
    list.as_array_mut().unwrap().push(entry);
}

impl Corruption {
    fn reaches_kubernetes(self) -> bool {
        !matches!(
            self,
            Corruption::NamespaceNotString | Corruption::UnknownVersion | Corruption::NoName
        )
    }

    fn apply(self, object: &mut Value) {
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
    fn fail_closed_form(self, intended: &PolicySpec) -> PolicySpec {
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

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(64);
    ProptestConfig {
        cases,
        // Nothing written into the source tree on failure; the shrunk case is printed.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn authorize_agrees_with_the_reference_model(specs in policies()) {
        let objects: Vec<Value> = specs.iter().map(to_json).collect();
        let want = reference_set(&specs);
        let local = local_policies(&objects);
        prop_assert!(local.iter().all(|p| p.invalid.is_none()), "{local:?}");
        let kube = kube_policies(&objects);
        prop_assert_eq!(&local, &kube, "both sources convert alike");
        let got = allowed_set(&snapshot_of(local));
        let diff = first_difference(&got, &want);
        prop_assert!(diff.is_none(), "connection {:?}: implementation allows={}, reference the opposite", diff.map(|d| d.0), diff.is_some_and(|d| d.1));
    }

    #[test]
    fn a_policy_that_fails_to_convert_never_allows_more(
        others in policies(),
        intended in policy(),
        corruption in corruption(),
    ) {
        let intended = PolicySpec { name: "broken".into(), ..intended };
        let mut broken = to_json(&intended);
        corruption.apply(&mut broken);
        let mut objects: Vec<Value> = others.iter().map(to_json).collect();
        objects.push(broken);

        let with_intended = reference_set(&[others.clone(), vec![intended.clone()]].concat());
        let without = reference_set(&others);
        let fail_closed = reference_set(&[others.clone(), vec![corruption.fail_closed_form(&intended)]].concat());

        let local = local_policies(&objects);
        let invalid: Vec<&AuthorizationPolicy> = local.iter().filter(|p| p.invalid.is_some()).collect();
        prop_assert_eq!(invalid.len(), 1, "exactly the corrupted policy is marked: {:?}", invalid);
        let mut paths = vec![("manifests", local.clone())];
        if corruption.reaches_kubernetes() {
            let kube = kube_policies(&objects);
            prop_assert_eq!(enforced(local.clone()), enforced(kube.clone()), "both sources convert alike");
            paths.push(("kubernetes", kube));
        }
        for (path, policies) in paths {
            let got = allowed_set(&snapshot_of(policies));
            let beyond = allowed_beyond(&got, &with_intended);
            prop_assert!(beyond.is_none(), "{path}: allows {beyond:?}, which the intended policy does not");
            let beyond = allowed_beyond(&got, &without);
            prop_assert!(beyond.is_none(), "{path}: allows {beyond:?}, which leaving the policy out does not");
            let diff = first_difference(&got, &fail_closed);
            prop_assert!(diff.is_none(), "{path}: differs from the fail-closed form at {diff:?}");
        }
    }
}
