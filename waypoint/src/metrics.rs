//! Request metrics with Istio's names and labels (`reporter="waypoint"`), so the dashboards
//! built for Istio's waypoints work as they are.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::access_log::RequestLog;

/// Istio's request labels.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub reporter: &'static str,
    pub source_workload: String,
    pub source_workload_namespace: String,
    pub source_principal: String,
    pub destination_workload: String,
    pub destination_workload_namespace: String,
    pub destination_principal: String,
    pub destination_service: String,
    pub request_protocol: &'static str,
    pub response_code: u16,
    pub grpc_response_status: String,
    pub response_flags: &'static str,
    pub connection_security_policy: &'static str,
}

/// Who took part in a request, resolved from the snapshot when the request ends.
#[derive(Debug, Default, Clone)]
pub struct Parties {
    pub source_workload: String,
    pub source_namespace: String,
    pub destination_workload: String,
    pub destination_namespace: String,
    pub destination_principal: String,
}

type HistogramFamily = Family<RequestLabels, Histogram, fn() -> Histogram>;

pub struct RequestMetrics {
    requests: Family<RequestLabels, Counter>,
    duration_ms: HistogramFamily,
    request_bytes: HistogramFamily,
    response_bytes: HistogramFamily,
    /// Every label set in use, so that series of pods gone from the cluster can be removed:
    /// without it each pod that ever sent or served a request would stay in every scrape.
    series: std::sync::Mutex<std::collections::HashSet<RequestLabels>>,
}

fn duration_histogram() -> Histogram {
    // Istio's buckets, in milliseconds.
    Histogram::new([
        0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
        30000.0, 60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
    ])
}

fn size_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 10.0, 9))
}

impl RequestMetrics {
    pub fn register(registry: &mut Registry) -> RequestMetrics {
        let metrics = RequestMetrics {
            requests: Family::default(),
            duration_ms: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            request_bytes: Family::new_with_constructor(size_histogram as fn() -> Histogram),
            response_bytes: Family::new_with_constructor(size_histogram as fn() -> Histogram),
            series: Default::default(),
        };
        registry.register(
            "istio_requests",
            "Requests served by the waypoint",
            metrics.requests.clone(),
        );
        registry.register(
            "istio_request_duration_milliseconds",
            "Time from the request's arrival to the end of its response",
            metrics.duration_ms.clone(),
        );
        registry.register(
            "istio_request_bytes",
            "Request body sizes",
            metrics.request_bytes.clone(),
        );
        registry.register(
            "istio_response_bytes",
            "Response body sizes",
            metrics.response_bytes.clone(),
        );
        metrics
    }

    pub fn record(&self, log: &RequestLog, parties: &Parties) {
        let labels = RequestLabels {
            reporter: "waypoint",
            source_workload: parties.source_workload.clone(),
            source_workload_namespace: parties.source_namespace.clone(),
            source_principal: log.src_identity.clone(),
            destination_workload: parties.destination_workload.clone(),
            destination_workload_namespace: parties.destination_namespace.clone(),
            destination_principal: parties.destination_principal.clone(),
            destination_service: log.upstream_service.clone().unwrap_or_default(),
            request_protocol: if log.grpc { "grpc" } else { "http" },
            response_code: log.status,
            grpc_response_status: log.grpc_status.clone().unwrap_or_default(),
            response_flags: log.flag.map_or("-", |f| f.as_str()),
            connection_security_policy: "mutual_tls",
        };
        self.requests.get_or_create(&labels).inc();
        {
            // Known after a label set's first request: no clone of every label per request.
            let mut series = self.lock_series();
            if !series.contains(&labels) {
                series.insert(labels.clone());
            }
        }
        self.duration_ms
            .get_or_create(&labels)
            .observe(log.duration.as_secs_f64() * 1e3);
        self.request_bytes
            .get_or_create(&labels)
            .observe(log.request_bytes as f64);
        self.response_bytes
            .get_or_create(&labels)
            .observe(log.response_bytes as f64);
    }

    /// Removes the series of workloads `exists` no longer knows (`namespace`, `name`); an
    /// empty name (a party outside the cluster view) is kept. Returns how many went.
    pub fn prune(&self, exists: impl Fn(&str, &str) -> bool) -> usize {
        let known = |namespace: &str, name: &str| name.is_empty() || exists(namespace, name);
        let mut series = self.lock_series();
        let gone: Vec<RequestLabels> = series
            .iter()
            .filter(|l| {
                !known(&l.source_workload_namespace, &l.source_workload)
                    || !known(&l.destination_workload_namespace, &l.destination_workload)
            })
            .cloned()
            .collect();
        for labels in &gone {
            series.remove(labels);
            self.requests.remove(labels);
            self.duration_ms.remove(labels);
            self.request_bytes.remove(labels);
            self.response_bytes.remove(labels);
        }
        gone.len()
    }

    fn lock_series(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<RequestLabels>> {
        self.series.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_of_pods_gone_from_the_cluster_are_removed() {
        let mut registry = Registry::default();
        let metrics = RequestMetrics::register(&mut registry);
        let log = RequestLog {
            status: 200,
            ..RequestLog::default()
        };
        let parties = |destination: &str| Parties {
            source_workload: "frontend-0".into(),
            source_namespace: "shop".into(),
            destination_workload: destination.into(),
            destination_namespace: "shop".into(),
            destination_principal: String::new(),
        };
        metrics.record(&log, &parties("reviews-v1-0"));
        metrics.record(&log, &parties("reviews-v2-0"));
        let removed = metrics.prune(|_, name| name != "reviews-v1-0");
        assert_eq!(removed, 1);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(!text.contains("reviews-v1-0"), "{text}");
        assert!(text.contains("reviews-v2-0"), "{text}");
    }
}
