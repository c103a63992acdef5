//! Prometheus metrics with Istio's names and labels, so existing ambient dashboards work as is.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The labels Istio attaches to its TCP metrics.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    /// "source" for the outbound side, "destination" for the inbound side.
    pub reporter: &'static str,
    pub source_workload: String,
    pub source_workload_namespace: String,
    pub source_principal: String,
    pub destination_workload: String,
    pub destination_workload_namespace: String,
    pub destination_principal: String,
    pub destination_service: String,
    /// Istio's short failure codes: "-" for none, "UF" upstream failure, "DENY" (policy), ...
    pub response_flags: &'static str,
    /// "mutual_tls" through HBONE, "none" for passthrough and plaintext capture.
    pub connection_security_policy: &'static str,
}

/// The TCP metrics of proxied connections (Istio's `istio_tcp_*`), kept by the access log.
pub struct ConnectionMetrics {
    pub connections_opened: Family<ConnectionLabels, Counter>,
    pub connections_closed: Family<ConnectionLabels, Counter>,
    pub connections_failed: Family<ConnectionLabels, Counter>,
    pub sent_bytes: Family<ConnectionLabels, Counter>,
    pub received_bytes: Family<ConnectionLabels, Counter>,
    /// Connections being proxied right now.
    pub active_connections: Gauge,
    /// Every connection label set in use, so that series of pods gone from the cluster can be
    /// removed: without this, each pod that ever connected would stay in every scrape forever.
    series: std::sync::Mutex<std::collections::HashSet<ConnectionLabels>>,
}

impl ConnectionMetrics {
    /// Creates the families and registers them in `registry` (they stay shared with `self`).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = ConnectionMetrics {
            connections_opened: Family::default(),
            connections_closed: Family::default(),
            connections_failed: Family::default(),
            sent_bytes: Family::default(),
            received_bytes: Family::default(),
            active_connections: Gauge::default(),
            series: Default::default(),
        };
        // prometheus-client appends `_total` to counters itself.
        registry.register(
            "istio_tcp_connections_opened",
            "TCP connections opened",
            metrics.connections_opened.clone(),
        );
        registry.register(
            "istio_tcp_connections_closed",
            "TCP connections closed",
            metrics.connections_closed.clone(),
        );
        registry.register(
            "istio_tcp_connections_failed",
            "TCP connections that failed (policy, upstream, handshake)",
            metrics.connections_failed.clone(),
        );
        registry.register(
            "istio_tcp_sent_bytes",
            "Bytes sent to the client of a connection (response direction)",
            metrics.sent_bytes.clone(),
        );
        registry.register(
            "istio_tcp_received_bytes",
            "Bytes received from the client of a connection (request direction)",
            metrics.received_bytes.clone(),
        );
        registry.register(
            "ambit_active_connections",
            "Connections this ztunnel is proxying right now",
            metrics.active_connections.clone(),
        );
        metrics
    }

    /// Notes that `labels` is in use (see [`ConnectionMetrics::prune`]).
    pub fn note_series(&self, labels: &ConnectionLabels) {
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        if !series.contains(labels) {
            series.insert(labels.clone());
        }
    }

    /// Removes the connection series that name a workload (as source or destination) for
    /// which `exists(namespace, name)` is false; returns how many label sets went.
    pub fn prune(&self, exists: impl Fn(&str, &str) -> bool) -> usize {
        let known = |namespace: &str, name: &str| {
            // "unknown" is what a connection from or to outside the cluster view reports.
            name == "unknown" || exists(namespace, name)
        };
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let gone: Vec<ConnectionLabels> = series
            .iter()
            .filter(|l| {
                !known(&l.source_workload_namespace, &l.source_workload)
                    || !known(&l.destination_workload_namespace, &l.destination_workload)
            })
            .cloned()
            .collect();
        for labels in &gone {
            series.remove(labels);
            for family in [
                &self.connections_opened,
                &self.connections_closed,
                &self.connections_failed,
                &self.sent_bytes,
                &self.received_bytes,
            ] {
                family.remove(labels);
            }
        }
        gone.len()
    }
}

/// `registry` in Prometheus text format.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, registry).is_err() {
        text.push_str("# encoding failed\n");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_names_appear_in_the_exposition() {
        let mut registry = Registry::default();
        let metrics = ConnectionMetrics::register(&mut registry);
        let labels = ConnectionLabels {
            reporter: "destination",
            source_principal: "spiffe://cluster.local/ns/a/sa/b".into(),
            response_flags: "-",
            connection_security_policy: "mutual_tls",
            ..Default::default()
        };
        metrics.connections_opened.get_or_create(&labels).inc();
        metrics.sent_bytes.get_or_create(&labels).inc_by(42);
        let text = encode(&registry);
        assert!(
            text.contains("istio_tcp_connections_opened_total{reporter=\"destination\""),
            "{text}"
        );
        assert!(text.contains("istio_tcp_sent_bytes_total{"), "{text}");
        assert!(
            text.contains("connection_security_policy=\"mutual_tls\""),
            "{text}"
        );
        assert!(text.contains("} 42"), "{text}");
    }

    #[test]
    fn series_of_pods_gone_from_the_cluster_are_removed() {
        let mut registry = Registry::default();
        let metrics = ConnectionMetrics::register(&mut registry);
        let labels = |src: &str, dst: &str| ConnectionLabels {
            reporter: "source",
            source_workload: src.into(),
            source_workload_namespace: "shop".into(),
            destination_workload: dst.into(),
            destination_workload_namespace: "shop".into(),
            response_flags: "-",
            connection_security_policy: "mutual_tls",
            ..Default::default()
        };
        for (src, dst) in [
            ("web-0", "cart-0"),
            ("web-1", "cart-0"),
            ("web-0", "unknown"),
        ] {
            let l = labels(src, dst);
            metrics.connections_opened.get_or_create(&l).inc();
            metrics.note_series(&l);
        }
        // web-1 was deleted.
        let removed = metrics.prune(|_, name| name != "web-1");
        assert_eq!(removed, 1);
        let text = encode(&registry);
        assert!(!text.contains("web-1"), "{text}");
        assert!(text.contains("source_workload=\"web-0\""), "{text}");
        assert!(text.contains("destination_workload=\"unknown\""), "{text}");
    }
}
