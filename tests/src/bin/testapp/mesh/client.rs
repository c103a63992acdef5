//! `mesh-client`: the Istio echo client as the mesh conformance harness drives it. It dials the
//! address it is given (never a name: the harness resolves Service names itself), sends one
//! HTTP/1.1 request (or one gRPC `Echo` call over h2c) with the Host/:authority it is told, never
//! follows redirects, and prints `StatusCode=`, `ResponseHeader=Name:value` lines and the echo
//! body's `Key=value` lines. With `--count` it sends many and prints one `Summary` line.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::wire::{self, Buffered};

/// One request as the command line describes it.
#[derive(Debug, Clone)]
pub struct Request {
    pub connect: SocketAddr,
    pub host: String,
    pub path: String,
    pub method: String,
    pub headers: Vec<(String, String)>,
    /// `Some(path)` sends a gRPC call to that path instead of an HTTP request.
    pub grpc: Option<String>,
    pub timeout: Duration,
}

/// What came back.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    /// The HTTP status; for gRPC `200` only when grpc-status is 0, else `grpc-<code>`.
    pub status: String,
    pub grpc_status: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    /// The output format the harness parses (see the module comment).
    pub fn render(&self) -> String {
        let mut out = format!("StatusCode={}\n", self.status);
        if let Some(code) = &self.grpc_status {
            out.push_str(&format!("GrpcStatus={code}\n"));
        }
        for (name, value) in &self.headers {
            out.push_str(&format!("ResponseHeader={name}:{value}\n"));
        }
        for line in self.body.lines() {
            let is_field = line.split_once('=').is_some_and(|(key, _)| {
                !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric())
            });
            // Non-echo bodies (a proxy's 404 text) are marked so they never read as fields.
            if is_field {
                out.push_str(line);
            } else {
                out.push_str("Body=");
                out.push_str(line);
            }
            out.push('\n');
        }
        out
    }

    pub fn hostname(&self) -> Option<&str> {
        self.body
            .lines()
            .find_map(|line| line.strip_prefix("Hostname="))
    }
}

/// Sends `request` once, bounded by its timeout.
pub async fn send(request: &Request) -> Result<Answer, String> {
    let exchange = async {
        let stream = TcpStream::connect(request.connect)
            .await
            .map_err(|e| format!("connect {}: {e}", request.connect))?;
        let _ = stream.set_nodelay(true);
        match &request.grpc {
            None => send_http1(stream, request).await,
            Some(path) => send_grpc(stream, request, path).await,
        }
    };
    tokio::time::timeout(request.timeout, exchange)
        .await
        .map_err(|_| {
            format!(
                "no answer from {} within {:?}",
                request.connect, request.timeout
            )
        })?
}

async fn send_http1(mut stream: TcpStream, request: &Request) -> Result<Answer, String> {
    let mut text = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ambit-testapp\r\n",
        request.method, request.path, request.host
    );
    for (name, value) in &request.headers {
        text.push_str(&format!("{}: {value}\r\n", wire::canonical_name(name)));
    }
    // Keep-alives off, as in the Go suite: one request per connection.
    text.push_str("Connection: close\r\n\r\n");
    stream
        .write_all(text.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut conn = Buffered::new(stream, request.timeout);
    let head = conn
        .read_head()
        .await?
        .ok_or("connection closed before a response")?;
    let status = head.start[1].clone();
    let bodiless = request.method.eq_ignore_ascii_case("HEAD")
        || status.starts_with('1')
        || status == "204"
        || status == "304";
    let body = if bodiless {
        Vec::new()
    } else {
        conn.read_body(&head, true).await?
    };
    Ok(Answer {
        status,
        grpc_status: None,
        headers: head.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

async fn send_grpc(stream: TcpStream, request: &Request, path: &str) -> Result<Answer, String> {
    let h2_error = |e: h2::Error| format!("HTTP/2: {e}");
    let (client, connection) = h2::client::handshake(stream).await.map_err(h2_error)?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await.map_err(h2_error)?;
    let mut builder = http::Request::builder()
        .method("POST")
        .uri(format!("http://{}{path}", request.host))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in &request.headers {
        builder = builder.header(name.to_ascii_lowercase(), value);
    }
    let call = builder.body(()).map_err(|e| format!("gRPC request: {e}"))?;
    let (response, mut send) = client.send_request(call, false).map_err(h2_error)?;
    send.send_data(
        Bytes::from(wire::grpc_string_message("ambit-testapp")),
        true,
    )
    .map_err(h2_error)?;
    let (parts, mut body) = response.await.map_err(h2_error)?.into_parts();
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(h2_error)?;
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
        if data.len() > wire::MAX_BODY {
            return Err("gRPC response too large".into());
        }
    }
    let trailers = body.trailers().await.map_err(h2_error)?.unwrap_or_default();
    let mut headers = Vec::new();
    for (name, value) in parts.headers.iter().chain(trailers.iter()) {
        headers.push((
            name.as_str().to_string(),
            String::from_utf8_lossy(value.as_bytes()).into_owned(),
        ));
    }
    let grpc_status = trailers
        .get("grpc-status")
        .or_else(|| parts.headers.get("grpc-status"))
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let status = match (parts.status.as_u16(), grpc_status.as_deref()) {
        (200, Some("0")) => "200".to_string(),
        (200, Some(code)) => format!("grpc-{code}"),
        (200, None) => "grpc-missing-status".to_string(),
        (other, _) => other.to_string(),
    };
    let body = if status == "200" {
        wire::grpc_string_field(&data)?
    } else {
        String::new()
    };
    Ok(Answer {
        status,
        grpc_status,
        headers,
        body,
    })
}

/// What `--count` reports: answers per status and per responding pod, and failed exchanges.
#[derive(Debug, Default)]
pub struct Summary {
    pub statuses: BTreeMap<String, u32>,
    pub hostnames: BTreeMap<String, u32>,
    pub errors: u32,
    pub first_error: Option<String>,
}

impl Summary {
    pub fn render(&self, requests: usize) -> String {
        let list = |map: &BTreeMap<String, u32>| {
            map.iter()
                .map(|(k, v)| format!("{k}:{v}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut out = format!(
            "Summary requests={requests} errors={} statuses={} hostnames={}\n",
            self.errors,
            list(&self.statuses),
            list(&self.hostnames)
        );
        if let Some(error) = &self.first_error {
            out.push_str(&format!("FirstError={error}\n"));
        }
        out
    }
}

/// Sends `count` requests from `concurrency` workers, each on its own connection.
pub async fn send_many(request: Request, count: usize, concurrency: usize) -> Summary {
    let request = Arc::new(request);
    let next = Arc::new(AtomicUsize::new(0));
    let summary = Arc::new(Mutex::new(Summary::default()));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.clamp(1, count.max(1)) {
        let (request, next, summary) = (request.clone(), next.clone(), summary.clone());
        workers.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let outcome = send(&request).await;
                let Ok(mut summary) = summary.lock() else {
                    return;
                };
                match outcome {
                    Ok(answer) => {
                        *summary.statuses.entry(answer.status.clone()).or_default() += 1;
                        if let Some(host) = answer.hostname() {
                            *summary.hostnames.entry(host.to_string()).or_default() += 1;
                        }
                    }
                    Err(error) => {
                        summary.errors += 1;
                        summary.first_error.get_or_insert(error);
                    }
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let mut summary = summary
        .lock()
        .map(|mut s| std::mem::take(&mut *s))
        .unwrap_or_default();
    summary.first_error = summary.first_error.take().map(|e| e.replace('\n', " "));
    summary
}
