//! The CONNECT request on the wire (DESIGN §3): building it on the client, validating it on the
//! server. Only `:method` and `:authority`, plus optional `forwarded`, `baggage` and
//! `traceparent` headers.

use std::net::{IpAddr, SocketAddr};

use certs::SpiffeId;
use http::{HeaderMap, HeaderValue, Method, Request};

use crate::error::TunnelError;

pub const FORWARDED: &str = "forwarded";
pub const BAGGAGE: &str = "baggage";
pub const TRACEPARENT: &str = "traceparent";

/// What a client asks the peer to connect to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectRequest {
    /// `:authority`: the destination pod's `ip:port`, or towards a waypoint the service
    /// VIP:port the application dialled.
    pub authority: SocketAddr,
    /// Sent as `forwarded: for="ip:port"`: the original source of the connection.
    pub forwarded_for: Option<SocketAddr>,
    pub baggage: Option<String>,
    pub traceparent: Option<String>,
}

impl ConnectRequest {
    pub fn new(authority: SocketAddr) -> Self {
        ConnectRequest {
            authority,
            forwarded_for: None,
            baggage: None,
            traceparent: None,
        }
    }

    pub(crate) fn to_http(&self) -> Result<Request<()>, TunnelError> {
        let mut request = Request::new(());
        *request.method_mut() = Method::CONNECT;
        // Only `ip:port`: an IPv6 zone (`%scope`) means nothing to the peer, and the server
        // refuses an authority carrying one (found by fuzz/hbone_request).
        let authority = SocketAddr::new(self.authority.ip(), self.authority.port());
        // `ip:port` and `[v6]:port` are valid authority-form URIs, so this cannot fail; still,
        // no panics on the data path.
        *request.uri_mut() =
            authority
                .to_string()
                .parse()
                .map_err(|_| TunnelError::InvalidHeader {
                    header: ":authority",
                })?;
        let headers = request.headers_mut();
        if let Some(source) = self.forwarded_for {
            // RFC 7239: the node is quoted because it contains ':' (and '[' for IPv6).
            insert(headers, FORWARDED, &format!("for=\"{source}\""))?;
        }
        if let Some(baggage) = &self.baggage {
            insert(headers, BAGGAGE, baggage)?;
        }
        if let Some(traceparent) = &self.traceparent {
            insert(headers, TRACEPARENT, traceparent)?;
        }
        Ok(request)
    }
}

fn insert(headers: &mut HeaderMap, name: &'static str, value: &str) -> Result<(), TunnelError> {
    let value =
        HeaderValue::from_str(value).map_err(|_| TunnelError::InvalidHeader { header: name })?;
    headers.insert(name, value);
    Ok(())
}

/// A validated inbound CONNECT, as the server hands it to its handler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundRequest {
    /// The identity the client proved in the mTLS handshake.
    pub peer_identity: SpiffeId,
    /// `:authority`, parsed: where the client wants to go.
    pub authority: SocketAddr,
    /// The address the client dialled (on ztunnel: the pod IP and 15008).
    pub local_addr: SocketAddr,
    /// The client's address (the source node, or the source pod with in-pod dialling).
    pub peer_addr: SocketAddr,
    pub forwarded: Option<String>,
    pub baggage: Option<String>,
    pub traceparent: Option<String>,
    /// HTTP/2 stream id, for logs.
    pub stream_id: u32,
}

impl InboundRequest {
    /// The address in `forwarded: for="ip:port"` (the first element), if present and valid.
    pub fn forwarded_for(&self) -> Option<SocketAddr> {
        parse_forwarded_for(self.forwarded.as_deref()?)
    }
}

pub(crate) fn parse_forwarded_for(header: &str) -> Option<SocketAddr> {
    let first = header.split(',').next()?;
    first.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        if !key.trim().eq_ignore_ascii_case("for") {
            return None;
        }
        value.trim().trim_matches('"').parse().ok()
    })
}

