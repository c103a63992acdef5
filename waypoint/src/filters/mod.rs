//! The Gateway API filters as pure functions over request and response heads (DESIGN §6: the
//! request path is ordered phases; these are the "filters / redirect" phases, with no I/O).
//!
//! Each filter of a rule (or of a backendRef) is compiled once per snapshot from discovery's
//! model: header names and values are parsed into `http` types, status codes checked, mirror
//! backends resolved. A filter that cannot be compiled becomes [`Filter::Unsupported`] with the
//! reason — never skipped — because the API forbids serving a request without a filter it asked
//! for: the proxy answers 500 to requests that reach one.

mod cors;
mod headers;
mod mirror;
mod path;
mod redirect;
mod rewrite;

use discovery::gateway_api::{BackendRef, GrpcFilter, HttpFilter};
use serde::Serialize;

pub use cors::Cors;
pub use headers::HeaderEdits;
pub use mirror::MirrorTarget;
pub use path::PathEdit;
pub use redirect::{Redirect, RedirectInput};
pub use rewrite::Rewrite;

use crate::routes::backend::BackendTarget;

/// Why a filter of the model could not be compiled; becomes [`Filter::Unsupported`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("{filter}: header name {name:?} is not a valid HTTP header name; fix the route")]
    HeaderName { filter: &'static str, name: String },
    #[error(
        "{filter}: the value of header {name} is not a valid HTTP header value; fix the route"
    )]
    HeaderValue { filter: &'static str, name: String },
    #[error(
        "RequestRedirect: status code {0} is not a redirect status; use 301, 302, 303, 307 or 308"
    )]
    RedirectStatus(u16),
    #[error("{filter}: {what} {value:?} cannot be used in a URL; fix the route")]
    Url {
        filter: &'static str,
        what: &'static str,
        value: String,
    },
}

/// One compiled filter, applied in the order the rule lists them.
#[derive(Debug, Clone)]
pub enum Filter {
    RequestHeaders(HeaderEdits),
    ResponseHeaders(HeaderEdits),
    Redirect(Redirect),
    Rewrite(Rewrite),
    Mirror(MirrorTarget),
    Cors(Cors),
    /// Cannot be applied (an extensionRef, a type Ambit does not implement, or a value that does
    /// not compile): the proxy answers 500 to requests that reach it. Says why.
    Unsupported(String),
}

/// Resolves a mirror's backend reference (the route engine passes [`crate::routes::resolve_backend`]
/// bound to the snapshot and route).
pub type ResolveBackend<'a> = dyn FnMut(&BackendRef) -> BackendTarget + 'a;

impl Filter {
    /// Compiles an HTTPRoute filter (rule or backendRef level).
    pub fn from_http(filter: &HttpFilter, resolve: &mut ResolveBackend<'_>) -> Filter {
        let compiled = match filter {
            HttpFilter::RequestHeaderModifier(m) => {
                HeaderEdits::compile("RequestHeaderModifier", m).map(Filter::RequestHeaders)
            }
            HttpFilter::ResponseHeaderModifier(m) => {
                HeaderEdits::compile("ResponseHeaderModifier", m).map(Filter::ResponseHeaders)
            }
            HttpFilter::RequestMirror(m) => Ok(Filter::Mirror(MirrorTarget::compile(m, resolve))),
            HttpFilter::RequestRedirect(r) => Redirect::compile(r).map(Filter::Redirect),
            HttpFilter::UrlRewrite(r) => Rewrite::compile(r).map(Filter::Rewrite),
            HttpFilter::Cors(c) => Ok(Filter::Cors(Cors::compile(c))),
            HttpFilter::ExtensionRef(r) => Ok(Filter::Unsupported(format!(
                "extensionRef {}/{} {:?} is not implemented by Ambit; remove the filter",
                if r.group.is_empty() { "core" } else { &r.group },
                r.kind,
                r.name
            ))),
            HttpFilter::Unsupported { filter_type } => Ok(Filter::Unsupported(format!(
                "filter type {filter_type} is not implemented by Ambit; remove the filter"
            ))),
        };
        compiled.unwrap_or_else(|error| Filter::Unsupported(error.to_string()))
    }

    /// Compiles a GRPCRoute filter: the same semantics as the HTTPRoute filters of that name.
    pub fn from_grpc(filter: &GrpcFilter, resolve: &mut ResolveBackend<'_>) -> Filter {
        let compiled = match filter {
            GrpcFilter::RequestHeaderModifier(m) => {
                HeaderEdits::compile("RequestHeaderModifier", m).map(Filter::RequestHeaders)
            }
            GrpcFilter::ResponseHeaderModifier(m) => {
                HeaderEdits::compile("ResponseHeaderModifier", m).map(Filter::ResponseHeaders)
            }
            GrpcFilter::RequestMirror(m) => Ok(Filter::Mirror(MirrorTarget::compile(m, resolve))),
            GrpcFilter::ExtensionRef(r) => Ok(Filter::Unsupported(format!(
                "extensionRef {}/{} {:?} is not implemented by Ambit; remove the filter",
                if r.group.is_empty() { "core" } else { &r.group },
                r.kind,
                r.name
            ))),
        };
        compiled.unwrap_or_else(|error| Filter::Unsupported(error.to_string()))
    }

    /// The Gateway API filter type, for dumps and logs.
    pub fn type_name(&self) -> &'static str {
        match self {
            Filter::RequestHeaders(_) => "RequestHeaderModifier",
            Filter::ResponseHeaders(_) => "ResponseHeaderModifier",
            Filter::Redirect(_) => "RequestRedirect",
            Filter::Rewrite(_) => "URLRewrite",
            Filter::Mirror(_) => "RequestMirror",
            Filter::Cors(_) => "CORS",
            Filter::Unsupported(_) => "Unsupported",
        }
    }
}

/// What `/config_dump` shows of a filter: its type, and why when it cannot be applied.
impl Serialize for Filter {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("type", self.type_name())?;
        match self {
            Filter::Unsupported(why) => map.serialize_entry("unsupported", why)?,
            Filter::Mirror(mirror) => map.serialize_entry("mirror", mirror)?,
            _ => {}
        }
        map.end()
    }
}

/// Compiles a list of HTTPRoute filters, in order.
pub fn compile_http(filters: &[HttpFilter], resolve: &mut ResolveBackend<'_>) -> Vec<Filter> {
    filters
        .iter()
        .map(|f| Filter::from_http(f, &mut *resolve))
        .collect()
}

/// Compiles a list of GRPCRoute filters, in order.
pub fn compile_grpc(filters: &[GrpcFilter], resolve: &mut ResolveBackend<'_>) -> Vec<Filter> {
    filters
        .iter()
        .map(|f| Filter::from_grpc(f, &mut *resolve))
        .collect()
}

#[cfg(test)]
mod tests;
