//! A pod whose traffic this node agent proxies, as the proxies see it: who it is, how to open
//! connections on its behalf, and the tokens that end its listeners and connections. Plain
//! data: enrollment (`pod`) builds it, the proxies (`outbound`, `inbound`, `dns`) only read it.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use capture::socket::{dial_socket_in, DialOptions};
use capture::NetNs;
use certs::{CurrentCertificate, SpiffeId};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Opens the TCP connections a pod's proxies make upstream. In production they come from
/// inside the pod's network namespace, marked so the pod's capture rules let them through
/// ([`InPodSockets`]); tests dial plainly.
pub trait SocketFactory: Send + Sync + 'static {
    fn connect(
        &self,
        destination: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send + 'static>>;
}

/// Sockets created inside a pod's network namespace with ztunnel's mark, so traffic keeps
/// the pod's IP on the wire and skips the pod's redirect rules.
pub struct InPodSockets(pub Arc<NetNs>);

impl SocketFactory for InPodSockets {
    fn connect(
        &self,
        destination: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send + 'static>> {
        // The socket is created now (setns is synchronous and must not span an await);
        // only the connect is awaited.
        let socket =
            dial_socket_in(&self.0, destination, &DialOptions::default()).map_err(io::Error::other);
        Box::pin(async move { socket?.connect(destination).await })
    }
}

/// Plain sockets in ztunnel's own namespace: for tests, which have no pod namespaces.
pub struct HostSockets;

impl SocketFactory for HostSockets {
    fn connect(
        &self,
        destination: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send + 'static>> {
        Box::pin(TcpStream::connect(destination))
    }
}

/// A pod whose traffic this node agent proxies.
pub struct EnrolledPod {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub identity: SpiffeId,
    pub netns: Arc<NetNs>,
    /// Where the pod's upstream connections come from.
    pub sockets: Arc<dyn SocketFactory>,
    pub certificate: CurrentCertificate,
    /// HBONE connections dialled from this pod's namespace (so they carry the pod's IP).
    pub pool: hbone::Pool,
    /// Cancelled on unenrollment and on shutdown: the pod's listeners close.
    pub stop: CancellationToken,
    /// Cancelled on unenrollment only: the pod's live connections end. A ztunnel that shuts
    /// down lets them drain instead (its successor already serves new ones).
    pub connections: CancellationToken,
}

impl EnrolledPod {
    /// Opens a TCP connection on the pod's behalf (see [`SocketFactory`]).
    pub async fn dial(&self, destination: SocketAddr) -> io::Result<TcpStream> {
        self.sockets.connect(destination).await
    }

    /// The pod's own addresses: as the cluster knows them, plus `seen` — the one a connection
    /// actually used — since the cluster view may lag behind the pod. The self-call guard
    /// refuses ztunnel's ports on all of them.
    pub fn addresses(&self, snapshot: &discovery::Snapshot, seen: IpAddr) -> Vec<IpAddr> {
        let mut ips = snapshot
            .workload(&self.namespace, &self.name)
            .map_or(Vec::new(), |w| w.ips.clone());
        ips.push(seen);
        ips
    }

    /// `namespace/name`, for logs.
    pub fn display_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}
