//! `mesh-echo`: the backend of the mesh conformance cases, answering what Istio's echo app
//! answers as far as the Gateway API mesh harness reads it. Every HTTP port speaks HTTP/1.1 and
//! h2c with prior knowledge (told apart by the client preface); an HTTP/2 request whose
//! content-type is `application/grpc` gets a gRPC answer, so the `--grpc` port is the same
//! server (gRPC is HTTP/2). `--tcp` ports echo bytes.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::streams;
use super::wire::{self, Buffered, Head};
use super::{GRPC_ECHO_PATH, H2_PREFACE};

/// Connections served at once per process; more wait in the accept backlog.
const MAX_CONNECTIONS: usize = 1024;
/// Idle time allowed between requests on a kept-alive HTTP/1.1 connection, and for a head.
const IDLE: Duration = Duration::from_secs(60);

/// Who this echo is: printed in every answer.
pub struct Identity {
    pub pod: String,
    pub namespace: String,
    pub version: String,
    /// Answer every HTTP/1.1 request with this status instead of 200 (a failing backend).
    pub status: Option<u16>,
}

/// Binds every port first (so "ready" means all of them listen), then serves forever.
pub async fn run(identity: Identity, http: Vec<u16>, tcp: Vec<u16>) -> Result<(), String> {
    let identity = Arc::new(identity);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut tasks = tokio::task::JoinSet::new();
    for (port, is_http) in http
        .iter()
        .map(|p| (*p, true))
        .chain(tcp.iter().map(|p| (*p, false)))
    {
        let listener = TcpListener::bind(("0.0.0.0", port))
            .await
            .map_err(|e| format!("bind 0.0.0.0:{port}: {e}"))?;
        println!("listening on 0.0.0.0:{port}");
        tasks.spawn(accept_loop(
            listener,
            port,
            is_http,
            identity.clone(),
            permits.clone(),
        ));
    }
    println!(
        "mesh-echo ready pod={} namespace={}",
        identity.pod, identity.namespace
    );
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| format!("accept loop: {e}"))?;
    }
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    port: u16,
    is_http: bool,
    identity: Arc<Identity>,
    permits: Arc<Semaphore>,
) {
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("accept on {port}: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let identity = identity.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let outcome = if is_http {
                serve_http(stream, peer, port, identity).await
            } else {
                tcp_echo(stream).await
            };
            if let Err(e) = outcome {
                eprintln!("connection from {peer} on {port}: {e}");
            }
            drop(permit);
        });
    }
}

async fn tcp_echo(stream: TcpStream) -> Result<(), String> {
    let (mut reader, mut writer) = stream.into_split();
    tokio::io::copy(&mut reader, &mut writer)
        .await
        .map_err(|e| format!("tcp echo: {e}"))?;
    writer
        .shutdown()
        .await
        .map_err(|e| format!("shutdown: {e}"))
}

