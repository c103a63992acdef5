//! The HBONE server: accepts mTLS connections, validates each CONNECT and hands it to a
//! [`Service`] — usually [`crate::Forward`], which asks a [`crate::Handler`] for an upstream,
//! answers 200 only once that upstream is connected, and copies bytes until both directions
//! end.
//!
//! Shutdown is graceful: on the signal the server stops accepting, sends GOAWAY on every
//! connection and lets in-flight streams finish until the drain deadline.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::RecvStream;
use http::{Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::config::ServerConfig;
use crate::error::ServeError;
use crate::keepalive::{keep_alive, KeepAliveFailure};
use crate::read_ahead::ReadAhead;
use crate::request::{header_string, validate, InboundRequest, BAGGAGE, FORWARDED, TRACEPARENT};
use crate::stream::{h2_to_io, H2Stream};

/// Receives every valid CONNECT. Low-level: it must answer through the [`Responder`]. The
/// waypoint implements this to read HTTP inside the tunnel; ztunnel uses [`crate::Forward`].
pub trait Service: Send + Sync + 'static {
    fn serve(
        &self,
        request: InboundRequest,
        responder: Responder,
    ) -> impl Future<Output = ()> + Send;
}

/// The answer to a CONNECT. Dropping it unanswered answers 503, so a handler that fails
/// (or panics) still gives the client a status.
pub struct Responder {
    respond: Option<SendResponse<Bytes>>,
    body: Option<RecvStream>,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("answered", &self.respond.is_none())
            .finish()
    }
}

impl Responder {
    /// Answers 200 and returns the tunnel.
    pub fn accept(mut self) -> io::Result<H2Stream> {
        let (Some(mut respond), Some(body)) = (self.respond.take(), self.body.take()) else {
            return Err(io::Error::other("CONNECT already answered"));
        };
        let send = respond
            .send_response(response(StatusCode::OK), false)
            .map_err(h2_to_io)?;
        Ok(H2Stream::new(send, body))
    }

    /// Answers with the refusal's status and ends the stream.
    pub fn refuse(mut self, refusal: &Refusal) {
        self.answer(refusal.status.code());
    }

    fn answer(&mut self, status: StatusCode) {
        if let Some(mut respond) = self.respond.take() {
            // The client may have gone already; then there is nobody to tell.
            let _ = respond.send_response(response(status), true);
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.answer(StatusCode::SERVICE_UNAVAILABLE);
    }
}

fn response(status: StatusCode) -> Response<()> {
    let mut response = Response::new(());
    *response.status_mut() = status;
    response
}

/// The statuses a CONNECT may be refused with (DESIGN §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalStatus {
    /// 400: malformed request or `:authority` not acceptable.
    BadRequest,
    /// 401: denied by authorization policy.
    Unauthorized,
    /// 503: the upstream could not be reached.
    Unavailable,
}

