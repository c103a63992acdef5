//! The controller's view of the API server: which resource each kind is, and the error every
//! call turns into (naming the object, the cause and the RBAC rule to check).

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::Client;

use super::desired::ObjectKind;

/// The Gateway API kinds whose objects or status the controller reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayKind {
    GatewayClass,
    Gateway,
    HttpRoute,
    GrpcRoute,
}

impl GatewayKind {
    /// The kind as written in `kind:` (and in [`crate::status::ObjectStatus::kind`]).
    pub fn of(kind: &str) -> Option<GatewayKind> {
        match kind {
            "GatewayClass" => Some(GatewayKind::GatewayClass),
            "Gateway" => Some(GatewayKind::Gateway),
            "HTTPRoute" => Some(GatewayKind::HttpRoute),
            "GRPCRoute" => Some(GatewayKind::GrpcRoute),
            _ => None,
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            GatewayKind::GatewayClass => "gatewayclasses",
            GatewayKind::Gateway => "gateways",
            GatewayKind::HttpRoute => "httproutes",
            GatewayKind::GrpcRoute => "grpcroutes",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            GatewayKind::GatewayClass => "GatewayClass",
            GatewayKind::Gateway => "Gateway",
            GatewayKind::HttpRoute => "HTTPRoute",
            GatewayKind::GrpcRoute => "GRPCRoute",
        }
    }

    pub fn resource(self) -> ApiResource {
        let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", self.kind());
        ApiResource::from_gvk_with_plural(&gvk, self.plural())
    }
}

pub fn object_resource(kind: ObjectKind) -> ApiResource {
    let (group, version, kind, plural) = kind.gvk();
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

/// A namespaced or cluster-wide handle for `resource`.
pub fn api(client: &Client, resource: &ApiResource, namespace: Option<&str>) -> Api<DynamicObject> {
    match namespace {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, resource),
        None => Api::all_with(client.clone(), resource),
    }
}

/// Why one object could not be read or written; the controller logs it and retries.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("cannot {action} {object}: {source}; {hint}")]
    Api {
        action: &'static str,
        object: String,
        hint: String,
        source: Box<kube::Error>,
    },
    #[error("{object} changed while its status was being written (409 Conflict); it is read again on the next pass")]
    Conflict { object: String },
}

impl ControllerError {
    pub fn api(action: &'static str, object: String, rbac: &str, source: kube::Error) -> Self {
        if let kube::Error::Api(status) = &source {
            if status.code == 409 && action.contains("status") {
                return ControllerError::Conflict { object };
            }
        }
        let hint = match &source {
            kube::Error::Api(status) if status.code == 403 => format!(
                "the controller's service account needs {rbac} (manifests/core/waypoint-controller-rbac.yaml)"
            ),
            kube::Error::Api(status) if status.code == 404 => {
                "the kind is not served: are the Gateway API CRDs installed (kubectl apply -k manifests/)?"
                    .to_owned()
            }
            kube::Error::Api(_) => "the API server refused it; see the message".to_owned(),
            _ => "is the API server reachable? The controller retries".to_owned(),
        };
        ControllerError::Api {
            action,
            object,
            hint,
            source: Box::new(source),
        }
    }
}
