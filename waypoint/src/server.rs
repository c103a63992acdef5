//! The waypoint's HBONE listener (port 15008): each CONNECT from a ztunnel is resolved to what
//! it is for (`destination::resolve`); HTTP ports are served request by request (HTTP/1.1,
//! h2c and upgrades on one connection), other ports pass through at L4 to an endpoint.

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;

use crate::destination::{self, Traffic};
use crate::proxy::{Downstream, Proxy};
use crate::tcp;

/// A client that sends nothing for this long after opening a connection is dropped.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The `hbone::Service` of the waypoint.
pub struct WaypointService {
    pub proxy: Arc<Proxy>,
}

impl hbone::Service for WaypointService {
    async fn serve(&self, request: hbone::InboundRequest, responder: hbone::Responder) {
        let compiled = self.proxy.state.current();
        let destination = match destination::resolve(
            &compiled.snapshot,
            &self.proxy.gateway,
            request.authority,
        ) {
            Ok(destination) => destination,
            Err(error) => {
                tracing::event!(
                    target: "access",
                    tracing::Level::WARN,
                    src.addr = %request.peer_addr,
                    src.identity = %request.peer_identity,
                    authority = %request.authority,
                    error = %error,
                    "tunnel refused"
                );
                responder.refuse(&hbone::Refusal::denied(error.to_string()));
                return;
            }
        };
        let downstream = Arc::new(Downstream {
            peer_identity: request.peer_identity.clone(),
            peer_addr: request.peer_addr,
            destination,
        });
        match downstream.destination.traffic {
            Traffic::Tcp => {
                tcp::serve(&self.proxy, &compiled, downstream, request, responder).await
            }
            Traffic::Http => {
                let stream = match responder.accept() {
                    Ok(stream) => stream,
                    Err(error) => {
                        tracing::debug!(%error, "client left before the tunnel was accepted");
                        return;
                    }
                };
                serve_http(self.proxy.clone(), downstream, stream).await;
            }
        }
    }
}

/// Serves HTTP/1.1 (with upgrades), or HTTP/2 with prior knowledge, on one tunnel.
async fn serve_http(proxy: Arc<Proxy>, downstream: Arc<Downstream>, stream: hbone::H2Stream) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    let service = service_fn(move |request| proxy.clone().handle(downstream.clone(), request));
    if let Err(error) = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(%error, "downstream HTTP connection ended with an error");
    }
}
