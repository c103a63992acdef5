//! The DNS proxy (DESIGN §3: 15053, pod-local).
//!
//! For each enrolled pod ztunnel listens on UDP and TCP 15053 *inside the pod's network
//! namespace*, where the capture rules redirect the pod's port-53 traffic (whatever resolver
//! address the pod dialled). A/AAAA queries for Service names — `<svc>.<ns>.svc.<domain>`
//! and the short spellings of the pod's search path, see [`names`] — are answered from the
//! cluster view with the Service VIPs; everything else is forwarded to the node's upstream
//! resolvers ([`forward`] says from where, and why). A query that cannot be answered gets
//! SERVFAIL and a log line, never silence.
//!
//! The listeners bind the loopback addresses (127.0.0.1 and ::1), not the wildcard: REDIRECT
//! of locally generated packets rewrites the destination to loopback, so that is where the
//! queries arrive, and a UDP reply must leave from the address the query was redirected to
//! for conntrack to restore the resolver address the pod asked (a wildcard socket would
//! answer from the pod IP and the pod's resolver would discard the reply). It also keeps the
//! proxy from being an open resolver for other pods on the network.

mod answer;
mod forward;
mod metrics;
mod names;
mod query;
mod server;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use capture::socket::{listen_in, udp_listen_in, ListenOptions, SocketError};
use capture::NetNs;

pub use forward::Transport;
pub use metrics::DnsMetrics;
pub use server::NodeDnsLimits;

use crate::enrolled::EnrolledPod;
use crate::proxy::Snapshots;
use forward::Forwarder;
use names::SearchPath;
pub(crate) use query::PodResolver;

/// The proxy's port in every enrolled pod.
pub const DNS_PORT: u16 = crate::ports::DNS;
/// Where the node's resolvers are listed when `--dns-upstream` is not given.
const RESOLV_CONF: &str = "/etc/resolv.conf";

/// Why a pod's DNS proxy could not start (the pod's enrollment then fails: with DNS
/// redirected to a port nobody serves the pod could resolve nothing).
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("cannot open the DNS proxy's {transport} socket: {source}")]
    Socket {
        transport: &'static str,
        source: SocketError,
    },
    #[error(
        "cannot register the DNS proxy's {transport} socket on {addr} with the runtime: {source}"
    )]
    Register {
        transport: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The upstream resolvers from the configuration, or the node's /etc/resolv.conf.
pub fn upstreams(configured: &[SocketAddr]) -> Vec<SocketAddr> {
    forward::upstreams_or_system(configured, Path::new(RESOLV_CONF))
}

/// What every pod's DNS proxy on the node shares.
pub struct DnsContext {
    pub snapshots: Snapshots,
    /// `--dns-upstream`; empty means the node's /etc/resolv.conf.
    pub configured_upstreams: Vec<SocketAddr>,
    pub upstream_timeout: Duration,
    /// The cluster's DNS domain (`cluster.local`), for the pods' search paths.
    pub cluster_domain: String,
    pub metrics: DnsMetrics,
    /// Caps for the whole node, whatever pod a query comes from.
    pub node_limits: Arc<NodeDnsLimits>,
}

/// Starts `pod`'s DNS proxy: binds its sockets now (an error fails the enrollment) and serves
/// them until the pod's stop token is cancelled.
pub fn start(context: &DnsContext, pod: &EnrolledPod) -> Result<(), DnsError> {
    let forwarder = Forwarder::new(
        upstreams(&context.configured_upstreams),
        context.upstream_timeout,
    );
    if forwarder.upstreams().is_empty() {
        tracing::warn!(pod = %pod.display_name(), "no upstream DNS resolvers: only Service names will resolve; pass --dns-upstream");
    }
    let resolver = Arc::new(PodResolver {
        pod_name: pod.name.clone(),
        pod_namespace: pod.namespace.clone(),
        search: SearchPath::new(&pod.namespace, &context.cluster_domain),
        snapshot: context.snapshots.clone(),
        forwarder,
        metrics: context.metrics.clone(),
    });
    let limits = Arc::new(server::Limits::new(context.node_limits.clone()));
    for (udp, tcp) in bind(&pod.netns)? {
        tokio::spawn(server::serve_udp(
            udp,
            resolver.clone(),
            limits.clone(),
            pod.stop.clone(),
        ));
        tokio::spawn(server::serve_tcp(
            tcp,
            resolver.clone(),
            limits.clone(),
            pod.stop.clone(),
        ));
    }
    Ok(())
}

type Sockets = (tokio::net::UdpSocket, tokio::net::TcpListener);

/// UDP and TCP on 127.0.0.1:15053, and on [::1]:15053 when the pod has IPv6. SO_REUSEPORT,
/// like the other in-pod listeners, so a restarted ztunnel can take over while the old
/// process drains.
fn bind(netns: &NetNs) -> Result<Vec<Sockets>, DnsError> {
    let mut sockets = vec![bind_pair(netns, IpAddr::V4(Ipv4Addr::LOCALHOST))?];
    match bind_pair(netns, IpAddr::V6(Ipv6Addr::LOCALHOST)) {
        Ok(pair) => sockets.push(pair),
        // No ::1 (IPv6 disabled in the pod): its IPv6 DNS is not redirected anywhere useful
        // either, and IPv4 is served.
        Err(error) => tracing::debug!(%error, "DNS proxy not listening on [::1]"),
    }
    Ok(sockets)
}

fn bind_pair(netns: &NetNs, ip: IpAddr) -> Result<Sockets, DnsError> {
    let addr = SocketAddr::new(ip, DNS_PORT);
    let options = ListenOptions::new(addr).reuse_port(true);
    let udp = udp_listen_in(netns, &options).map_err(|source| DnsError::Socket {
        transport: "UDP",
        source,
    })?;
    let tcp = listen_in(netns, &options).map_err(|source| DnsError::Socket {
        transport: "TCP",
        source,
    })?;
    let register = |transport, source| DnsError::Register {
        transport,
        addr,
        source,
    };
    Ok((
        tokio::net::UdpSocket::from_std(udp).map_err(|e| register("UDP", e))?,
        tokio::net::TcpListener::from_std(tcp).map_err(|e| register("TCP", e))?,
    ))
}

/// A pod's resolver over a fixed cluster view and without upstreams, as `shop/frontend-0` in
/// `cluster.local`: what the fuzz targets reach (`crate::fuzzing`).
pub(crate) fn resolver_without_upstreams(
    snapshot: Arc<discovery::Snapshot>,
    metrics: DnsMetrics,
) -> PodResolver {
    PodResolver {
        pod_name: "frontend-0".into(),
        pod_namespace: "shop".into(),
        search: SearchPath::new("shop", "cluster.local"),
        snapshot: crate::proxy::fixed_snapshot(snapshot),
        forwarder: Forwarder::new(Vec::new(), Duration::from_millis(10)),
        metrics,
    }
}
