//! The L4 subset of Istio's `AuthorizationPolicy`, compact and ready to evaluate.
//!
//! Semantics follow Istio's for ztunnel so that users can migrate policies unchanged:
//! - a connection is denied if any DENY policy matches; otherwise allowed if no ALLOW policy
//!   applies to the workload, or if one matches; otherwise denied;
//! - a policy matches if any of its rules does; a policy without rules matches nothing;
//! - within a rule, `from` entries are OR-ed, `to` entries are OR-ed, and `from` AND `to` must
//!   hold (an absent list matches everything); within one entry every field must hold;
//! - a rule that uses L7 fields (methods, paths, hosts, `when`, request principals…) cannot be
//!   checked at L4: in an ALLOW policy it matches nothing (fail closed), in a DENY policy it is
//!   evaluated without them, i.e. denies everything it would match ignoring them.
//!
//! A policy that cannot be understood (a misspelt field, `ipBlocks: [10.0.0.0/33]`,
//! `action: allow`) is never dropped: dropping the only ALLOW policy of a workload would open it
//! to everyone, dropping a DENY would lift the denial. `crate::convert` keeps it in a
//! fail-closed form instead, with [`AuthorizationPolicy::invalid`] saying why (DESIGN §7):
//! - a broken ALLOW allows nothing (it has no rules) for every workload it could select, so it
//!   only narrows what other ALLOW policies allow;
//! - a broken DENY, or a policy whose action cannot be read, denies every connection (one empty
//!   rule) to every workload it could select.
//!
//! [`authorize`] enforces such a policy by its `invalid` mark as well as by its rules, and names
//! it in the [`Decision`], so that the access log says the connection was refused by a policy
//! that could not be understood.
//!
//! The L7 fields (methods, paths, hosts, `when`) are kept too, parsed and validated, for the
//! waypoint, which enforces the policies bound to it by `targetRefs` ([`TargetRef`],
//! `Snapshot::waypoint_policies`). [`authorize`] never reads them.

mod l7;

use std::fmt;
use std::net::IpAddr;

use identity::SpiffeId;
use ipnet::IpNet;

use crate::model::Labels;

pub use l7::{Condition, TargetRef, Values, GATEWAY_GROUP};

/// What a matching policy does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
}

/// A converted `AuthorizationPolicy` (security.istio.io v1 or v1beta1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationPolicy {
    pub name: String,
    pub namespace: String,
    pub action: Action,
    /// `spec.selector.matchLabels`; `None` selects every workload in scope.
    pub selector: Option<Labels>,
    /// `spec.targetRef(s)`: the policy then binds to a waypoint or gateway, not to workloads, and
    /// ztunnel ignores it.
    pub target_refs: Vec<TargetRef>,
    pub rules: Vec<Rule>,
    /// Set when the resource could not be understood: the policy is then in its fail-closed
    /// form (see the module docs) and this says why and what to fix.
    pub invalid: Option<Invalid>,
}

/// Why an AuthorizationPolicy could not be understood, and what it does until it is fixed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The field at fault, from the object's root, e.g. `spec.rules[0].from[0].source.ipBlocks[0]`.
    pub field: String,
    /// What is wrong and what to write instead.
    pub problem: String,
    /// What the fail-closed form does, e.g. `denies every connection to every workload in
    /// namespace shop`.
    pub enforced_as: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "field {}: {}; until it is fixed the policy {}",
            self.field, self.problem, self.enforced_as
        )
    }
}

