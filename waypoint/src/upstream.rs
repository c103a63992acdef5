//! Requests to backends, over HBONE (DESIGN §6): every request goes to the chosen endpoint's
//! pod through a tunnel to `<pod ip>:15008` with `:authority` = `<pod ip>:<target port>`,
//! presenting the waypoint's identity and verifying the endpoint's. Tunnels share HBONE
//! connections through `hbone::Pool`; inside them HTTP connections are pooled per endpoint:
//! HTTP/1.1 connections are reused once their response ended, one HTTP/2 connection carries
//! every concurrent request to an h2c endpoint.
//!
//! The waypoint serves each downstream connection on one worker thread (`runtime::Workers`);
//! each worker has its own lane here (HBONE pool and HTTP connections), so a request and the
//! upstream connections it uses are driven by the same thread.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use certs::{CurrentCertificate, SpiffeId};
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::destination::UpstreamProtocol;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every body the waypoint sends or answers with.
pub type Body = BoxBody<Bytes, BoxError>;

/// How long an idle HTTP/1.1 connection waits to be reused before it is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle HTTP/1.1 connections kept per endpoint.
const MAX_IDLE_PER_ENDPOINT: usize = 64;
/// Limit on opening a tunnel (TCP + TLS + CONNECT answered), within the request's own timeouts.
const TUNNEL_TIMEOUT: Duration = Duration::from_secs(10);

/// One backend endpoint as the proxy reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `<pod ip>:<target port>`.
    pub addr: SocketAddr,
    /// The identity the pod must prove.
    pub identity: SpiffeId,
    pub protocol: UpstreamProtocol,
}

/// Why a request did not get a response from its endpoint.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Nothing reached the application: the tunnel or the HTTP handshake failed.
    #[error("{0}")]
    Connect(String),
    /// The request was sent (maybe partly) and the connection failed before a response.
    #[error("{0}")]
    Request(String),
}

impl UpstreamError {
    pub fn is_connect(&self) -> bool {
        matches!(self, UpstreamError::Connect(_))
    }
}

#[derive(Default)]
struct EndpointConnections {
    idle_http1: Vec<http1::SendRequest<Body>>,
    http2: Option<http2::SendRequest<Body>>,
}

/// The waypoint's way out. Cheap to share.
pub struct Upstreams {
    /// One per worker thread ([`runtime::current_worker`]); the first serves any other thread.
    lanes: Vec<Lane>,
    identity: SpiffeId,
    certificate: CurrentCertificate,
}

/// One worker's upstream connections: tunnels and the HTTP connections inside them, driven
/// by tasks of that worker.
struct Lane {
    hbone: hbone::Pool,
    connections: Mutex<HashMap<SocketAddr, EndpointConnections>>,
}

impl Upstreams {
    /// `workers` lanes (at least one), each with its own pool from `new_pool`.
    pub fn new(
        workers: usize,
        new_pool: impl Fn() -> hbone::Pool,
        identity: SpiffeId,
        certificate: CurrentCertificate,
    ) -> Arc<Self> {
        let lanes = (0..workers.max(1))
            .map(|_| Lane {
                hbone: new_pool(),
                connections: Mutex::new(HashMap::new()),
            })
            .collect();
        Arc::new(Upstreams {
            lanes,
            identity,
            certificate,
        })
    }

    /// The calling worker's lane.
    fn lane(&self) -> &Lane {
        let index = runtime::current_worker().unwrap_or(0);
        &self.lanes[index % self.lanes.len()]
    }

    /// Sends `request` (origin-form URI, Host header set; for HTTP/2 the URI carries the
    /// authority) to `endpoint`. `client` is the downstream address, passed on in the tunnel's
    /// `forwarded` header for the destination's logs.
    pub async fn send(
        self: &Arc<Self>,
        endpoint: &Endpoint,
        client: SocketAddr,
        request: Request<Body>,
    ) -> Result<Response<Body>, UpstreamError> {
        match endpoint.protocol {
            UpstreamProtocol::Http1 => self.send_http1(endpoint, client, request).await,
            UpstreamProtocol::Http2 => self.send_http2(endpoint, client, request).await,
        }
    }

