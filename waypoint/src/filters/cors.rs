//! CORS (HTTPCORSFilter): answers preflights at the proxy and decorates actual responses.
//!
//! Choices where the API leaves room:
//! - A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is always answered
//!   here with 204, never forwarded. From an origin that is not allowed it carries no CORS
//!   headers, so the browser refuses the actual request.
//! - Wildcards are echoed: with `allowMethods: ["*"]` the allowed method is the one requested,
//!   with `allowHeaders: ["*"]` the headers requested. The API requires that with credentials
//!   and allows it without, so one rule serves both.
//! - `allowOrigins: ["*"]` answers `*` without credentials, the origin itself with them; every
//!   echoed origin adds `Vary: Origin` so caches keep answers per origin apart.

use discovery::gateway_api::Cors as CorsSpec;
use http::header::{
    HeaderMap, HeaderValue, ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS,
    ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS,
    ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN,
    VARY,
};
use http::{Method, Response, StatusCode};

use super::redirect::default_port;

/// A compiled CORS filter.
#[derive(Debug, Clone)]
pub struct Cors {
    origins: Origins,
    credentials: bool,
    methods: Allowed,
    headers: Allowed,
    expose: Option<HeaderValue>,
    max_age: HeaderValue,
}

#[derive(Debug, Clone)]
enum Origins {
    Any,
    Listed(Vec<OriginPattern>),
}

/// An allowed origin: `scheme://host[:port]`, the host optionally `*` or `*.suffix`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OriginPattern {
    scheme: String,
    host: HostPattern,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    /// `*.example.com` is kept as `.example.com`: any number of labels before it.
    Suffix(String),
    Exact(String),
}

/// `allowMethods` / `allowHeaders`: none configured, `*`, or a list sent joined.
#[derive(Debug, Clone)]
enum Allowed {
    None,
    Any,
    Listed(HeaderValue),
}

impl Cors {
    /// Compiles the filter; origins that cannot be read (the schema's pattern keeps them out)
    /// are left out, so they allow nothing.
    pub fn compile(spec: &CorsSpec) -> Self {
        let origins = if spec.allow_origins.iter().any(|o| o == "*") {
            Origins::Any
        } else {
            Origins::Listed(
                spec.allow_origins
                    .iter()
                    .filter_map(|o| OriginPattern::parse(o))
                    .collect(),
            )
        };
        Cors {
            origins,
            credentials: spec.allow_credentials,
            methods: Allowed::compile(&spec.allow_methods),
            headers: Allowed::compile(&spec.allow_headers),
            expose: joined(&spec.expose_headers),
            max_age: HeaderValue::from(spec.max_age_seconds),
        }
    }

