//! The reference model: Istio's L4 authorization rules evaluated directly on the specs, as
//! written in `crate::policy`'s docs, sharing no code with the implementation.

use std::net::IpAddr;
use std::sync::OnceLock;

use super::specs::*;

/// Istio's string match: `*` is any non-empty value, `*x` a suffix, `x*` a prefix.
pub(super) fn pattern_matches(pattern: &str, value: &str) -> bool {
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

pub(super) fn block_contains(block: &str, ip: IpAddr) -> bool {
    match block.parse::<ipnet::IpNet>() {
        Ok(net) => net.contains(&ip),
        Err(_) => block.parse::<IpAddr>() == Ok(ip),
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Conn {
    pub(super) workload: usize,
    pub(super) peer: usize,
    pub(super) ip: IpAddr,
    pub(super) port: u16,
}

pub(super) fn universe() -> &'static [Conn] {
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

pub(super) fn source_matches(s: &SourceSpec, c: &Conn) -> bool {
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

pub(super) fn op_matches(o: &OpSpec, port: u16) -> bool {
    (o.ports.is_empty() || o.ports.contains(&port)) && !o.not_ports.contains(&port)
}

pub(super) fn rule_matches(r: &RuleSpec, c: &Conn, deny: bool) -> bool {
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

pub(super) fn reference_allows(policies: &[PolicySpec], c: &Conn) -> bool {
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

pub(super) fn reference_set(policies: &[PolicySpec]) -> Vec<bool> {
    universe()
        .iter()
        .map(|c| reference_allows(policies, c))
        .collect()
}
