//! The UDP and TCP listeners of one pod's DNS proxy. Both stop when the pod's stop token is
//! cancelled; work in flight is bounded per pod so a pod flooding its resolver cannot take
//! the node agent's memory or sockets with it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::forward::Transport;
use super::query::PodResolver;

/// Queries of one pod being worked on at once (each may wait on an upstream); beyond that
/// the pod gets SERVFAIL at once.
pub(crate) const MAX_QUERIES_IN_FLIGHT: usize = 256;
/// TCP connections of one pod served at once; more are closed (the resolver retries).
pub(crate) const MAX_TCP_CONNECTIONS: usize = 64;
/// A TCP connection with no complete query for this long is closed (RFC 7766 suggests
/// seconds, not minutes, for an idle DNS connection).
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest query accepted over TCP. Stub resolvers send a few hundred bytes (a name, EDNS,
/// perhaps a cookie); anything near the 64 KiB frame limit is not a query, and would make every
/// connection hold a 64 KiB buffer.
const MAX_TCP_QUERY_BYTES: usize = 4096;
/// Once a TCP message's length has arrived, its body must follow within this.
const TCP_MESSAGE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long writing one reply may take before the TCP connection is given up.
const TCP_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Queries being worked on at once across every pod of the node: a pod that floods (or many
/// pods at once) cannot make the node agent hold an unbounded number of upstream waits.
pub const NODE_MAX_QUERIES_IN_FLIGHT: usize = 4096;
/// DNS TCP connections served at once across every pod of the node.
pub const NODE_MAX_TCP_CONNECTIONS: usize = 1024;

/// Node-wide DNS caps, shared by every pod's DNS listeners.
pub struct NodeDnsLimits {
    queries: Arc<Semaphore>,
    tcp_connections: Arc<Semaphore>,
}

impl Default for NodeDnsLimits {
    fn default() -> Self {
        NodeDnsLimits::with_caps(NODE_MAX_QUERIES_IN_FLIGHT, NODE_MAX_TCP_CONNECTIONS)
    }
}

impl NodeDnsLimits {
    pub(crate) fn with_caps(queries: usize, tcp_connections: usize) -> Self {
        NodeDnsLimits {
            queries: Arc::new(Semaphore::new(queries)),
            tcp_connections: Arc::new(Semaphore::new(tcp_connections)),
        }
    }
}

/// Both permits a query or connection holds: its pod's and the node's.
pub(crate) type Permits = (OwnedSemaphorePermit, OwnedSemaphorePermit);

/// Limits shared by a pod's UDP and TCP listeners, within the node's.
pub(crate) struct Limits {
    queries: Arc<Semaphore>,
    tcp_connections: Arc<Semaphore>,
    node: Arc<NodeDnsLimits>,
}

impl Limits {
    pub(crate) fn new(node: Arc<NodeDnsLimits>) -> Self {
        Limits {
            queries: Arc::new(Semaphore::new(MAX_QUERIES_IN_FLIGHT)),
            tcp_connections: Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS)),
            node,
        }
    }

    fn both(pod: &Arc<Semaphore>, node: &Arc<Semaphore>) -> Option<Permits> {
        let pod = pod.clone().try_acquire_owned().ok()?;
        let node = node.clone().try_acquire_owned().ok()?;
        Some((pod, node))
    }

    pub(crate) fn query(&self) -> Option<Permits> {
        Self::both(&self.queries, &self.node.queries)
    }

    pub(crate) fn tcp_connection(&self) -> Option<Permits> {
        Self::both(&self.tcp_connections, &self.node.tcp_connections)
    }
}

