//! Entry points for the fuzz targets in `fuzz/` (DESIGN §4): ztunnel's parsers of outside
//! input, over fixed inputs and without sockets, so a target can assert their contracts.

use std::sync::Arc;

use discovery::Snapshot;

pub use crate::dns::Transport;

/// A pod's DNS proxy over `snapshot`, with no upstream resolvers (what it cannot answer from
/// the cluster view gets SERVFAIL at once), as `shop/frontend-0` in the cluster domain
/// `cluster.local`.
pub struct DnsProxy {
    resolver: crate::dns::PodResolver,
}

impl DnsProxy {
    pub fn new(snapshot: Arc<Snapshot>) -> Self {
        let metrics = crate::dns::DnsMetrics::default();
        DnsProxy {
            resolver: crate::dns::resolver_without_upstreams(snapshot, metrics),
        }
    }

    /// What the proxy sends back for one datagram (UDP) or one length-delimited message (TCP)
    /// from a pod; `None` when it drops it.
    pub async fn reply(&self, request: &[u8], transport: Transport) -> Option<Vec<u8>> {
        self.resolver.handle(request, transport).await
    }
}
