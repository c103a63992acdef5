//! Entry points for the cargo-fuzz targets in `fuzz/` (not a stable API).
//!
//! The server's HTTP/2 handling normally runs behind mTLS on a TCP socket; here it runs over any
//! in-memory byte stream with an identity the caller asserts, so a fuzzer can feed raw frames
//! without certificates or sockets.

use std::net::SocketAddr;

use http::{Method, Request};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use crate::error::ServeError;
use crate::request::BadRequest;
use crate::server::{Server, Service};

/// Serves HTTP/2 on `io` as [`Server::serve_connection`] does once the TLS handshake has
/// authenticated the client as `peer_identity`; `local` and `peer` stand in for the socket
/// addresses. The HTTP/2 preface must arrive within the server's handshake timeout.
pub async fn serve_h2<S, IO>(
    server: &Server<S>,
    io: IO,
    peer_identity: certs::SpiffeId,
    local: SocketAddr,
    peer: SocketAddr,
    shutdown: CancellationToken,
) -> Result<(), ServeError>
where
    S: Service,
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let deadline = tokio::time::Instant::now() + server.handshake_timeout();
    server
        .serve_h2(
            io,
            crate::server::Authenticated {
                identity: peer_identity,
                expires: None,
            },
            local,
            peer,
            deadline,
            shutdown,
        )
        .await
}

/// The server's CONNECT validation: `:authority` of an acceptable request as an address.
pub fn validate_connect(
    method: &Method,
    uri: &http::Uri,
    local: SocketAddr,
    check_ip: bool,
) -> Result<SocketAddr, BadRequest> {
    let mut request = Request::new(());
    *request.method_mut() = method.clone();
    *request.uri_mut() = uri.clone();
    crate::request::validate(&request, local, check_ip)
}

/// The `forwarded: for="ip:port"` header as [`crate::InboundRequest::forwarded_for`] reads it.
pub fn parse_forwarded_for(header: &str) -> Option<SocketAddr> {
    crate::request::parse_forwarded_for(header)
}

/// The CONNECT request a client sends for `request`, as [`crate::Pool`] builds it.
pub fn connect_request_to_http(
    request: &crate::ConnectRequest,
) -> Result<Request<()>, crate::TunnelError> {
    request.to_http()
}
