//! The Gateway API part of a [`crate::Snapshot`]: every object sorted by namespace and name,
//! with the lookups the route engine and the controller make, and a serialisable dump for
//! `/config_dump` that lists the rejected objects with their reasons.

use std::collections::HashMap;

use serde::Serialize;

use super::model::{Gateway, GrpcRoute, HttpRoute, ReferenceGrant, Rejection, TcpRoute, TlsRoute};

/// The Gateway API objects of one snapshot.
#[derive(Debug, Default)]
pub struct GatewayApiView {
    gateways: Vec<Gateway>,
    gateway_by_name: HashMap<(String, String), usize>,
    http_routes: Vec<HttpRoute>,
    grpc_routes: Vec<GrpcRoute>,
    tls_routes: Vec<TlsRoute>,
    tcp_routes: Vec<TcpRoute>,
    reference_grants: Vec<ReferenceGrant>,
    grants_by_namespace: HashMap<String, Vec<usize>>,
}

/// The input of [`GatewayApiView::build`], as [`crate::Objects`] carries it.
#[derive(Debug, Default)]
pub(crate) struct GatewayApiObjects {
    pub gateways: Vec<Gateway>,
    pub http_routes: Vec<HttpRoute>,
    pub grpc_routes: Vec<GrpcRoute>,
    pub tls_routes: Vec<TlsRoute>,
    pub tcp_routes: Vec<TcpRoute>,
    pub reference_grants: Vec<ReferenceGrant>,
}

/// An object kept although it breaks the schema: for status (`Accepted=False`) and dumps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RejectedObject<'a> {
    pub kind: &'static str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub rejection: &'a Rejection,
}

impl std::fmt::Display for RejectedObject<'_> {
    /// `HTTPRoute shop/cart: spec.rules[0].matches[1].path.value: …`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}/{}: {}",
            self.kind, self.namespace, self.name, self.rejection
        )
    }
}

/// Everything in the view, for `/config_dump`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayApiDump<'a> {
    pub gateways: &'a [Gateway],
    pub http_routes: &'a [HttpRoute],
    pub grpc_routes: &'a [GrpcRoute],
    pub tls_routes: &'a [TlsRoute],
    pub tcp_routes: &'a [TcpRoute],
    pub reference_grants: &'a [ReferenceGrant],
    /// The objects above that are rejected, each with why: listed apart so they stand out.
    pub rejected: Vec<RejectedObject<'a>>,
}

macro_rules! sort_by_name {
    ($($list:expr),*) => {
        $($list.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));)*
    };
}

impl GatewayApiView {
    pub(crate) fn build(objects: GatewayApiObjects) -> Self {
        let GatewayApiObjects {
            mut gateways,
            mut http_routes,
            mut grpc_routes,
            mut tls_routes,
            mut tcp_routes,
            mut reference_grants,
        } = objects;
        sort_by_name!(
            gateways,
            http_routes,
            grpc_routes,
            tls_routes,
            tcp_routes,
            reference_grants
        );
        let gateway_by_name = gateways
            .iter()
            .enumerate()
            .map(|(i, g)| ((g.namespace.clone(), g.name.clone()), i))
            .collect();
        let mut grants_by_namespace: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, grant) in reference_grants.iter().enumerate() {
            grants_by_namespace
                .entry(grant.namespace.clone())
                .or_default()
                .push(i);
        }
        GatewayApiView {
            gateways,
            gateway_by_name,
            http_routes,
            grpc_routes,
            tls_routes,
            tcp_routes,
            reference_grants,
            grants_by_namespace,
        }
    }

    /// All Gateways, rejected ones included (check [`Gateway::rejected`]).
    pub fn gateways(&self) -> &[Gateway] {
        &self.gateways
    }

    pub fn gateway(&self, namespace: &str, name: &str) -> Option<&Gateway> {
        // One lookup per route parent at compile time, not per request: the key allocation is fine.
        let index = self
            .gateway_by_name
            .get(&(namespace.to_owned(), name.to_owned()))?;
        self.gateways.get(*index)
    }

    pub fn http_routes(&self) -> &[HttpRoute] {
        &self.http_routes
    }

    pub fn grpc_routes(&self) -> &[GrpcRoute] {
        &self.grpc_routes
    }

    pub fn tls_routes(&self) -> &[TlsRoute] {
        &self.tls_routes
    }

    pub fn tcp_routes(&self) -> &[TcpRoute] {
        &self.tcp_routes
    }

    pub fn reference_grants(&self) -> &[ReferenceGrant] {
        &self.reference_grants
    }

    /// Whether some ReferenceGrant in `to_namespace` lets `from` (group, kind, namespace) refer
    /// to `to` (group, kind, name) there. References within one namespace need no grant.
    pub fn reference_permitted(
        &self,
        from: (&str, &str, &str),
        to_namespace: &str,
        to: (&str, &str, &str),
    ) -> bool {
        from.2 == to_namespace
            || self
                .grants_by_namespace
                .get(to_namespace)
                .into_iter()
                .flatten()
                .any(|&i| self.reference_grants[i].permits(from, to))
    }

    /// Every object kept although it breaks the schema, with why, by kind then namespace/name.
    pub fn rejected(&self) -> Vec<RejectedObject<'_>> {
        let mut out = Vec::new();
        collect(&mut out, "Gateway", &self.gateways, |o| {
            (&o.namespace, &o.name, &o.rejected)
        });
        collect(&mut out, "HTTPRoute", &self.http_routes, |o| {
            (&o.namespace, &o.name, &o.rejected)
        });
        collect(&mut out, "GRPCRoute", &self.grpc_routes, |o| {
            (&o.namespace, &o.name, &o.rejected)
        });
        collect(&mut out, "TLSRoute", &self.tls_routes, |o| {
            (&o.namespace, &o.name, &o.rejected)
        });
        collect(&mut out, "TCPRoute", &self.tcp_routes, |o| {
            (&o.namespace, &o.name, &o.rejected)
        });
        collect(&mut out, "ReferenceGrant", &self.reference_grants, |o| {
            (&o.namespace, &o.name, &o.rejected)
        });
        out
    }

    pub fn dump(&self) -> GatewayApiDump<'_> {
        GatewayApiDump {
            gateways: &self.gateways,
            http_routes: &self.http_routes,
            grpc_routes: &self.grpc_routes,
            tls_routes: &self.tls_routes,
            tcp_routes: &self.tcp_routes,
            reference_grants: &self.reference_grants,
            rejected: self.rejected(),
        }
    }
}

/// Adds the rejected objects of one list.
fn collect<'a, T>(
    out: &mut Vec<RejectedObject<'a>>,
    kind: &'static str,
    list: &'a [T],
    parts: impl Fn(&'a T) -> (&'a String, &'a String, &'a Option<Rejection>),
) {
    for object in list {
        let (namespace, name, rejected) = parts(object);
        if let Some(rejection) = rejected {
            out.push(RejectedObject {
                kind,
                namespace,
                name,
                rejection,
            });
        }
    }
}
