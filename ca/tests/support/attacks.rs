//! Clients that never finish what they start, on loopback. Each flood slot connects from its own
//! loopback source address (127.0.0.X — Linux routes all of 127/8 to lo), does its one kind of
//! harm, holds the connection until the CA closes it, and after a pause does it again until
//! told to stop. Stopping only ends the reconnecting: connections still open stay open, so a
//! test can watch the CA close them by itself.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// What one misbehaving client does after connecting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attack {
    /// Connects and sends nothing.
    IdleTcp,
    /// Sends the header of a TLS record (a ClientHello of 512 bytes) and one byte of it.
    PartialTlsRecord,
    /// Sends a real ClientHello and never answers the server's flight (half-open handshake).
    StalledHandshake,
    /// Completes TLS, never sends the HTTP/2 preface.
    TlsNoPreface,
    /// Completes TLS and the HTTP/2 preface and SETTINGS, never sends a request.
    PrefaceNoRequest,
    /// Sends one header block of [`HUGE_HEADER_BYTES`] in CONTINUATION frames, never ending it.
    HugeHeaders,
    /// Sends a request's headers and then its body one byte every half second.
    SlowBody,
}

/// Size of the header block a [`Attack::HugeHeaders`] client sends.
pub const HUGE_HEADER_BYTES: usize = 2 * 1024 * 1024;
const PAUSE_BEFORE_RECONNECT: Duration = Duration::from_secs(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the flood did, as its clients saw it.
#[derive(Debug, Default)]
pub struct FloodCounters {
    /// Connections attempted.
    pub attempts: AtomicUsize,
    /// Connections the kernel completed (the CA may still close them at once).
    pub connected: AtomicUsize,
    /// Slow-body requests the CA answered 408 (request deadline).
    pub timed_out_requests: AtomicUsize,
}

pub struct Flood {
    stop: watch::Sender<bool>,
    pub counters: Arc<FloodCounters>,
    tasks: JoinSet<()>,
}

impl Flood {
    /// `slots` clients; slot `i` connects from `sources[i % sources.len()]` and does `kind(i)`.
    pub fn start(
        target: SocketAddr,
        tls: Arc<rustls::ClientConfig>,
        sources: &[Ipv4Addr],
        slots: usize,
        kind: impl Fn(usize) -> Attack,
    ) -> Flood {
        let (stop, stopped) = watch::channel(false);
        let counters = Arc::new(FloodCounters::default());
        let mut tasks = JoinSet::new();
        for slot in 0..slots {
            let source = sources[slot % sources.len()];
            let (attack, tls, stopped, counters) =
                (kind(slot), tls.clone(), stopped.clone(), counters.clone());
            tasks.spawn(async move {
                run_slot(attack, source, target, tls, stopped, counters).await;
            });
        }
        Flood {
            stop,
            counters,
            tasks,
        }
    }

    /// No more reconnecting; open connections stay open until the CA closes them.
    pub fn stop_reconnecting(&self) {
        let _ = self.stop.send(true);
    }

    pub fn attempts(&self) -> usize {
        self.counters.attempts.load(Ordering::Relaxed)
    }

    /// Ends every client, closing what is still open.
    pub async fn end(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// `count` loopback source addresses from 127.0.0.`first` on (never 127.0.0.1, the good node's).
pub fn loopback_sources(first: u8, count: u8) -> Vec<Ipv4Addr> {
    assert!(first >= 2 && u16::from(first) + u16::from(count) <= 255);
    (first..first + count)
        .map(|last| Ipv4Addr::new(127, 0, 0, last))
        .collect()
}

async fn run_slot(
    attack: Attack,
    source: Ipv4Addr,
    target: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    mut stopped: watch::Receiver<bool>,
    counters: Arc<FloodCounters>,
) {
    loop {
        if *stopped.borrow() {
            return;
        }
        counters.attempts.fetch_add(1, Ordering::Relaxed);
        if let Some(tcp) = connect_from(source, target).await {
            counters.connected.fetch_add(1, Ordering::Relaxed);
            // Errors are the CA closing on us: exactly what is expected sooner or later.
            let _ = attack_once(attack, tcp, target, &tls, &counters).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(PAUSE_BEFORE_RECONNECT) => {}
            _ = stopped.changed() => return,
        }
    }
}

async fn connect_from(source: Ipv4Addr, target: SocketAddr) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0)).ok()?;
    tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(target))
        .await
        .ok()?
        .ok()
}

type AttackResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

