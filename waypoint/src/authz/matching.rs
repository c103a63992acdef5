//! Whether one rule matches, by Istio's semantics:
//! - `from` entries are OR-ed, `to` entries are OR-ed, `when` conditions AND-ed, and the three
//!   AND-ed (an absent list matches everything); within one entry every field must hold, and a
//!   field holds when one of its values matches (if any are listed) and none of its `not`
//!   values does;
//! - a field the proxy cannot check ([`Rule::unsupported`]; HTTP fields on a TCP connection):
//!   in an ALLOW policy the rule matches nothing, in a DENY policy the rule is evaluated
//!   without it (denying whatever it would deny ignoring it). Never more access than written.

use discovery::policy::{Action, Condition, Operation, Rule, Source, StringMatch};
use http::HeaderMap;

use super::request::{Facts, HttpFacts};

pub(super) fn rule_matches(rule: &Rule, facts: &Facts<'_>, action: Action) -> bool {
    if action == Action::Allow
        && (!rule.unsupported.is_empty() || (facts.http.is_none() && uses_http(rule)))
    {
        return false;
    }
    let from_ok = rule
        .from
        .as_ref()
        .is_none_or(|sources| sources.iter().any(|s| source_matches(s, facts)));
    let to_ok = rule
        .to
        .as_ref()
        .is_none_or(|ops| ops.iter().any(|op| operation_matches(op, facts)));
    from_ok && to_ok && rule.when.iter().all(|c| condition_holds(c, facts))
}

fn source_matches(source: &Source, facts: &Facts<'_>) -> bool {
    // Without an identity there is no principal or namespace: positive matches fail,
    // negative ones hold (as in Istio and ztunnel).
    let principal = facts.principal.as_deref().unwrap_or("");
    let namespace = facts.namespace.unwrap_or("");
    let ip = facts.source_ip;
    field(&source.principals, &source.not_principals, |m| {
        m.matches(principal)
    }) && field(&source.namespaces, &source.not_namespaces, |m| {
        m.matches(namespace)
    }) && field(&source.ip_blocks, &source.not_ip_blocks, |net| {
        net.contains(&ip)
    })
}

fn operation_matches(op: &Operation, facts: &Facts<'_>) -> bool {
    let port = facts.destination_port;
    if !field(&op.ports, &op.not_ports, |p| *p == port) {
        return false;
    }
    // At L4 the HTTP fields are ignored; `rule_matches` has already refused such an ALLOW rule.
    let Some(http) = &facts.http else {
        return true;
    };
    field(&op.methods, &op.not_methods, |m| m.matches(http.method))
        && field(&op.paths, &op.not_paths, |m| m.matches(&http.path))
        && field(&op.hosts, &op.not_hosts, |m| m.matches(&http.host))
}

fn condition_holds(condition: &Condition, facts: &Facts<'_>) -> bool {
    match condition {
        Condition::RequestHeader { name, values } => match &facts.http {
            Some(HttpFacts { headers, .. }) => {
                let value = header_value(headers, name);
                // An absent header matches no value, so only `notValues` can hold for it.
                values.hold(|m| value.as_deref().is_some_and(|v| bytes_match(m, v)))
            }
            None => true,
        },
        Condition::SourceIp(values) => values.hold(|net| net.contains(&facts.source_ip)),
        Condition::SourceNamespace(values) => {
            let namespace = facts.namespace.unwrap_or("");
            values.hold(|m| m.matches(namespace))
        }
        Condition::SourcePrincipal(values) => {
            let principal = facts.principal.as_deref().unwrap_or("");
            values.hold(|m| m.matches(principal))
        }
        Condition::DestinationPort(values) => values.hold(|p| *p == facts.destination_port),
    }
}

/// A header's value as Envoy matches it: its values joined with `,` (so a second `x-user`
/// header cannot hide the first from a DENY on `admin`: `admin,guest` is not `guest`).
fn header_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<std::borrow::Cow<'h, [u8]>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let Some(second) = values.next() else {
        return Some(std::borrow::Cow::Borrowed(first.as_bytes()));
    };
    let mut joined = first.as_bytes().to_vec();
    for value in std::iter::once(second).chain(values) {
        joined.push(b',');
        joined.extend_from_slice(value.as_bytes());
    }
    Some(std::borrow::Cow::Owned(joined))
}

/// Header values are bytes (not always UTF-8); `*` means the header is present.
fn bytes_match(pattern: &StringMatch, value: &[u8]) -> bool {
    match pattern {
        StringMatch::Exact(exact) => value == exact.as_bytes(),
        StringMatch::Prefix(prefix) => value.starts_with(prefix.as_bytes()),
        StringMatch::Suffix(suffix) => value.ends_with(suffix.as_bytes()),
        StringMatch::Any => true,
    }
}

/// One field and its `not` list: an empty positive list places no constraint.
fn field<T>(positive: &[T], negative: &[T], hit: impl Fn(&T) -> bool) -> bool {
    (positive.is_empty() || positive.iter().any(&hit)) && !negative.iter().any(hit)
}

/// Whether the rule checks anything only an HTTP request has.
fn uses_http(rule: &Rule) -> bool {
    let op_uses_http = |op: &Operation| {
        [
            &op.methods,
            &op.not_methods,
            &op.paths,
            &op.not_paths,
            &op.hosts,
            &op.not_hosts,
        ]
        .iter()
        .any(|list| !list.is_empty())
    };
    rule.to.iter().flatten().any(op_uses_http)
        || rule
            .when
            .iter()
            .any(|c| matches!(c, Condition::RequestHeader { .. }))
}