/// Why an inbound request is malformed; answered with 400.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadRequest {
    #[error("method {0} is not CONNECT")]
    NotConnect(String),
    #[error("CONNECT without :authority")]
    MissingAuthority,
    #[error(":authority {0:?} has no port")]
    MissingPort(String),
    #[error(":authority {0:?} has an invalid port (must be 1-65535)")]
    BadPort(String),
    #[error(":authority {0:?} is not an IP address and port")]
    NotAnAddress(String),
    #[error(":authority IP {authority} is not the address the client dialled ({local}); the client's view of this workload is stale or the IP belongs to another pod")]
    IpMismatch { authority: IpAddr, local: IpAddr },
}

/// Checks method and `:authority` (and, when `check_ip`, that the authority's IP is the local
/// address the client connected to) and returns the authority.
pub(crate) fn validate<B>(
    request: &Request<B>,
    local: SocketAddr,
    check_ip: bool,
) -> Result<SocketAddr, BadRequest> {
    if request.method() != Method::CONNECT {
        return Err(BadRequest::NotConnect(request.method().to_string()));
    }
    let authority = request
        .uri()
        .authority()
        .ok_or(BadRequest::MissingAuthority)?;
    let text = authority.as_str();
    let not_an_address = || BadRequest::NotAnAddress(text.to_owned());
    if text.contains('@') {
        return Err(not_an_address());
    }
    // Split host and port by hand: `Authority::port()` hides a malformed port as "no port".
    let (host, port) = match text.strip_prefix('[') {
        Some(bracketed) => {
            let (host, rest) = bracketed.split_once(']').ok_or_else(not_an_address)?;
            match rest.strip_prefix(':') {
                Some(port) => (host, port),
                None if rest.is_empty() => return Err(BadRequest::MissingPort(text.to_owned())),
                None => return Err(not_an_address()),
            }
        }
        None => match text.rsplit_once(':') {
            Some((host, port)) => (host, port),
            None => return Err(BadRequest::MissingPort(text.to_owned())),
        },
    };
    let port = match port.parse::<u16>() {
        Ok(0) | Err(_) => return Err(BadRequest::BadPort(text.to_owned())),
        Ok(port) => port,
    };
    let ip: IpAddr = host.parse().map_err(|_| not_an_address())?;
    let ip = ip.to_canonical();
    if check_ip {
        let local = local.ip().to_canonical();
        if ip != local {
            return Err(BadRequest::IpMismatch {
                authority: ip,
                local,
            });
        }
    }
    Ok(SocketAddr::new(ip, port))
}