/// One entry of `spec.rules`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rule {
    /// `None` when the rule has no `from`: any source.
    pub from: Option<Vec<Source>>,
    /// `None` when the rule has no `to`: any operation.
    pub to: Option<Vec<Operation>>,
    /// The rule used fields that only an L7 proxy can check; see the module docs. The names of
    /// those fields are kept so that ztunnel can say why a rule never matched.
    pub has_l7_fields: bool,
    pub l7_fields: Vec<String>,
    /// `when`: every condition must hold (L7; ztunnel goes by `has_l7_fields`).
    pub when: Vec<Condition>,
    /// Fields no Ambit proxy can check, by path from the object's root (e.g.
    /// `spec.rules[0].from[0].source.requestPrincipals`: Ambit has no JWT authentication).
    /// Istio's rule for fields a proxy cannot check: a rule with such a field matches nothing
    /// in an ALLOW policy, and in a DENY policy it is evaluated without them, so it denies
    /// whatever it would deny ignoring them. They are not kept as matchers.
    pub unsupported: Vec<String>,
}

/// `rules[].from[].source`: the fields both proxies check (the ones no proxy can check are
/// listed in [`Rule::unsupported`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Source {
    pub principals: Vec<StringMatch>,
    pub not_principals: Vec<StringMatch>,
    pub namespaces: Vec<StringMatch>,
    pub not_namespaces: Vec<StringMatch>,
    pub ip_blocks: Vec<IpNet>,
    pub not_ip_blocks: Vec<IpNet>,
}

/// `rules[].to[].operation`. ztunnel checks only the ports; the rest is for the waypoint.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Operation {
    pub ports: Vec<u16>,
    pub not_ports: Vec<u16>,
    /// Matched case-insensitively against the request's host without its port; patterns are
    /// kept lower-cased.
    pub hosts: Vec<StringMatch>,
    pub not_hosts: Vec<StringMatch>,
    /// Case-sensitive, as in Istio (`GET`, not `get`).
    pub methods: Vec<StringMatch>,
    pub not_methods: Vec<StringMatch>,
    /// Matched against the path without its query string.
    pub paths: Vec<StringMatch>,
    pub not_paths: Vec<StringMatch>,
}

/// Istio string matching: exact, `prefix*`, `*suffix`, or `*` (any non-empty value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Any,
}

impl StringMatch {
    pub fn parse(pattern: &str) -> Self {
        if pattern == "*" {
            StringMatch::Any
        } else if let Some(prefix) = pattern.strip_suffix('*') {
            StringMatch::Prefix(prefix.to_owned())
        } else if let Some(suffix) = pattern.strip_prefix('*') {
            StringMatch::Suffix(suffix.to_owned())
        } else {
            StringMatch::Exact(pattern.to_owned())
        }
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            StringMatch::Exact(exact) => value == exact,
            StringMatch::Prefix(prefix) => value.starts_with(prefix.as_str()),
            StringMatch::Suffix(suffix) => value.ends_with(suffix.as_str()),
            StringMatch::Any => !value.is_empty(),
        }
    }
}

/// What ztunnel knows about an inbound connection when it authorises it.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionAttrs<'a> {
    pub src_ip: IpAddr,
    /// The peer's verified identity; `None` for plaintext connections.
    pub src_identity: Option<&'a SpiffeId>,
    pub dst_port: u16,
}

/// The outcome of [`authorize`]; a denial names the policy responsible, for the access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Denied by this policy: a DENY policy that matched, or a policy that could not be
    /// understood and is enforced fail-closed (then [`PolicyRef::invalid`] says why). Its
    /// `Display` is `namespace/name`, followed for the latter by the reason.
    DeniedBy(PolicyRef),
    /// ALLOW policies apply to the workload and none matched.
    NotAllowed,
}

/// The policy behind a [`Decision::DeniedBy`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRef {
    pub namespace: String,
    pub name: String,
    /// Set when the policy could not be understood: the connection was refused by its
    /// fail-closed form, not by a rule the operator wrote.
    pub invalid: Option<Invalid>,
}

impl PolicyRef {
    fn of(policy: &AuthorizationPolicy) -> Self {
        PolicyRef {
            namespace: policy.namespace.clone(),
            name: policy.name.clone(),
            invalid: policy.invalid.clone(),
        }
    }
}

impl fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)?;
        if let Some(invalid) = &self.invalid {
            write!(f, ", which could not be understood ({invalid})")?;
        }
        Ok(())
    }
}

