//! The parts of an AuthorizationPolicy that only an L7 proxy (the waypoint) checks, and the
//! targets that bind a policy to a waypoint rather than to workloads.
//!
//! ztunnel never reads these: it decides by [`super::Rule::has_l7_fields`] alone, as it always
//! has. The waypoint evaluates them (`waypoint::authz`).

use std::fmt;

use ipnet::IpNet;

use super::StringMatch;

/// The Gateway API group, which `Gateway` and `GatewayClass` targets must name.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// One entry of `spec.targetRef(s)`, in the policy's own namespace (Istio refuses others).
///
/// Istio attaches a policy to: a `Gateway` (group `gateway.networking.k8s.io`) in the policy's
/// namespace; a `GatewayClass` (same group) from the root namespace, i.e. every Gateway of that
/// class; a `Service` (group `""` or `core`) in the policy's namespace, i.e. the requests a
/// waypoint serves for it. Conversion accepts only those; the fail-closed form of a broken
/// policy may carry others, which then bind to nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetRef {
    /// `""` for the core group.
    pub group: String,
    pub kind: String,
    pub name: String,
}

impl TargetRef {
    /// Whether this names the Gateway `name` (in the policy's namespace).
    pub fn is_gateway(&self, name: &str) -> bool {
        self.kind == "Gateway" && self.group == GATEWAY_GROUP && self.name == name
    }

    /// Whether this names the GatewayClass `name` (only meaningful from the root namespace).
    pub fn is_gateway_class(&self, name: &str) -> bool {
        self.kind == "GatewayClass" && self.group == GATEWAY_GROUP && self.name == name
    }

    /// Whether this names the Service `name` (in the policy's namespace).
    pub fn is_service(&self, name: &str) -> bool {
        self.kind == "Service"
            && (self.group.is_empty() || self.group == "core")
            && self.name == name
    }
}

impl fmt::Display for TargetRef {
    /// `Kind/name`, as `kubectl` names objects (the group is implied by the kinds we accept).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

/// `values` / `notValues` of a `when` condition: a value must match one of `values` (when
/// there are any) and none of `not_values`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Values<T> {
    pub values: Vec<T>,
    pub not_values: Vec<T>,
}

impl<T> Default for Values<T> {
    fn default() -> Self {
        Values {
            values: Vec::new(),
            not_values: Vec::new(),
        }
    }
}

impl<T> Values<T> {
    /// Whether a value that `hit` tests holds: one positive hit (if any are listed) and no
    /// negative one.
    pub fn hold(&self, hit: impl Fn(&T) -> bool) -> bool {
        (self.values.is_empty() || self.values.iter().any(&hit)) && !self.not_values.iter().any(hit)
    }
}

/// One `rules[].when[]` entry whose key the waypoint can check. Keys it cannot check
/// (`request.auth.*`, `remote.ip`, `destination.ip`, `connection.sni`, `experimental.*`) are
/// not kept as conditions but listed in [`super::Rule::unsupported`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// `request.headers[<name>]`; `name` lower-cased. Values match the header's value (all
    /// its values joined with `,`, as Envoy sees them); `*` means present.
    RequestHeader {
        name: String,
        values: Values<StringMatch>,
    },
    /// `source.ip`: the TCP peer's address.
    SourceIp(Values<IpNet>),
    /// `source.namespace`: from the peer's verified identity.
    SourceNamespace(Values<StringMatch>),
    /// `source.principal`: `<trust domain>/ns/<ns>/sa/<sa>`, from the verified identity.
    SourcePrincipal(Values<StringMatch>),
    /// `destination.port`.
    DestinationPort(Values<u16>),
}

#[cfg(test)]
#[path = "waypoint_tests.rs"]
mod waypoint_tests;