async fn attack_once(
    attack: Attack,
    mut tcp: TcpStream,
    target: SocketAddr,
    tls: &Arc<rustls::ClientConfig>,
    counters: &FloodCounters,
) -> AttackResult {
    let server_name = ServerName::from(target.ip());
    match attack {
        Attack::IdleTcp => wait_closed(&mut tcp).await,
        Attack::PartialTlsRecord => {
            tcp.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await?;
            wait_closed(&mut tcp).await
        }
        Attack::StalledHandshake => {
            let mut client = rustls::ClientConnection::new(tls.clone(), server_name)?;
            let mut hello = Vec::new();
            client.write_tls(&mut hello)?;
            tcp.write_all(&hello).await?;
            wait_closed(&mut tcp).await
        }
        Attack::TlsNoPreface => {
            let mut stream = tls_connect(tcp, tls, server_name).await?;
            wait_closed(&mut stream).await
        }
        Attack::PrefaceNoRequest => {
            let mut stream = tls_connect(tcp, tls, server_name).await?;
            stream.write_all(PREFACE).await?;
            stream.write_all(&frame(SETTINGS, 0, 0, &[])).await?;
            wait_closed(&mut stream).await
        }
        Attack::HugeHeaders => {
            let mut stream = tls_connect(tcp, tls, server_name).await?;
            stream.write_all(PREFACE).await?;
            stream.write_all(&frame(SETTINGS, 0, 0, &[])).await?;
            let block = huge_header_block();
            for (index, chunk) in block.chunks(16 * 1024).enumerate() {
                // Never END_HEADERS: the CA has to decide for itself when enough is enough.
                let kind = if index == 0 { HEADERS } else { CONTINUATION };
                stream.write_all(&frame(kind, 0, 1, chunk)).await?;
            }
            wait_closed(&mut stream).await
        }
        Attack::SlowBody => {
            let stream = tls_connect(tcp, tls, server_name).await?;
            slow_body(stream, counters).await
        }
    }
}

async fn tls_connect(
    tcp: TcpStream,
    tls: &Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, std::io::Error> {
    tokio_rustls::TlsConnector::from(tls.clone())
        .connect(server_name, tcp)
        .await
}

/// Reads (and drops) whatever the CA sends until it closes the connection.
async fn wait_closed(stream: &mut (impl AsyncRead + Unpin)) -> AttackResult {
    let mut buffer = [0u8; 4096];
    while stream.read(&mut buffer).await? > 0 {}
    Ok(())
}

async fn slow_body(
    stream: tokio_rustls::client::TlsStream<TcpStream>,
    counters: &FloodCounters,
) -> AttackResult {
    let (sender, connection) = h2::client::handshake(stream).await?;
    let mut driver = tokio::spawn(connection);
    let mut sender = sender.ready().await?;
    let request = http::Request::post(format!(
        "https://ambit-ca{}",
        certs::api::CREATE_CERTIFICATE_PATH
    ))
    .header("authorization", "Bearer not-a-token")
    .header("content-length", "60000")
    .body(())?;
    let (response, mut body) = sender.send_request(request, false)?;
    let mut response = std::pin::pin!(response);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            answered = &mut response => {
                if answered.is_ok_and(|r| r.status() == http::StatusCode::REQUEST_TIMEOUT) {
                    counters.timed_out_requests.fetch_add(1, Ordering::Relaxed);
                }
                break;
            }
            _ = tick.tick() => {
                if body.send_data(Bytes::from_static(b"x"), false).is_err() {
                    break;
                }
            }
            _ = &mut driver => return Ok(()),
        }
    }
    // Keep the connection until the CA closes it.
    let _ = (&mut driver).await;
    drop(sender);
    Ok(())
}

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const CONTINUATION: u8 = 0x9;

/// One raw HTTP/2 frame.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).unwrap();
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&length.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// HPACK: literal header fields without indexing (new names), 4 KiB values, until the block
/// reaches [`HUGE_HEADER_BYTES`].
fn huge_header_block() -> Vec<u8> {
    let value = vec![b'v'; 4096];
    let mut block = Vec::with_capacity(HUGE_HEADER_BYTES + 8192);
    let mut index = 0usize;
    while block.len() < HUGE_HEADER_BYTES {
        let name = format!("x-flood-{index}");
        block.push(0x00);
        hpack_integer(name.len(), &mut block);
        block.extend_from_slice(name.as_bytes());
        hpack_integer(value.len(), &mut block);
        block.extend_from_slice(&value);
        index += 1;
    }
    block
}

/// An HPACK integer with a 7-bit prefix (RFC 7541 §5.1), Huffman bit clear.
fn hpack_integer(value: usize, out: &mut Vec<u8>) {
    const MAX_PREFIX: usize = 0x7f;
    if value < MAX_PREFIX {
        out.push(value as u8);
        return;
    }
    out.push(MAX_PREFIX as u8);
    let mut rest = value - MAX_PREFIX;
    while rest >= 0x80 {
        out.push((rest & 0x7f) as u8 | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}
