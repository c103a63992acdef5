//! Inbound: HBONE tunnels arriving on 15008 (mutual TLS, the peer's identity proven) and
//! plaintext connections from outside the mesh redirected to 15006 (no identity). The plan
//! (see `plan`) refuses ztunnel's own ports and applies the destination pod's policies; then
//! the app is connected from inside the pod and the connection registered, so that a later
//! policy change can revoke it.
//!
//! The source of a connection is its TCP peer and its verified certificate, never the
//! client-supplied `forwarded` header (DESIGN §3): that header only informs the logs.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use discovery::{ConnectionAttrs, Snapshot};
use hbone::{CopyReport, InboundRequest, Refusal};
use tokio::net::TcpStream;

use crate::access_log::{finish, peer_of, ConnectionRecord, Direction};
use crate::agent::Agent;
use crate::connections::{Authorised, Registration};
use crate::plan::{self, InboundFacts, InboundPlan, PodFacts};
use crate::pod::EnrolledPod;
use crate::response::ResponseFlag;
use crate::revocable::Revocable;

fn register(agent: &Agent, pod: &EnrolledPod, attrs: &ConnectionAttrs<'_>) -> Registration {
    agent.connections.register(
        Authorised {
            dst_namespace: pod.namespace.clone(),
            dst_workload: pod.name.clone(),
            src_ip: attrs.src_ip,
            src_identity: attrs.src_identity.cloned(),
            dst_port: attrs.dst_port,
        },
        &pod.connections,
    )
}

/// The destination pod's addresses: as the cluster knows them, plus the one the client reached
/// (the listener's local address), in case the cluster view lags behind the pod.
fn own_ips(snapshot: &Snapshot, pod: &EnrolledPod, local: IpAddr) -> Vec<IpAddr> {
    let mut ips = snapshot
        .workload(&pod.namespace, &pod.name)
        .map_or(Vec::new(), |w| w.ips.clone());
    ips.push(local);
    ips
}

/// The HBONE server's handler for one pod.
pub struct HboneInbound {
    pub agent: Arc<Agent>,
    pub pod: Arc<EnrolledPod>,
}

impl hbone::Handler for HboneInbound {
    type Upstream = Revocable<TcpStream>;
    type Context = (ConnectionRecord, Registration);

    async fn connect(
        &self,
        request: &InboundRequest,
    ) -> Result<(Self::Upstream, Self::Context), Refusal> {
        let (agent, pod) = (&self.agent, &self.pod);
        let source_addr = request.peer_addr;
        if let Some(forwarded) = request.forwarded_for() {
            if forwarded != source_addr {
                tracing::debug!(peer = %source_addr, %forwarded, identity = %request.peer_identity, "client claims another source in `forwarded`; informational only, authorization uses the TCP peer and the certificate");
            }
        }
        let mut record = ConnectionRecord::new(
            agent.metrics.clone(),
            Direction::Inbound,
            source_addr,
            request.authority,
        );
        let snapshot = agent.snapshot();
        record.src = peer_of(
            snapshot
                .workload_by_ip(source_addr.ip())
                .map(|w| w.as_ref()),
            Some(request.peer_identity.to_string()),
        );
        record.dst = peer_of(
            snapshot
                .workload(&pod.namespace, &pod.name)
                .map(|w| w.as_ref()),
            Some(pod.identity.to_string()),
        );
        record.dst_hbone_addr = Some(request.local_addr);
        record.mutual_tls = true;
        let ips = own_ips(&snapshot, pod, request.local_addr.ip());
        let facts = InboundFacts {
            destination: PodFacts {
                namespace: &pod.namespace,
                name: &pod.name,
                ips: &ips,
            },
            target: request.authority,
            peer_ip: source_addr.ip(),
            peer_identity: Some(&request.peer_identity),
        };
        let target = match plan::plan_inbound(&snapshot, &facts) {
            InboundPlan::Forward { target } => target,
            InboundPlan::Refuse(refusal) => {
                let reason = refusal.to_string();
                record.failed(0, 0, refusal.flag(), &reason);
                return Err(Refusal {
                    status: refusal.hbone_status(),
                    reason,
                });
            }
        };
        drop(snapshot);
        let upstream = match pod.dial(target).await {
            Ok(upstream) => upstream,
            Err(error) => {
                let reason = format!("cannot connect to the workload at {target}: {error}; is the app listening on that port?");
                record.failed(0, 0, ResponseFlag::UpstreamFailure, &reason);
                return Err(Refusal::unavailable(reason));
            }
        };
        let _ = upstream.set_nodelay(true);
        let attrs = ConnectionAttrs {
            src_ip: source_addr.ip(),
            src_identity: Some(&request.peer_identity),
            dst_port: target.port(),
        };
        let registration = register(agent, pod, &attrs);
        record.opened();
        let upstream = Revocable::new(upstream, registration.cancelled.clone());
        Ok((upstream, (record, registration)))
    }

