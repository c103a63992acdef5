//! The node agent's state: the cluster source, certificates, the enrolled pods and what their
//! proxies share. Enrollment, the reconciler, probes and the admin endpoints work on it; the
//! proxies never see it — they get the narrow [`ProxyContext`] and [`DnsContext`] it holds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use certs::{CertificateManager, CertificateStatus, SharedTrustBundle, SpiffeId};
use discovery::{Snapshot, Source, Workload};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::connections::ConnectionTable;
use crate::dns::{DnsContext, DnsMetrics};
use crate::enrolled::EnrolledPod;
use crate::metrics::ConnectionMetrics;
use crate::proxy::ProxyContext;

pub struct Agent {
    pub config: Config,
    pub source: Arc<Source>,
    pub bundle: SharedTrustBundle,
    pub certificates: CertificateManager,
    /// What every pod's outbound and inbound proxies share.
    pub proxy: Arc<ProxyContext>,
    /// What every pod's DNS proxy shares.
    pub dns: Arc<DnsContext>,
    pub metrics: NodeMetrics,
    /// Cancelled when ztunnel shuts down: listeners stop, connections drain.
    pub shutdown: CancellationToken,
    /// How this node installs redirect rules when ztunnel enrolls a running pod itself (label
    /// flip, restart); `None` when neither nftables nor iptables works here.
    pub rules: Option<capture::rules::Backend>,
    /// Node-wide connection caps shared by every enrolled pod's listeners.
    pub limits: NodeLimits,
    /// Serialises ADD, DEL and the reconciler per pod uid.
    pub pod_locks: crate::keyed_lock::KeyedLocks,
    /// Set once this process serves the node's enrollment socket; a successor that is still
    /// taking over from the running ztunnel is not ready.
    pub serves_enrollment: std::sync::atomic::AtomicBool,
    /// The pods' HBONE servers and pooled HBONE client connections: on stop, ztunnel waits for
    /// them (bounded) so the last frames of finished tunnels reach the peers.
    pub hbone_tasks: tokio_util::task::TaskTracker,
    pods: Mutex<HashMap<String, Arc<EnrolledPod>>>,
}

/// Connection caps for the whole node, whatever pod a connection belongs to: a flood at one pod
/// cannot take every file descriptor of the agent that serves them all.
pub struct NodeLimits {
    /// Connections pods make (15001); the source is the pod itself.
    pub outbound: runtime::ConnectionLimiter,
    /// Plaintext clients from outside the mesh (15006).
    pub inbound_plaintext: runtime::ConnectionLimiter,
    /// HBONE connections (15008), each carrying up to 200 tunnels.
    pub hbone: runtime::ConnectionLimiter,
}

impl Default for NodeLimits {
    fn default() -> Self {
        use runtime::{ConnectionLimiter, Limits};
        NodeLimits {
            outbound: ConnectionLimiter::new(
                "outbound",
                Limits {
                    max_connections: 65_536,
                    max_connections_per_source: 16_384,
                },
            ),
            inbound_plaintext: ConnectionLimiter::new(
                "inbound-plaintext",
                Limits {
                    max_connections: 16_384,
                    max_connections_per_source: 1_024,
                },
            ),
            hbone: ConnectionLimiter::new("hbone", hbone::config::DEFAULT_SERVER_LIMITS),
        }
    }
}

