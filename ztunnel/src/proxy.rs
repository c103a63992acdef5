//! What the proxies of every pod on the node share — and nothing more: the cluster view, the
//! trust domain, the connection metrics and the table of live inbound connections. The
//! proxies take this and the [`EnrolledPod`](crate::enrolled::EnrolledPod) they serve, never
//! the whole agent, so each can be built and tested on its own.

use std::sync::Arc;

use std::net::SocketAddr;

use discovery::Snapshot;

use crate::access_log::{ConnectionRecord, Direction};
use crate::connections::ConnectionTable;
use crate::metrics::ConnectionMetrics;

/// The current cluster view: the source's latest snapshot in production, a fixed one in tests.
pub type Snapshots = Arc<dyn Fn() -> Arc<Snapshot> + Send + Sync>;

/// A snapshot handle that always returns `snapshot`.
pub fn fixed_snapshot(snapshot: Arc<Snapshot>) -> Snapshots {
    Arc::new(move || snapshot.clone())
}

pub struct ProxyContext {
    pub snapshots: Snapshots,
    /// The mesh's trust domain: the identities the proxies expect of peers.
    pub trust_domain: String,
    pub metrics: Arc<ConnectionMetrics>,
    /// Live inbound connections, re-authorised when policies change.
    pub connections: ConnectionTable,
    /// Every connection's record holds a watcher from here, so a stopping ztunnel knows when
    /// the last one is done.
    pub in_flight: runtime::WatcherSource,
}

impl ProxyContext {
    pub fn snapshot(&self) -> Arc<Snapshot> {
        (self.snapshots)()
    }

    /// The record of a new connection from `src` to `dst`: its access line and metrics, and
    /// its place in the drain.
    pub fn record(
        &self,
        direction: Direction,
        src: SocketAddr,
        dst: SocketAddr,
    ) -> ConnectionRecord {
        ConnectionRecord::new(
            self.metrics.clone(),
            self.in_flight.watcher(),
            direction,
            src,
            dst,
        )
    }
}
