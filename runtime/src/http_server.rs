//! The small HTTP/1.1 servers an operator and the kubelet talk to (admin `/config_dump`,
//! `/stats/prometheus`, `/healthz/ready`): routing by path to a synchronous reply, bounded like
//! every other server (DESIGN §7) — a connection cap, per-source cap, a deadline on every
//! request's headers (also between keep-alive requests), and at most 64 KiB of headers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;

use crate::accept::{accept_loop, AcceptedConnection};
use crate::limits::{ConnectionLimiter, Limits};

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

/// Bounds of one HTTP server.
#[derive(Debug, Clone, Copy)]
pub struct HttpServerConfig {
    pub limits: Limits,
    /// Longest wait for a request's complete headers, from when the connection is idle: a
    /// client that connects and says nothing (or too slowly) is disconnected after this.
    pub header_read_timeout: Duration,
    /// Longest a connection may live, however busy: scrapers reconnect, floods do not linger.
    pub max_connection_age: Duration,
}

/// Largest request head accepted; hyper's buffer limit, which bounds the headers.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

impl Default for HttpServerConfig {
    fn default() -> Self {
        HttpServerConfig {
            limits: Limits {
                max_connections: 256,
                max_connections_per_source: 32,
            },
            header_read_timeout: Duration::from_secs(5),
            max_connection_age: Duration::from_secs(300),
        }
    }
}

/// Binds with SO_REUSEPORT so that a restarting process's successor can take the port while
/// the old one is still draining.
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
/// then closed, handing the port to a successor). `name` identifies the server in logs.
pub async fn serve(
    name: &'static str,
    listener: TcpListener,
    routes: Routes,
    config: HttpServerConfig,
    shutdown: CancellationToken,
) {
    let limiter = ConnectionLimiter::new(name, config.limits);
    accept_loop(name, listener, limiter, shutdown, move |connection| {
        serve_connection(name, connection, routes.clone(), config)
    })
    .await
}

async fn serve_connection(
    name: &'static str,
    AcceptedConnection {
        stream,
        peer,
        permit,
    }: AcceptedConnection,
    routes: Routes,
    config: HttpServerConfig,
) {
    let _permit = permit;
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
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(MAX_HEADER_BYTES)
        .serve_connection(TokioIo::new(stream), service);
    match tokio::time::timeout(config.max_connection_age, connection).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(server = name, %peer, %error, "http connection error"),
        Err(_) => {
            tracing::debug!(server = name, %peer, "http connection closed at its maximum age")
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn start(config: HttpServerConfig) -> (SocketAddr, CancellationToken) {
        let listener = bind_shared("127.0.0.1:0".parse().unwrap()).unwrap();
        let address = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let routes: Routes = Arc::new(|path: &str| match path {
            "/ok" => Reply::text(StatusCode::OK, "fine\n"),
            _ => Reply::text(StatusCode::NOT_FOUND, "no\n"),
        });
        tokio::spawn(serve("test", listener, routes, config, shutdown.clone()));
        (address, shutdown)
    }

    async fn get(address: SocketAddr, path: &str) -> String {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer).await;
        answer
    }

    /// Reads until the server closes; `true` if it did within `within`.
    async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
        let mut sink = Vec::new();
        tokio::time::timeout(within, stream.read_to_end(&mut sink))
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_silent_client_is_disconnected_and_others_are_served() {
        let config = HttpServerConfig {
            header_read_timeout: Duration::from_millis(300),
            ..HttpServerConfig::default()
        };
        let (address, _shutdown) = start(config).await;
        let mut silent = TcpStream::connect(address).await.unwrap();
        let mut half = TcpStream::connect(address).await.unwrap();
        half.write_all(b"GET /ok HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        assert!(get(address, "/ok").await.starts_with("HTTP/1.1 200"));
        assert!(closed_within(&mut silent, Duration::from_secs(5)).await);
        assert!(closed_within(&mut half, Duration::from_secs(5)).await);
    }

    #[tokio::test]
    async fn huge_headers_are_refused() {
        let (address, _shutdown) = start(HttpServerConfig::default()).await;
        let mut stream = TcpStream::connect(address).await.unwrap();
        let filler = "x".repeat(8 * 1024);
        let mut request = String::from("GET /ok HTTP/1.1\r\nhost: x\r\n");
        for i in 0..16 {
            request.push_str(&format!("x-filler-{i}: {filler}\r\n"));
        }
        request.push_str("\r\n");
        // The server may close before everything is written.
        let _ = stream.write_all(request.as_bytes()).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(!answer.contains("200 OK"), "{answer}");
    }

    #[tokio::test]
    async fn connections_beyond_the_per_source_cap_are_closed() {
        let config = HttpServerConfig {
            limits: Limits {
                max_connections: 8,
                max_connections_per_source: 2,
            },
            ..HttpServerConfig::default()
        };
        let (address, _shutdown) = start(config).await;
        let _a = TcpStream::connect(address).await.unwrap();
        let _b = TcpStream::connect(address).await.unwrap();
        // Give the server a moment to admit both before the third arrives.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut third = TcpStream::connect(address).await.unwrap();
        assert!(closed_within(&mut third, Duration::from_secs(5)).await);
    }
}
