//! One access-log line per connection when it closes (DESIGN §3, target `access`), and the TCP
//! metrics that go with it. Both come from the same [`ConnectionRecord`] so they never disagree.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::error::ProxyError;
use crate::metrics::{ConnectionLabels, ConnectionMetrics};
use crate::response::ResponseFlag;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }

    /// Istio's `reporter` label: the client side reports as "source".
    fn reporter(self) -> &'static str {
        match self {
            Direction::Inbound => "destination",
            Direction::Outbound => "source",
        }
    }
}

/// Who is on one end of a connection, as far as the mesh knows.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    pub workload: Option<String>,
    pub namespace: Option<String>,
    pub identity: Option<String>,
}

/// A connection's facts, filled in as the proxy learns them. The address fields have Istio's
/// meaning (DESIGN §3), so Istio's log parsers read them right.
pub struct ConnectionRecord {
    metrics: Arc<ConnectionMetrics>,
    /// Held until the line is written: a stopping ztunnel drains until no record is left.
    _in_flight: runtime::DrainWatcher,
    direction: Direction,
    started: Instant,
    pub src_addr: SocketAddr,
    pub src: Peer,
    /// `dst.addr`: the address dialled (outbound) or reached (inbound) — `<pod>:15008` for a
    /// tunnel, the destination itself for passthrough and plaintext.
    pub dst_addr: SocketAddr,
    /// `dst.hbone_addr`: the target inside the tunnel, `<pod>:<app port>` (or the Service
    /// VIP:port towards a waypoint); `None` when the connection was not tunnelled.
    pub hbone_target: Option<SocketAddr>,
    pub dst: Peer,
    pub dst_service: Option<String>,
    pub mutual_tls: bool,
    labels: Option<ConnectionLabels>,
}

impl ConnectionRecord {
    pub fn new(
        metrics: Arc<ConnectionMetrics>,
        in_flight: runtime::DrainWatcher,
        direction: Direction,
        src_addr: SocketAddr,
        dst_addr: SocketAddr,
    ) -> Self {
        metrics.active_connections.inc();
        ConnectionRecord {
            metrics,
            _in_flight: in_flight,
            direction,
            started: Instant::now(),
            src_addr,
            src: Peer::default(),
            dst_addr,
            hbone_target: None,
            dst: Peer::default(),
            dst_service: None,
            mutual_tls: false,
            labels: None,
        }
    }

    fn labels(&self, flag: ResponseFlag) -> ConnectionLabels {
        let text = |value: &Option<String>| value.clone().unwrap_or_else(|| "unknown".to_owned());
        ConnectionLabels {
            reporter: self.direction.reporter(),
            source_workload: text(&self.src.workload),
            source_workload_namespace: text(&self.src.namespace),
            source_principal: text(&self.src.identity),
            destination_workload: text(&self.dst.workload),
            destination_workload_namespace: text(&self.dst.namespace),
            destination_principal: text(&self.dst.identity),
            destination_service: text(&self.dst_service),
            response_flags: flag.as_str(),
            connection_security_policy: if self.mutual_tls {
                "mutual_tls"
            } else {
                "none"
            },
        }
    }

    /// The upstream is connected: count the connection as opened.
    pub fn opened(&mut self) {
        let labels = self.labels(ResponseFlag::None);
        self.metrics.note_series(&labels);
        self.metrics.connections_opened.get_or_create(&labels).inc();
        self.labels = Some(labels);
    }

    /// The connection ended normally after moving these bytes. `sent` is towards the client.
    pub fn complete(self, sent: u64, received: u64) {
        self.finish(sent, received, None);
    }

    /// The connection failed or was refused; the error names the cause and what to check.
    pub fn failed(self, sent: u64, received: u64, error: &ProxyError) {
        self.finish(sent, received, Some((error.flag(), &error.to_string())));
    }

    /// Refused before any byte moved.
    pub fn refused(self, error: &ProxyError) {
        self.failed(0, 0, error);
    }

