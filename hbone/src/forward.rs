//! The usual server behaviour (ztunnel inbound): ask a [`Handler`] to authorize the tunnel and
//! connect the upstream, answer 200 only once the upstream is connected, copy both ways, and
//! report byte counts and how it ended.

use std::future::Future;
use std::io;
use std::time::Duration;

use h2::Reason;
use tracing::{debug, info};

use crate::config::{CopyBuffers, ServerConfig};
use crate::copy::{
    copy_bidirectional, CopyError, CopyRead, CopyReport, CopyWrite, Direction, Operation,
};
use crate::request::InboundRequest;
use crate::server::{Refusal, Responder, Service};

/// Decides what to do with a tunnel and connects its upstream.
pub trait Handler: Send + Sync + 'static {
    /// The connected upstream (a TCP stream to the workload, usually).
    type Upstream: CopyRead + CopyWrite + Send + 'static;
    /// Whatever `finished` needs later, e.g. the resolved workloads for the access log.
    type Context: Send + 'static;

    /// Authorizes the request and connects the upstream, or refuses: 401 for policy, 503 when
    /// the upstream is unreachable, 400 for requests that make no sense here.
    fn connect(
        &self,
        request: &InboundRequest,
    ) -> impl Future<Output = Result<(Self::Upstream, Self::Context), Refusal>> + Send;

    /// Called once per accepted tunnel when it ended. `report` has the byte counts:
    /// `downstream_to_upstream` is what the client sent to the workload.
    fn finished(&self, request: InboundRequest, context: Self::Context, report: CopyReport);

    /// Called when a tunnel was refused, by the handler or by hbone (upstream connect timeout).
    fn refused(&self, request: &InboundRequest, refusal: &Refusal) {
        let _ = (request, refusal);
    }
}

/// Adapts a [`Handler`] into a [`Service`]. Usually built by [`crate::Server::forwarding`].
pub struct Forward<H> {
    handler: H,
    connect_timeout: Duration,
    buffers: CopyBuffers,
}

impl<H: Handler> Forward<H> {
    pub fn new(handler: H, config: &ServerConfig) -> Self {
        Forward {
            handler,
            connect_timeout: config.upstream_connect_timeout,
            buffers: config.copy.clone(),
        }
    }

    pub fn handler(&self) -> &H {
        &self.handler
    }
}

impl<H: Handler> Service for Forward<H> {
    async fn serve(&self, request: InboundRequest, responder: Responder) {
        // Boxed: connecting is short-lived, and inline its state would stay allocated in the
        // stream's task for the tunnel's whole life.
        let connect = Box::pin(tokio::time::timeout(
            self.connect_timeout,
            self.handler.connect(&request),
        ));
        // Matched in one step: a named intermediate `Result` would keep its own slot in the
        // task for the tunnel's life (3072 instead of 2560 bytes per stream, -Zprint-type-sizes).
        let (mut upstream, context) = match connect.await {
            Ok(Ok(connected)) => connected,
            failed => {
                let refusal = match failed {
                    Ok(Err(refusal)) => refusal,
                    _ => Refusal::unavailable(format!(
                        "upstream {} did not accept the connection within {:?}",
                        request.authority, self.connect_timeout
                    )),
                };
                info!(
                    stream_id = request.stream_id,
                    peer_identity = %request.peer_identity,
                    authority = %request.authority,
                    status = refusal.status.code().as_u16(),
                    reason = %refusal.reason,
                    "hbone tunnel refused"
                );
                self.handler.refused(&request, &refusal);
                responder.refuse(&refusal);
                return;
            }
        };
        let mut downstream = match responder.accept() {
            Ok(stream) => stream,
            Err(source) => {
                // The client reset the stream while we were connecting.
                let report = CopyReport {
                    downstream_to_upstream: 0,
                    upstream_to_downstream: 0,
                    result: Err(CopyError {
                        direction: Direction::UpstreamToDownstream,
                        operation: Operation::Write,
                        source,
                    }),
                };
                self.handler.finished(request, context, report);
                return;
            }
        };
        debug!(stream_id = request.stream_id, authority = %request.authority, "hbone tunnel established");
        let report = copy_bidirectional(&mut downstream, &mut upstream, &self.buffers).await;
        if let Err(e) = &report.result {
            // Tell the client the tunnel broke rather than letting it look like a clean close.
            downstream.reset(reset_reason(&e.source));
        }
        self.handler.finished(request, context, report);
    }
}

fn reset_reason(error: &io::Error) -> Reason {
    match error.kind() {
        io::ErrorKind::ConnectionRefused => Reason::REFUSED_STREAM,
        _ => Reason::CANCEL,
    }
}