/// The node's own gauges: its pods and their certificates.
pub struct NodeMetrics {
    /// Seconds until each workload certificate on this node expires; refreshed on scrape.
    pub certificate_expiry_seconds: Family<IdentityLabels, Gauge>,
    pub enrolled_pods: Gauge,
    /// The allocator's heap (`runtime::allocator::HeapStats`); refreshed on scrape.
    pub heap_allocated_bytes: Gauge,
    pub heap_resident_bytes: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IdentityLabels {
    pub identity: String,
}

impl NodeMetrics {
    fn register(registry: &mut Registry) -> Self {
        let metrics = NodeMetrics {
            certificate_expiry_seconds: Family::default(),
            enrolled_pods: Gauge::default(),
            heap_allocated_bytes: Gauge::default(),
            heap_resident_bytes: Gauge::default(),
        };
        registry.register(
            "ambit_certificate_expiry_seconds",
            "Seconds until a workload certificate held by this node expires",
            metrics.certificate_expiry_seconds.clone(),
        );
        registry.register(
            "ambit_enrolled_pods",
            "Pods of this node currently enrolled in the mesh",
            metrics.enrolled_pods.clone(),
        );
        registry.register(
            "ambit_heap_allocated_bytes",
            "Bytes in live heap allocations (what ztunnel itself still uses)",
            metrics.heap_allocated_bytes.clone(),
        );
        registry.register(
            "ambit_heap_resident_bytes",
            "Bytes of physical memory the allocator maps: live data, its metadata and freed pages not yet returned",
            metrics.heap_resident_bytes.clone(),
        );
        metrics
    }
}

impl Agent {
    /// The agent over its inputs; every module's metrics are registered in `registry`.
    pub fn new(
        config: Config,
        source: Arc<Source>,
        bundle: SharedTrustBundle,
        certificates: CertificateManager,
        rules: Option<capture::rules::Backend>,
        in_flight: runtime::WatcherSource,
        registry: &mut Registry,
    ) -> Self {
        let snapshots: crate::proxy::Snapshots = {
            let source = source.clone();
            Arc::new(move || source.current())
        };
        let proxy = Arc::new(ProxyContext {
            snapshots: snapshots.clone(),
            trust_domain: config.trust_domain.clone(),
            metrics: Arc::new(ConnectionMetrics::register(registry)),
            connections: ConnectionTable::default(),
            in_flight,
        });
        let dns_metrics = DnsMetrics::default();
        dns_metrics.register(registry);
        let dns = Arc::new(DnsContext {
            snapshots,
            configured_upstreams: config.dns_upstreams.clone(),
            upstream_timeout: config.dns_upstream_timeout,
            cluster_domain: config.cluster_domain.clone(),
            metrics: dns_metrics,
            node_limits: Arc::default(),
        });
        Agent {
            metrics: NodeMetrics::register(registry),
            config,
            source,
            bundle,
            certificates,
            proxy,
            dns,
            shutdown: CancellationToken::new(),
            rules,
            limits: NodeLimits::default(),
            pod_locks: Default::default(),
            serves_enrollment: Default::default(),
            hbone_tasks: tokio_util::task::TaskTracker::new(),
            pods: Mutex::new(HashMap::new()),
        }
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.source.current()
    }

    /// The SPIFFE identity of a workload in this mesh's trust domain.
    pub fn identity_of(&self, workload: &Workload) -> Option<SpiffeId> {
        workload.identity(&self.config.trust_domain).ok()
    }

    pub(crate) fn pods(&self) -> MutexGuard<'_, HashMap<String, Arc<EnrolledPod>>> {
        self.pods.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn enrolled(&self) -> Vec<Arc<EnrolledPod>> {
        let mut pods: Vec<_> = self.pods().values().cloned().collect();
        pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        pods
    }

    /// Where per-pod state that must survive a restart is kept (see `pod_state`): beside the
    /// enrollment socket.
    pub fn state_dir(&self) -> std::path::PathBuf {
        self.config
            .enroll_socket
            .parent()
            .unwrap_or(std::path::Path::new("/var/run/ambit"))
            .join("pods")
    }

    /// Whether enrolled pods' DNS (port 53) is redirected to ztunnel's DNS proxy on 15053.
    pub fn capture_dns(&self) -> bool {
        self.config.dns_capture
    }

