//! A converted object of any kind, and where it lands in [`Objects`].

use super::Kind;
use crate::convert::ConvertError;
use crate::gateway_api::{
    convert::rejection_error, Gateway, GrpcRoute, HttpRoute, ReferenceGrant, Rejection, TcpRoute,
    TlsRoute,
};
use crate::model::{EndpointSlice, Namespace, Secret, Service, Workload};
use crate::policy::{AuthorizationPolicy, Invalid};
use crate::snapshot::Objects;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Object {
    Namespace(Namespace),
    Workload(Workload),
    Service(Service),
    EndpointSlice(EndpointSlice),
    Policy(AuthorizationPolicy),
    Secret(Secret),
    /// Boxed: a Gateway is twice the size of any other object.
    Gateway(Box<Gateway>),
    HttpRoute(HttpRoute),
    GrpcRoute(GrpcRoute),
    TlsRoute(TlsRoute),
    TcpRoute(TcpRoute),
    ReferenceGrant(ReferenceGrant),
}

/// An object in force despite a problem, which still has to be reported.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kept<'a> {
    /// An AuthorizationPolicy that could not be understood, enforced in its fail-closed form.
    FailClosed(&'a Invalid),
    /// A Gateway API object that breaks the schema: kept for its status, never served.
    Rejected(&'a Rejection),
}

impl Kept<'_> {
    /// The problem as the API source lists it.
    pub(crate) fn error(&self) -> ConvertError {
        match self {
            Kept::FailClosed(invalid) => ConvertError::new(
                invalid.field.clone(),
                format!(
                    "{}; until it is fixed the policy {}",
                    invalid.problem, invalid.enforced_as
                ),
            ),
            Kept::Rejected(rejection) => rejection_error(rejection),
        }
    }
}

impl Object {
    pub(crate) fn kind(&self) -> Kind {
        match self {
            Object::Namespace(_) => Kind::Namespace,
            Object::Workload(_) => Kind::Pod,
            Object::Service(_) => Kind::Service,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::Policy(_) => Kind::AuthorizationPolicy,
            Object::Secret(_) => Kind::Secret,
            Object::Gateway(_) => Kind::Gateway,
            Object::HttpRoute(_) => Kind::HttpRoute,
            Object::GrpcRoute(_) => Kind::GrpcRoute,
            Object::TlsRoute(_) => Kind::TlsRoute,
            Object::TcpRoute(_) => Kind::TcpRoute,
            Object::ReferenceGrant(_) => Kind::ReferenceGrant,
        }
    }

    /// `(namespace, name)`; the namespace is empty for Namespaces.
    pub(crate) fn key(&self) -> (&str, &str) {
        match self {
            Object::Namespace(o) => ("", &o.name),
            Object::Workload(o) => (&o.namespace, &o.name),
            Object::Service(o) => (&o.namespace, &o.name),
            Object::EndpointSlice(o) => (&o.namespace, &o.name),
            Object::Policy(o) => (&o.namespace, &o.name),
            Object::Secret(o) => (&o.namespace, &o.name),
            Object::Gateway(o) => (&o.namespace, &o.name),
            Object::HttpRoute(o) => (&o.namespace, &o.name),
            Object::GrpcRoute(o) => (&o.namespace, &o.name),
            Object::TlsRoute(o) => (&o.namespace, &o.name),
            Object::TcpRoute(o) => (&o.namespace, &o.name),
            Object::ReferenceGrant(o) => (&o.namespace, &o.name),
        }
    }

    /// The problem of an object kept in force anyway, if any.
    pub(crate) fn kept(&self) -> Option<Kept<'_>> {
        let rejected = match self {
            Object::Policy(policy) => return policy.invalid.as_ref().map(Kept::FailClosed),
            Object::Gateway(o) => &o.rejected,
            Object::HttpRoute(o) => &o.rejected,
            Object::GrpcRoute(o) => &o.rejected,
            Object::TlsRoute(o) => &o.rejected,
            Object::TcpRoute(o) => &o.rejected,
            Object::ReferenceGrant(o) => &o.rejected,
            Object::Namespace(_)
            | Object::Workload(_)
            | Object::Service(_)
            | Object::EndpointSlice(_)
            | Object::Secret(_) => return None,
        };
        rejected.as_ref().map(Kept::Rejected)
    }

    /// Adds the object to the list of its kind.
    pub(crate) fn add_to(self, objects: &mut Objects) {
        match self {
            Object::Namespace(o) => objects.namespaces.push(o),
            Object::Workload(o) => objects.workloads.push(o),
            Object::Service(o) => objects.services.push(o),
            Object::EndpointSlice(o) => objects.endpoint_slices.push(o),
            Object::Policy(o) => objects.policies.push(o),
            Object::Secret(o) => objects.secrets.push(o),
            Object::Gateway(o) => objects.gateways.push(*o),
            Object::HttpRoute(o) => objects.http_routes.push(o),
            Object::GrpcRoute(o) => objects.grpc_routes.push(o),
            Object::TlsRoute(o) => objects.tls_routes.push(o),
            Object::TcpRoute(o) => objects.tcp_routes.push(o),
            Object::ReferenceGrant(o) => objects.reference_grants.push(o),
        }
    }
}
