//! An HTTPRoute, with the CRD defaults applied: a rule without matches matches every request
//! (`PathPrefix /`), a match without a path is `PathPrefix /`, header and query matches are
//! `Exact`, backend weights are 1, redirects answer 302, mirrors take every request.

use std::time::Duration;

use serde::Serialize;

use super::{
    serialize_duration, serialize_optional_duration, BackendRef, HeaderMatch, LocalObjectRef,
    ParentRef, QueryMatch, Rejection,
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRoute {
    pub namespace: String,
    pub name: String,
    pub generation: Option<i64>,
    pub parent_refs: Vec<ParentRef>,
    pub hostnames: Vec<String>,
    /// Empty when `rejected`: a rejected route must never be served.
    pub rules: Vec<HttpRule>,
    pub rejected: Option<Rejection>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRule {
    pub name: Option<String>,
    /// Never empty: no matches in the manifest means one `PathPrefix /` match.
    pub matches: Vec<HttpMatch>,
    pub filters: Vec<HttpFilter>,
    pub backends: Vec<HttpBackend>,
    pub timeouts: Timeouts,
    pub retry: Option<Retry>,
}

/// One match: every condition must hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpMatch {
    pub path: PathMatch,
    /// At most one per (case-insensitive) name: later duplicates are ignored, as the API says.
    pub headers: Vec<HeaderMatch>,
    /// At most one per name, likewise.
    pub query_params: Vec<QueryMatch>,
    pub method: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum PathMatch {
    Exact(String),
    /// Element-wise: `/foo` matches `/foo` and `/foo/bar`, not `/foobar`.
    PathPrefix(String),
    RegularExpression(String),
}

/// A filter, in the order the rule lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum HttpFilter {
    RequestHeaderModifier(HeaderModifier),
    ResponseHeaderModifier(HeaderModifier),
    RequestMirror(Mirror),
    RequestRedirect(Redirect),
    UrlRewrite(UrlRewrite),
    Cors(Cors),
    /// A custom filter: not implemented, so requests that reach it must get an error response
    /// (the API forbids skipping a filter that cannot be applied).
    ExtensionRef(LocalObjectRef),
    /// A filter type the schema knows but Ambit does not implement (`ExternalAuth`): like an
    /// extensionRef, requests that reach it must get an error, never pass unfiltered.
    Unsupported {
        filter_type: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct HeaderModifier {
    pub set: Vec<HeaderValue>,
    pub add: Vec<HeaderValue>,
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeaderValue {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Mirror {
    pub backend: BackendRef,
    /// The share of requests mirrored: `percent` as n/100, `fraction` as given, all when neither.
    pub fraction: MirrorFraction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MirrorFraction {
    pub numerator: u32,
    /// Never 0.
    pub denominator: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Redirect {
    /// `http` or `https`; the request's own when `None`.
    pub scheme: Option<String>,
    pub hostname: Option<String>,
    pub path: Option<PathModifier>,
    pub port: Option<u16>,
    /// Default 302.
    pub status_code: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UrlRewrite {
    pub hostname: Option<String>,
    pub path: Option<PathModifier>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum PathModifier {
    ReplaceFullPath(String),
    /// Replaces the matched `PathPrefix` (the schema allows it only with exactly one such match).
    ReplacePrefixMatch(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Cors {
    /// `*`, or origins such as `https://*.example.com:8443`.
    pub allow_origins: Vec<String>,
    pub allow_credentials: bool,
    pub allow_methods: Vec<String>,
    pub allow_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    /// Default 5.
    pub max_age_seconds: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpBackend {
    pub backend: BackendRef,
    /// Applied only to requests sent to this backend.
    pub filters: Vec<HttpFilter>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Timeouts {
    /// The whole request, retries included; the implementation's default when `None`.
    pub request: Option<Timeout>,
    /// One attempt at a backend.
    pub backend_request: Option<Timeout>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Timeout {
    /// `0s`: no timeout at all.
    Disabled,
    After(#[serde(serialize_with = "serialize_duration")] Duration),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Retry {
    pub attempts: Option<u32>,
    #[serde(serialize_with = "serialize_optional_duration")]
    pub backoff: Option<Duration>,
    /// HTTP statuses (400–599) that are retried.
    pub codes: Vec<u16>,
}
