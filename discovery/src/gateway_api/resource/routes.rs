//! HTTPRoute, GRPCRoute, TLSRoute, TCPRoute and ReferenceGrant as written.

use serde::Deserialize;

use super::{
    BackendRefSpec, FilteredBackendRefSpec, LocalObjectRefSpec, NameValueMatchSpec, ParentRefSpec,
};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HttpRouteSpec {
    pub parent_refs: Option<Vec<ParentRefSpec>>,
    pub hostnames: Option<Vec<String>>,
    pub rules: Option<Vec<HttpRuleSpec>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HttpRuleSpec {
    pub name: Option<String>,
    pub matches: Option<Vec<HttpMatchSpec>>,
    pub filters: Option<Vec<HttpFilterSpec>>,
    pub backend_refs: Option<Vec<FilteredBackendRefSpec<HttpFilterSpec>>>,
    pub timeouts: Option<TimeoutsSpec>,
    pub retry: Option<RetrySpec>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HttpMatchSpec {
    pub path: Option<PathMatchSpec>,
    pub headers: Option<Vec<NameValueMatchSpec>>,
    pub query_params: Option<Vec<NameValueMatchSpec>>,
    pub method: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PathMatchSpec {
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub value: Option<String>,
}

/// One filter of HTTPRoute or GRPCRoute (GRPCRoute allows a subset of the types).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HttpFilterSpec {
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub request_header_modifier: Option<HeaderModifierSpec>,
    pub response_header_modifier: Option<HeaderModifierSpec>,
    pub request_mirror: Option<MirrorSpec>,
    pub request_redirect: Option<RedirectSpec>,
    pub url_rewrite: Option<UrlRewriteSpec>,
    pub cors: Option<CorsSpec>,
    pub extension_ref: Option<LocalObjectRefSpec>,
    /// Only checked for presence: ExternalAuth is not implemented.
    pub external_auth: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HeaderModifierSpec {
    pub set: Option<Vec<NameValueMatchSpec>>,
    pub add: Option<Vec<NameValueMatchSpec>>,
    pub remove: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MirrorSpec {
    pub backend_ref: Option<BackendRefSpec>,
    pub percent: Option<i32>,
    pub fraction: Option<FractionSpec>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FractionSpec {
    pub numerator: Option<i32>,
    pub denominator: Option<i32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RedirectSpec {
    pub scheme: Option<String>,
    pub hostname: Option<String>,
    pub path: Option<PathModifierSpec>,
    pub port: Option<i32>,
    pub status_code: Option<i32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UrlRewriteSpec {
    pub hostname: Option<String>,
    pub path: Option<PathModifierSpec>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PathModifierSpec {
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub replace_full_path: Option<String>,
    pub replace_prefix_match: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CorsSpec {
    pub allow_origins: Option<Vec<String>>,
    pub allow_credentials: Option<bool>,
    pub allow_methods: Option<Vec<String>>,
    pub allow_headers: Option<Vec<String>>,
    pub expose_headers: Option<Vec<String>>,
    pub max_age: Option<i32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TimeoutsSpec {
    pub request: Option<String>,
    pub backend_request: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RetrySpec {
    pub attempts: Option<i32>,
    pub backoff: Option<String>,
    pub codes: Option<Vec<i32>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GrpcRouteSpec {
    pub parent_refs: Option<Vec<ParentRefSpec>>,
    pub hostnames: Option<Vec<String>>,
    pub rules: Option<Vec<GrpcRuleSpec>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GrpcRuleSpec {
    pub name: Option<String>,
    pub matches: Option<Vec<GrpcMatchSpec>>,
    pub filters: Option<Vec<HttpFilterSpec>>,
    pub backend_refs: Option<Vec<FilteredBackendRefSpec<HttpFilterSpec>>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GrpcMatchSpec {
    pub method: Option<GrpcMethodSpec>,
    pub headers: Option<Vec<NameValueMatchSpec>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GrpcMethodSpec {
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub service: Option<String>,
    pub method: Option<String>,
}

/// TLSRoute (with `hostnames`) and TCPRoute (without).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StreamRouteSpec {
    pub parent_refs: Option<Vec<ParentRefSpec>>,
    pub hostnames: Option<Vec<String>>,
    pub rules: Option<Vec<StreamRuleSpec>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StreamRuleSpec {
    pub name: Option<String>,
    pub backend_refs: Option<Vec<BackendRefSpec>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ReferenceGrantSpec {
    pub from: Option<Vec<GrantFromSpec>>,
    pub to: Option<Vec<GrantToSpec>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GrantFromSpec {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GrantToSpec {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub name: Option<String>,
}
