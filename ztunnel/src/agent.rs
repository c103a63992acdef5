//! The node agent's shared state: the cluster snapshot, certificates, the enrolled pods, live
//! connections and metrics. Everything per-connection reaches it through an `Arc<Agent>`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use certs::{CertificateManager, SpiffeId, TrustBundle};
use discovery::{Snapshot, Source, Workload};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::connections::ConnectionTable;
use crate::metrics::Metrics;
use crate::pod::EnrolledPod;

pub struct Agent {
    pub config: Config,
    pub source: Arc<Source>,
    pub bundle: TrustBundle,
    pub certificates: CertificateManager,
    pub metrics: Arc<Metrics>,
    pub connections: ConnectionTable,
    /// Cancelled when ztunnel shuts down: listeners stop, connections drain.
    pub shutdown: CancellationToken,
    /// How this node installs redirect rules when ztunnel enrolls a running pod itself (label
    /// flip, restart); `None` when neither nftables nor iptables works here.
    pub rules: Option<capture::rules::Backend>,
    /// Node-wide connection caps shared by every enrolled pod's listeners.
    pub limits: NodeLimits,
    pub dns_limits: Arc<crate::dns::NodeDnsLimits>,
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

impl Agent {
    pub fn new(
        config: Config,
        source: Arc<Source>,
        bundle: TrustBundle,
        certificates: CertificateManager,
        rules: Option<capture::rules::Backend>,
    ) -> Self {
        Agent {
            config,
            source,
            bundle,
            certificates,
            metrics: Arc::new(Metrics::new()),
            connections: ConnectionTable::default(),
            shutdown: CancellationToken::new(),
            rules,
            limits: NodeLimits::default(),
            dns_limits: Arc::default(),
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

    /// Whether enrolled pods' DNS (port 53) is redirected to ztunnel's DNS proxy on 15053.
    pub fn capture_dns(&self) -> bool {
        self.config.dns_capture
    }

    /// Ready when the manifests are loaded and every enrolled pod has its certificate.
    pub fn ready(&self) -> Result<(), String> {
        if !self.certificates.all_issued() {
            return Err("waiting for workload certificates from the CA".to_owned());
        }
        Ok(())
    }
}
