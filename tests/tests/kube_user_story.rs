//! The user's story against a real kube-apiserver 1.20.2: `kubectl apply -k manifests/`, label
//! a namespace `istio.io/dataplane-mode=ambient`, and see mTLS with both SPIFFE identities in
//! the tunnel logs — with `ambit-ca` and the ztunnels reading the API server as their own
//! ServiceAccounts, so only the manifests' RBAC lets them work. Needs root and the cached API
//! server (`scripts/kube-build.sh`); fails, not skips, without them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use ambit_tests::kube_mesh::KubeMesh;
use ambit_tests::scenario::send_marker;
use ambit_tests::{MeshUnderTest, PodSpec, TestApp};

const FRONTEND: &str = "spiffe://cluster.local/ns/shop/sa/frontend";
const CART: &str = "spiffe://cluster.local/ns/shop/sa/cart";
const WAIT: Duration = Duration::from_secs(20);

fn app() -> TestApp {
    TestApp::at(env!("CARGO_BIN_EXE_ambit-testapp"))
}

#[test]
fn label_a_namespace_and_its_running_pods_talk_mtls_until_unlabelled_or_deleted() {
    let mut mesh = KubeMesh::start(2).unwrap();
    mesh.kubectl(&["create", "namespace", "shop"]).unwrap();
    let frontend = mesh
        .add_pod(
            PodSpec::new("shop", "frontend-0")
                .on_node(0)
                .service_account("frontend"),
        )
        .unwrap();
    let cart = mesh
        .add_pod(
            PodSpec::new("shop", "cart-0")
                .on_node(1)
                .service_account("cart")
                .port(8080),
        )
        .unwrap();
    let _echo = app().echo_server(cart.netns(), 8080).unwrap();
    let cart_addr = cart.addr(8080);

    // Before the label nothing is captured: the marker crosses the fabric as sent.
    let wire = send_marker(&mesh, &frontend, cart_addr, "BEFORE-LABEL-MARKER").unwrap();
    assert!(wire.marker_in_clear && !wire.saw_hbone);

    // The user labels the namespace; the pods already running join the mesh.
    mesh.kubectl(&[
        "label",
        "namespace",
        "shop",
        "istio.io/dataplane-mode=ambient",
    ])
    .unwrap();
    mesh.wait_until_enrolled(0, &["frontend-0"]).unwrap();
    mesh.wait_until_enrolled(1, &["cart-0"]).unwrap();

    // Cross-node traffic now travels in the HBONE tunnel, encrypted.
    let wire = send_marker(&mesh, &frontend, cart_addr, "LABELLED-MARKER").unwrap();
    assert!(
        !wire.marker_in_clear,
        "mTLS: the marker must not be on the wire"
    );
    assert!(wire.saw_hbone, "the tunnel runs on port 15008");

    // Both node agents log the connection with both identities, as the CA issued them.
    let outbound = mesh
        .wait_for_access(0, WAIT, |l| l.get("direction") == Some("outbound"))
        .unwrap();
    let inbound = mesh
        .wait_for_access(1, WAIT, |l| l.get("direction") == Some("inbound"))
        .unwrap();
    for line in [&outbound, &inbound] {
        assert_eq!(line.get("src.identity"), Some(FRONTEND), "{}", line.raw);
        assert_eq!(line.get("dst.identity"), Some(CART), "{}", line.raw);
    }

    // Unlabelled: the pods are released and talk directly again.
    mesh.kubectl(&["label", "namespace", "shop", "istio.io/dataplane-mode-"])
        .unwrap();
    mesh.wait_until_enrolled(0, &[]).unwrap();
    mesh.wait_until_enrolled(1, &[]).unwrap();
    // (Only the marker is checked: the closing of the old tunnel may still be on the wire.)
    let wire = send_marker(&mesh, &frontend, cart_addr, "UNLABELLED-MARKER").unwrap();
    assert!(
        wire.marker_in_clear,
        "out of the mesh, traffic flows directly"
    );

    // Deleting an enrolled pod (as kubelet does it: graceful delete, CNI DEL, final delete)
    // takes it out of its node agent and out of every node's view.
    mesh.kubectl(&[
        "label",
        "namespace",
        "shop",
        "istio.io/dataplane-mode=ambient",
    ])
    .unwrap();
    mesh.wait_until_enrolled(1, &["cart-0"]).unwrap();
    mesh.delete_pod(&cart).unwrap();
    mesh.wait_until_enrolled(1, &[]).unwrap();
    for node in 0..2 {
        mesh.wait_for_dump(node, "cart-0 is gone from the cluster view", |dump| {
            dump.workload_named("cart-0").is_none()
        })
        .unwrap();
    }
    mesh.wait_until_enrolled(0, &["frontend-0"]).unwrap();
}
