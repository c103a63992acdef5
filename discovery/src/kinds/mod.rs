//! The kinds the mesh reads, each described once: its name, API group and versions, RBAC
//! resource name, whether its served version must be discovered, and how an object of it is
//! decoded and converted. The manifest loader (`decode`) and the Kubernetes watchers (`kube`)
//! both work from this table, so a new kind is one [`KindInfo`] entry (plus a [`Kind`] variant)
//! next to its model and conversion, and an [`Object`] variant saying where it lands in
//! [`crate::Objects`].

mod convert;
mod input;
mod object;

use std::fmt;

pub(crate) use input::{Input, Origin, Problem};
pub(crate) use object::{Kept, Object};

/// A kind of object the mesh reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Namespace,
    Pod,
    Service,
    EndpointSlice,
    AuthorizationPolicy,
    /// Only watched when configured ([`crate::KubeSourceConfig::secrets`]): ztunnel needs none,
    /// and a cluster-wide Secret watch would need read access to every Secret.
    Secret,
    Gateway,
    HttpRoute,
    GrpcRoute,
    TlsRoute,
    TcpRoute,
    ReferenceGrant,
}

/// Everything the sources need to know about one kind.
#[derive(Debug)]
pub struct KindInfo {
    pub kind: Kind,
    /// As written in `kind:`.
    pub name: &'static str,
    /// The API group; empty for the core group.
    pub group: &'static str,
    /// The versions read, in order of preference (the API source watches the first one served).
    pub versions: &'static [&'static str],
    /// Older versions read only from the API server, for clusters that serve nothing newer
    /// (EndpointSlice `v1beta1` on Kubernetes 1.20); manifests must use [`KindInfo::versions`].
    pub api_only_versions: &'static [&'static str],
    /// The resource name RBAC rules use.
    pub plural: &'static str,
    pub namespaced: bool,
    /// Whether the API source must discover which version is served (CRDs, and built-in kinds
    /// whose version changed), treating the kind as empty while none is.
    pub discovered: bool,
    /// Decodes and converts one object.
    pub(crate) convert: fn(&Input<'_>) -> Result<Option<Object>, Problem>,
}

const GATEWAY_API: &str = crate::gateway_api::GATEWAY_API_GROUP;

/// One entry per [`Kind`], in the enum's order; one line each so it reads as a table.
#[rustfmt::skip]
static KINDS: [KindInfo; 12] = [
    KindInfo { kind: Kind::Namespace, name: "Namespace", group: "", versions: &["v1"], api_only_versions: &[], plural: "namespaces", namespaced: false, discovered: false, convert: convert::namespace },
    KindInfo { kind: Kind::Pod, name: "Pod", group: "", versions: &["v1"], api_only_versions: &[], plural: "pods", namespaced: true, discovered: false, convert: convert::pod },
    KindInfo { kind: Kind::Service, name: "Service", group: "", versions: &["v1"], api_only_versions: &[], plural: "services", namespaced: true, discovered: false, convert: convert::service },
    KindInfo { kind: Kind::EndpointSlice, name: "EndpointSlice", group: "discovery.k8s.io", versions: &["v1"], api_only_versions: &["v1beta1"], plural: "endpointslices", namespaced: true, discovered: true, convert: convert::endpoint_slice },
    KindInfo { kind: Kind::AuthorizationPolicy, name: "AuthorizationPolicy", group: "security.istio.io", versions: &["v1", "v1beta1"], api_only_versions: &[], plural: "authorizationpolicies", namespaced: true, discovered: true, convert: convert::authorization_policy },
    KindInfo { kind: Kind::Secret, name: "Secret", group: "", versions: &["v1"], api_only_versions: &[], plural: "secrets", namespaced: true, discovered: false, convert: convert::secret },
    KindInfo { kind: Kind::Gateway, name: "Gateway", group: GATEWAY_API, versions: &["v1", "v1beta1"], api_only_versions: &[], plural: "gateways", namespaced: true, discovered: true, convert: convert::gateway },
    KindInfo { kind: Kind::HttpRoute, name: "HTTPRoute", group: GATEWAY_API, versions: &["v1", "v1beta1"], api_only_versions: &[], plural: "httproutes", namespaced: true, discovered: true, convert: convert::http_route },
    KindInfo { kind: Kind::GrpcRoute, name: "GRPCRoute", group: GATEWAY_API, versions: &["v1"], api_only_versions: &[], plural: "grpcroutes", namespaced: true, discovered: true, convert: convert::grpc_route },
    KindInfo { kind: Kind::TlsRoute, name: "TLSRoute", group: GATEWAY_API, versions: &["v1", "v1alpha3", "v1alpha2"], api_only_versions: &[], plural: "tlsroutes", namespaced: true, discovered: true, convert: convert::tls_route },
    KindInfo { kind: Kind::TcpRoute, name: "TCPRoute", group: GATEWAY_API, versions: &["v1", "v1alpha2"], api_only_versions: &[], plural: "tcproutes", namespaced: true, discovered: true, convert: convert::tcp_route },
    KindInfo { kind: Kind::ReferenceGrant, name: "ReferenceGrant", group: GATEWAY_API, versions: &["v1", "v1beta1"], api_only_versions: &[], plural: "referencegrants", namespaced: true, discovered: true, convert: convert::reference_grant },
];

