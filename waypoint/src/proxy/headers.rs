//! Header rules of a proxy hop: what never crosses it (hop-by-hop headers, RFC 9110 §7.6.1),
//! and how a request changes when the upstream speaks another HTTP version than the client.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Uri, Version};

use crate::destination::UpstreamProtocol;
use crate::upstream::Body;

/// Headers that describe one connection, never the message (plus those the `Connection`
/// header names).
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::TE,
    header::UPGRADE,
];

pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// Whether the request asks to switch protocols (WebSocket and other HTTP/1.1 upgrades).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// Removes hop-by-hop headers. `keep_upgrade` keeps `Connection: upgrade` and `Upgrade` for a
/// request that is being upgraded end to end; `TE: trailers` survives (gRPC needs it).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in named {
        if !(keep_upgrade && name == header::UPGRADE) {
            headers.remove(name);
        }
    }
    let trailers = headers
        .get(header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    for name in HOP_BY_HOP {
        if keep_upgrade && (name == header::CONNECTION || name == header::UPGRADE) {
            continue;
        }
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// The request's authority: `:authority` of HTTP/2, else the Host header.
pub fn authority(uri: &Uri, headers: &HeaderMap) -> Option<String> {
    uri.authority().map(|a| a.as_str().to_owned()).or_else(|| {
        headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
    })
}

/// Splits `host[:port]` (brackets kept off an IPv6 literal).
pub fn split_host_port(authority: &str) -> (&str, Option<u16>) {
    if let Some(rest) = authority.strip_prefix('[') {
        if let Some((host, after)) = rest.split_once(']') {
            let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
            return (host, port);
        }
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, port.parse().ok()),
        _ => (authority, None),
    }
}

/// Rewrites the request for the upstream's HTTP version: HTTP/1.1 gets an origin-form URI and
/// a Host header; HTTP/2 gets the authority in the URI (hyper sends it as `:authority`).
pub fn for_upstream(request: &mut Request<Body>, protocol: UpstreamProtocol, authority: &str) {
    let path_and_query = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    match protocol {
        UpstreamProtocol::Http1 => {
            *request.version_mut() = Version::HTTP_11;
            if let Ok(uri) = path_and_query.parse() {
                *request.uri_mut() = uri;
            }
            if let Ok(host) = HeaderValue::from_str(authority) {
                request.headers_mut().insert(header::HOST, host);
            }
        }
        UpstreamProtocol::Http2 => {
            *request.version_mut() = Version::HTTP_2;
            let uri = format!("http://{authority}{path_and_query}");
            if let Ok(uri) = uri.parse() {
                *request.uri_mut() = uri;
            }
            request.headers_mut().remove(header::HOST);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_stop_here_but_te_trailers_and_upgrades_pass() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-hop"),
        );
        headers.insert("x-hop", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert("x-app", HeaderValue::from_static("kept"));
        strip_hop_by_hop(&mut headers, false);
        assert!(headers.get("x-hop").is_none());
        assert!(headers.get(header::CONNECTION).is_none());
        assert!(headers.get("keep-alive").is_none());
        assert_eq!(headers[header::TE], "trailers");
        assert_eq!(headers["x-app"], "kept");

        let mut upgrade = HeaderMap::new();
        upgrade.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        upgrade.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&upgrade));
        strip_hop_by_hop(&mut upgrade, true);
        assert_eq!(upgrade[header::UPGRADE], "websocket");
        assert_eq!(upgrade[header::CONNECTION], "upgrade");
    }

    #[test]
    fn authorities_split_into_host_and_port() {
        assert_eq!(split_host_port("echo"), ("echo", None));
        assert_eq!(split_host_port("echo:8080"), ("echo", Some(8080)));
        assert_eq!(split_host_port("[fd00::1]:80"), ("fd00::1", Some(80)));
        assert_eq!(split_host_port("fd00::1"), ("fd00::1", None));
    }
}
