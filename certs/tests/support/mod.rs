//! Shared helpers for the trust-bundle tests: a TLS echo server that reports each handshake's
//! outcome, a client that proves a connection works both ways, PKIs whose root keys are at
//! hand, and a tracing subscriber that keeps the log lines for assertions.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Once};
use std::thread::ThreadId;
use std::time::{Duration, SystemTime};

use certs::ca::CertificateAuthority;
use certs::material::certificates_from_pem;
use certs::tls::peer_identity;
use certs::{HandshakeFailure, SpiffeId, TrustBundle, WorkloadCertificate};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

pub const TRUST_DOMAIN: &str = "cluster.local";
/// Guards against a hung test only; nothing here measures speed.
const HANG_GUARD: Duration = Duration::from_secs(10);

/// A root of the mesh with its key, so tests can build CAs that sign with it and publish any
/// set of roots.
pub struct Root {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Root {
    pub fn generate() -> Self {
        let root =
            CertificateAuthority::generate_root(TRUST_DOMAIN, Duration::from_secs(86400)).unwrap();
        Root {
            cert_pem: root.cert_pem,
            key_pem: root.key_pem,
        }
    }

    pub fn der(&self) -> CertificateDer<'static> {
        certificates_from_pem(self.cert_pem.as_bytes(), "test root").unwrap()[0].clone()
    }

    /// A CA signing with this root and publishing `published` as its trust bundle, as the mesh
    /// CA does with tls.crt/tls.key and ca.crt.
    pub fn ca(&self, published: &[&Root]) -> CertificateAuthority {
        let ca_crt: String = published.iter().map(|r| r.cert_pem.as_str()).collect();
        CertificateAuthority::from_pem(TRUST_DOMAIN, &self.cert_pem, &self.key_pem, Some(&ca_crt))
            .unwrap()
    }

    /// A CA signing with this root and trusting only it.
    pub fn own_ca(&self) -> CertificateAuthority {
        self.ca(&[self])
    }
}

pub fn bundle(roots: &[&Root]) -> TrustBundle {
    TrustBundle::new(TRUST_DOMAIN, roots.iter().map(|r| r.der()).collect()).unwrap()
}

pub fn pem_list(roots: &[&Root]) -> Vec<String> {
    roots.iter().map(|r| r.cert_pem.clone()).collect()
}

pub fn id(service_account: &str) -> SpiffeId {
    SpiffeId::new(TRUST_DOMAIN, "shop", service_account).unwrap()
}

/// A workload certificate for `identity` signed by `ca`, valid for an hour.
pub fn workload(ca: &CertificateAuthority, identity: &SpiffeId) -> WorkloadCertificate {
    let request = certs::KeyAndCsr::generate(identity).unwrap();
    let csr = rcgen::CertificateSigningRequestParams::from_pem(&request.csr_pem).unwrap();
    let now = SystemTime::now();
    let issued = ca
        .issue_with_validity(
            &csr.public_key,
            identity,
            now - Duration::from_secs(60),
            now + Duration::from_secs(3600),
        )
        .unwrap();
    WorkloadCertificate::from_pem(&issued.chain_pem, request.private_key()).unwrap()
}

/// The DER chain (leaf first) of a fresh certificate for `identity` from `ca`.
pub fn issued_chain(
    ca: &CertificateAuthority,
    identity: &SpiffeId,
) -> Vec<CertificateDer<'static>> {
    workload(ca, identity).certified_key().cert.clone()
}

/// What one accepted TCP connection came to on the server side.
pub type ServerOutcome = Result<SpiffeId, HandshakeFailure>;

/// Accepts connections with one fixed `ServerConfig` (as an HBONE server does for a pod's life)
/// and echoes bytes on each established one.
pub struct EchoServer {
    pub address: SocketAddr,
    outcomes: mpsc::UnboundedReceiver<ServerOutcome>,
    task: JoinHandle<()>,
}

