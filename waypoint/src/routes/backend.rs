//! Resolving a route's `backendRef` (or a mirror's) against the snapshot, once per compile.
//!
//! A reference that cannot be used is kept as [`BackendTarget::Invalid`] rather than dropped: the
//! Gateway API says requests that would have gone to it get a 500 (so a broken backend keeps its
//! share of traffic, failing visibly), and the status module reports the same problem as
//! `ResolvedRefs=False` with [`BackendProblem::reason`].

use discovery::gateway_api::{BackendRef, ParentRef, GATEWAY_API_GROUP};
use discovery::Snapshot;
use serde::Serialize;

use super::id::{RouteKind, ServiceKey};

/// Where a backend reference leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendTarget {
    /// A port of a Service that exists in the snapshot (the port number is the Service port,
    /// not the target port: the proxy resolves endpoints itself).
    Service { key: ServiceKey, port: u16 },
    /// A reference that cannot be followed; requests picking it get a 500.
    Invalid(BackendProblem),
}

impl BackendTarget {
    pub fn is_valid(&self) -> bool {
        matches!(self, BackendTarget::Service { .. })
    }
}

/// `/config_dump` form: `{service, port}`, or `{invalid: <why and what to fix>, reason}`.
impl Serialize for BackendTarget {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(2))?;
        match self {
            BackendTarget::Service { key, port } => {
                map.serialize_entry("service", &key.to_string())?;
                map.serialize_entry("port", port)?;
            }
            BackendTarget::Invalid(problem) => {
                map.serialize_entry("invalid", &problem.to_string())?;
                map.serialize_entry("reason", problem.reason())?;
            }
        }
        map.end()
    }
}

/// Why a backend reference cannot be followed. Each message names the cause and what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendProblem {
    #[error(
        "backend {service} port {port}: {}; create it or fix the backendRef",
        if *service_exists { "the Service has no such port" } else { "no such Service" }
    )]
    NotFound {
        service: ServiceKey,
        port: u16,
        /// Whether the Service exists (and only the port is missing).
        service_exists: bool,
    },
    #[error(
        "backend {name}: kind {group_kind} is not supported (only core Services are); \
         point the backendRef at a Service"
    )]
    InvalidKind { group_kind: String, name: String },
    #[error(
        "backend {service}: a {from_kind} in namespace {from_namespace} may not refer to a \
         Service in namespace {}; add a ReferenceGrant there that allows it",
        service.namespace
    )]
    RefNotPermitted {
        service: ServiceKey,
        from_kind: &'static str,
        from_namespace: String,
    },
    #[error("backend {service}: a Service reference needs a port; set backendRef.port")]
    MissingPort { service: ServiceKey },
}

impl BackendProblem {
    /// The `ResolvedRefs` condition reason upstream uses for this problem. A missing port is
    /// reported as `BackendNotFound`: the schema forbids it, so no reason is dedicated to it.
    pub fn reason(&self) -> &'static str {
        match self {
            BackendProblem::NotFound { .. } | BackendProblem::MissingPort { .. } => {
                "BackendNotFound"
            }
            BackendProblem::InvalidKind { .. } => "InvalidKind",
            BackendProblem::RefNotPermitted { .. } => "RefNotPermitted",
        }
    }
}

/// Resolves a backend reference of a route with these `parents`: as [`resolve_backend`], except
/// that a route may always send to a Service that is one of its own parents. That is how a
/// consumer route (GEP-1294) forwards to the Service it overrides, in the producer's namespace,
/// without a ReferenceGrant there (conformance: MeshConsumerRoute expects exactly this).
pub fn resolve_route_backend(
    snapshot: &Snapshot,
    kind: RouteKind,
    route_namespace: &str,
    parents: &[ParentRef],
    backend: &BackendRef,
) -> BackendTarget {
    let is_parent = parents.iter().any(|p| {
        p.group.is_empty()
            && p.kind == "Service"
            && p.namespace == backend.namespace
            && p.name == backend.name
    });
    let granted = is_parent && backend.group.is_empty() && backend.kind == "Service";
    resolve(snapshot, kind, route_namespace, backend, granted)
}

/// Resolves one backend reference of a `kind` route in `route_namespace`. Checks run in the
/// order upstream reports them: kind, then ReferenceGrant, then port, then existence.
pub fn resolve_backend(
    snapshot: &Snapshot,
    kind: RouteKind,
    route_namespace: &str,
    backend: &BackendRef,
) -> BackendTarget {
    resolve(snapshot, kind, route_namespace, backend, false)
}

fn resolve(
    snapshot: &Snapshot,
    kind: RouteKind,
    route_namespace: &str,
    backend: &BackendRef,
    granted: bool,
) -> BackendTarget {
    let service = ServiceKey::new(&backend.namespace, &backend.name);
    if !backend.group.is_empty() || backend.kind != "Service" {
        let group_kind = if backend.group.is_empty() {
            backend.kind.clone()
        } else {
            format!("{}/{}", backend.group, backend.kind)
        };
        return BackendTarget::Invalid(BackendProblem::InvalidKind {
            group_kind,
            name: backend.name.clone(),
        });
    }
    let permitted = granted
        || snapshot.gateway_api().reference_permitted(
            (GATEWAY_API_GROUP, kind.kind(), route_namespace),
            &backend.namespace,
            ("", "Service", &backend.name),
        );
    if !permitted {
        return BackendTarget::Invalid(BackendProblem::RefNotPermitted {
            service,
            from_kind: kind.kind(),
            from_namespace: route_namespace.to_owned(),
        });
    }
    let Some(port) = backend.port else {
        return BackendTarget::Invalid(BackendProblem::MissingPort { service });
    };
    match snapshot.service(&backend.namespace, &backend.name) {
        Some(found) if found.ports.iter().any(|p| p.port == port) => {
            BackendTarget::Service { key: service, port }
        }
        found => BackendTarget::Invalid(BackendProblem::NotFound {
            service,
            port,
            service_exists: found.is_some(),
        }),
    }
}
