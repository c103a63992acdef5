//! The client connection pool: one set of HBONE connections per (source identity, destination
//! identity, destination address[, extra discriminator]).
//!
//! A request takes a stream slot on a connection that has one (our cap and the peer's
//! SETTINGS_MAX_CONCURRENT_STREAMS both count). When every connection is full or there is none,
//! exactly one dial runs per key and every request that arrives meanwhile waits for it instead
//! of dialling too, so a burst of new streams cannot turn into a storm of connections. Dead
//! connections (closed, failed keep-alive, GOAWAY) are skipped and dropped; idle ones are
//! closed after `idle_timeout`.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use certs::{CurrentCertificate, SharedTrustBundle, SpiffeId};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{debug, warn, Instrument};

use crate::client::{Connection, Slot};
use crate::config::ClientConfig;
use crate::error::{ConnectError, TunnelError};
use crate::request::ConnectRequest;
use crate::stream::H2Stream;

/// Which connections a request may share.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// The identity we present (the source workload's).
    pub source: SpiffeId,
    /// The identity the peer must prove (the destination workload's, or its waypoint's).
    pub destination: SpiffeId,
    /// The peer's HBONE address (destination pod IP or node, port 15008).
    pub address: SocketAddr,
    /// Further separation the pool does not interpret; ztunnel uses the source pod IP because
    /// it dials from inside each pod's network namespace.
    pub extra: Option<IpAddr>,
}

/// Opens the TCP connection for a key. ztunnel's dials happen inside the source pod's network
/// namespace with a marked socket, so dialling is the caller's.
pub trait Dialer: Send + Sync + 'static {
    fn dial(&self, key: &PoolKey) -> Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>>;
}

impl<F, Fut> Dialer for F
where
    F: Fn(&PoolKey) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = io::Result<TcpStream>> + Send + 'static,
{
    fn dial(&self, key: &PoolKey) -> Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>> {
        Box::pin(self(key))
    }
}

/// Plain `TcpStream::connect` to the key's address.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpDialer;

impl Dialer for TcpDialer {
    fn dial(&self, key: &PoolKey) -> Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>> {
        Box::pin(TcpStream::connect(key.address))
    }
}

/// The pool. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("keys", &self.inner.lock().len())
            .finish_non_exhaustive()
    }
}

struct Inner {
    config: ClientConfig,
    trust: SharedTrustBundle,
    dialer: Arc<dyn Dialer>,
    entries: Mutex<HashMap<PoolKey, Entry>>,
    next_id: AtomicU64,
    reaper_started: AtomicBool,
}

/// Result of one dial, as the requests that waited for it see it.
type DialOutcome = Option<Result<(), ConnectError>>;

#[derive(Default)]
struct Entry {
    connections: Vec<Connection>,
    /// Present while a dial for this key runs.
    dialing: Option<watch::Receiver<DialOutcome>>,
}

impl Pool {
    pub fn new(
        config: ClientConfig,
        trust: impl Into<SharedTrustBundle>,
        dialer: Arc<dyn Dialer>,
    ) -> Self {
        Pool {
            inner: Arc::new(Inner {
                config,
                trust: trust.into(),
                dialer,
                entries: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                reaper_started: AtomicBool::new(false),
            }),
        }
    }

    /// Opens a tunnel: reuses or establishes a connection for `key` (presenting `certificate`,
    /// which must be `key.source`'s) and sends `request` over it. Retries on another connection
    /// when the chosen one turned out to be going away. Waiting for the answer is not bounded
    /// here (the server's upstream connect has its own limit); wrap in a timeout if needed.
    pub async fn connect(
        &self,
        key: &PoolKey,
        certificate: &CurrentCertificate,
        request: &ConnectRequest,
    ) -> Result<H2Stream, TunnelError> {
        // Boxed: establishing (dial, TLS, HTTP/2 handshake, CONNECT) is by far the largest
        // state of a connection's task, and inline it would stay allocated in the task for the
        // connection's whole life; boxed, it is freed as soon as the tunnel is open.
        Box::pin(self.connect_inline(key, certificate, request)).await
    }

