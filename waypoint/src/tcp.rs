//! TCP through the waypoint: a port that is not HTTP (by `appProtocol` or name) passes at L4
//! to one ready endpoint, over HBONE like every upstream. The client's tunnel is answered 200
//! only once the endpoint's tunnel is open, so a client never sees a connection that leads
//! nowhere.

use std::sync::Arc;
use std::time::Instant;

use crate::authz;
use crate::endpoints::{endpoints, ForwardTarget};
use crate::proxy::{Downstream, Proxy};
use crate::state::Compiled;

pub async fn serve(
    proxy: &Arc<Proxy>,
    compiled: &Compiled,
    downstream: Arc<Downstream>,
    request: hbone::InboundRequest,
    responder: hbone::Responder,
) {
    let started = Instant::now();
    let target = ForwardTarget::addressed(&downstream.destination);
    let (policies, destination_port) = proxy.policies_for(compiled, &downstream.destination);
    let decision = authz::authorize_tcp(
        policies,
        &authz::TcpConnection {
            source_identity: Some(&request.peer_identity),
            source_ip: request.peer_addr.ip(),
            destination_port,
        },
    );
    if !decision.is_allowed() {
        let reason = decision.to_string();
        log_refusal(&request, &reason, "RBAC");
        responder.refuse(&hbone::Refusal::denied(reason));
        return;
    }
    // Envoy's flags: no healthy upstream (UH), upstream connection failure (UF).
    let refuse = |responder: hbone::Responder, flag, reason: String| {
        log_refusal(&request, &reason, flag);
        responder.refuse(&hbone::Refusal::unavailable(reason));
    };
    let candidates = match endpoints(compiled, &target, &proxy.settings.trust_domain) {
        Ok(candidates) => candidates,
        Err(error) => return refuse(responder, "UH", error.to_string()),
    };
    let Some(chosen) = crate::endpoints::pick(&proxy.balancer, &candidates, &[]) else {
        return refuse(responder, "UH", "no endpoint".into());
    };
    let mut upstream = match proxy.upstreams.tunnel(chosen, request.peer_addr).await {
        Ok(upstream) => upstream,
        Err(error) => {
            proxy.balancer.record(chosen.addr, true, Instant::now());
            return refuse(responder, "UF", error.to_string());
        }
    };
    let mut client = match responder.accept() {
        Ok(client) => client,
        Err(_) => return,
    };
    let _active = proxy.balancer.start(chosen.addr);
    let report =
        hbone::copy_bidirectional(&mut client, &mut upstream, &hbone::CopyBuffers::default()).await;
    tracing::event!(
        target: "access",
        tracing::Level::INFO,
        src.addr = %request.peer_addr,
        src.identity = %request.peer_identity,
        authority = %request.authority,
        upstream = %chosen.addr,
        dst.identity = %chosen.identity,
        bytes_sent = report.upstream_to_downstream,
        bytes_recv = report.downstream_to_upstream,
        duration = %format_args!("{:.3}ms", started.elapsed().as_secs_f64() * 1e3),
        error = report.result.as_ref().err().map(|e| e.to_string()).as_deref(),
        "tcp stream complete"
    );
}

/// The access line of a stream refused before it reached an endpoint.
fn log_refusal(request: &hbone::InboundRequest, reason: &str, flag: &'static str) {
    tracing::event!(
        target: "access",
        tracing::Level::WARN,
        src.addr = %request.peer_addr,
        src.identity = %request.peer_identity,
        authority = %request.authority,
        error = %reason,
        response_flags = flag,
        "tcp stream refused"
    );
}
