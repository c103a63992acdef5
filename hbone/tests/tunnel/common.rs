//! Test harness: a throw-away PKI, an HBONE server in front of loopback "workloads", and a pool.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use certs::testing::TestPki;
use certs::{CurrentCertificate, SpiffeId};
use hbone::{
    CancellationToken, ClientConfig, CopyReport, Handler, InboundRequest, Pool, PoolKey, Refusal,
    ServerConfig, TcpDialer,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

pub struct Mesh {
    pub pki: TestPki,
    pub client_id: SpiffeId,
    pub server_id: SpiffeId,
    pub client_cert: CurrentCertificate,
    pub server_cert: CurrentCertificate,
}

impl Mesh {
    pub fn new() -> Mesh {
        let pki = TestPki::new("cluster.local").unwrap();
        let client_id = pki.id("shop", "frontend");
        let server_id = pki.id("shop", "cart");
        let client_cert = pki.certificate(&client_id).unwrap();
        let server_cert = pki.certificate(&server_id).unwrap();
        Mesh {
            pki,
            client_id,
            server_id,
            client_cert,
            server_cert,
        }
    }

    pub fn server_tls(&self) -> rustls::ServerConfig {
        certs::tls::server_config(self.server_cert.clone(), self.pki.bundle()).unwrap()
    }

    pub fn client_tls(&self) -> rustls::ClientConfig {
        certs::tls::client_config(
            self.client_cert.clone(),
            self.pki.bundle(),
            vec![self.server_id.clone()],
        )
        .unwrap()
    }

    pub fn pool(&self, config: ClientConfig) -> Pool {
        Pool::new(config, self.pki.bundle().clone(), Arc::new(TcpDialer))
    }

    pub fn key(&self, address: SocketAddr) -> PoolKey {
        PoolKey {
            source: self.client_id.clone(),
            destination: self.server_id.clone(),
            address,
            extra: None,
        }
    }
}

/// Fast timers for tests; keep-alive off unless a test is about it.
pub fn client_config() -> ClientConfig {
    ClientConfig {
        keepalive: None,
        connect_timeout: Duration::from_secs(5),
        ..ClientConfig::default()
    }
}

pub fn server_config() -> ServerConfig {
    ServerConfig {
        keepalive: None,
        drain_timeout: Duration::from_secs(5),
        ..ServerConfig::default()
    }
}

/// What the server's handler saw.
pub type Finished = mpsc::UnboundedReceiver<(InboundRequest, CopyReport)>;

/// Connects to the authority unless told to deny; reports finished tunnels.
pub struct TestHandler {
    pub deny: bool,
    pub finished: mpsc::UnboundedSender<(InboundRequest, CopyReport)>,
}

impl Handler for TestHandler {
    type Upstream = TcpStream;
    type Context = ();

    async fn connect(&self, request: &InboundRequest) -> Result<(TcpStream, ()), Refusal> {
        if self.deny {
            return Err(Refusal::denied("test policy denies everything"));
        }
        match TcpStream::connect(request.authority).await {
            Ok(stream) => Ok((stream, ())),
            Err(e) => Err(Refusal::unavailable(e.to_string())),
        }
    }

    fn finished(&self, request: InboundRequest, _context: (), report: CopyReport) {
        let _ = self.finished.send((request, report));
    }
}

/// An HBONE server on 127.0.0.1 whose accept loop the test owns, so it can count TCP
/// connections and shut down individual ones.
pub struct TestServer {
    pub address: SocketAddr,
    pub accepts: Arc<AtomicUsize>,
    /// One token per accepted connection, in accept order.
    pub connection_tokens: Arc<Mutex<Vec<CancellationToken>>>,
    /// Results of `serve_connection`, in completion order.
    pub ended: Arc<Mutex<Vec<Result<(), String>>>>,
    pub finished: Finished,
}

impl TestServer {
    pub async fn start(mesh: &Mesh, config: ServerConfig, deny: bool) -> TestServer {
        let (tx, finished) = mpsc::unbounded_channel();
        let handler = TestHandler { deny, finished: tx };
        let server = hbone::Server::forwarding(config, mesh.server_tls(), handler);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accepts = Arc::new(AtomicUsize::new(0));
        let connection_tokens = Arc::new(Mutex::new(Vec::new()));
        let ended = Arc::new(Mutex::new(Vec::new()));
        let (a, t, e) = (accepts.clone(), connection_tokens.clone(), ended.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                a.fetch_add(1, Ordering::SeqCst);
                let token = CancellationToken::new();
                t.lock().unwrap().push(token.clone());
                let server = server.clone();
                let e = e.clone();
                tokio::spawn(async move {
                    let result = server.serve_connection(tcp, token).await;
                    e.lock().unwrap().push(result.map_err(|e| e.to_string()));
                });
            }
        });
        TestServer {
            address,
            accepts,
            connection_tokens,
            ended,
            finished,
        }
    }

    pub fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }

    pub fn shut_down_connection(&self, index: usize) {
        self.connection_tokens.lock().unwrap()[index].cancel();
    }
}

/// A workload that echoes everything and half-closes when its input ends.
pub async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = tcp.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    address
}

/// Waits until `condition` holds, polling; panics with `what` after `limit`.
pub async fn eventually(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Writes `data`, then reads exactly as much back and returns it.
pub async fn round_trip<S>(stream: &mut S, data: &[u8]) -> Vec<u8>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    stream.write_all(data).await.unwrap();
    let mut back = vec![0; data.len()];
    stream.read_exact(&mut back).await.unwrap();
    back
}

/// Deterministic pseudo-random bytes (xorshift), so transfers are not trivially compressible
/// patterns and corruption anywhere shows.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}
