//! The Gateway API objects as written (v1.6.1 CRDs), for decoding only.
//!
//! Every field is optional and enumerations are plain strings: the schema's rules (required
//! fields, enums, patterns, CEL rules) are checked by `convert` so that each violation is reported
//! with its field path and the object is kept, marked rejected, instead of failing to decode. The
//! served versions of each kind (`v1`, `v1beta1`, `v1alpha2`, `v1alpha3`) share these shapes.
//! Fields Ambit does not read yet (sessionPersistence, useDefaultGateways, defaultScope) are
//! ignored, as an API server without them installed would prune them.

mod gateway;
mod routes;

use std::collections::BTreeMap;

use serde::Deserialize;

pub(crate) use gateway::{
    AllowedRoutesSpec, FrontendTlsSpec, FrontendValidationSpec, GatewayAddressSpec, GatewaySpec,
    GatewayTlsSpec, InfrastructureSpec, ListenerSpec, ListenerTlsSpec, RouteNamespacesSpec,
};
pub(crate) use routes::{
    CorsSpec, GrpcMatchSpec, GrpcRouteSpec, GrpcRuleSpec, HeaderModifierSpec, HttpFilterSpec,
    HttpMatchSpec, HttpRouteSpec, HttpRuleSpec, MirrorSpec, PathModifierSpec, RedirectSpec,
    ReferenceGrantSpec, RetrySpec, StreamRouteSpec, StreamRuleSpec, TimeoutsSpec, UrlRewriteSpec,
};

/// Any of the kinds' spec (the metadata is read on its own, before the spec).
#[derive(Debug, Deserialize)]
pub(crate) struct Resource<S> {
    pub spec: Option<S>,
}

/// What a route is read as when its spec does not decode: enough to name it and report the
/// problem on each of its parents.
#[derive(Debug, Deserialize)]
pub(crate) struct RouteHead {
    #[serde(default)]
    pub spec: Option<RouteHeadSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RouteHeadSpec {
    #[serde(default)]
    pub parent_refs: Option<Vec<ParentRefSpec>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ParentRefSpec {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub section_name: Option<String>,
    pub port: Option<i32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BackendRefSpec {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub port: Option<i32>,
    pub weight: Option<i32>,
}

/// A backendRef with per-backend filters (HTTPRoute, GRPCRoute). Not `#[serde(flatten)]` over
/// [`BackendRefSpec`]: flattening would blur the field paths of decode errors.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FilteredBackendRefSpec<F> {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub port: Option<i32>,
    pub weight: Option<i32>,
    pub filters: Option<Vec<F>>,
}

impl<F> FilteredBackendRefSpec<F> {
    pub(crate) fn backend(&self) -> BackendRefSpec {
        BackendRefSpec {
            group: self.group.clone(),
            kind: self.kind.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            port: self.port,
            weight: self.weight,
        }
    }
}

/// certificateRefs, caCertificateRefs, clientCertificateRef.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ObjectRefSpec {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

/// extensionRef, parametersRef.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LocalObjectRefSpec {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NameValueMatchSpec {
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub name: Option<String>,
    pub value: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LabelSelectorSpec {
    pub match_labels: Option<BTreeMap<String, String>>,
    pub match_expressions: Option<Vec<LabelExpressionSpec>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LabelExpressionSpec {
    pub key: Option<String>,
    pub operator: Option<String>,
    pub values: Option<Vec<String>>,
}
