//! Building blocks the end-to-end scenarios share: labels, the test app, connections opened from
//! inside a pod, and the usual two-node "shop" (a client on one node, an echo server on the other).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::error::{HarnessError, Result};
use crate::manifests::Labels;
use crate::mesh::{Mesh, MeshOptions};
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
