//! Building blocks the end-to-end scenarios share: labels, the test app, connections opened from
//! inside a pod, a marker sent under a capture (on either harness, see [`MeshUnderTest`]), and
//! the usual two-node "shop" (a client on one node, an echo server on the other).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::error::{HarnessError, Result};
use crate::manifests::Labels;
use crate::mesh::{Mesh, MeshOptions};
use crate::mesh_under_test::MeshUnderTest;
use crate::pod::{Pod, PodSpec};
use crate::process::Process;
use crate::testapp::TestApp;

pub const DATAPLANE_MODE: &str = "istio.io/dataplane-mode";

/// `istio.io/dataplane-mode=<value>`, or no labels for `None`.
pub fn dataplane(value: Option<&str>) -> Labels {
    value
        .map(|v| Labels::from([(DATAPLANE_MODE.to_string(), v.to_string())]))
        .unwrap_or_default()
}

/// `istio.io/dataplane-mode=ambient`.
pub fn ambient() -> Labels {
    dataplane(Some("ambient"))
}

/// The `ambit-testapp` binary next to the running test.
pub fn testapp() -> TestApp {
    match TestApp::locate() {
        Ok(app) => app,
        Err(error) => panic!("{error}"),
    }
}

/// A TCP connection opened from inside `pod` (so the pod's capture rules apply to it), with
/// 5-second timeouts.
pub fn connect_from(pod: &Pod, target: SocketAddr) -> std::io::Result<TcpStream> {
    let netns = ::capture::NetNs::open(pod.netns().path()).map_err(std::io::Error::other)?;
    let options = ::capture::socket::DialOptions {
        mark: None,
        bind: None,
        transparent: false,
    };
    let socket = ::capture::socket::dial_socket_in(&netns, target, &options)
        .map_err(std::io::Error::other)?;
    let stream = socket.connect_timeout(target, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(stream)
}

/// Sends `message` and reads the same number of bytes back.
pub fn echo_once(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<Vec<u8>> {
    stream.write_all(message)?;
    let mut buf = vec![0u8; message.len()];
    stream.read_exact(&mut buf)?;
    Ok(buf)
}

/// What crossed the node link while one marked echo ran ([`send_marker`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarkerCrossing {
    /// The marker was seen on the wire as sent: not tunnelled.
    pub marker_in_clear: bool,
    /// Something crossed on HBONE's port 15008.
    pub saw_hbone: bool,
}

/// Sends `marker` (4 KiB echo) from `client` to `server` with a capture on the cluster's links
/// and reports what crossed them; fails if the echo did not come back intact.
pub fn send_marker(
    mesh: &impl MeshUnderTest,
    client: &Pod,
    server: SocketAddr,
    marker: &str,
) -> Result<MarkerCrossing> {
    let capture = mesh.cluster().capture("tcp")?;
    let report = TestApp::locate()?.echo_client(client.netns(), server, 4096, Some(marker))?;
    let packets = capture.stop()?;
    if !report.intact() {
        return Err(HarnessError::Invalid(format!(
            "{marker}: echo damaged: {report:?}"
        )));
    }
    Ok(MarkerCrossing {
        marker_in_clear: packets.contains(marker.as_bytes()),
        saw_hbone: packets.has_tcp_port(15008),
    })
}

/// Two nodes; namespace `shop` ambient; `frontend-0` (SA frontend) on node 0 and `cart-0`
/// (SA cart, label app=cart, echo server on 8080) on node 1.
pub struct Shop {
    pub mesh: Mesh,
    pub frontend: Pod,
    pub cart: Pod,
    /// The echo server in `cart-0`; keep it bound (`_echo`) or the server stops.
    pub echo: Process,
}

impl Shop {
    pub fn start() -> Result<Shop> {
        Shop::start_with(MeshOptions::default())
    }

    /// The same shop on a mesh started with `options` (e.g. extra ztunnel flags).
    pub fn start_with(options: MeshOptions) -> Result<Shop> {
        let mut mesh = Mesh::start_with(2, options)?;
        mesh.cluster.set_namespace_labels("shop", ambient())?;
        let frontend = mesh.add_pod(
            PodSpec::new("shop", "frontend-0")
                .on_node(0)
                .service_account("frontend"),
        )?;
        let cart = mesh.add_pod(
            PodSpec::new("shop", "cart-0")
                .on_node(1)
                .service_account("cart")
                .label("app", "cart")
                .port(8080),
        )?;
        let echo = TestApp::locate()
            .and_then(|app| app.echo_server(cart.netns(), 8080))
            .map_err(|e| HarnessError::Invalid(format!("echo server in cart-0: {e}")))?;
        Ok(Shop {
            mesh,
            frontend,
            cart,
            echo,
        })
    }
}
