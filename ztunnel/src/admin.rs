//! The small HTTP servers an operator and the kubelet talk to: admin (`/config_dump`, localhost
//! only), metrics (`/stats/prometheus`, `/metrics`) and readiness (`/healthz/ready`).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;

/// What an endpoint answers: status, content type, body.
pub struct Reply {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: String,
}

impl Reply {
    pub fn text(status: StatusCode, body: impl Into<String>) -> Self {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }

    pub fn json(body: String) -> Self {
        Reply {
            status: StatusCode::OK,
            content_type: "application/json",
            body,
        }
    }
}

pub type Routes = Arc<dyn Fn(&str) -> Reply + Send + Sync>;

/// Binds with SO_REUSEPORT so that a restarting ztunnel's successor can take the port while
/// the old process is still draining.
pub fn bind_shared(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(address)?;
    socket.listen(1024)
}

/// Serves HTTP/1.1 on `listener`, routing by path, until `shutdown` fires (the listener is
/// then closed, handing the port to a successor).
pub async fn serve(listener: TcpListener, routes: Routes, shutdown: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, _) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let routes = routes.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: http::Request<Incoming>| {
                let reply = routes(request.uri().path());
                async move {
                    let mut response = Response::new(Full::new(Bytes::from(reply.body)));
                    *response.status_mut() = reply.status;
                    response.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static(reply.content_type),
                    );
                    Ok::<_, Infallible>(response)
                }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                tracing::debug!(%error, "admin connection error");
            }
        });
    }
}
