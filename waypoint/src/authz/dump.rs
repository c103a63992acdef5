//! The `/config_dump` view of authorization: which policies this waypoint enforces, for every
//! request (bound to its Gateway or GatewayClass) and per Service bound to it, with the ones
//! that could not be understood saying why and what they do meanwhile (DESIGN §7).

use discovery::policy::{Action, AuthorizationPolicy};
use discovery::Snapshot;
use serde::Serialize;

/// What the waypoint `gateway` enforces.
#[derive(Debug, Serialize)]
pub struct AuthzDump {
    /// Policies that apply to every request this waypoint serves.
    pub gateway: Vec<PolicySummary>,
    /// Services bound to this waypoint that have policies of their own, sorted.
    pub services: Vec<ServicePolicies>,
}

#[derive(Debug, Serialize)]
pub struct ServicePolicies {
    /// `namespace/name`.
    pub service: String,
    pub policies: Vec<PolicySummary>,
}

/// One policy, briefly.
#[derive(Debug, Serialize)]
pub struct PolicySummary {
    /// `namespace/name`.
    pub policy: String,
    /// `ALLOW` or `DENY`.
    pub action: &'static str,
    /// `Kind/name` of each target.
    pub targets: Vec<String>,
    pub rules: usize,
    /// Set when the policy could not be understood: the field, the problem, and what its
    /// fail-closed form does until it is fixed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid: Option<String>,
    /// Fields no Ambit proxy checks (JWT principals, remote IPs, some `when` keys): a rule
    /// with one matches nothing in an ALLOW policy and ignores it in a DENY policy.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unsupported: Vec<String>,
}

impl PolicySummary {
    pub fn of(policy: &AuthorizationPolicy) -> Self {
        PolicySummary {
            policy: format!("{}/{}", policy.namespace, policy.name),
            action: match policy.action {
                Action::Allow => "ALLOW",
                Action::Deny => "DENY",
            },
            targets: policy.target_refs.iter().map(ToString::to_string).collect(),
            rules: policy.rules.len(),
            invalid: policy.invalid.as_ref().map(ToString::to_string),
            unsupported: policy
                .rules
                .iter()
                .flat_map(|rule| rule.unsupported.iter().cloned())
                .collect(),
        }
    }
}

/// The policies the waypoint `gateway` (namespace, name) enforces in `snapshot`.
pub fn dump(snapshot: &Snapshot, gateway: (&str, &str)) -> AuthzDump {
    let (gateway_ns, gateway_name) = gateway;
    let mut services = Vec::new();
    for service in snapshot.services() {
        let bound_here = snapshot
            .service_waypoint(service)
            .is_some_and(|w| w.namespace == gateway_ns && w.name == gateway_name);
        if !bound_here {
            continue;
        }
        let own: Vec<PolicySummary> = snapshot
            .waypoint_policies(gateway, Some((&service.namespace, &service.name)))
            .filter(|p| {
                p.namespace == service.namespace
                    && p.target_refs.iter().any(|t| t.is_service(&service.name))
            })
            .map(PolicySummary::of)
            .collect();
        if !own.is_empty() {
            services.push(ServicePolicies {
                service: format!("{}/{}", service.namespace, service.name),
                policies: own,
            });
        }
    }
    AuthzDump {
        gateway: snapshot
            .waypoint_policies(gateway, None)
            .map(PolicySummary::of)
            .collect(),
        services,
    }
}
