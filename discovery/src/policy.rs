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

use std::net::IpAddr;

use certs::SpiffeId;
use ipnet::IpNet;

use crate::model::Labels;

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
    /// ztunnel ignores it. Kept as `kind/name` for the waypoint.
    pub target_refs: Vec<String>,
    pub rules: Vec<Rule>,
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
}

/// `rules[].from[].source`, L4 fields only.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Source {
    pub principals: Vec<StringMatch>,
    pub not_principals: Vec<StringMatch>,
    pub namespaces: Vec<StringMatch>,
    pub not_namespaces: Vec<StringMatch>,
    pub ip_blocks: Vec<IpNet>,
    pub not_ip_blocks: Vec<IpNet>,
}

/// `rules[].to[].operation`, L4 fields only.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Operation {
    pub ports: Vec<u16>,
    pub not_ports: Vec<u16>,
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
    /// Denied by this DENY policy (`namespace/name`).
    DeniedBy(String),
    /// ALLOW policies apply to the workload and none matched.
    NotAllowed,
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
    for policy in policies {
        match policy.action {
            Action::Deny => {
                if policy
                    .rules
                    .iter()
                    .any(|rule| rule.matches(&facts, Action::Deny))
                {
                    return Decision::DeniedBy(format!("{}/{}", policy.namespace, policy.name));
                }
            }
            Action::Allow => {
                any_allow = true;
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
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn policy(action: Action, rules: Vec<Rule>) -> AuthorizationPolicy {
        AuthorizationPolicy {
            name: "p".into(),
            namespace: "shop".into(),
            action,
            selector: None,
            target_refs: vec![],
            rules,
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
                not_ports: vec![],
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
        let denied = Decision::DeniedBy("shop/p".into());
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
}