    fn finish(self, sent: u64, received: u64, failure: Option<(ResponseFlag, &str)>) {
        let labels = match (&self.labels, failure) {
            (Some(labels), None) => labels.clone(),
            (_, Some((flags, _))) => self.labels(flags),
            (None, None) => self.labels(ResponseFlag::None),
        };
        let metrics = &self.metrics;
        // `opened` noted its labels already; only a failure's own label set is new here.
        if failure.is_some() || self.labels.is_none() {
            metrics.note_series(&labels);
        }
        if self.labels.is_some() {
            metrics.connections_closed.get_or_create(&labels).inc();
        }
        if failure.is_some() {
            metrics.connections_failed.get_or_create(&labels).inc();
        }
        metrics.sent_bytes.get_or_create(&labels).inc_by(sent);
        metrics
            .received_bytes
            .get_or_create(&labels)
            .inc_by(received);
        self.log(sent, received, failure.map(|(_, error)| error));
    }

    fn log(&self, sent: u64, received: u64, error: Option<&str>) {
        let duration = format!("{}ms", self.started.elapsed().as_millis());
        let or_dash = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".to_owned());
        let hbone = self
            .hbone_target
            .map(|addr| addr.to_string())
            .unwrap_or_else(|| "-".to_owned());
        let (src_identity, dst_identity) =
            (or_dash(&self.src.identity), or_dash(&self.dst.identity));
        let (src_workload, dst_workload) =
            (or_dash(&self.src.workload), or_dash(&self.dst.workload));
        let (src_namespace, dst_namespace) =
            (or_dash(&self.src.namespace), or_dash(&self.dst.namespace));
        let direction = self.direction.as_str();
        // Two calls because tracing fields are fixed per call site; the field order is the
        // contract of DESIGN §3, keep both in step.
        match error {
            None => tracing::event!(
                target: "access",
                tracing::Level::INFO,
                src.addr = %self.src_addr,
                src.workload = %src_workload,
                src.namespace = %src_namespace,
                src.identity = ?src_identity,
                dst.addr = %self.dst_addr,
                dst.hbone_addr = %hbone,
                dst.workload = %dst_workload,
                dst.namespace = %dst_namespace,
                dst.identity = ?dst_identity,
                direction = ?direction,
                bytes_sent = sent,
                bytes_recv = received,
                duration = ?duration,
                "connection complete"
            ),
            Some(error) => tracing::event!(
                target: "access",
                tracing::Level::WARN,
                src.addr = %self.src_addr,
                src.workload = %src_workload,
                src.namespace = %src_namespace,
                src.identity = ?src_identity,
                dst.addr = %self.dst_addr,
                dst.hbone_addr = %hbone,
                dst.workload = %dst_workload,
                dst.namespace = %dst_namespace,
                dst.identity = ?dst_identity,
                direction = ?direction,
                bytes_sent = sent,
                bytes_recv = received,
                duration = ?duration,
                error = ?error,
                "connection complete"
            ),
        }
    }
}

impl Drop for ConnectionRecord {
    fn drop(&mut self) {
        self.metrics.active_connections.dec();
    }
}

/// Who a workload is, for a record: name and namespace from the cluster view, and the identity
/// when the mesh knows it.
pub fn peer_of(workload: Option<&discovery::Workload>, identity: Option<String>) -> Peer {
    Peer {
        workload: workload.map(|w| w.name.clone()),
        namespace: workload.map(|w| w.namespace.clone()),
        identity,
    }
}

/// Logs a finished copy from the client's point of view: `sent` is what went back to it.
pub fn finish(record: ConnectionRecord, report: hbone::CopyReport) {
    let (sent, received) = (report.upstream_to_downstream, report.downstream_to_upstream);
    match report.result {
        Ok(()) => record.complete(sent, received),
        Err(error) => record.failed(sent, received, &ProxyError::Stream(error)),
    }
}
