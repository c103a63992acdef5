//! Outbound: a connection an enrolled pod made, redirected to 15001. The plan (see `plan`)
//! says where it goes — through an HBONE tunnel to an ambient workload, in plain TCP to a
//! destination outside the mesh, or nowhere — and this module carries it out.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::access_log::{finish, peer_of, ConnectionRecord, Direction};
use crate::agent::Agent;
use crate::plan::{self, OutboundPlan, Passthrough, PodFacts, Tunnel};
use crate::pod::EnrolledPod;
use crate::response::ResponseFlag;

/// Longest wait for a tunnel to be established (TCP, TLS, CONNECT and the peer's answer).
const TUNNEL_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest wait for a passthrough destination to accept the TCP connection. A destination
/// that drops SYNs would otherwise hold the client's socket (and ours) for the kernel's ~2 min.
pub const PASSTHROUGH_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn handle(
    agent: Arc<Agent>,
    pod: Arc<EnrolledPod>,
    downstream: TcpStream,
    peer: SocketAddr,
) {
    let original = match capture::socket::original_dst(&downstream) {
        Ok(original) => original,
        Err(error) => {
            tracing::warn!(%error, pod = %pod.name, "outbound connection without an original destination (was it redirected by the capture rules?)");
            return;
        }
    };
    let snapshot = agent.snapshot();
    let source = snapshot.workload(&pod.namespace, &pod.name).cloned();
    let mut record =
        ConnectionRecord::new(agent.metrics.clone(), Direction::Outbound, peer, original);
    record.src = peer_of(source.as_deref(), Some(pod.identity.to_string()));
    // The pod's addresses as the cluster knows them, and the one it connected from (the cluster
    // view may lag behind the pod).
    let mut own_ips: Vec<IpAddr> = source.as_deref().map_or(Vec::new(), |w| w.ips.clone());
    own_ips.push(peer.ip());
    let facts = PodFacts {
        namespace: &pod.namespace,
        name: &pod.name,
        ips: &own_ips,
    };
    let plan = plan::plan_outbound(
        &snapshot,
        facts,
        original,
        &agent.config.trust_domain,
        plan::pick_random,
    );
    drop(snapshot);
    match plan {
        OutboundPlan::Refuse(refusal) => record.failed(0, 0, refusal.flag(), &refusal.to_string()),
        OutboundPlan::Tunnel(tunnel) => {
            through_tunnel(&pod, downstream, peer, record, tunnel).await
        }
        OutboundPlan::Passthrough(passthrough) => {
            pass_through(&pod, downstream, record, passthrough).await
        }
    }
}

async fn through_tunnel(
    pod: &EnrolledPod,
    mut downstream: TcpStream,
    peer: SocketAddr,
    mut record: ConnectionRecord,
    tunnel: Tunnel,
) {
    record.dst_addr = tunnel.target;
    record.dst_service = tunnel.service;
    record.dst = peer_of(Some(&tunnel.workload), Some(tunnel.identity.to_string()));
    record.dst_hbone_addr = Some(tunnel.hbone_addr);
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
    let mut upstream = match tokio::time::timeout(TUNNEL_TIMEOUT, connect).await {
        Ok(Ok(upstream)) => upstream,
        Ok(Err(error)) => {
            let error = format!("HBONE to {hbone_addr} failed: {error}");
            record.failed(0, 0, ResponseFlag::UpstreamFailure, &error);
            return;
        }
        Err(_) => {
            let error = format!("HBONE to {hbone_addr}: no answer within {TUNNEL_TIMEOUT:?}; is the destination node's ztunnel running?");
            record.failed(0, 0, ResponseFlag::UpstreamTimeout, &error);
            return;
        }
    };
    record.opened();
    let report =
        hbone::copy_bidirectional(&mut downstream, &mut upstream, &Default::default()).await;
    finish(record, report);
}

async fn pass_through(
    pod: &EnrolledPod,
    mut downstream: TcpStream,
    mut record: ConnectionRecord,
    passthrough: Passthrough,
) {
    let target = passthrough.target;
    record.dst_addr = target;
    record.dst_service = passthrough.service;
    record.dst = peer_of(passthrough.workload.as_deref(), None);
    let mut upstream = match tokio::time::timeout(PASSTHROUGH_CONNECT_TIMEOUT, pod.dial(target))
        .await
    {
        Ok(Ok(upstream)) => upstream,
        Ok(Err(error)) => {
            record.failed(0, 0, ResponseFlag::UpstreamFailure, &format!("cannot connect to {target} (passthrough, destination not in the mesh): {error}"));
            return;
        }
        Err(_) => {
            record.failed(0, 0, ResponseFlag::UpstreamTimeout, &format!("cannot connect to {target} (passthrough, destination not in the mesh): no answer within {PASSTHROUGH_CONNECT_TIMEOUT:?}; is the destination reachable from the pod?"));
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    record.opened();
    let report =
        hbone::copy_bidirectional(&mut downstream, &mut upstream, &Default::default()).await;
    finish(record, report);
}