/// Evaluates the policies that apply to a destination workload (see `Snapshot::policies_for`).
pub fn authorize<'p>(
    policies: impl IntoIterator<Item = &'p AuthorizationPolicy>,
    conn: &ConnectionAttrs<'_>,
) -> Decision {
    // Istio principals are the SPIFFE ID without its scheme: "td/ns/x/sa/y".
    let principal = conn.src_identity.map(|id| {
        format!(
            "{}/ns/{}/sa/{}",
            id.trust_domain(),
            id.namespace(),
            id.service_account()
        )
    });
    let facts = Facts {
        conn,
        principal: principal.as_deref(),
        namespace: conn.src_identity.map(SpiffeId::namespace),
    };
    let mut any_allow = false;
    let mut allowed = false;
    // The first ALLOW policy that could not be understood: when nothing else allows the
    // connection, it is the one to fix (its intended form might have allowed it).
    let mut broken_allow: Option<&AuthorizationPolicy> = None;
    for policy in policies {
        // The fail-closed form already has the right rules (none for ALLOW, one empty rule for
        // DENY); deciding by the mark as well keeps that true whatever the rules say.
        let broken = policy.invalid.is_some();
        match policy.action {
            Action::Deny => {
                if broken
                    || policy
                        .rules
                        .iter()
                        .any(|rule| rule.matches(&facts, Action::Deny))
                {
                    return Decision::DeniedBy(PolicyRef::of(policy));
                }
            }
            Action::Allow => {
                any_allow = true;
                if broken {
                    broken_allow = broken_allow.or(Some(policy));
                    continue;
                }
                allowed = allowed
                    || policy
                        .rules
                        .iter()
                        .any(|rule| rule.matches(&facts, Action::Allow));
            }
        }
    }
    if !any_allow || allowed {
        Decision::Allow
    } else if let Some(policy) = broken_allow {
        Decision::DeniedBy(PolicyRef::of(policy))
    } else {
        Decision::NotAllowed
    }
}

struct Facts<'a> {
    conn: &'a ConnectionAttrs<'a>,
    principal: Option<&'a str>,
    namespace: Option<&'a str>,
}

impl Rule {
    fn matches(&self, facts: &Facts<'_>, action: Action) -> bool {
        if self.has_l7_fields && action == Action::Allow {
            return false;
        }
        let from_ok = self
            .from
            .as_ref()
            .is_none_or(|sources| sources.iter().any(|s| s.matches(facts)));
        let to_ok = self
            .to
            .as_ref()
            .is_none_or(|ops| ops.iter().any(|op| op.matches(facts.conn.dst_port)));
        from_ok && to_ok
    }
}

impl Source {
    fn matches(&self, facts: &Facts<'_>) -> bool {
        // An unauthenticated peer has no principal or namespace: positive matches on them fail,
        // negative ones hold (Istio behaves the same way).
        let principal = facts.principal.unwrap_or("");
        let namespace = facts.namespace.unwrap_or("");
        let ip = facts.conn.src_ip;
        positive(&self.principals, |m| m.matches(principal))
            && !self.not_principals.iter().any(|m| m.matches(principal))
            && positive(&self.namespaces, |m| m.matches(namespace))
            && !self.not_namespaces.iter().any(|m| m.matches(namespace))
            && positive(&self.ip_blocks, |net| net.contains(&ip))
            && !self.not_ip_blocks.iter().any(|net| net.contains(&ip))
    }
}

impl Operation {
    fn matches(&self, port: u16) -> bool {
        positive(&self.ports, |p| *p == port) && !self.not_ports.contains(&port)
    }
}

/// An empty positive list places no constraint; a non-empty one needs one hit.
fn positive<T>(list: &[T], hit: impl Fn(&T) -> bool) -> bool {
    list.is_empty() || list.iter().any(hit)
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "policy_properties/mod.rs"]
mod properties;