pub(crate) fn header_string(headers: &HeaderMap, name: &str) -> Option<String> {
    // Informational headers: an unreadable one is dropped rather than failing the tunnel.
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use http::Uri;

    fn request(method: Method, uri: &str) -> Request<()> {
        let mut r = Request::new(());
        *r.method_mut() = method;
        *r.uri_mut() = uri.parse::<Uri>().unwrap();
        r
    }

    #[test]
    fn validation_table() {
        let local: SocketAddr = "10.0.0.5:15008".parse().unwrap();
        let ok = |s: &str| Ok::<SocketAddr, BadRequest>(s.parse().unwrap());
        let cases: Vec<(Method, &str, bool, Result<SocketAddr, BadRequest>)> = vec![
            (Method::CONNECT, "10.0.0.5:8080", true, ok("10.0.0.5:8080")),
            (Method::CONNECT, "10.9.9.9:8080", false, ok("10.9.9.9:8080")),
            (
                Method::CONNECT,
                "10.9.9.9:8080",
                true,
                Err(BadRequest::IpMismatch {
                    authority: "10.9.9.9".parse().unwrap(),
                    local: "10.0.0.5".parse().unwrap(),
                }),
            ),
            (
                Method::GET,
                "http://10.0.0.5:8080/",
                true,
                Err(BadRequest::NotConnect("GET".into())),
            ),
            (
                Method::CONNECT,
                "/",
                true,
                Err(BadRequest::MissingAuthority),
            ),
            (
                Method::CONNECT,
                "10.0.0.5",
                true,
                Err(BadRequest::MissingPort("10.0.0.5".into())),
            ),
            (
                Method::CONNECT,
                "10.0.0.5:0",
                true,
                Err(BadRequest::BadPort("10.0.0.5:0".into())),
            ),
            (
                Method::CONNECT,
                "10.0.0.5:99999",
                true,
                Err(BadRequest::BadPort("10.0.0.5:99999".into())),
            ),
            (
                Method::CONNECT,
                "example.com:80",
                false,
                Err(BadRequest::NotAnAddress("example.com:80".into())),
            ),
            (
                Method::CONNECT,
                "user@10.0.0.5:80",
                true,
                Err(BadRequest::NotAnAddress("user@10.0.0.5:80".into())),
            ),
            (Method::CONNECT, "[fd00::1]:443", false, ok("[fd00::1]:443")),
            // A v4-mapped authority matches a v4 local address.
            (
                Method::CONNECT,
                "[::ffff:10.0.0.5]:80",
                true,
                ok("10.0.0.5:80"),
            ),
        ];
        for (method, uri, check_ip, expected) in cases {
            let got = validate(&request(method.clone(), uri), local, check_ip);
            assert_eq!(got, expected, "{method} {uri} check_ip={check_ip}");
        }
    }

    #[test]
    fn non_numeric_port_is_rejected() {
        // The http crate accepts any port characters in an authority; validation must not.
        let parsed = "10.0.0.5:http".parse::<Uri>();
        if let Ok(uri) = parsed {
            let mut r = Request::new(());
            *r.method_mut() = Method::CONNECT;
            *r.uri_mut() = uri;
            let local: SocketAddr = "10.0.0.5:15008".parse().unwrap();
            assert!(matches!(
                validate(&r, local, true),
                Err(BadRequest::BadPort(_))
            ));
        }
    }

    #[test]
    fn request_carries_only_authority_and_optional_headers() {
        let mut req = ConnectRequest::new("10.1.2.3:80".parse().unwrap());
        let plain = req.to_http().unwrap();
        assert_eq!(plain.method(), Method::CONNECT);
        assert_eq!(plain.uri().to_string(), "10.1.2.3:80");
        assert!(plain.headers().is_empty());

        req.forwarded_for = Some("[fd00::7]:5555".parse().unwrap());
        req.baggage = Some("k8s.namespace.name=shop".into());
        req.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
        let full = req.to_http().unwrap();
        assert_eq!(full.headers()[FORWARDED], "for=\"[fd00::7]:5555\"");
        assert_eq!(full.headers()[BAGGAGE], "k8s.namespace.name=shop");
        assert_eq!(full.headers().len(), 3);

        req.baggage = Some("bad\nvalue".into());
        assert!(matches!(
            req.to_http(),
            Err(TunnelError::InvalidHeader { header: BAGGAGE })
        ));
    }

    #[test]
    fn scoped_v6_authority_is_sent_without_its_zone() {
        // Regression (fuzz/hbone_request): `[fe80::1%3]:80` went on the wire and every server
        // refused it as not an address.
        let destination = SocketAddr::V6(std::net::SocketAddrV6::new(
            "fe80::1".parse().unwrap(),
            80,
            7,
            3,
        ));
        let request = ConnectRequest::new(destination).to_http().unwrap();
        assert_eq!(request.uri().to_string(), "[fe80::1]:80");
        assert_eq!(
            validate(&request, destination, true),
            Ok("[fe80::1]:80".parse().unwrap())
        );
    }

    #[test]
    fn forwarded_for_parsing() {
        let cases = [
            ("for=\"10.0.0.1:1234\"", Some("10.0.0.1:1234")),
            ("for=\"[fd00::1]:80\";proto=https", Some("[fd00::1]:80")),
            (
                "proto=http;For=10.0.0.2:9, for=\"10.0.0.3:1\"",
                Some("10.0.0.2:9"),
            ),
            ("for=unknown", None),
            ("by=10.0.0.1:1", None),
        ];
        for (header, expected) in cases {
            assert_eq!(
                parse_forwarded_for(header),
                expected.map(|s| s.parse().unwrap()),
                "{header}"
            );
        }
    }
}