    async fn send_http1(
        self: &Arc<Self>,
        endpoint: &Endpoint,
        client: SocketAddr,
        request: Request<Body>,
    ) -> Result<Response<Body>, UpstreamError> {
        let mut sender = match self.idle_http1(endpoint.addr) {
            Some(sender) => sender,
            None => {
                let tunnel = self.tunnel(endpoint, client).await?;
                let (sender, connection) = http1::Builder::new()
                    .handshake(TokioIo::new(tunnel))
                    .await
                    .map_err(|e| UpstreamError::Connect(format!("HTTP/1.1 handshake: {e}")))?;
                tokio::spawn(async move {
                    if let Err(error) = connection.with_upgrades().await {
                        tracing::debug!(%error, "upstream HTTP/1.1 connection ended");
                    }
                });
                sender
            }
        };
        let upgrade = request.headers().contains_key(http::header::UPGRADE);
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| classify(&e))?;
        if upgrade || response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
            // The connection now belongs to the upgraded stream.
            return Ok(response.map(|body| body.map_err(BoxError::from).boxed()));
        }
        let home = Arc::downgrade(self);
        let addr = endpoint.addr;
        Ok(response.map(|body| {
            PooledBody {
                inner: body,
                sender: Some(sender),
                home,
                addr,
            }
            .boxed()
        }))
    }

    async fn send_http2(
        self: &Arc<Self>,
        endpoint: &Endpoint,
        client: SocketAddr,
        request: Request<Body>,
    ) -> Result<Response<Body>, UpstreamError> {
        let existing = self
            .lane()
            .lock()
            .get(&endpoint.addr)
            .and_then(|c| c.http2.clone())
            .filter(|s| !s.is_closed());
        let mut sender = match existing {
            Some(sender) => sender,
            None => {
                let tunnel = self.tunnel(endpoint, client).await?;
                let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                    .handshake(TokioIo::new(tunnel))
                    .await
                    .map_err(|e| UpstreamError::Connect(format!("HTTP/2 handshake: {e}")))?;
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(%error, "upstream HTTP/2 connection ended");
                    }
                });
                self.lane().lock().entry(endpoint.addr).or_default().http2 = Some(sender.clone());
                sender
            }
        };
        sender
            .ready()
            .await
            .map_err(|e| UpstreamError::Connect(format!("HTTP/2 connection: {e}")))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| classify(&e))?;
        Ok(response.map(|body| body.map_err(BoxError::from).boxed()))
    }

    fn idle_http1(&self, addr: SocketAddr) -> Option<http1::SendRequest<Body>> {
        let mut connections = self.lane().lock();
        let idle = &mut connections.get_mut(&addr)?.idle_http1;
        while let Some(sender) = idle.pop() {
            if sender.is_ready() && !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    /// Returns `sender` to the lane of the calling worker: the one whose task drives its
    /// connection, since a body is read to its end on the worker that sent the request.
    fn give_back(&self, addr: SocketAddr, sender: http1::SendRequest<Body>) {
        let mut connections = self.lane().lock();
        let idle = &mut connections.entry(addr).or_default().idle_http1;
        if idle.len() < MAX_IDLE_PER_ENDPOINT {
            idle.push(sender);
        }
    }

    pub async fn tunnel(
        &self,
        endpoint: &Endpoint,
        client: SocketAddr,
    ) -> Result<hbone::H2Stream, UpstreamError> {
        let key = hbone::PoolKey {
            source: self.identity.clone(),
            destination: endpoint.identity.clone(),
            address: SocketAddr::new(endpoint.addr.ip(), crate::HBONE_PORT),
            extra: None,
        };
        let mut request = hbone::ConnectRequest::new(endpoint.addr);
        request.forwarded_for = Some(client);
        match tokio::time::timeout(
            TUNNEL_TIMEOUT,
            self.lane().hbone.connect(&key, &self.certificate, &request),
        )
        .await
        {
            Ok(Ok(tunnel)) => Ok(tunnel),
            Ok(Err(error)) => Err(UpstreamError::Connect(format!(
                "HBONE tunnel to {} ({}): {error}",
                key.address, endpoint.identity
            ))),
            Err(_) => Err(UpstreamError::Connect(format!(
                "HBONE tunnel to {} not established within {TUNNEL_TIMEOUT:?}",
                key.address
            ))),
        }
    }

    /// Drops pooled connections to endpoints that `keep` no longer wants.
    pub fn retain(&self, keep: impl Fn(&SocketAddr) -> bool) {
        for lane in &self.lanes {
            lane.lock().retain(|addr, _| keep(addr));
        }
    }
}

impl Lane {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, EndpointConnections>> {
        self.connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn classify(error: &hyper::Error) -> UpstreamError {
    // A request hyper never started writing can go to another endpoint without harm.
    if error.is_canceled() {
        UpstreamError::Connect(format!(
            "connection closed before the request was sent: {error}"
        ))
    } else {
        UpstreamError::Request(format!("{error}"))
    }
}

/// A response body that returns its HTTP/1.1 connection to the pool once it has been read to
/// the end (a connection is reusable only between responses).
struct PooledBody {
    inner: Incoming,
    sender: Option<http1::SendRequest<Body>>,
    home: Weak<Upstreams>,
    addr: SocketAddr,
}

impl hyper::body::Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.release();
        }
        polled.map_err(BoxError::from)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl PooledBody {
    fn release(&mut self) {
        let (Some(mut sender), Some(home)) = (self.sender.take(), self.home.upgrade()) else {
            return;
        };
        let addr = self.addr;
        if sender.is_ready() {
            home.give_back(addr, sender);
            return;
        }
        // hyper marks the connection ready a moment after the last frame.
        tokio::spawn(async move {
            if let Ok(Ok(())) = tokio::time::timeout(IDLE_TIMEOUT, sender.ready()).await {
                home.give_back(addr, sender);
            }
        });
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // Read to the end: the connection is clean. Dropped early: hyper closes it.
        if self.inner.is_end_stream() {
            self.release();
        }
    }
}
