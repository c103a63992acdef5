//! TCP through the waypoint: a port that is not HTTP (by `appProtocol` or name) passes at L4
//! to one ready endpoint, over HBONE like every upstream. The client's tunnel is answered 200
//! only once the endpoint's tunnel is open, so a client never sees a connection that leads
//! nowhere.

use std::sync::Arc;
use std::time::Instant;

use crate::authz;
use crate::destination::Target;
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
    let target = match &downstream.destination.target {
        Target::Service { key, port } => ForwardTarget::Service {
            key: key.clone(),
            port: *port,
        },
        Target::Workload(workload) => ForwardTarget::Workload {
            workload: workload.clone(),
            port: downstream.destination.authority.port(),
        },
    };
    let refuse = |reason: String| {
        tracing::event!(
            target: "access",
            tracing::Level::WARN,
            src.addr = %request.peer_addr,
            src.identity = %request.peer_identity,
            authority = %request.authority,
            error = %reason,
            "tcp stream refused"
        );
        responder_refuse(reason)
    };
    let (service, destination_port) = match &downstream.destination.target {
        Target::Service { key, port } => (Some((key.namespace.as_str(), key.name.as_str())), *port),
        Target::Workload(_) => (None, downstream.destination.authority.port()),
    };
    let policies = compiled.snapshot.waypoint_policies(
        (
            proxy.gateway.namespace.as_str(),
            proxy.gateway.name.as_str(),
        ),
        service,
    );
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
        tracing::event!(
            target: "access",
            tracing::Level::WARN,
            src.addr = %request.peer_addr,
            src.identity = %request.peer_identity,
            authority = %request.authority,
            error = %reason,
            response_flags = "RBAC",
            "tcp stream refused"
        );
        responder.refuse(&hbone::Refusal::denied(reason));
        return;
    }
    let candidates = match endpoints(compiled, &target, &proxy.settings.trust_domain) {
        Ok(candidates) => candidates,
        Err(error) => {
            responder.refuse(&refuse(error.to_string()));
            return;
        }
    };
    let addrs: Vec<_> = candidates.iter().map(|e| e.addr).collect();
    let Some(chosen) = proxy
        .balancer
        .pick(
            &addrs,
            Instant::now(),
            (
                rand::random::<u32>() as usize,
                rand::random::<u32>() as usize,
            ),
        )
        .and_then(|addr| candidates.iter().find(|e| e.addr == addr))
    else {
        responder.refuse(&refuse("no endpoint".into()));
        return;
    };
    let mut upstream = match proxy.upstreams.tunnel(chosen, request.peer_addr).await {
        Ok(upstream) => upstream,
        Err(error) => {
            proxy.balancer.record(chosen.addr, true, Instant::now());
            responder.refuse(&refuse(error.to_string()));
            return;
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

fn responder_refuse(reason: String) -> hbone::Refusal {
    hbone::Refusal::unavailable(reason)
}
