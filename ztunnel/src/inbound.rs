//! Inbound: HBONE tunnels arriving on 15008 (mutual TLS, the peer's identity proven) and
//! plaintext connections from outside the mesh redirected to 15006 (no identity). Both are
//! authorised against the destination pod's policies, connected to the app from inside the
//! pod, and registered so that a later policy change can revoke them.

use std::net::SocketAddr;
use std::sync::Arc;

use discovery::{ConnectionAttrs, Decision, Snapshot};
use hbone::{CopyReport, InboundRequest, Refusal};
use tokio::net::TcpStream;

use crate::access_log::{ConnectionRecord, Direction};
use crate::agent::Agent;
use crate::connections::{Authorised, Registration};
use crate::outbound::{finish, peer_of};
use crate::pod::EnrolledPod;
use crate::revocable::Revocable;

/// Authorises a connection to `pod`; a denial explains which policy and why.
fn authorise(
    snapshot: &Snapshot,
    pod: &EnrolledPod,
    attrs: &ConnectionAttrs<'_>,
) -> Result<(), String> {
    let Some(workload) = snapshot.workload(&pod.namespace, &pod.name) else {
        return Err(format!(
            "pod {}/{} is no longer in the cluster view",
            pod.namespace, pod.name
        ));
    };
    let source = attrs
        .src_identity
        .map(|id| id.to_string())
        .unwrap_or_else(|| format!("plaintext client {}", attrs.src_ip));
    match discovery::authorize(snapshot.policies_for(workload), attrs) {
        Decision::Allow => Ok(()),
        Decision::DeniedBy(policy) => Err(format!(
            "denied by AuthorizationPolicy {policy}: {source} may not connect to port {}",
            attrs.dst_port
        )),
        Decision::NotAllowed => Err(format!(
            "denied: ALLOW policies apply to {}/{} and none allows {source} on port {}",
            pod.namespace, pod.name, attrs.dst_port
        )),
    }
}

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
        let source_addr = request.forwarded_for().unwrap_or(request.peer_addr);
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
        let attrs = ConnectionAttrs {
            src_ip: source_addr.ip(),
            src_identity: Some(&request.peer_identity),
            dst_port: request.authority.port(),
        };
        if let Err(reason) = authorise(&snapshot, pod, &attrs) {
            record.failed(0, 0, "DENY", &reason);
            return Err(Refusal::denied(reason));
        }
        let upstream = match pod.dial(request.authority).await {
            Ok(upstream) => upstream,
            Err(error) => {
                let reason = format!("cannot connect to the workload at {}: {error}; is the app listening on that port?", request.authority);
                record.failed(0, 0, "UF", &reason);
                return Err(Refusal::unavailable(reason));
            }
        };
        let _ = upstream.set_nodelay(true);
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
            "DENY",
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
    let attrs = ConnectionAttrs {
        src_ip: peer.ip(),
        src_identity: None,
        dst_port: original.port(),
    };
    if let Err(reason) = authorise(&snapshot, &pod, &attrs) {
        record.failed(0, 0, "DENY", &reason);
        return;
    }
    let upstream = match pod.dial(original).await {
        Ok(upstream) => upstream,
        Err(error) => {
            record.failed(
                0,
                0,
                "UF",
                &format!("cannot connect to the workload at {original}: {error}"),
            );
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    let registration = register(&agent, &pod, &attrs);
    record.opened();
    let mut upstream = Revocable::new(upstream, registration.cancelled.clone());
    let report =
        hbone::copy_bidirectional(&mut downstream, &mut upstream, &Default::default()).await;
    finish_registered(record, registration, report);
}
