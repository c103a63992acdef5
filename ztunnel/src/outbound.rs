//! Outbound: a connection an enrolled pod made, redirected to 15001. Resolve where it was going
//! (service VIP → one ready endpoint), then tunnel it over HBONE when the destination is in the
//! mesh, or pass it through in plain TCP when it is not.

use std::net::SocketAddr;
use std::sync::Arc;

use discovery::{Snapshot, Workload};
use rand::seq::IndexedRandom;
use tokio::net::TcpStream;

use crate::access_log::{ConnectionRecord, Direction, Peer};
use crate::agent::Agent;
use crate::pod::{EnrolledPod, HBONE_PORT};

/// Longest wait for a tunnel to be established (TCP, TLS, CONNECT and the peer's answer).
const TUNNEL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Where a connection goes after service resolution.
struct Target {
    addr: SocketAddr,
    workload: Option<Arc<Workload>>,
    service: Option<String>,
}

pub fn peer_of(workload: Option<&Workload>, identity: Option<String>) -> Peer {
    Peer {
        workload: workload.map(|w| w.name.clone()),
        namespace: workload.map(|w| w.namespace.clone()),
        identity,
    }
}

fn resolve(snapshot: &Snapshot, original: SocketAddr) -> Result<Target, String> {
    if let Some((service, port)) = snapshot.service_by_vip(original.ip(), original.port()) {
        let name = format!("{}.{}", service.name, service.namespace);
        let ready: Vec<_> = snapshot
            .endpoints_for(service, port)
            .iter()
            .filter(|endpoint| endpoint.workload.as_ref().is_none_or(|w| w.ready))
            .collect();
        let endpoint = ready.choose(&mut rand::rng()).ok_or_else(|| {
            format!("service {name} port {} has no ready endpoints; check that its selector matches running pods", port.port)
        })?;
        return Ok(Target {
            addr: endpoint.addr,
            workload: endpoint.workload.clone(),
            service: Some(name),
        });
    }
    Ok(Target {
        addr: original,
        workload: snapshot.workload_by_ip(original.ip()).cloned(),
        service: None,
    })
}

pub async fn handle(
    agent: Arc<Agent>,
    pod: Arc<EnrolledPod>,
    mut downstream: TcpStream,
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
    let target = match resolve(&snapshot, original) {
        Ok(target) => target,
        Err(error) => {
            record.failed(0, 0, "NR", &error);
            return;
        }
    };
    record.dst_addr = target.addr;
    record.dst_service = target.service.clone();
    let in_mesh = target
        .workload
        .as_ref()
        .filter(|w| w.ambient)
        .and_then(|w| agent.identity_of(w).map(|id| (w.clone(), id)));
    match in_mesh {
        Some((workload, identity)) => {
            record.dst = peer_of(Some(&workload), Some(identity.to_string()));
            let hbone_addr = SocketAddr::new(target.addr.ip(), HBONE_PORT);
            record.dst_hbone_addr = Some(hbone_addr);
            record.mutual_tls = true;
            let key = hbone::PoolKey {
                source: pod.identity.clone(),
                destination: identity,
                address: hbone_addr,
                extra: None,
            };
            let mut request = hbone::ConnectRequest::new(target.addr);
            request.forwarded_for = Some(peer);
            // The pool bounds the dial and handshake; this also bounds waiting for the peer's
            // answer (it answers only once its upstream connected).
            let connect = pod.pool.connect(&key, &pod.certificate, &request);
            let mut tunnel = match tokio::time::timeout(TUNNEL_TIMEOUT, connect).await {
                Ok(Ok(tunnel)) => tunnel,
                Ok(Err(error)) => {
                    let error = format!("HBONE to {hbone_addr} failed: {error}");
                    record.failed(0, 0, "UF", &error);
                    return;
                }
                Err(_) => {
                    let error = format!("HBONE to {hbone_addr}: no answer within {TUNNEL_TIMEOUT:?}; is the destination node's ztunnel running?");
                    record.failed(0, 0, "UT", &error);
                    return;
                }
            };
            record.opened();
            let report =
                hbone::copy_bidirectional(&mut downstream, &mut tunnel, &Default::default()).await;
            finish(record, report);
        }
        None => {
            record.dst = peer_of(target.workload.as_deref(), None);
            let mut upstream = match pod.dial(target.addr).await {
                Ok(upstream) => upstream,
                Err(error) => {
                    record.failed(0, 0, "UF", &format!("cannot connect to {} (passthrough, destination not in the mesh): {error}", target.addr));
                    return;
                }
            };
            let _ = upstream.set_nodelay(true);
            record.opened();
            let report =
                hbone::copy_bidirectional(&mut downstream, &mut upstream, &Default::default())
                    .await;
            finish(record, report);
        }
    }
}

/// Logs a finished copy from the client's point of view: `sent` is what went back to it.
pub fn finish(record: ConnectionRecord, report: hbone::CopyReport) {
    let (sent, received) = (report.upstream_to_downstream, report.downstream_to_upstream);
    match report.result {
        Ok(()) => record.complete(sent, received),
        Err(error) => record.failed(sent, received, "-", &error.to_string()),
    }
}
