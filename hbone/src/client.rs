//! One client-side HBONE connection: mTLS over a TCP stream the caller dialled, HTTP/2 on top,
//! a background task that drives it and sends keep-alive PINGs, and CONNECT requests over it.
//! The pool ([`crate::Pool`]) builds on this; it can also be used alone.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;
use h2::client::SendRequest;
use h2::Reason;
use http::StatusCode;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tracing::{debug, warn, Instrument};

use crate::config::{ClientConfig, H2Settings};
use crate::error::{handshake_failure_in, ConnectError, TunnelError};
use crate::keepalive::{keep_alive, KeepAliveFailure};
use crate::read_ahead::ReadAhead;
use crate::request::ConnectRequest;
use crate::stream::{H2Stream, StreamSlot};
use crate::tap::{Tapped, TlsErrorSlot};

/// An established HBONE connection. Cheap to clone; all clones share the connection. The
/// connection closes once every clone is dropped and its streams have ended.
#[derive(Clone, Debug)]
pub struct Connection {
    send: SendRequest<Bytes>,
    state: Arc<ConnectionState>,
}

#[derive(Debug)]
pub(crate) struct ConnectionState {
    pub(crate) id: u64,
    pub(crate) peer: SocketAddr,
    /// Set when the driver task ended or the peer sent GOAWAY: no new streams.
    closed: AtomicBool,
    /// The first TLS error, which h2 would otherwise report only as text.
    tls_error: TlsErrorSlot,
    /// Streams the pool has handed out on this connection.
    active: AtomicUsize,
    /// When the first of the two certificates (ours, the peer's) expires: no new streams after
    /// that (see `expiry`).
    expires_at: Mutex<Option<std::time::SystemTime>>,
    idle_since: Mutex<Instant>,
}

impl Connection {
    /// Runs the TLS and HTTP/2 handshakes over `tcp` and starts the connection's task.
    /// `tls` decides which identity we present and which server identity we accept (see
    /// `certs::tls::client_config`). `id` only labels logs.
    pub async fn handshake(
        tcp: TcpStream,
        tls: Arc<rustls::ClientConfig>,
        config: &ClientConfig,
        id: u64,
    ) -> Result<Connection, ConnectError> {
        let peer = tcp
            .peer_addr()
            .map_err(|e| ConnectError::NotConnected(Arc::new(e)))?;
        // Latency matters more than packet count for tunnelled request/response traffic.
        let _ = tcp.set_nodelay(true);
        let tls_stream = TlsConnector::from(tls)
            // SNI is disabled in the config; the name only satisfies the API.
            .connect(ServerName::IpAddress(peer.ip().into()), ReadAhead::new(tcp))
            .await
            .map_err(|e| ConnectError::Handshake {
                address: peer,
                failure: certs::HandshakeFailure::classify_io(&e),
            })?;
        let peer_expiry = crate::expiry::leaf_not_after(tls_stream.get_ref().1.peer_certificates());
        let tls_error = TlsErrorSlot::default();
        let (send, connection) = client_builder(&config.h2)
            .handshake::<_, Bytes>(Tapped::new(tls_stream, tls_error.clone()))
            .await
            .map_err(|e| ConnectError::Http2 {
                address: peer,
                detail: e.to_string(),
            })?;
        let state = Arc::new(ConnectionState {
            id,
            peer,
            closed: AtomicBool::new(false),
            tls_error,
            active: AtomicUsize::new(0),
            expires_at: Mutex::new(peer_expiry),
            idle_since: Mutex::new(Instant::now()),
        });
        let span = tracing::debug_span!("hbone_client_connection", connection = id, %peer);
        config
            .tasks
            .spawn(drive(connection, config.clone(), state.clone()).instrument(span));
        debug!(connection = id, %peer, "hbone connection established");
        Ok(Connection { send, state })
    }

    /// No new streams after `deadline` (e.g. when our own certificate expires).
    pub fn limit_lifetime(&self, deadline: std::time::SystemTime) {
        let mut expires = self
            .state
            .expires_at
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *expires = crate::expiry::earliest(*expires, Some(deadline));
    }