    async fn connect_inline(
        &self,
        key: &PoolKey,
        certificate: &CurrentCertificate,
        request: &ConnectRequest,
    ) -> Result<H2Stream, TunnelError> {
        self.start_reaper();
        let mut attempt = 0;
        loop {
            let (connection, slot) = self.checkout(key, certificate).await?;
            match connection.open(request).await {
                Ok(stream) => return Ok(stream.with_slot(Box::new(slot))),
                Err(e) if e.is_retryable() && attempt < self.inner.config.max_retries => {
                    attempt += 1;
                    debug!(connection = connection.id(), peer = %key.address, error = %e, attempt, "retrying tunnel on another connection");
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Open connections for `key` that accept new streams.
    pub fn open_connections(&self, key: &PoolKey) -> usize {
        let entries = self.inner.lock();
        entries.get(key).map_or(0, |entry| {
            entry.connections.iter().filter(|c| c.is_open()).count()
        })
    }

    /// Open connections across all keys.
    pub fn total_connections(&self) -> usize {
        let entries = self.inner.lock();
        entries
            .values()
            .map(|entry| entry.connections.iter().filter(|c| c.is_open()).count())
            .sum()
    }

    async fn checkout(
        &self,
        key: &PoolKey,
        certificate: &CurrentCertificate,
    ) -> Result<(Connection, Slot), ConnectError> {
        let cap = self.inner.config.max_streams_per_connection.max(1) as usize;
        loop {
            let mut outcome = {
                let mut entries = self.inner.lock();
                let entry = entries.entry(key.clone()).or_default();
                entry.connections.retain(Connection::is_open);
                for connection in &entry.connections {
                    if let Some(slot) = connection.try_reserve(cap) {
                        return Ok((connection.clone(), slot));
                    }
                }
                match &entry.dialing {
                    // A dial whose task vanished (panicked) must not block the key forever.
                    Some(outcome) if outcome.has_changed().is_ok() => outcome.clone(),
                    _ => {
                        let (report, outcome) = watch::channel(None);
                        entry.dialing = Some(outcome.clone());
                        let span = tracing::debug_span!("hbone_dial", peer = %key.address, destination = %key.destination);
                        tokio::spawn(
                            dial(self.inner.clone(), key.clone(), certificate.clone(), report)
                                .instrument(span),
                        );
                        outcome
                    }
                }
            };
            let result = match outcome.wait_for(Option::is_some).await {
                Ok(result) => result.clone(),
                Err(_) => {
                    return Err(ConnectError::Abandoned {
                        address: key.address,
                    })
                }
            };
            match result {
                // A connection was added (possibly filled by others already): look again.
                Some(Ok(())) | None => continue,
                Some(Err(e)) => return Err(e),
            }
        }
    }

    fn start_reaper(&self) {
        if self.inner.reaper_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let config = &self.inner.config;
        let period = (config.idle_timeout.min(config.surplus_idle_timeout) / 2)
            .clamp(Duration::from_millis(10), Duration::from_secs(30));
        let pool = Arc::downgrade(&self.inner);
        tokio::spawn(reap(pool, period));
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, HashMap<PoolKey, Entry>> {
        // Entries stay consistent across a panic (every update is a single push/retain).
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn establish(
        &self,
        key: &PoolKey,
        certificate: CurrentCertificate,
    ) -> Result<Connection, ConnectError> {
        let actual = certificate.get().identity().clone();
        // The certificate presented now; a renewal later does not extend this connection.
        let own_expiry = certificate.get().not_after();
        if own_expiry <= std::time::SystemTime::now() {
            // Presenting it would only be refused by the peer (after a TLS 1.3 handshake that
            // looks successful here), and the pool would dial again at once.
            return Err(ConnectError::CertificateExpired {
                identity: actual.to_string(),
            });
        }
        if actual != key.source {
            return Err(ConnectError::CertificateMismatch {
                expected: key.source.to_string(),
                actual: actual.to_string(),
            });
        }
        let tls =
            certs::tls::client_config(certificate, &self.trust, vec![key.destination.clone()])
                .map_err(|e| ConnectError::TlsConfig(e.to_string()))?;
        let tcp = self
            .dialer
            .dial(key)
            .await
            .map_err(|e| ConnectError::Dial {
                address: key.address,
                source: Arc::new(e),
            })?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let connection = Connection::handshake(tcp, Arc::new(tls), &self.config, id).await?;
        connection.limit_lifetime(own_expiry);
        Ok(connection)
    }
}

/// Establishes one connection for `key`, adds it to the pool and tells the waiters.
async fn dial(
    inner: Arc<Inner>,
    key: PoolKey,
    certificate: CurrentCertificate,
    report: watch::Sender<DialOutcome>,
) {
    let timeout = inner.config.connect_timeout;
    let result = match tokio::time::timeout(timeout, inner.establish(&key, certificate)).await {
        Ok(result) => result,
        Err(_) => Err(ConnectError::Timeout {
            address: key.address,
            timeout,
        }),
    };
    let outcome = {
        let mut entries = inner.lock();
        let entry = entries.entry(key.clone()).or_default();
        entry.dialing = None;
        // A connection that is unusable on arrival (the peer's certificate expires right now)
        // must fail the dial: pooled, it would be dropped and dialled again without end.
        let result = result.and_then(|connection| match connection.expires_at() {
            Some(deadline) if deadline <= std::time::SystemTime::now() => {
                Err(ConnectError::CertificateExpired {
                    identity: key.destination.to_string(),
                })
            }
            _ => Ok(connection),
        });
        match result {
            Ok(connection) => {
                debug!(connection = connection.id(), source = %key.source, "pooled new hbone connection");
                entry.connections.push(connection);
                Ok(())
            }
            Err(e) => {
                warn!(source = %key.source, destination = %key.destination, peer = %key.address, error = %e, "hbone connection failed");
                if entry.connections.is_empty() {
                    entries.remove(&key);
                }
                Err(e)
            }
        }
    };
    // Nobody waiting is fine.
    let _ = report.send(Some(outcome));
}

/// Closes connections idle for longer than the idle timeout (the surplus idle timeout for all
/// but one idle connection of a key), and forgets dead ones.
async fn reap(pool: Weak<Inner>, period: Duration) {
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(inner) = pool.upgrade() else {
            return;
        };
        let now = Instant::now();
        let (idle_timeout, surplus_timeout) = (
            inner.config.idle_timeout,
            inner
                .config
                .surplus_idle_timeout
                .min(inner.config.idle_timeout),
        );
        let mut entries = inner.lock();
        entries.retain(|key, entry| {
            let mut one_kept_idle = false;
            entry.connections.retain(|connection| {
                if !connection.is_open() {
                    return false;
                }
                let Some(idle) = connection.idle_for(now) else {
                    return true;
                };
                let limit = if one_kept_idle {
                    surplus_timeout
                } else {
                    idle_timeout
                };
                if idle >= limit {
                    debug!(connection = connection.id(), peer = %key.address, idle_ms = idle.as_millis() as u64, surplus = one_kept_idle, "closing idle hbone connection");
                    return false;
                }
                one_kept_idle = true;
                true
            });
            !entry.connections.is_empty() || entry.dialing.is_some()
        });
    }
}
