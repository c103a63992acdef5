//! L7 authorization: Istio's `security.istio.io/v1` AuthorizationPolicy, enforced by the
//! waypoint for the policies bound to it (DESIGN §6, the "authorize" phase). IO-free: the
//! policies (`Snapshot::waypoint_policies`) and the request in, a [`Decision`] out.
//!
//! Istio's semantics, so users can migrate policies unchanged:
//! - CUSTOM is not supported: discovery keeps such a policy as a fail-closed DENY of
//!   everything (there is no external authorizer to ask); AUDIT never changes access and is
//!   left out by discovery;
//! - a request is denied if any DENY policy matches; otherwise allowed if no ALLOW policy
//!   applies, or if one matches; otherwise denied;
//! - a policy matches if any of its rules does: without rules it matches nothing (an ALLOW
//!   without rules allows nothing, a DENY without rules denies nothing), and the empty rule
//!   `{}` matches everything (`rules: [{}]` allows, or denies, all);
//! - rule matching is in [`matching`]: principals and namespaces from the verified identity,
//!   `ipBlocks` from the tunnel's TCP peer, methods exact and case-sensitive, paths exact,
//!   `prefix*`, `*suffix` or `*` on the normalised path without query ([`normalize_path`]),
//!   hosts the same but case-insensitive and without the port;
//! - a policy that could not be understood is enforced by its `invalid` mark, whatever its
//!   rules say, and named in the decision so the log says so (DESIGN §7).
//!
//! A denied request is answered [`DENIED_STATUS`] with [`DENIED_BODY`], as Envoy does.
//! [`dump`] is the `/config_dump` summary of what this waypoint enforces.

mod decision;
mod dump;
mod matching;
mod request;

#[cfg(test)]
mod tests;

use discovery::policy::{Action, AuthorizationPolicy};

pub use decision::{Decision, DENIED_BODY, DENIED_STATUS};
pub use dump::{dump, AuthzDump, PolicySummary, ServicePolicies};
pub use request::{normalize_path, L7Request, TcpConnection};

use request::Facts;

/// Authorizes an HTTP request against the policies that apply to it (see
/// `discovery::Snapshot::waypoint_policies`).
pub fn authorize<'p>(
    policies: impl IntoIterator<Item = &'p AuthorizationPolicy>,
    request: &L7Request<'_>,
) -> Decision<'p> {
    evaluate(policies, &Facts::of_request(request))
}

/// Authorizes a connection the waypoint passes through at L4, as Istio does for TCP: an ALLOW
/// rule with HTTP fields (methods, paths, hosts, header conditions) matches nothing, and a
/// DENY rule is evaluated without them.
pub fn authorize_tcp<'p>(
    policies: impl IntoIterator<Item = &'p AuthorizationPolicy>,
    connection: &TcpConnection<'_>,
) -> Decision<'p> {
    evaluate(policies, &Facts::of_connection(connection))
}

fn evaluate<'p>(
    policies: impl IntoIterator<Item = &'p AuthorizationPolicy>,
    facts: &Facts<'_>,
) -> Decision<'p> {
    let mut allowed_by: Option<&AuthorizationPolicy> = None;
    let mut first_allow: Option<&AuthorizationPolicy> = None;
    let mut allow_policies = 0usize;
    // The first ALLOW policy that could not be understood: when nothing else allows the
    // request, it is the one to fix (its intended form might have allowed it).
    let mut broken_allow: Option<&AuthorizationPolicy> = None;
    for policy in policies {
        let broken = policy.invalid.is_some();
        match policy.action {
            // Every DENY is checked, whatever order the policies come in: DENY goes first.
            Action::Deny => {
                if broken || matches_any_rule(policy, facts) {
                    return Decision::DeniedBy(policy);
                }
            }
            Action::Allow => {
                allow_policies += 1;
                first_allow = first_allow.or(Some(policy));
                if broken {
                    broken_allow = broken_allow.or(Some(policy));
                } else if allowed_by.is_none() && matches_any_rule(policy, facts) {
                    allowed_by = Some(policy);
                }
            }
        }
    }
    match (allowed_by, first_allow, broken_allow) {
        (Some(policy), _, _) => Decision::AllowedBy(policy),
        (None, None, _) => Decision::Allowed,
        (None, Some(_), Some(broken)) => Decision::DeniedBy(broken),
        (None, Some(first), None) => Decision::NotAllowed {
            first,
            others: allow_policies.saturating_sub(1),
        },
    }
}

fn matches_any_rule(policy: &AuthorizationPolicy, facts: &Facts<'_>) -> bool {
    policy
        .rules
        .iter()
        .any(|rule| matching::rule_matches(rule, facts, policy.action))
}