    /// When this connection stops taking new streams because a certificate expires.
    pub fn expires_at(&self) -> Option<std::time::SystemTime> {
        *self
            .state
            .expires_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The address of the peer (the destination node's HBONE address).
    pub fn peer(&self) -> SocketAddr {
        self.state.peer
    }

    /// Sends a CONNECT and waits for the answer: a stream on 200, otherwise an error naming
    /// the status and what it means.
    pub async fn open(&self, request: &ConnectRequest) -> Result<H2Stream, TunnelError> {
        let http_request = request.to_http()?;
        let mut send = self
            .send
            .clone()
            .ready()
            .await
            .map_err(|e| self.stream_error(e, true))?;
        let (response, send_stream) = send
            .send_request(http_request, false)
            .map_err(|e| self.stream_error(e, true))?;
        let response = response.await.map_err(|e| {
            let retryable = e.is_go_away() || e.reason() == Some(Reason::REFUSED_STREAM);
            self.stream_error(e, retryable)
        })?;
        if response.status() != StatusCode::OK {
            // Dropping both halves resets the stream; nothing more is coming on it.
            return Err(TunnelError::Refused {
                peer: self.state.peer,
                authority: request.authority,
                status: response.status(),
            });
        }
        Ok(H2Stream::new(send_stream, response.into_body()))
    }

    fn stream_error(&self, error: h2::Error, retryable: bool) -> TunnelError {
        if let Some(failure) = self.state.handshake_failure(&error) {
            return TunnelError::Connect(ConnectError::Handshake {
                address: self.state.peer,
                failure,
            });
        }
        if retryable {
            // The peer is going away; stop handing this connection out.
            self.state.closed.store(true, Ordering::Release);
        }
        TunnelError::Stream {
            peer: self.state.peer,
            retryable,
            source: error,
        }
    }

    /// Whether new streams may be opened: the connection is alive and the peer has not sent
    /// GOAWAY. Does not wait.
    pub fn is_open(&self) -> bool {
        if self.state.closed.load(Ordering::Acquire) {
            return false;
        }
        if self
            .expires_at()
            .is_some_and(|t| t <= std::time::SystemTime::now())
        {
            return false;
        }
        // A fresh handle has no pending stream of its own, so readiness only reflects the
        // connection: an error means GOAWAY was received or the connection failed.
        let mut probe = self.send.clone();
        let mut cx = Context::from_waker(Waker::noop());
        if let Poll::Ready(Err(_)) = probe.poll_ready(&mut cx) {
            self.state.closed.store(true, Ordering::Release);
            return false;
        }
        true
    }

    /// Streams the pool has open on this connection.
    pub(crate) fn active_streams(&self) -> usize {
        self.state.active.load(Ordering::Acquire)
    }

    pub(crate) fn idle_for(&self, now: Instant) -> Option<std::time::Duration> {
        if self.active_streams() > 0 {
            return None;
        }
        let since = *self
            .state
            .idle_since
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Some(now.saturating_duration_since(since))
    }

    pub(crate) fn id(&self) -> u64 {
        self.state.id
    }

    /// Takes one stream slot if fewer than `cap` (and fewer than the peer allows) are in use.
    pub(crate) fn try_reserve(&self, cap: usize) -> Option<Slot> {
        let limit = cap.min(self.send.current_max_send_streams());
        let mut current = self.state.active.load(Ordering::Acquire);
        loop {
            if current >= limit {
                return None;
            }
            match self.state.active.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    return Some(Slot {
                        state: self.state.clone(),
                    })
                }
                Err(actual) => current = actual,
            }
        }
    }
}

impl ConnectionState {
    /// The handshake failure behind a transport error, if it was one.
    fn handshake_failure(&self, error: &h2::Error) -> Option<certs::HandshakeFailure> {
        if !error.is_io() {
            return None;
        }
        match self.tls_error.get() {
            Some(tls) => Some(certs::HandshakeFailure::classify(&tls)),
            None => handshake_failure_in(error),
        }
    }
}

/// One stream's claim on a pooled connection, released when the stream is dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    state: Arc<ConnectionState>,
}

impl StreamSlot for Slot {}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.state.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            let mut since = self
                .state
                .idle_since
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            *since = Instant::now();
        }
    }
}

fn client_builder(h2: &H2Settings) -> h2::client::Builder {
    let mut builder = h2::client::Builder::new();
    builder
        .initial_window_size(h2.stream_window)
        .initial_connection_window_size(h2.connection_window)
        .max_frame_size(h2.max_frame_size)
        .max_send_buffer_size(h2.max_send_buffer)
        .enable_push(false);
    builder
}

type ClientH2 =
    h2::client::Connection<Tapped<tokio_rustls::client::TlsStream<ReadAhead<TcpStream>>>, Bytes>;

/// Drives the connection until it closes, PINGing the peer if configured.
async fn drive(mut connection: ClientH2, config: ClientConfig, state: Arc<ConnectionState>) {
    let ping_pong = config
        .keepalive
        .clone()
        .and_then(|settings| connection.ping_pong().map(|pp| (pp, settings)));
    let outcome = match ping_pong {
        None => connection.await.map_err(Ended::Http2),
        Some((ping_pong, settings)) => {
            tokio::select! {
                biased;
                result = &mut connection => result.map_err(Ended::Http2),
                failure = keep_alive(ping_pong, settings) => Err(Ended::KeepAlive(failure)),
            }
        }
    };
    state.closed.store(true, Ordering::Release);
    match outcome {
        Ok(()) => debug!(connection = state.id, peer = %state.peer, "hbone connection closed"),
        Err(Ended::Http2(e)) if e.is_go_away() && e.reason() == Some(Reason::NO_ERROR) => {
            debug!(connection = state.id, peer = %state.peer, "hbone connection closed by peer (GOAWAY)")
        }
        Err(Ended::Http2(e)) => {
            let error = match state.handshake_failure(&e) {
                Some(failure) => failure.to_string(),
                None => e.to_string(),
            };
            warn!(connection = state.id, peer = %state.peer, %error, "hbone connection failed")
        }
        Err(Ended::KeepAlive(failure)) => {
            // Dropping the connection fails its streams instead of leaving them hanging.
            warn!(connection = state.id, peer = %state.peer, error = %failure, "hbone keep-alive failed, closing the connection: the peer node or the network path to it is gone")
        }
    }
}

enum Ended {
    Http2(h2::Error),
    KeepAlive(KeepAliveFailure),
}