    /// The answer to a preflight request, or `None` when the request is not one (it is then
    /// forwarded, and [`Cors::decorate`] applies to its response).
    pub fn preflight(&self, request_headers: &HeaderMap, method: &Method) -> Option<Response<()>> {
        if method != Method::OPTIONS {
            return None;
        }
        let origin = request_headers.get(ORIGIN)?;
        let requested_method = request_headers.get(ACCESS_CONTROL_REQUEST_METHOD)?;
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::NO_CONTENT;
        let headers = response.headers_mut();
        if !self.allow_origin(origin, headers) {
            return Some(response);
        }
        let methods = match &self.methods {
            Allowed::None => None,
            Allowed::Any => Some(requested_method.clone()),
            Allowed::Listed(list) => Some(list.clone()),
        };
        if let Some(methods) = methods {
            headers.insert(ACCESS_CONTROL_ALLOW_METHODS, methods);
        }
        if let Some(requested) = request_headers.get(ACCESS_CONTROL_REQUEST_HEADERS) {
            let allowed = match &self.headers {
                Allowed::None => None,
                Allowed::Any => Some(requested.clone()),
                Allowed::Listed(list) => Some(list.clone()),
            };
            if let Some(allowed) = allowed {
                headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, allowed);
            }
        }
        if let Some(expose) = &self.expose {
            headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
        headers.insert(ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        Some(response)
    }

    /// Adds the CORS headers to the response of an actual (not preflight) request from an
    /// allowed origin; leaves other responses alone.
    pub fn decorate(&self, request_headers: &HeaderMap, response_headers: &mut HeaderMap) {
        let Some(origin) = request_headers.get(ORIGIN) else {
            return;
        };
        if self.allow_origin(origin, response_headers) {
            if let Some(expose) = &self.expose {
                response_headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
            }
        }
    }

    /// Writes `Access-Control-Allow-Origin` (and `-Credentials`, `Vary`) when `origin` is
    /// allowed; says whether it was.
    fn allow_origin(&self, origin: &HeaderValue, headers: &mut HeaderMap) -> bool {
        let allowed = match &self.origins {
            Origins::Any => true,
            Origins::Listed(patterns) => origin
                .to_str()
                .ok()
                .and_then(ParsedOrigin::parse)
                .is_some_and(|o| patterns.iter().any(|p| p.matches(&o))),
        };
        if !allowed {
            return false;
        }
        if matches!(self.origins, Origins::Any) && !self.credentials {
            headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        } else {
            headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            headers.append(VARY, HeaderValue::from_static("Origin"));
        }
        if self.credentials {
            headers.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        true
    }
}

impl Allowed {
    fn compile(list: &[String]) -> Self {
        if list.iter().any(|v| v == "*") {
            Allowed::Any
        } else {
            joined(list).map_or(Allowed::None, Allowed::Listed)
        }
    }
}

/// `a, b, c`, or `None` for an empty list or one that cannot be a header value.
fn joined(list: &[String]) -> Option<HeaderValue> {
    if list.is_empty() {
        return None;
    }
    HeaderValue::from_str(&list.join(", ")).ok()
}

/// An `Origin` header: `scheme://host[:port]`, the port made explicit.
struct ParsedOrigin<'a> {
    scheme: &'a str,
    host: &'a str,
    port: Option<u16>,
}

impl<'a> ParsedOrigin<'a> {
    fn parse(origin: &'a str) -> Option<Self> {
        let (scheme, rest) = origin.split_once("://")?;
        let (host, port) = split_port(rest)?;
        let port = port.or_else(|| default_port(scheme));
        Some(ParsedOrigin { scheme, host, port })
    }
}

/// `host[:port]` into its parts; `None` when the port is not a number.
fn split_port(authority: &str) -> Option<(&str, Option<u16>)> {
    match authority.rsplit_once(':') {
        // An IPv6 literal's colons are inside brackets.
        Some((host, port)) if !port.contains(']') => Some((host, Some(port.parse().ok()?))),
        _ => Some((authority, None)),
    }
}

impl OriginPattern {
    fn parse(pattern: &str) -> Option<Self> {
        let (scheme, rest) = pattern.split_once("://")?;
        let (host, port) = split_port(rest)?;
        let host = if host == "*" {
            HostPattern::Any
        } else if let Some(suffix) = host.strip_prefix('*') {
            HostPattern::Suffix(suffix.to_ascii_lowercase())
        } else {
            HostPattern::Exact(host.to_ascii_lowercase())
        };
        Some(OriginPattern {
            scheme: scheme.to_ascii_lowercase(),
            host,
            port: port.or_else(|| default_port(scheme)),
        })
    }

    fn matches(&self, origin: &ParsedOrigin<'_>) -> bool {
        let host = match &self.host {
            HostPattern::Any => true,
            HostPattern::Suffix(suffix) => {
                let host = origin.host.as_bytes();
                host.len() > suffix.len()
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
            }
            HostPattern::Exact(exact) => origin.host.eq_ignore_ascii_case(exact),
        };
        host && origin.scheme.eq_ignore_ascii_case(&self.scheme) && origin.port == self.port
    }
}