    /// Ready when every enrolled pod's identity has a certificate that is valid now. An
    /// expired one (the CA unreachable past its lifetime) makes the node unready: its pods'
    /// connections are refused by every peer until it is renewed.
    /// Ambient pods running on this node that ztunnel does not serve yet also make it unready
    /// (right after a restart, or while the CA is down and their enrollment is retried).
    pub fn ready(&self) -> Result<(), String> {
        let snapshot = self.snapshot();
        let served: std::collections::HashSet<(String, String)> = self
            .pods()
            .values()
            .map(|p| (p.namespace.clone(), p.name.clone()))
            .collect();
        let unserved: Vec<String> = snapshot
            .workloads_on_node(&self.config.node)
            .filter(|w| w.ambient && !w.host_network && !w.ips.is_empty())
            .filter(|w| !served.contains(&(w.namespace.clone(), w.name.clone())))
            .map(|w| format!("{}/{}", w.namespace, w.name))
            .collect();
        readiness(
            self.serves_enrollment
                .load(std::sync::atomic::Ordering::Acquire),
            &self.certificates.status(),
            &unserved,
            SystemTime::now(),
        )
    }
}

/// The readiness decision: whether this process serves the node's enrollment socket yet (a
/// successor still taking over does not), the certificates' status at `now` and the ambient
/// pods of the node that are not served yet.
pub fn readiness(
    serves_enrollment: bool,
    statuses: &[CertificateStatus],
    unserved: &[String],
    now: SystemTime,
) -> Result<(), String> {
    if !serves_enrollment {
        return Err(
            "taking over from the ztunnel that runs on this node: capturing its pods here too first"
                .into(),
        );
    }
    if let Some(first) = unserved.first() {
        return Err(format!(
            "{} ambient pod(s) of this node not captured yet (first: {first}); their connections are refused until then — see the log for why (CA reachable?)",
            unserved.len()
        ));
    }
    let why = |status: &CertificateStatus| {
        status
            .last_error
            .as_deref()
            .map(|e| format!(" (last error: {e})"))
            .unwrap_or_default()
    };
    for status in statuses {
        match status.not_after {
            None => {
                return Err(format!(
                    "waiting for the certificate of {} from the CA{}",
                    status.identity,
                    why(status)
                ))
            }
            Some(not_after) if not_after <= now => {
                let ago = now.duration_since(not_after).unwrap_or_default().as_secs();
                return Err(format!(
                    "the certificate of {} expired {ago}s ago and has not been renewed{}; check that ambit-ca is reachable from this node",
                    status.identity,
                    why(status)
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    fn status(not_after: Option<SystemTime>, error: Option<&str>) -> CertificateStatus {
        CertificateStatus {
            identity: SpiffeId::new("cluster.local", "shop", "cart").unwrap(),
            not_before: None,
            not_after,
            next_refresh: None,
            consecutive_failures: u32::from(error.is_some()),
            last_error: error.map(str::to_owned),
        }
    }

    #[test]
    fn readiness_needs_every_certificate_valid_now() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert!(readiness(true, &[], &[], now).is_ok(), "no pods: ready");
        let taking_over = readiness(false, &[], &[], now).unwrap_err();
        assert!(taking_over.contains("taking over"), "{taking_over}");
        let valid = status(Some(now + Duration::from_secs(60)), None);
        assert!(readiness(true, std::slice::from_ref(&valid), &[], now).is_ok());
        let waiting = readiness(
            true,
            &[valid.clone(), status(None, Some("connection refused"))],
            &[],
            now,
        )
        .unwrap_err();
        assert!(
            waiting
                .contains("waiting for the certificate of spiffe://cluster.local/ns/shop/sa/cart"),
            "{waiting}"
        );
        assert!(waiting.contains("connection refused"), "{waiting}");
        let expired = readiness(
            true,
            &[
                valid,
                status(Some(now - Duration::from_secs(30)), Some("CA unreachable")),
            ],
            &[],
            now,
        )
        .unwrap_err();
        assert!(expired.contains("expired 30s ago"), "{expired}");
        assert!(
            expired.contains("check that ambit-ca is reachable"),
            "{expired}"
        );
    }
}
