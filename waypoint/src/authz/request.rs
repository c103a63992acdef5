//! What the evaluator knows about a request or connection, read once per decision: the
//! principal string, the normalised path, the lower-cased host.

use std::borrow::Cow;
use std::net::IpAddr;

use certs::SpiffeId;
use http::{HeaderMap, Method};

/// An HTTP request as the waypoint authorizes it.
#[derive(Debug, Clone, Copy)]
pub struct L7Request<'a> {
    /// The client's verified identity (the certificate ztunnel presented on its behalf);
    /// `None` when there is none, which only `not…` fields can match.
    pub source_identity: Option<&'a SpiffeId>,
    /// The TCP peer of the tunnel (the client pod): `ipBlocks`, `source.ip`.
    pub source_ip: IpAddr,
    pub method: &'a Method,
    /// The path without the query string. Normalised here as Istio's default (`BASE`) does:
    /// percent-encoded unreserved characters decoded, `.` and `..` segments resolved.
    pub path: &'a str,
    /// The host without its port (`Host` or `:authority`), any case.
    pub host: &'a str,
    /// The Service port the request was addressed to: `ports`, `destination.port`.
    pub destination_port: u16,
    pub headers: &'a HeaderMap,
}

/// A connection the waypoint passes through at L4 (TCP routes, non-HTTP ports).
#[derive(Debug, Clone, Copy)]
pub struct TcpConnection<'a> {
    pub source_identity: Option<&'a SpiffeId>,
    pub source_ip: IpAddr,
    pub destination_port: u16,
}

/// The facts rules are matched against.
pub(super) struct Facts<'a> {
    /// Istio's principal: the SPIFFE ID without its scheme, `td/ns/x/sa/y`.
    pub principal: Option<String>,
    pub namespace: Option<&'a str>,
    pub source_ip: IpAddr,
    pub destination_port: u16,
    /// `None` at L4: HTTP fields cannot be checked (see `matching`).
    pub http: Option<HttpFacts<'a>>,
}

pub(super) struct HttpFacts<'a> {
    pub method: &'a str,
    pub path: Cow<'a, str>,
    pub host: Cow<'a, str>,
    pub headers: &'a HeaderMap,
}

impl<'a> Facts<'a> {
    pub fn of_request(request: &L7Request<'a>) -> Self {
        let host = if request.host.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(request.host.to_ascii_lowercase())
        } else {
            Cow::Borrowed(request.host)
        };
        Facts {
            http: Some(HttpFacts {
                method: request.method.as_str(),
                path: normalize_path(request.path),
                host,
                headers: request.headers,
            }),
            ..Self::of_peer(
                request.source_identity,
                request.source_ip,
                request.destination_port,
            )
        }
    }

    pub fn of_connection(conn: &TcpConnection<'a>) -> Self {
        Self::of_peer(conn.source_identity, conn.source_ip, conn.destination_port)
    }

    fn of_peer(identity: Option<&'a SpiffeId>, source_ip: IpAddr, destination_port: u16) -> Self {
        Facts {
            principal: identity.map(|id| {
                format!(
                    "{}/ns/{}/sa/{}",
                    id.trust_domain(),
                    id.namespace(),
                    id.service_account()
                )
            }),
            namespace: identity.map(SpiffeId::namespace),
            source_ip,
            destination_port,
            http: None,
        }
    }
}

/// Istio's default path normalisation (`BASE`: RFC 3986 normalisation, as Envoy's
/// `normalize_path`): percent-encoded unreserved characters are decoded (`%61dmin` is
/// `admin`), other escapes get upper-case hex, and `.` / `..` segments are resolved (so
/// `/public/../admin` is `/admin`). Without it a DENY on `/admin` would not see those
/// spellings of it. Slashes are not merged (`//admin` stays), as in Istio's default.
/// Borrowed when there is nothing to do, which is the common case.
pub fn normalize_path(path: &str) -> Cow<'_, str> {
    if !path.starts_with('/') || !(path.contains('%') || path.contains("/.")) {
        return Cow::Borrowed(path);
    }
    let decoded = decode_unreserved(path);
    let has_dot_segment = decoded
        .split('/')
        .skip(1)
        .any(|segment| segment == "." || segment == "..");
    if !has_dot_segment {
        return decoded;
    }
    let segments: Vec<&str> = decoded.split('/').skip(1).collect();
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    let last = segments.len().saturating_sub(1);
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "." | ".." => {
                if *segment == ".." {
                    out.pop();
                }
                // `/a/b/..` is the directory `/a/`: keep the trailing slash.
                if i == last {
                    out.push("");
                }
            }
            other => out.push(other),
        }
    }
    Cow::Owned(format!("/{}", out.join("/")))
}

fn decode_unreserved(path: &str) -> Cow<'_, str> {
    if !path.contains('%') {
        return Cow::Borrowed(path);
    }
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escape {
            Some(byte) if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) => {
                out.push(char::from(byte));
                i += 3;
            }
            Some(byte) => {
                out.push_str(&format!("%{byte:02X}"));
                i += 3;
            }
            None => {
                // Not an escape: copy the character (the path is UTF-8, so find its end).
                let end = (i + 1..=bytes.len())
                    .find(|&end| path.is_char_boundary(end))
                    .unwrap_or(bytes.len());
                out.push_str(&path[i..end]);
                i = end;
            }
        }
    }
    Cow::Owned(out)
}
