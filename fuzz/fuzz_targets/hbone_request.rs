//! HBONE CONNECT validation (hbone/src/request.rs): the server's check of `:method` and
//! `:authority` on every tunnel request, the `forwarded` header it logs, and the client's
//! request building, which the server must accept.
//!
//! Contract: never panics; an accepted request is a CONNECT whose authority is a canonical IP
//! (no v4-mapped v6) with a non-zero port, equal to the dialled IP when that is checked, and the
//! accepted address is itself accepted again (idempotent); a parsed `forwarded: for=` address
//! parses back from its canonical form; every request the client builds for a real destination
//! (port ≠ 0) passes the server's validation with the same destination, and its `forwarded`
//! header gives back the source it was built with.
#![no_main]

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use hbone::fuzzing::{connect_request_to_http, parse_forwarded_for, validate_connect};
use hbone::ConnectRequest;
use http::{Method, Uri};
use libfuzzer_sys::{arbitrary, fuzz_target};

#[derive(Debug, arbitrary::Arbitrary)]
struct Address {
    v6: bool,
    octets: [u8; 16],
    port: u16,
    flowinfo: u32,
    scope_id: u32,
}

impl Address {
    fn socket_addr(&self) -> SocketAddr {
        let o = self.octets;
        if self.v6 {
            SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(o),
                self.port,
                self.flowinfo,
                self.scope_id,
            ))
        } else {
            SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::new(o[0], o[1], o[2], o[3]),
                self.port,
            ))
        }
    }
}

#[derive(Debug, arbitrary::Arbitrary)]
struct Input<'a> {
    method: &'a [u8],
    uri: &'a str,
    local: Address,
    check_ip: bool,
    forwarded: &'a str,
    client_authority: Address,
    client_source: Option<Address>,
    baggage: Option<String>,
    traceparent: Option<String>,
}

fn check_server_side(method: &Method, uri: &Uri, local: SocketAddr, check_ip: bool) {
    let Ok(authority) = validate_connect(method, uri, local, check_ip) else {
        return;
    };
    assert_eq!(method, Method::CONNECT);
    assert_ne!(authority.port(), 0);
    assert_eq!(authority.ip(), authority.ip().to_canonical(), "{authority}");
    let text = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    assert!(!text.contains('@'), "user info accepted: {text:?}");
    if check_ip {
        assert_eq!(authority.ip(), local.ip().to_canonical());
    }
    // The address handed to the handler, written back as an authority, is accepted as is.
    let again: Uri = authority
        .to_string()
        .parse()
        .expect("a socket address is an authority");
    assert_eq!(
        validate_connect(&Method::CONNECT, &again, local, check_ip),
        Ok(authority)
    );
}

fn check_forwarded(header: &str) {
    if let Some(source) = parse_forwarded_for(header) {
        let canonical = format!("for=\"{source}\"");
        assert_eq!(parse_forwarded_for(&canonical), Some(source), "{header:?}");
    }
}

fn check_client_side(input: &Input<'_>) {
    let authority = input.client_authority.socket_addr();
    let request = ConnectRequest {
        authority,
        forwarded_for: input.client_source.as_ref().map(Address::socket_addr),
        baggage: input.baggage.clone(),
        traceparent: input.traceparent.clone(),
    };
    let Ok(http) = connect_request_to_http(&request) else {
        return;
    };
    assert_eq!(http.method(), Method::CONNECT);
    if authority.port() != 0 {
        // What the client sends to a pod, that pod's server accepts (the client dialled the
        // authority's IP, so the IP check holds).
        let expected = SocketAddr::new(authority.ip().to_canonical(), authority.port());
        assert_eq!(
            validate_connect(http.method(), http.uri(), authority, true),
            Ok(expected),
            "client request {:?} refused by the server",
            http.uri()
        );
    }
    if let Some(source) = request.forwarded_for {
        let header = http
            .headers()
            .get("forwarded")
            .and_then(|v| v.to_str().ok())
            .expect("forwarded header set");
        let parsed = parse_forwarded_for(header);
        assert_eq!(
            parsed.map(strip_v6_extras),
            Some(strip_v6_extras(source)),
            "{header:?}"
        );
    }
}

/// `SocketAddrV6`'s flow label is not part of its text form.
fn strip_v6_extras(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => {
            SocketAddr::V6(SocketAddrV6::new(*v6.ip(), v6.port(), 0, v6.scope_id()))
        }
        v4 => v4,
    }
}

fuzz_target!(|input: Input<'_>| {
    let local = input.local.socket_addr();
    if let (Ok(method), Ok(uri)) = (Method::from_bytes(input.method), input.uri.parse::<Uri>()) {
        check_server_side(&method, &uri, local, input.check_ip);
    }
    check_forwarded(input.forwarded);
    check_client_side(&input);
});