/// Serves DNS over UDP on `socket` until `stop`.
pub(crate) async fn serve_udp(
    socket: UdpSocket,
    resolver: Arc<PodResolver>,
    limits: Arc<Limits>,
    stop: CancellationToken,
) {
    let socket = Arc::new(socket);
    let mut buffer = vec![0u8; usize::from(u16::MAX)];
    loop {
        let received = tokio::select! {
            _ = stop.cancelled() => return,
            received = socket.recv_from(&mut buffer) => received,
        };
        let (length, peer) = match received {
            Ok(received) => received,
            Err(error) => {
                // Transient (an ICMP error queued on the socket, ENOMEM): keep serving.
                tracing::debug!(%error, "DNS UDP receive failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let request = buffer[..length].to_vec();
        let Some(permit) = limits.query() else {
            if let Some(reply) = resolver.overloaded(&request, Transport::Udp) {
                send_udp(&socket, &reply, peer).await;
            }
            continue;
        };
        let (socket, resolver) = (socket.clone(), resolver.clone());
        tokio::spawn(async move {
            let _permit = permit;
            if let Some(reply) = resolver.handle(&request, Transport::Udp).await {
                send_udp(&socket, &reply, peer).await;
            }
        });
    }
}

async fn send_udp(socket: &UdpSocket, reply: &[u8], peer: SocketAddr) {
    if let Err(error) = socket.send_to(reply, peer).await {
        tracing::debug!(%error, %peer, "cannot send a DNS reply");
    }
}

/// Serves DNS over TCP (RFC 7766: length-prefixed messages, several per connection) on
/// `listener` until `stop`.
pub(crate) async fn serve_tcp(
    listener: TcpListener,
    resolver: Arc<PodResolver>,
    limits: Arc<Limits>,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "DNS TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(permit) = limits.tcp_connection() else {
            tracing::warn!(%peer, pod_limit = MAX_TCP_CONNECTIONS, node_limit = NODE_MAX_TCP_CONNECTIONS, "too many DNS TCP connections (from this pod or on the node); closing a new one");
            continue;
        };
        let (resolver, limits, stop) = (resolver.clone(), limits.clone(), stop.clone());
        tokio::spawn(async move {
            let _permit = permit;
            serve_tcp_connection(stream, peer, resolver, limits, stop).await;
        });
    }
}

async fn serve_tcp_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    resolver: Arc<PodResolver>,
    limits: Arc<Limits>,
    stop: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    // Queries on one connection are answered in order; a client that pipelines (glibc sends
    // A and AAAA back to back) simply gets them one after the other.
    loop {
        let request = tokio::select! {
            _ = stop.cancelled() => return,
            read = tokio::time::timeout(TCP_IDLE_TIMEOUT, read_frame(&mut stream)) => match read {
                Err(_) => return,
                Ok(Ok(Some(request))) => request,
                Ok(Ok(None)) => return,
                Ok(Err(error)) => {
                    tracing::debug!(%error, %peer, "DNS TCP connection ended mid-message");
                    return;
                }
            },
        };
        let reply = match limits.query() {
            Some(_permits) => resolver.handle(&request, Transport::Tcp).await,
            None => resolver.overloaded(&request, Transport::Tcp),
        };
        let Some(reply) = reply else { continue };
        match tokio::time::timeout(TCP_WRITE_TIMEOUT, write_frame(&mut stream, &reply)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::debug!(%error, %peer, "cannot send a DNS reply over TCP");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "DNS TCP client is not reading its replies; closing");
                return;
            }
        }
    }
}

/// One length-prefixed message; `None` on a clean end of stream before it.
async fn read_frame(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut length = [0u8; 2];
    match stream.read_exact(&mut length).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    }
    let length = usize::from(u16::from_be_bytes(length));
    if length > MAX_TCP_QUERY_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "a {length}-byte DNS query is over the {MAX_TCP_QUERY_BYTES}-byte limit (not DNS?)"
            ),
        ));
    }
    let mut message = vec![0u8; length];
    // Once a message has begun, all of it must arrive promptly: a client sends a query in one
    // write, a slow trickle only holds the connection.
    tokio::time::timeout(TCP_MESSAGE_TIMEOUT, stream.read_exact(&mut message))
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the rest of the DNS message did not arrive in time",
            )
        })??;
    Ok(Some(message))
}

async fn write_frame(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<()> {
    let length = u16::try_from(message.len())
        .map_err(|_| std::io::Error::other("DNS reply longer than 65535 bytes"))?;
    let mut framed = Vec::with_capacity(message.len() + 2);
    framed.extend_from_slice(&length.to_be_bytes());
    framed.extend_from_slice(message);
    stream.write_all(&framed).await
}
