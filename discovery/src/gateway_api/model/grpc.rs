//! A GRPCRoute: matches on the gRPC service and method, header (metadata) matches, filters and
//! weighted backends. A rule without matches matches every gRPC request.

use serde::Serialize;

use super::{
    BackendRef, HeaderMatch, HeaderModifier, LocalObjectRef, Mirror, ParentRef, Rejection,
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GrpcRoute {
    pub namespace: String,
    pub name: String,
    pub generation: Option<i64>,
    pub parent_refs: Vec<ParentRef>,
    pub hostnames: Vec<String>,
    /// Empty when `rejected`.
    pub rules: Vec<GrpcRule>,
    pub rejected: Option<Rejection>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GrpcRule {
    pub name: Option<String>,
    /// Empty: every request.
    pub matches: Vec<GrpcMatch>,
    pub filters: Vec<GrpcFilter>,
    pub backends: Vec<GrpcBackend>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GrpcMatch {
    /// Any method when `None`.
    pub method: Option<GrpcMethodMatch>,
    pub headers: Vec<HeaderMatch>,
}

/// `service` and `method` of `/<service>/<method>`; a part that is `None` matches anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum GrpcMethodMatch {
    Exact {
        service: Option<String>,
        method: Option<String>,
    },
    RegularExpression {
        service: Option<String>,
        method: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum GrpcFilter {
    RequestHeaderModifier(HeaderModifier),
    ResponseHeaderModifier(HeaderModifier),
    RequestMirror(Mirror),
    /// Not implemented: requests that reach it must get an error (see `HttpFilter::ExtensionRef`).
    ExtensionRef(LocalObjectRef),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GrpcBackend {
    pub backend: BackendRef,
    pub filters: Vec<GrpcFilter>,
}
