//! A root rotation on a running mesh (issue 8: "a root rotation needs a restart"). The CA's
//! directory goes through the standard steps — trust A and B, sign with B, trust B only — and
//! the CA restarts at each (it reads its directory at start). The node agents follow from the
//! CA's answers alone: no ztunnel restarts. Certificates live 20 s, so every node renews within
//! about 10 s of a step. After every step a new connection is tunnelled; after the last, a pod
//! that appears then (a new identity, so a new mTLS handshake on both sides, with B-only
//! trust) is tunnelled too.
//!
//! A connection is not held across the steps on purpose: with 20 s certificates it would
//! outlive the certificate its HBONE connection was established with, and the HBONE server
//! then sends GOAWAY and closes it after the drain timeout (by design: an expired peer keeps no
//! tunnel). That an established connection survives a change of roots is checked with real
//! sockets in `certs/tests/root_rotation.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ambit_tests::scenario::{connect_from, echo_once, Shop};
use ambit_tests::{Mesh, MeshOptions, MeshUnderTest, Pod, PodSpec};

/// How long a node may take to follow one step (two renewals at 20 s lifetimes, with room).
const STEP: Duration = Duration::from_secs(60);

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The CA directory's signer (`tls.crt`, `tls.key`, copied with their modes from `from`) and
/// its trusted roots (`ca.crt`).
fn lay_out_ca_dir(ca_dir: &Path, signer_from: &Path, roots: &str) {
    for file in ["tls.crt", "tls.key"] {
        std::fs::copy(signer_from.join(file), ca_dir.join(file)).unwrap();
    }
    std::fs::write(ca_dir.join("ca.crt"), roots).unwrap();
}

/// Restarts the CA on the rewritten directory, then waits until every node agent logged a
/// line `node_followed` accepts (written after the restart).
fn restart_ca_and_follow(mesh: &mut Mesh, what: &str, node_followed: impl Fn(&str) -> bool) {
    mesh.ca.stop().unwrap();
    mesh.ca = mesh.spawn_ca().unwrap();
    let offsets: Vec<u64> = mesh.ztunnels.iter().map(|z| z.log_len().unwrap()).collect();
    for (node, ztunnel) in mesh.ztunnels.iter_mut().enumerate() {
        ztunnel
            .wait_for_line_from(offsets[node], what, STEP, &node_followed)
            .unwrap_or_else(|e| panic!("node {node}: {e}"));
    }
}

fn echoes(stream: &mut TcpStream, message: &str) {
    let answer = echo_once(stream, message.as_bytes()).unwrap_or_else(|e| panic!("{message}: {e}"));
    assert_eq!(answer, message.as_bytes());
}

/// A new connection is tunnelled and echoes.
fn traffic_flows(step: &str, from: &Pod, to: SocketAddr) {
    let mut fresh = connect_from(from, to).unwrap_or_else(|e| panic!("{step}: {e}"));
    echoes(&mut fresh, &format!("new after: {step}"));
}

fn bundle_has_roots(count: usize) -> impl Fn(&str) -> bool {
    move |line| line.contains("trust bundle changed") && line.contains(&format!("roots={count}"))
}

#[test]
fn a_root_rotates_on_a_running_mesh_and_every_step_keeps_serving_without_a_node_restart() {
    let shop =
        Shop::start_with(MeshOptions::default().ztunnel_args(["--cert-ttl", "20s"])).unwrap();
    let Shop {
        mut mesh,
        frontend,
        cart,
        echo: _cart_echo,
    } = shop;
    let ca_dir = mesh.ca_dir().to_path_buf();
    let work = mesh.cluster.root_dir().to_path_buf();

    // Root A is what the mesh started with; root B is made by the CA's own `init`.
    let root_a_dir = work.join("root-a");
    std::fs::create_dir_all(&root_a_dir).unwrap();
    for file in ["tls.crt", "tls.key", "ca.crt"] {
        std::fs::copy(ca_dir.join(file), root_a_dir.join(file)).unwrap();
    }
    let root_b_dir = work.join("root-b");
    let init = Command::new(&mesh.binaries.ambit_ca)
        .args(["init", "--dir"])
        .arg(&root_b_dir)
        .output()
        .unwrap();
    assert!(init.status.success(), "ambit-ca init: {init:?}");
    let (root_a, root_b) = (
        read(&root_a_dir.join("ca.crt")),
        read(&root_b_dir.join("ca.crt")),
    );
    assert_ne!(root_a, root_b);

    let cart_addr = cart.addr(8080);
    traffic_flows("root A", &frontend, cart_addr);

    // 1. Trust both, still sign with A: each node's bundle grows to two roots.
    lay_out_ca_dir(&ca_dir, &root_a_dir, &format!("{root_a}{root_b}"));
    restart_ca_and_follow(
        &mut mesh,
        "the trust bundle gains root B",
        bundle_has_roots(2),
    );
    traffic_flows("A and B trusted", &frontend, cart_addr);

    // 2. Sign with B: every node renews from B while peers still hold A's certificates.
    lay_out_ca_dir(&ca_dir, &root_b_dir, &format!("{root_a}{root_b}"));
    restart_ca_and_follow(&mut mesh, "a certificate issued by root B", |line| {
        line.contains("workload certificate issued")
    });
    traffic_flows("signing with B", &frontend, cart_addr);

    // 3. Trust B only: each node's bundle drops A.
    lay_out_ca_dir(&ca_dir, &root_b_dir, &root_b);
    restart_ca_and_follow(
        &mut mesh,
        "the trust bundle drops root A",
        bundle_has_roots(1),
    );
    traffic_flows("B only", &frontend, cart_addr);

    // A new identity on node 0: a new HBONE connection, so a handshake on both sides with
    // B-only trust and B-issued certificates.
    let reviews = mesh
        .add_pod(
            PodSpec::new("shop", "reviews-0")
                .on_node(0)
                .service_account("reviews"),
        )
        .unwrap();
    let mut first = connect_from(&reviews, cart_addr).unwrap();
    echoes(&mut first, "a new identity after the rotation");
    drop(first); // its access line is written when it closes
    let access = mesh.ztunnels[1]
        .wait_for_line("cart's node logs the new client", STEP, |line| {
            line.contains("connection complete")
                && line.contains("src.identity=\"spiffe://cluster.local/ns/shop/sa/reviews\"")
        })
        .unwrap();
    assert!(
        access.contains("dst.identity=\"spiffe://cluster.local/ns/shop/sa/cart\""),
        "{access}"
    );
}
