//! RequestRedirect: the proxy answers with a 3xx and a `Location` built from the request.
//!
//! The port follows the API (HTTPRequestRedirectFilter.port):
//! - a configured `port` is used as is;
//! - otherwise, when the filter sets a `scheme` (even the request's own), the port is that
//!   scheme's well-known one (80 or 443);
//! - otherwise the request's port is kept: the listener port for a Gateway, which the caller
//!   passes from the Host header (or the listener when Host has none).
//!
//! The port is left out of `Location` when it is the scheme's default (`http` and 80, `https`
//! and 443), as the API recommends. The query string is always kept.

use std::fmt::Write as _;

use discovery::gateway_api::Redirect as RedirectSpec;
use http::{HeaderValue, StatusCode};

use super::path::PathEdit;
use super::FilterError;

/// A compiled RequestRedirect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// `http` or `https`; the request's own when `None`.
    pub scheme: Option<String>,
    pub hostname: Option<String>,
    pub path: Option<PathEdit>,
    pub port: Option<u16>,
    pub status: StatusCode,
}

/// What of the request a redirect reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedirectInput<'a> {
    /// `http` or `https`: how the request reached the proxy.
    pub scheme: &'a str,
    /// The Host header (or `:authority`) without its port.
    pub host: &'a str,
    /// The port of the Host header, if it has one.
    pub port: Option<u16>,
    /// The path as received, without the query.
    pub path: &'a str,
    pub query: Option<&'a str>,
}

impl Redirect {
    pub fn compile(spec: &RedirectSpec) -> Result<Self, FilterError> {
        let status = match spec.status_code {
            301 | 302 | 303 | 307 | 308 => StatusCode::from_u16(spec.status_code)
                .map_err(|_| FilterError::RedirectStatus(spec.status_code))?,
            other => return Err(FilterError::RedirectStatus(other)),
        };
        for (what, value) in [("scheme", &spec.scheme), ("hostname", &spec.hostname)] {
            if let Some(value) = value {
                if !url_safe(value) {
                    return Err(FilterError::Url {
                        filter: "RequestRedirect",
                        what,
                        value: value.clone(),
                    });
                }
            }
        }
        Ok(Redirect {
            scheme: spec.scheme.as_ref().map(|s| s.to_ascii_lowercase()),
            hostname: spec.hostname.clone(),
            path: spec
                .path
                .as_ref()
                .map(|p| PathEdit::compile("RequestRedirect", p))
                .transpose()?,
            port: spec.port,
            status,
        })
    }

    /// The status and `Location` for this request. `matched_prefix` is the `PathPrefix` value
    /// the rule matched with (for `ReplacePrefixMatch`).
    pub fn redirect(
        &self,
        request: &RedirectInput<'_>,
        matched_prefix: Option<&str>,
    ) -> (StatusCode, HeaderValue) {
        let scheme = self.scheme.as_deref().unwrap_or(request.scheme);
        let port = match (self.port, &self.scheme) {
            (Some(port), _) => Some(port),
            (None, Some(scheme)) => default_port(scheme).or(request.port),
            (None, None) => request.port,
        };
        let host = self.hostname.as_deref().unwrap_or(request.host);
        let path = match &self.path {
            Some(edit) => edit.apply(request.path, matched_prefix),
            None => request.path.to_owned(),
        };
        let mut location = String::with_capacity(
            scheme.len() + host.len() + path.len() + request.query.map_or(0, str::len) + 16,
        );
        location.push_str(scheme);
        location.push_str("://");
        // An IPv6 literal needs its brackets back once a port may follow.
        if host.contains(':') && !host.starts_with('[') {
            let _ = write!(location, "[{host}]");
        } else {
            location.push_str(host);
        }
        if let Some(port) = port.filter(|p| Some(*p) != default_port(scheme)) {
            let _ = write!(location, ":{port}");
        }
        location.push_str(&path);
        if let Some(query) = request.query.filter(|q| !q.is_empty()) {
            location.push('?');
            location.push_str(query);
        }
        (self.status, location_header(&location))
    }
}

/// The well-known port of a scheme.
pub(crate) fn default_port(scheme: &str) -> Option<u16> {
    if scheme.eq_ignore_ascii_case("http") {
        Some(80)
    } else if scheme.eq_ignore_ascii_case("https") {
        Some(443)
    } else {
        None
    }
}

/// Whether a configured URL part has nothing that would need escaping.
fn url_safe(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
}

/// `Location` from text whose request-supplied parts (host, path, query) may hold bytes a URL
/// cannot (spaces, non-ASCII): those are percent-encoded rather than failing the redirect.
fn location_header(location: &str) -> HeaderValue {
    let mut escaped = String::with_capacity(location.len() + 16);
    for byte in location.bytes() {
        if byte.is_ascii_graphic() {
            escaped.push(char::from(byte));
        } else {
            let _ = write!(escaped, "%{byte:02X}");
        }
    }
    // Visible ASCII only, so this cannot fail; the fallback keeps the type honest.
    HeaderValue::from_str(&escaped).unwrap_or_else(|_| HeaderValue::from_static("/"))
}