/// HTTP/2 if the first bytes are the client preface, else HTTP/1.1. Peeks only until the bytes
/// seen differ from the preface (one byte for `GET`, two for `POST`).
async fn is_h2(stream: &TcpStream) -> Result<bool, String> {
    let sniff = async {
        let mut buf = [0u8; 24];
        loop {
            let seen = stream
                .peek(&mut buf)
                .await
                .map_err(|e| format!("peek: {e}"))?;
            if seen == 0 {
                return Ok(false);
            }
            if buf[..seen] != H2_PREFACE[..seen] {
                return Ok(false);
            }
            if seen == H2_PREFACE.len() {
                return Ok(true);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), sniff)
        .await
        .map_err(|_| "no request within 10s".to_string())?
}

async fn serve_http(
    stream: TcpStream,
    peer: SocketAddr,
    port: u16,
    identity: Arc<Identity>,
) -> Result<(), String> {
    if is_h2(&stream).await? {
        return serve_h2(stream, peer, port, identity).await;
    }
    let mut conn = Buffered::new(stream, IDLE);
    while let Some(head) = conn.read_head().await? {
        if streams::is_websocket(&head) {
            let (stream, leftover) = conn.into_parts();
            return streams::serve_websocket(stream, leftover, &head).await;
        }
        let [method, target, version] = head.start.clone();
        conn.read_body(&head, false).await?;
        let host = head.header("host").unwrap_or("").to_string();
        let headers: Vec<(String, String)> = head
            .headers
            .iter()
            .filter(|(name, _)| !name.eq_ignore_ascii_case("host"))
            .cloned()
            .collect();
        let proto = if version == "HTTP/1.0" {
            "HTTP/1.0"
        } else {
            "HTTP/1.1"
        };
        let seen = Seen {
            port,
            host: &host,
            url: &target,
            method: &method,
            proto,
            peer: peer.ip(),
        };
        let body = echo_body(&identity, &seen, &headers, None);
        let close = wants_close(&head, &version);
        if let Some(delay) = query_delay(&target) {
            tokio::time::sleep(delay).await;
        }
        let status = identity.status.unwrap_or(200);
        let response = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n{body}",
            if status == 200 { "OK" } else { "Echo" },
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        conn.stream
            .write_all(response.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        if close {
            break;
        }
    }
    Ok(())
}

/// `delay=MS` in the query, at most a minute.
fn query_delay(target: &str) -> Option<Duration> {
    let (_, query) = target.split_once('?')?;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("delay="))
        .and_then(|ms| ms.parse::<u64>().ok())
        .map(|ms| Duration::from_millis(ms.min(60_000)))
}

fn wants_close(head: &Head, version: &str) -> bool {
    head.has_token("connection", "close")
        || (version == "HTTP/1.0" && !head.has_token("connection", "keep-alive"))
}

async fn serve_h2(
    stream: TcpStream,
    peer: SocketAddr,
    port: u16,
    identity: Arc<Identity>,
) -> Result<(), String> {
    let mut connection = tokio::time::timeout(
        Duration::from_secs(10),
        h2::server::Builder::new()
            .max_concurrent_streams(200)
            .max_header_list_size(wire::MAX_HEAD as u32)
            .handshake::<_, Bytes>(stream),
    )
    .await
    .map_err(|_| "HTTP/2 handshake timed out".to_string())?
    .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
    let mut streams = tokio::task::JoinSet::new();
    while let Some(next) = connection.accept().await {
        let (request, respond) = next.map_err(|e| format!("HTTP/2: {e}"))?;
        let identity = identity.clone();
        streams.spawn(async move {
            if let Err(e) = answer_h2(request, respond, peer, port, &identity).await {
                eprintln!("HTTP/2 stream from {peer} on {port}: {e}");
            }
        });
    }
    streams.shutdown().await;
    Ok(())
}

async fn answer_h2(
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    peer: SocketAddr,
    port: u16,
    identity: &Identity,
) -> Result<(), String> {
    let (parts, mut body) = request.into_parts();
    if parts.uri.path() == streams::GRPC_STREAM_PATH {
        return streams::serve_grpc_stream(body, respond).await;
    }
    let mut received = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| format!("request body: {e}"))?;
        let _ = body.flow_control().release_capacity(chunk.len());
        received.extend_from_slice(&chunk);
        if received.len() > wire::MAX_BODY {
            return Err("request body too large".into());
        }
    }
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let host = parts
        .uri
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let url = parts
        .uri
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let grpc = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let seen = Seen {
        port,
        host: &host,
        url: &url,
        method: parts.method.as_str(),
        proto: "HTTP/2.0",
        peer: peer.ip(),
    };
    let send_error = |e: h2::Error| format!("HTTP/2 response: {e}");
    if !grpc {
        let text = echo_body(identity, &seen, &headers, None);
        let response = http::Response::builder()
            .status(200)
            .header("content-type", "text/plain")
            .header("content-length", text.len())
            .body(())
            .map_err(|e| e.to_string())?;
        let mut send = respond.send_response(response, false).map_err(send_error)?;
        return send.send_data(Bytes::from(text), true).map_err(send_error);
    }
    let grpc_headers = http::Response::builder()
        .status(200)
        .header("content-type", "application/grpc");
    if seen.url != GRPC_ECHO_PATH {
        // Trailers-only answer: UNIMPLEMENTED, as a gRPC server says for an unknown method.
        let response = grpc_headers
            .header("grpc-status", "12")
            .header("grpc-message", "unknown method")
            .body(())
            .map_err(|e| e.to_string())?;
        respond.send_response(response, true).map_err(send_error)?;
        return Ok(());
    }
    let (status, text) = match wire::grpc_string_field(&received) {
        Ok(message) => ("0", echo_body(identity, &seen, &headers, Some(&message))),
        Err(e) => ("3", e),
    };
    let mut send = respond
        .send_response(grpc_headers.body(()).map_err(|e| e.to_string())?, false)
        .map_err(send_error)?;
    if status == "0" {
        send.send_data(Bytes::from(wire::grpc_string_message(&text)), false)
            .map_err(send_error)?;
    }
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static(status));
    if status != "0" {
        if let Ok(message) = http::HeaderValue::from_str(&text) {
            trailers.insert("grpc-message", message);
        }
    }
    send.send_trailers(trailers).map_err(send_error)
}

/// What the echo saw of one request.
pub struct Seen<'a> {
    pub port: u16,
    pub host: &'a str,
    pub url: &'a str,
    pub method: &'a str,
    pub proto: &'a str,
    pub peer: IpAddr,
}

/// The `Key=value` lines Istio's echo writes, in its order; one `RequestHeader=` line per
/// header value with the name canonicalised as Go's `r.Header` holds it (Host is its own line,
/// as in Go). `Echo=` carries a gRPC request's message.
pub fn echo_body(
    identity: &Identity,
    seen: &Seen<'_>,
    headers: &[(String, String)],
    grpc_message: Option<&str>,
) -> String {
    let mut lines = vec![
        format!("ServiceVersion={}", identity.version),
        format!("ServicePort={}", seen.port),
        format!("Host={}", seen.host),
        format!("URL={}", seen.url),
        format!("Method={}", seen.method),
        format!("Proto={}", seen.proto),
        format!("IP={}", seen.peer),
    ];
    if let Some(message) = grpc_message {
        lines.push(format!("Echo={message}"));
    }
    for (name, value) in headers {
        lines.push(format!(
            "RequestHeader={}:{value}",
            wire::canonical_name(name)
        ));
    }
    lines.push(format!("Namespace={}", identity.namespace));
    lines.push(format!("Hostname={}", identity.pod));
    let mut text = lines.join("\n");
    text.push('\n');
    text
}
