//! DNS proxy metrics, under Istio ztunnel's names so its dashboards work.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// One query a pod sent to the proxy.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DnsRequestLabels {
    /// "udp" or "tcp".
    pub request_protocol: &'static str,
    /// "A", "AAAA", "SRV", ...; "unknown" when the query could not be parsed.
    pub request_query_type: String,
    pub source_workload: String,
    pub source_workload_namespace: String,
    /// "ztunnel" (a Service name, from the cluster view), "upstream" (forwarded and
    /// relayed), or "error" (ztunnel answered SERVFAIL, FORMERR or NOTIMP itself).
    pub answered_by: &'static str,
    /// The reply's RCODE: "NOERROR", "NXDOMAIN", "SERVFAIL", ...
    pub response_code: String,
}

/// One forwarded query.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DnsUpstreamLabels {
    pub request_protocol: &'static str,
    pub request_query_type: String,
}

/// One failed attempt at an upstream.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DnsUpstreamFailureLabels {
    pub request_protocol: &'static str,
    pub request_query_type: String,
    /// "timeout", "io" (refused, unreachable), "bad_reply", or "no_upstream".
    pub error: &'static str,
}

#[derive(Clone, Debug, Default)]
pub struct DnsMetrics {
    pub requests: Family<DnsRequestLabels, Counter>,
    pub upstream_requests: Family<DnsUpstreamLabels, Counter>,
    pub upstream_failures: Family<DnsUpstreamFailureLabels, Counter>,
}

impl DnsMetrics {
    /// Registers the families in `registry` (they stay shared with `self`).
    pub fn register(&self, registry: &mut Registry) {
        // prometheus-client appends `_total` to counters itself.
        registry.register(
            "istio_dns_requests",
            "DNS queries received from enrolled pods",
            self.requests.clone(),
        );
        registry.register(
            "istio_dns_upstream_requests",
            "DNS queries forwarded to the upstream resolvers",
            self.upstream_requests.clone(),
        );
        registry.register(
            "istio_dns_upstream_failures",
            "Attempts at an upstream resolver that failed (the next one is tried; SERVFAIL when none is left)",
            self.upstream_failures.clone(),
        );
    }
}