impl Kind {
    /// What ztunnel watches.
    pub const MESH: [Kind; 5] = [
        Kind::Namespace,
        Kind::Pod,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::AuthorizationPolicy,
    ];

    /// The Gateway API kinds the waypoint and the gateway controller read.
    pub const GATEWAY_API: [Kind; 6] = [
        Kind::Gateway,
        Kind::HttpRoute,
        Kind::GrpcRoute,
        Kind::TlsRoute,
        Kind::TcpRoute,
        Kind::ReferenceGrant,
    ];

    /// Every kind, in table order.
    pub fn all() -> impl Iterator<Item = Kind> {
        KINDS.iter().map(|info| info.kind)
    }

    pub fn info(self) -> &'static KindInfo {
        // The table lists the kinds in the enum's order (checked by a test).
        &KINDS[self as usize]
    }

    /// The kind named `name` (as in `kind:`), if the mesh reads it.
    pub fn parse(name: &str) -> Option<Kind> {
        KINDS
            .iter()
            .find(|info| info.name == name)
            .map(|info| info.kind)
    }

    pub fn name(self) -> &'static str {
        self.info().name
    }

    /// The resource name RBAC rules use.
    pub fn plural(self) -> &'static str {
        self.info().plural
    }
}

impl KindInfo {
    /// `group/version` (or `version` for the core group) of each version manifests may use.
    pub fn api_versions(&self) -> Vec<String> {
        self.versions
            .iter()
            .map(|version| self.api_version(version))
            .collect()
    }

    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_owned()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    /// Every version the API source may watch, preferred first.
    pub fn served_versions(&self) -> impl Iterator<Item = &'static str> {
        self.versions.iter().chain(self.api_only_versions).copied()
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_lists_every_kind_once_in_enum_order() {
        for (index, info) in KINDS.iter().enumerate() {
            assert_eq!(info.kind as usize, index, "{} is out of order", info.name);
            assert_eq!(Kind::parse(info.name), Some(info.kind));
            assert_eq!(info.kind.info().name, info.name);
        }
        assert_eq!(Kind::all().count(), KINDS.len());
        assert_eq!(Kind::parse("ConfigMap"), None);
    }

    #[test]
    fn versions_and_rbac_names_are_those_of_the_served_apis() {
        assert_eq!(Kind::Pod.info().api_versions(), ["v1"]);
        assert_eq!(
            Kind::HttpRoute.info().api_versions(),
            [
                "gateway.networking.k8s.io/v1",
                "gateway.networking.k8s.io/v1beta1"
            ]
        );
        let slice: Vec<&str> = Kind::EndpointSlice.info().served_versions().collect();
        assert_eq!(slice, ["v1", "v1beta1"]);
        assert_eq!(Kind::TlsRoute.plural(), "tlsroutes");
        assert!(Kind::GATEWAY_API.iter().all(|k| k.info().discovered));
        assert!(!Kind::MESH.iter().any(|k| Kind::GATEWAY_API.contains(k)));
    }
}