    fn finished(
        &self,
        _request: InboundRequest,
        (record, registration): Self::Context,
        report: CopyReport,
    ) {
        finish_registered(record, registration, report);
    }
}

fn finish_registered(record: ConnectionRecord, registration: Registration, report: CopyReport) {
    match registration.revocation() {
        Some(reason) => record.failed(
            report.upstream_to_downstream,
            report.downstream_to_upstream,
            ResponseFlag::Denied,
            &reason,
        ),
        None => finish(record, report),
    }
}

/// A plaintext connection from a client outside the mesh, redirected to 15006.
pub async fn handle_plaintext(
    agent: Arc<Agent>,
    pod: Arc<EnrolledPod>,
    mut downstream: TcpStream,
    peer: SocketAddr,
) {
    let original = match capture::socket::original_dst(&downstream) {
        Ok(original) => original,
        Err(error) => {
            tracing::warn!(%error, pod = %pod.name, "inbound plaintext connection without an original destination");
            return;
        }
    };
    let snapshot = agent.snapshot();
    let mut record =
        ConnectionRecord::new(agent.metrics.clone(), Direction::Inbound, peer, original);
    record.src = peer_of(snapshot.workload_by_ip(peer.ip()).map(|w| w.as_ref()), None);
    record.dst = peer_of(
        snapshot
            .workload(&pod.namespace, &pod.name)
            .map(|w| w.as_ref()),
        Some(pod.identity.to_string()),
    );
    let local = downstream.local_addr().map_or(original.ip(), |a| a.ip());
    let ips = own_ips(&snapshot, &pod, local);
    let facts = InboundFacts {
        destination: PodFacts {
            namespace: &pod.namespace,
            name: &pod.name,
            ips: &ips,
        },
        target: original,
        peer_ip: peer.ip(),
        peer_identity: None,
    };
    let target = match plan::plan_inbound(&snapshot, &facts) {
        InboundPlan::Forward { target } => target,
        InboundPlan::Refuse(refusal) => {
            record.failed(0, 0, refusal.flag(), &refusal.to_string());
            return;
        }
    };
    drop(snapshot);
    let upstream = match pod.dial(target).await {
        Ok(upstream) => upstream,
        Err(error) => {
            record.failed(
                0,
                0,
                ResponseFlag::UpstreamFailure,
                &format!("cannot connect to the workload at {target}: {error}"),
            );
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    let attrs = ConnectionAttrs {
        src_ip: peer.ip(),
        src_identity: None,
        dst_port: target.port(),
    };
    let registration = register(&agent, &pod, &attrs);
    record.opened();
    let mut upstream = Revocable::new(upstream, registration.cancelled.clone());
    let report =
        hbone::copy_bidirectional(&mut downstream, &mut upstream, &Default::default()).await;
    finish_registered(record, registration, report);
}
