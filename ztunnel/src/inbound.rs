//! Inbound: HBONE tunnels arriving on 15008 (mutual TLS, the peer's identity proven) and
//! plaintext connections from outside the mesh redirected to 15006 (no identity). The plan
//! (see `plan`) refuses ztunnel's own ports and applies the destination pod's policies; then
//! the app is connected from inside the pod and the connection registered, so that a later
//! policy change can revoke it.
//!
//! The source of a connection is its TCP peer and its verified certificate, never the
//! client-supplied `forwarded` header (DESIGN §3): that header only informs the logs.

use std::net::SocketAddr;
use std::sync::Arc;

use discovery::ConnectionAttrs;
use hbone::{CopyReport, InboundRequest, Refusal};
use tokio::net::TcpStream;

use crate::access_log::{finish, peer_of, ConnectionRecord, Direction};
use crate::connections::{Authorised, Registration};
use crate::enrolled::EnrolledPod;
use crate::error::ProxyError;
use crate::plan::{self, InboundFacts, InboundPlan, PodFacts};
use crate::proxy::ProxyContext;
use crate::revocable::Revocable;

fn register(
    context: &ProxyContext,
    pod: &EnrolledPod,
    attrs: &ConnectionAttrs<'_>,
) -> Registration {
    context.connections.register(
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
    pub context: Arc<ProxyContext>,
    pub pod: Arc<EnrolledPod>,
}

impl hbone::Handler for HboneInbound {
    type Upstream = Revocable<TcpStream>;
    type Context = (ConnectionRecord, Registration);

    async fn connect(
        &self,
        request: &InboundRequest,
    ) -> Result<(Self::Upstream, Self::Context), Refusal> {
        let (context, pod) = (&self.context, &self.pod);
        let source_addr = request.peer_addr;
        if let Some(forwarded) = request.forwarded_for() {
            if forwarded != source_addr {
                tracing::debug!(peer = %source_addr, %forwarded, identity = %request.peer_identity, "client claims another source in `forwarded`; informational only, authorization uses the TCP peer and the certificate");
            }
        }
        // Istio's meaning: dst.addr is where the tunnel arrived (<pod>:15008), dst.hbone_addr
        // the target inside it.
        let mut record = context.record(Direction::Inbound, source_addr, request.local_addr);
        record.hbone_target = Some(request.authority);
        let snapshot = context.snapshot();
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
        record.mutual_tls = true;
        let ips = pod.addresses(&snapshot, request.local_addr.ip());
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
            InboundPlan::Refuse(refusal) => return Err(refuse(record, refusal.into())),
        };
        drop(snapshot);
        let upstream = match pod.dial(target).await {
            Ok(upstream) => upstream,
            Err(source) => {
                let error = ProxyError::UpstreamConnect {
                    target,
                    passthrough: false,
                    source,
                };
                return Err(refuse(record, error));
            }
        };
        let _ = upstream.set_nodelay(true);
        let attrs = ConnectionAttrs {
            src_ip: source_addr.ip(),
            src_identity: Some(&request.peer_identity),
            dst_port: target.port(),
        };
        let registration = register(context, pod, &attrs);
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

/// Logs a refused CONNECT and turns it into the HBONE answer.
fn refuse(record: ConnectionRecord, error: ProxyError) -> Refusal {
    let refusal = error.to_hbone_refusal();
    record.refused(&error);
    refusal
}

fn finish_registered(record: ConnectionRecord, registration: Registration, report: CopyReport) {
    match registration.revocation() {
        Some(reason) => record.failed(
            report.upstream_to_downstream,
            report.downstream_to_upstream,
            &ProxyError::Revoked(reason),
        ),
        None => finish(record, report),
    }
}

/// A plaintext connection from a client outside the mesh, redirected to 15006.
pub async fn handle_plaintext(
    context: Arc<ProxyContext>,
    pod: Arc<EnrolledPod>,
    downstream: TcpStream,
    peer: SocketAddr,
) {
    let original = match capture::socket::original_dst(&downstream) {
        Ok(original) => original,
        Err(error) => {
            tracing::warn!(%error, pod = %pod.display_name(), "inbound plaintext connection without an original destination");
            return;
        }
    };
    proxy_plaintext(&context, &pod, downstream, peer, original).await
}

/// Plans and proxies one plaintext connection to `original`; the rest of [`handle_plaintext`],
/// reachable from tests without capture rules.
pub async fn proxy_plaintext(
    context: &ProxyContext,
    pod: &EnrolledPod,
    mut downstream: TcpStream,
    peer: SocketAddr,
    original: SocketAddr,
) {
    let snapshot = context.snapshot();
    let mut record = context.record(Direction::Inbound, peer, original);
    record.src = peer_of(snapshot.workload_by_ip(peer.ip()).map(|w| w.as_ref()), None);
    record.dst = peer_of(
        snapshot
            .workload(&pod.namespace, &pod.name)
            .map(|w| w.as_ref()),
        Some(pod.identity.to_string()),
    );
    let local = downstream.local_addr().map_or(original.ip(), |a| a.ip());
    let ips = pod.addresses(&snapshot, local);
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
        InboundPlan::Refuse(refusal) => return record.refused(&refusal.into()),
    };
    drop(snapshot);
    let upstream = match pod.dial(target).await {
        Ok(upstream) => upstream,
        Err(source) => {
            return record.refused(&ProxyError::UpstreamConnect {
                target,
                passthrough: false,
                source,
            })
        }
    };
    let _ = upstream.set_nodelay(true);
    let attrs = ConnectionAttrs {
        src_ip: peer.ip(),
        src_identity: None,
        dst_port: target.port(),
    };
    let registration = register(context, pod, &attrs);
    record.opened();
    let mut upstream = Revocable::new(upstream, registration.cancelled.clone());
    let report =
        hbone::copy_bidirectional(&mut downstream, &mut upstream, &Default::default()).await;
    finish_registered(record, registration, report);
}
