//! Outbound: a connection an enrolled pod made, redirected to 15001. The plan (see `plan`)
//! says where it goes — through an HBONE tunnel to an ambient workload, in plain TCP to a
//! destination outside the mesh, or nowhere — and this module carries it out.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::access_log::{finish, peer_of, ConnectionRecord, Direction};
use crate::enrolled::EnrolledPod;
use crate::error::ProxyError;
use crate::plan::{self, OutboundPlan, Passthrough, PodFacts, Tunnel};
use crate::proxy::ProxyContext;

/// Longest wait for a tunnel to be established (TCP, TLS, CONNECT and the peer's answer).
const TUNNEL_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest wait for a passthrough destination to accept the TCP connection. A destination
/// that drops SYNs would otherwise hold the client's socket (and ours) for the kernel's ~2 min.
pub const PASSTHROUGH_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection the pod made, redirected to 15001: its original destination says where the
/// pod meant to go.
pub async fn handle(
    context: Arc<ProxyContext>,
    pod: Arc<EnrolledPod>,
    downstream: TcpStream,
    peer: SocketAddr,
) {
    let original = match capture::socket::original_dst(&downstream) {
        Ok(original) => original,
        Err(error) => {
            tracing::warn!(%error, pod = %pod.display_name(), "outbound connection without an original destination (was it redirected by the capture rules?)");
            return;
        }
    };
    proxy(&context, &pod, downstream, peer, original).await
}

/// Plans and proxies one outbound connection to `original`; the rest of [`handle`], reachable
/// from tests without capture rules.
pub async fn proxy(
    context: &ProxyContext,
    pod: &EnrolledPod,
    downstream: TcpStream,
    peer: SocketAddr,
    original: SocketAddr,
) {
    // Boxed: connecting (the pool, a dial, perhaps a TLS handshake) is by far the largest state
    // of this task and lasts milliseconds; inline, its space would stay allocated for the
    // connection's whole life. What a connection holds while it lasts is only the copy below.
    let Some((record, mut joined)) =
        Box::pin(connect(context, pod, downstream, peer, original)).await
    else {
        return;
    };
    let report = joined.copy().await;
    finish(record, report);
}

/// The pod's connection joined to its upstream: through a tunnel or, for passthrough, direct.
enum Joined {
    Tunnel {
        downstream: TcpStream,
        upstream: hbone::H2Stream,
    },
    Direct {
        downstream: TcpStream,
        upstream: TcpStream,
    },
}

impl Joined {
    /// Copies until both directions ended. By `&mut self`, so the task stores the streams once
    /// (an owned `self` would be moved into a second slot of the state machine).
    async fn copy(&mut self) -> hbone::CopyReport {
        let buffers = hbone::CopyBuffers::default();
        match self {
            Joined::Tunnel {
                downstream,
                upstream,
            } => hbone::copy_bidirectional(downstream, upstream, &buffers).await,
            Joined::Direct {
                downstream,
                upstream,
            } => hbone::copy_bidirectional(downstream, upstream, &buffers).await,
        }
    }
}

/// Plans the connection and connects it; `None` when it was refused (and logged).
async fn connect(
    context: &ProxyContext,
    pod: &EnrolledPod,
    downstream: TcpStream,
    peer: SocketAddr,
    original: SocketAddr,
) -> Option<(ConnectionRecord, Joined)> {
    let snapshot = context.snapshot();
    let source = snapshot.workload(&pod.namespace, &pod.name).cloned();
    let mut record = context.record(Direction::Outbound, peer, original);
    record.src = peer_of(source.as_deref(), Some(pod.identity.to_string()));
    let own_ips = pod.addresses(&snapshot, peer.ip());
    let facts = PodFacts {
        namespace: &pod.namespace,
        name: &pod.name,
        ips: &own_ips,
    };
    let plan = plan::plan_outbound(
        &snapshot,
        facts,
        original,
        &context.trust_domain,
        plan::pick_random,
    );
    drop(snapshot);
    match plan {
        OutboundPlan::Refuse(refusal) => {
            record.refused(&refusal.into());
            None
        }
        OutboundPlan::Tunnel(tunnel) | OutboundPlan::Waypoint { tunnel, .. } => {
            through_tunnel(pod, downstream, peer, record, tunnel).await
        }
        OutboundPlan::Passthrough(passthrough) => {
            pass_through(pod, downstream, record, passthrough).await
        }
    }
}

async fn through_tunnel(
    pod: &EnrolledPod,
    downstream: TcpStream,
    peer: SocketAddr,
    mut record: ConnectionRecord,
    tunnel: Tunnel,
) -> Option<(ConnectionRecord, Joined)> {
    record.dst_addr = tunnel.hbone_addr;
    record.hbone_target = Some(tunnel.target);
    record.dst_service = tunnel.service;
    record.dst = peer_of(Some(&tunnel.workload), Some(tunnel.identity.to_string()));
    record.mutual_tls = true;
    let key = hbone::PoolKey {
        source: pod.identity.clone(),
        destination: tunnel.identity,
        address: tunnel.hbone_addr,
        extra: None,
    };
    let mut request = hbone::ConnectRequest::new(tunnel.target);
    request.forwarded_for = Some(peer);
    // The pool bounds the dial and handshake; this also bounds waiting for the peer's answer
    // (it answers only once its upstream connected).
    let connect = pod.pool.connect(&key, &pod.certificate, &request);
    let hbone_addr = tunnel.hbone_addr;
    let upstream = match tokio::time::timeout(TUNNEL_TIMEOUT, connect).await {
        Ok(Ok(upstream)) => upstream,
        Ok(Err(source)) => {
            record.refused(&ProxyError::Tunnel { hbone_addr, source });
            return None;
        }
        Err(_) => {
            record.refused(&ProxyError::TunnelTimeout {
                hbone_addr,
                after: TUNNEL_TIMEOUT,
            });
            return None;
        }
    };
    record.opened();
    Some((
        record,
        Joined::Tunnel {
            downstream,
            upstream,
        },
    ))
}

async fn pass_through(
    pod: &EnrolledPod,
    downstream: TcpStream,
    mut record: ConnectionRecord,
    passthrough: Passthrough,
) -> Option<(ConnectionRecord, Joined)> {
    let target = passthrough.target;
    record.dst_addr = target;
    record.dst_service = passthrough.service;
    record.dst = peer_of(passthrough.workload.as_deref(), None);
    let upstream = match tokio::time::timeout(PASSTHROUGH_CONNECT_TIMEOUT, pod.dial(target)).await {
        Ok(Ok(upstream)) => upstream,
        Ok(Err(source)) => {
            record.refused(&ProxyError::UpstreamConnect {
                target,
                passthrough: true,
                source,
            });
            return None;
        }
        Err(_) => {
            record.refused(&ProxyError::UpstreamTimeout {
                target,
                passthrough: true,
                after: PASSTHROUGH_CONNECT_TIMEOUT,
            });
            return None;
        }
    };
    let _ = upstream.set_nodelay(true);
    record.opened();
    Some((
        record,
        Joined::Direct {
            downstream,
            upstream,
        },
    ))
}