impl EchoServer {
    pub async fn start(config: ServerConfig) -> Self {
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (report, outcomes) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let report = report.clone();
                tokio::spawn(async move {
                    let mut tls = match acceptor.accept(tcp).await {
                        Ok(tls) => tls,
                        Err(e) => {
                            let _ = report.send(Err(HandshakeFailure::classify_io(&e)));
                            return;
                        }
                    };
                    let peer = peer_identity(tls.get_ref().1)
                        .map_err(|e| HandshakeFailure::Other(e.to_string()));
                    let _ = report.send(peer);
                    let mut buf = [0u8; 64];
                    while let Ok(n) = tls.read(&mut buf).await {
                        if n == 0 || tls.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        EchoServer {
            address,
            outcomes,
            task,
        }
    }

    /// The outcome of the next handshake the server saw.
    pub async fn next_outcome(&mut self) -> ServerOutcome {
        tokio::time::timeout(HANG_GUARD, self.outcomes.recv())
            .await
            .expect("the server reported no handshake")
            .expect("the server stopped")
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connects and proves the channel works both ways; the error is what the client concluded.
/// (In TLS 1.3 a server refusing the client certificate shows up on the first read.)
pub async fn connect(
    address: SocketAddr,
    config: ClientConfig,
) -> Result<(TlsStream<TcpStream>, SpiffeId), HandshakeFailure> {
    let connector = TlsConnector::from(Arc::new(config));
    let attempt = async {
        let tcp = TcpStream::connect(address).await.unwrap();
        let mut tls = connector
            .connect(ServerName::from(address.ip()), tcp)
            .await
            .map_err(|e| HandshakeFailure::classify_io(&e))?;
        let peer =
            peer_identity(tls.get_ref().1).map_err(|e| HandshakeFailure::Other(e.to_string()))?;
        echo(&mut tls, b"ping")
            .await
            .map_err(|e| HandshakeFailure::classify_io(&e))?;
        Ok((tls, peer))
    };
    tokio::time::timeout(HANG_GUARD, attempt)
        .await
        .expect("the handshake hung")
}

/// Sends `message` and reads it back.
pub async fn echo(tls: &mut TlsStream<TcpStream>, message: &[u8]) -> std::io::Result<()> {
    tls.write_all(message).await?;
    let mut back = vec![0u8; message.len()];
    tls.read_exact(&mut back).await?;
    if back != message {
        return Err(std::io::Error::other("echo mismatch"));
    }
    Ok(())
}

/// Every log line of this test binary, with the thread that logged it.
static LINES: Mutex<Vec<(ThreadId, String)>> = Mutex::new(Vec::new());

/// The log lines of one test. The recording subscriber is the binary's global default rather
/// than a thread-scoped one: tracing caches per call site whether anyone listens, and a scoped
/// subscriber can miss a call site that another test's thread registered at the same moment.
/// Lines are told apart by thread; `#[tokio::test]` runs every task of a test on its thread,
/// so spawned workers count as the test's own.
#[derive(Clone)]
pub struct LogCapture {
    thread: ThreadId,
}

impl LogCapture {
    pub fn install() -> Self {
        static INSTALL: Once = Once::new();
        INSTALL.call_once(|| {
            tracing::subscriber::set_global_default(Recorder)
                .expect("no other global subscriber in this test binary");
        });
        LogCapture {
            thread: std::thread::current().id(),
        }
    }

    pub fn lines(&self) -> Vec<String> {
        LINES
            .lock()
            .unwrap()
            .iter()
            .filter(|(thread, _)| *thread == self.thread)
            .map(|(_, line)| line.clone())
            .collect()
    }

    /// The lines containing every one of `needles`.
    pub fn matching(&self, needles: &[&str]) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|line| needles.iter().all(|n| line.contains(n)))
            .collect()
    }
}

/// Writes an event as its level, then `field=value` pairs with the message first.
struct LineWriter(String);

impl tracing::field::Visit for LineWriter {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={:?}", field.name(), value);
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        let _ = write!(self.0, " {}={}", field.name(), value);
    }
}

struct Recorder;

impl tracing::Subscriber for Recorder {
    fn enabled(&self, _metadata: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, _span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _span: &tracing::span::Id, _values: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _span: &tracing::span::Id, _follows: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut line = LineWriter(event.metadata().level().to_string());
        event.record(&mut line);
        LINES
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((std::thread::current().id(), line.0));
    }

    fn enter(&self, _span: &tracing::span::Id) {}

    fn exit(&self, _span: &tracing::span::Id) {}
}
