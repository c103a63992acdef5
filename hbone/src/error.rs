//! Errors of the tunnel client and server. Each names the cause and what to check, because they
//! end up in access logs read by operators.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use certs::HandshakeFailure;
use http::StatusCode;

/// Why an HBONE connection (TCP + mTLS + HTTP/2) to a peer could not be established. `Clone`,
/// because one failed dial is reported to every request that waited for it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot reach {address}: {source}; check that the destination node is up and accepts connections on port {}", .address.port())]
    Dial {
        address: SocketAddr,
        #[source]
        source: Arc<io::Error>,
    },
    #[error("no HBONE connection to {address} within {timeout:?} (TCP, TLS and HTTP/2 handshakes); the destination node may be overloaded or packets to it are dropped")]
    Timeout {
        address: SocketAddr,
        timeout: Duration,
    },
    #[error("TLS handshake with {address} failed: {failure}")]
    Handshake {
        address: SocketAddr,
        failure: HandshakeFailure,
    },
    #[error("HTTP/2 handshake with {address} failed: {detail}; the peer does not speak HBONE")]
    Http2 { address: SocketAddr, detail: String },
    #[error("the dialler returned a socket that is not connected: {0}")]
    NotConnected(#[source] Arc<io::Error>),
    #[error("cannot build the TLS client configuration: {0}")]
    TlsConfig(String),
    #[error("the certificate given for source identity {expected} is for {actual}; refusing to connect as the wrong workload")]
    CertificateMismatch { expected: String, actual: String },
    #[error("the connection attempt to {address} was abandoned before it finished")]
    Abandoned { address: SocketAddr },
    /// Our own certificate is past its validity, or expires before the connection can be
    /// used: peers would refuse it. The certificate manager is renewing it (is the CA up?).
    #[error("the certificate of {identity} has expired; no tunnel can be opened until the CA renews it (is ambit-ca reachable?)")]
    CertificateExpired { identity: String },
}

/// Why opening a tunnel failed.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The peer answered the CONNECT with a status other than 200.
    #[error("{peer} answered the tunnel to {authority} with {status}: {}", status_meaning(*.status))]
    Refused {
        peer: SocketAddr,
        authority: SocketAddr,
        status: StatusCode,
    },
    #[error("the {header} header value is not valid in HTTP/2 (must be visible ASCII)")]
    InvalidHeader { header: &'static str },
    /// The stream failed before the response arrived. `retryable` means the peer did not
    /// process it (GOAWAY, refused stream), so another connection may be tried.
    #[error("the tunnel request to {peer} failed: {source}")]
    Stream {
        peer: SocketAddr,
        retryable: bool,
        #[source]
        source: h2::Error,
    },
}

impl TunnelError {
    /// The status the peer answered, if it answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            TunnelError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the request never reached the peer's application and may be sent elsewhere.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            TunnelError::Stream {
                retryable: true,
                ..
            }
        )
    }
}

/// What a CONNECT response status means for the operator (DESIGN §3).
pub fn status_meaning(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "the destination refused the request as malformed, or its :authority IP is not an address of the destination (stale endpoint? pod IP moved to another node?)",
        401 => "denied by the destination's authorization policy",
        503 => "the destination node could not reach the workload (not listening on that port, not ready, or gone)",
        _ => "unexpected status from the destination; it may not be an HBONE peer",
    }
}

/// Why a server-side connection ended abnormally (for logs; never sent to the peer).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot read the socket's addresses: {0}")]
    Socket(#[source] io::Error),
    #[error("TLS handshake with {peer} failed: {failure}")]
    Handshake {
        peer: SocketAddr,
        failure: HandshakeFailure,
    },
    #[error("handshake with {peer} did not finish within {timeout:?}")]
    HandshakeTimeout { peer: SocketAddr, timeout: Duration },
    #[error("client {peer} opened no stream within {timeout:?} of its handshake; closed (an idle connection nobody uses, or a flood)")]
    NoStream { peer: SocketAddr, timeout: Duration },
    #[error("client {peer} has no usable SPIFFE identity: {detail}")]
    PeerIdentity { peer: SocketAddr, detail: String },
    #[error("HTTP/2 with {peer} failed: {source}")]
    Http2 {
        peer: SocketAddr,
        #[source]
        source: h2::Error,
    },
    #[error("{peer} did not answer keep-alive PINGs within {timeout:?}; the peer or the network path is gone")]
    KeepAliveTimeout { peer: SocketAddr, timeout: Duration },
}

/// A handshake failure hidden in an h2 transport error, if that is what it is. In TLS 1.3 a
/// server refuses the client's certificate after the client considers the handshake done, so
/// the refusal surfaces on the first read, inside HTTP/2.
pub(crate) fn handshake_failure_in(error: &h2::Error) -> Option<HandshakeFailure> {
    let io = error.get_io()?;
    match HandshakeFailure::classify_io(io) {
        HandshakeFailure::Other(_) => None,
        failure => Some(failure),
    }
}