impl RefusalStatus {
    pub fn code(self) -> StatusCode {
        match self {
            RefusalStatus::BadRequest => StatusCode::BAD_REQUEST,
            RefusalStatus::Unauthorized => StatusCode::UNAUTHORIZED,
            RefusalStatus::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// Why a CONNECT was refused. The reason is logged here, never sent to the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: RefusalStatus,
    pub reason: String,
}

impl Refusal {
    pub fn bad_request(reason: impl Into<String>) -> Self {
        Refusal {
            status: RefusalStatus::BadRequest,
            reason: reason.into(),
        }
    }

    pub fn denied(reason: impl Into<String>) -> Self {
        Refusal {
            status: RefusalStatus::Unauthorized,
            reason: reason.into(),
        }
    }

    pub fn unavailable(reason: impl Into<String>) -> Self {
        Refusal {
            status: RefusalStatus::Unavailable,
            reason: reason.into(),
        }
    }
}

/// An HBONE server for one listener (or for connections accepted elsewhere).
pub struct Server<S> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for Server<S> {
    fn clone(&self) -> Self {
        Server {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<S> {
    config: ServerConfig,
    tls: TlsAcceptor,
    service: S,
}

impl<H: crate::Handler> Server<crate::Forward<H>> {
    /// A server that forwards each tunnel to the upstream `handler` connects.
    pub fn forwarding(config: ServerConfig, tls: rustls::ServerConfig, handler: H) -> Self {
        let forward = crate::Forward::new(handler, &config);
        Server::new(config, tls, forward)
    }
}

impl<S: Service> Server<S> {
    /// `tls` is normally `certs::tls::server_config(..)`: TLS 1.3, ALPN h2, client
    /// certificates of our trust domain required.
    pub fn new(config: ServerConfig, tls: rustls::ServerConfig, service: S) -> Self {
        Server {
            inner: Arc::new(Inner {
                config,
                tls: TlsAcceptor::from(Arc::new(tls)),
                service,
            }),
        }
    }

    pub(crate) fn handshake_timeout(&self) -> Duration {
        self.inner.config.handshake_timeout
    }

    /// Accepts connections until `shutdown` fires, then drains: every connection gets GOAWAY
    /// and its in-flight streams run until they finish or the drain timeout passes. Returns
    /// when all connections have closed.
    pub async fn serve(&self, listener: TcpListener, shutdown: CancellationToken) {
        self.serve_placed(listener, shutdown, None).await
    }

    /// [`Server::serve`], with each connection served on one of `workers` (the least loaded)
    /// from its TLS handshake to its end, together with every task its streams spawn.
    pub async fn serve_on(
        &self,
        listener: TcpListener,
        shutdown: CancellationToken,
        workers: &runtime::Workers,
    ) {
        self.serve_placed(listener, shutdown, Some(workers)).await
    }

    async fn serve_placed(
        &self,
        listener: TcpListener,
        shutdown: CancellationToken,
        workers: Option<&runtime::Workers>,
    ) {
        let local = listener.local_addr().ok();
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        // Over the limit the connection is closed before any TLS work.
                        let Ok(permit) = self.inner.config.limiter.try_acquire(peer.ip()) else {
                            continue;
                        };
                        let server = self.clone();
                        let token = shutdown.child_token();
                        let Some(workers) = workers else {
                            connections.spawn(async move {
                                let _permit = permit;
                                log_if_failed(server.serve_connection(tcp, token).await);
                            });
                            continue;
                        };
                        let placement = workers.place();
                        let handle = placement.handle.clone();
                        connections.spawn_on(async move {
                            let _permit = permit;
                            let _placement = placement;
                            // The socket moves to the worker's own I/O driver: left registered
                            // with the accepting runtime's, every readiness event would be a
                            // cross-thread wake-up.
                            let served = match tcp.into_std().and_then(TcpStream::from_std) {
                                Ok(tcp) => server.serve_connection(tcp, token).await,
                                Err(e) => Err(ServeError::Socket(e)),
                            };
                            log_if_failed(served);
                        }, &handle);
                    }
                    Err(e) => {
                        // Usually out of file descriptors; back off instead of spinning.
                        warn!(listener = ?local, error = %e, "hbone accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        drop(listener);
        info!(listener = ?local, connections = connections.len(), "hbone server draining");
        while connections.join_next().await.is_some() {}
        info!(listener = ?local, "hbone server stopped");
    }

    /// Serves one accepted TCP connection until it closes. On `shutdown` it sends GOAWAY and
    /// keeps serving the streams already open for up to the drain timeout.
    pub async fn serve_connection(
        &self,
        tcp: TcpStream,
        shutdown: CancellationToken,
    ) -> Result<(), ServeError> {
        let peer = tcp.peer_addr().map_err(ServeError::Socket)?;
        let local = tcp.local_addr().map_err(ServeError::Socket)?;
        let _ = tcp.set_nodelay(true);
        let config = &self.inner.config;
        // One deadline for the TLS handshake and the HTTP/2 preface together.
        let handshake_deadline = tokio::time::Instant::now() + config.handshake_timeout;
        let handshake = async {
            let tls = self
                .inner
                .tls
                .accept(ReadAhead::new(tcp))
                .await
                .map_err(|e| ServeError::Handshake {
                    peer,
                    failure: certs::HandshakeFailure::classify_io(&e),
                })?;
            let identity = certs::tls::peer_identity(tls.get_ref().1).map_err(|e| {
                ServeError::PeerIdentity {
                    peer,
                    detail: e.to_string(),
                }
            })?;
            Ok::<_, ServeError>((identity, tls))
        };
        let (identity, tls) = match tokio::time::timeout_at(handshake_deadline, handshake).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(ServeError::HandshakeTimeout {
                    peer,
                    timeout: config.handshake_timeout,
                })
            }
        };
        let client = Authenticated {
            expires: crate::expiry::leaf_not_after(tls.get_ref().1.peer_certificates()),
            identity,
        };
        self.serve_h2(tls, client, local, peer, handshake_deadline, shutdown)
            .await
    }

    /// The part of [`Server::serve_connection`] after mTLS: HTTP/2 on `io` (already
    /// authenticated as `identity`) until it closes. Generic over the byte stream so that
    /// the fuzz targets can drive it in memory.
    pub(crate) async fn serve_h2<IO>(
        &self,
        io: IO,
        client: Authenticated,
        local: SocketAddr,
        peer: SocketAddr,
        handshake_deadline: tokio::time::Instant,
        shutdown: CancellationToken,
    ) -> Result<(), ServeError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let config = &self.inner.config;
        let Authenticated {
            identity,
            expires: peer_expires,
        } = client;
        let handshake = server_builder(config).handshake::<_, Bytes>(io);
        let mut connection = match tokio::time::timeout_at(handshake_deadline, handshake).await {
            Ok(result) => result.map_err(|source| ServeError::Http2 { peer, source })?,
            Err(_) => {
                return Err(ServeError::HandshakeTimeout {
                    peer,
                    timeout: config.handshake_timeout,
                })
            }
        };
        let span = tracing::debug_span!("hbone_server_connection", %peer, %local, peer_identity = %identity);
        async move {
            debug!("hbone connection accepted");
            let ping_pong = config
                .keepalive
                .clone()
                .and_then(|settings| connection.ping_pong().map(|pp| (pp, settings)));
            let keepalive = async move {
                match ping_pong {
                    Some((ping_pong, settings)) => keep_alive(ping_pong, settings).await,
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(keepalive);
            let drain = tokio::time::sleep(Duration::ZERO);
            tokio::pin!(drain);
            let mut draining = false;
            let first_stream = tokio::time::sleep(config.first_stream_timeout);
            tokio::pin!(first_stream);
            // When the peer's certificate expires, it may open no more tunnels here.
            let expiry = tokio::time::sleep(
                peer_expires
                    .map(|t| crate::expiry::time_left(t, std::time::SystemTime::now()))
                    .unwrap_or(Duration::from_secs(365 * 24 * 3600)),
            );
            tokio::pin!(expiry);
            let mut streams_seen = false;
            loop {
                tokio::select! {
                    biased;
                    _ = &mut first_stream, if !streams_seen => {
                        return Err(ServeError::NoStream { peer, timeout: config.first_stream_timeout });
                    }
                    _ = &mut expiry, if !draining && peer_expires.is_some() => {
                        info!("the peer's certificate expired: no new tunnels on this connection (GOAWAY)");
                        connection.graceful_shutdown();
                        draining = true;
                        drain.as_mut().reset(tokio::time::Instant::now() + config.drain_timeout);
                    }
                    _ = shutdown.cancelled(), if !draining => {
                        debug!("sending GOAWAY");
                        connection.graceful_shutdown();
                        draining = true;
                        drain.as_mut().reset(tokio::time::Instant::now() + config.drain_timeout);
                    }
                    _ = &mut drain, if draining => {
                        warn!(drain_timeout_ms = config.drain_timeout.as_millis() as u64, "drain deadline passed; closing hbone connection with streams still open");
                        return Ok(());
                    }
                    failure = &mut keepalive => {
                        return Err(match failure {
                            KeepAliveFailure::Timeout(timeout) => ServeError::KeepAliveTimeout { peer, timeout },
                            KeepAliveFailure::Ping(source) => ServeError::Http2 { peer, source },
                        });
                    }
                    next = connection.accept() => match next {
                        None => {
                            debug!("hbone connection closed");
                            return Ok(());
                        }
                        Some(Ok((request, respond))) => {
                            streams_seen = true;
                            let stream = Stream { identity: identity.clone(), local, peer };
                            tokio::spawn(self.clone().handle(request, respond, stream).in_current_span());
                        }
                        Some(Err(e)) if e.is_go_away() && e.reason() == Some(h2::Reason::NO_ERROR) => return Ok(()),
                        Some(Err(e)) if e.is_io() => {
                            // The client went away without GOAWAY; routine for idle pools.
                            debug!(error = %e, "hbone connection ended");
                            return Ok(());
                        }
                        Some(Err(source)) => return Err(ServeError::Http2 { peer, source }),
                    },
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn handle(
        self,
        request: http::Request<RecvStream>,
        respond: SendResponse<Bytes>,
        stream: Stream,
    ) {
        let stream_id = respond.stream_id().as_u32();
        let (parts, body) = request.into_parts();
        let responder = Responder {
            respond: Some(respond),
            body: Some(body),
        };
        let head = http::Request::from_parts(parts, ());
        let authority = match validate(&head, stream.local, self.inner.config.check_authority_ip) {
            Ok(authority) => authority,
            Err(bad) => {
                info!(stream_id, peer_identity = %stream.identity, error = %bad, "hbone request refused (400)");
                responder.refuse(&Refusal::bad_request(bad.to_string()));
                return;
            }
        };
        let headers = head.headers();
        let request = InboundRequest {
            peer_identity: stream.identity,
            authority,
            local_addr: stream.local,
            peer_addr: stream.peer,
            forwarded: header_string(headers, FORWARDED),
            baggage: header_string(headers, BAGGAGE),
            traceparent: header_string(headers, TRACEPARENT),
            stream_id,
        };
        self.inner.service.serve(request, responder).await;
    }
}

/// Who the client proved to be, and until when its certificate says so.
pub(crate) struct Authenticated {
    pub identity: certs::SpiffeId,
    pub expires: Option<std::time::SystemTime>,
}

/// Per-connection facts every stream inherits.
struct Stream {
    identity: certs::SpiffeId,
    local: SocketAddr,
    peer: SocketAddr,
}

fn server_builder(config: &ServerConfig) -> h2::server::Builder {
    let mut builder = h2::server::Builder::new();
    builder
        .initial_window_size(config.h2.stream_window)
        .initial_connection_window_size(config.h2.connection_window)
        .max_frame_size(config.h2.max_frame_size)
        .max_concurrent_streams(config.h2.max_concurrent_streams)
        .max_send_buffer_size(config.h2.max_send_buffer)
        .max_header_list_size(config.max_header_list_size);
    builder
}

/// The accept loop's record of a connection that ended with an error.
fn log_if_failed(served: Result<(), ServeError>) {
    let Err(error) = served else {
        return;
    };
    match &error {
        ServeError::Handshake { .. } | ServeError::PeerIdentity { .. } => {
            warn!(error = %error, "hbone connection refused")
        }
        _ => debug!(error = %error, "hbone connection ended with an error"),
    }
}
