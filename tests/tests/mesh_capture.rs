//! Capture that is boringly correct: pods labelled after they started join the mesh without a
//! restart and leave it when unlabelled; a ztunnel restart never lets traffic out in clear and
//! lets established connections drain; a pod added while ztunnel is down fails and succeeds on
//! the kubelet's retry.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use ambit_tests::scenario::{
    connect_from, dataplane, echo_once, send_marker, testapp as app, Shop,
};
use ambit_tests::{Mesh, MeshUnderTest, Pod, PodSpec};

#[test]
fn labelling_running_pods_enrolls_them_and_unlabelling_releases_them_again_and_again() {
    let mut mesh = Mesh::start(2).unwrap();
    let client = mesh
        .add_pod(
            PodSpec::new("shop", "frontend-0")
                .on_node(0)
                .service_account("frontend"),
        )
        .unwrap();
    let server = mesh
        .add_pod(
            PodSpec::new("shop", "cart-0")
                .on_node(1)
                .service_account("cart")
                .port(8080),
        )
        .unwrap();
    let _echo = app().echo_server(server.netns(), 8080).unwrap();
    let before = send_marker(&mesh, &client, server.addr(8080), "BEFORE-LABEL-MARKER").unwrap();
    assert!(before.marker_in_clear, "not in the mesh yet");

    for round in 1..=2 {
        mesh.cluster
            .set_namespace_labels("shop", dataplane(Some("ambient")))
            .unwrap();
        for node in 0..2 {
            mesh.wait_for_dump(node, "the running pod is enrolled", |d| {
                d.enrolled_pods.len() == 1
            })
            .unwrap();
        }
        let marker = format!("LABELLED-ROUND-{round}");
        let labelled = send_marker(&mesh, &client, server.addr(8080), &marker).unwrap();
        assert!(
            !labelled.marker_in_clear,
            "round {round}: traffic must be encrypted once labelled"
        );
        mesh.wait_for_access(1, Duration::from_secs(10), |l| {
            l.get("src.identity") == Some("spiffe://cluster.local/ns/shop/sa/frontend")
        })
        .unwrap();

        mesh.cluster
            .set_namespace_labels("shop", dataplane(None))
            .unwrap();
        for node in 0..2 {
            mesh.wait_until_enrolled(node, &[]).unwrap();
        }
        let marker = format!("UNLABELLED-ROUND-{round}");
        let unlabelled = send_marker(&mesh, &client, server.addr(8080), &marker).unwrap();
        assert!(
            unlabelled.marker_in_clear,
            "round {round}: out of the mesh, traffic flows directly"
        );
    }

    // A pod-level opt-out wins over the namespace label.
    mesh.cluster
        .set_namespace_labels("shop", dataplane(Some("ambient")))
        .unwrap();
    mesh.wait_for_dump(1, "cart is enrolled", |d| d.enrolled_pods.len() == 1)
        .unwrap();
    mesh.cluster
        .set_pod_labels(&server, dataplane(Some("none")))
        .unwrap();
    mesh.wait_for_dump(1, "cart opted out", |d| d.enrolled_pods.is_empty())
        .unwrap();
}

#[test]
fn a_ztunnel_restart_never_leaks_plaintext_and_lets_established_connections_drain() {
    let Shop {
        mut mesh,
        frontend: client,
        cart: server,
        echo: _echo,
    } = Shop::start().unwrap();
    let capture = mesh.cluster.capture("tcp").unwrap();

    let mut established = connect_from(&client, server.addr(8080)).unwrap();
    assert_eq!(
        echo_once(&mut established, b"LONG-LIVED-1").unwrap(),
        b"LONG-LIVED-1"
    );

    // Roll node 0's ztunnel: the old one is told to stop (it drains for up to 5 s), the new one
    // starts at once and re-syncs the pods it finds running.
    mesh.ztunnel(0)
        .signal(nix::sys::signal::Signal::SIGTERM)
        .unwrap();
    let mut old = mesh.replace_ztunnel(0).unwrap();
    old.wait_for_log("draining existing ones", Duration::from_secs(5))
        .unwrap();
    mesh.wait_until_enrolled(0, &["frontend-0"]).unwrap();

    // The established connection still works on the old process...
    assert_eq!(
        echo_once(&mut established, b"LONG-LIVED-2").unwrap(),
        b"LONG-LIVED-2"
    );
    // ...while new connections go through the new one, in mTLS.
    let report = app()
        .echo_client(
            client.netns(),
            server.addr(8080),
            64 * 1024,
            Some("AFTER-RESTART-MARKER"),
        )
        .unwrap();
    assert!(report.intact());
    mesh.wait_for_access(0, Duration::from_secs(10), |l| {
        l.bytes("bytes_sent") == 64 * 1024
    })
    .unwrap();

    drop(established);
    let status = old.wait_exit(Duration::from_secs(10)).unwrap();
    assert!(
        status.is_some(),
        "the old ztunnel exits once its connections are done"
    );
    let packets = capture.stop().unwrap();
    for marker in ["LONG-LIVED-1", "LONG-LIVED-2", "AFTER-RESTART-MARKER"] {
        assert!(
            !packets.contains(marker.as_bytes()),
            "{marker} crossed the wire in clear"
        );
    }
    // The old process logged the long-lived connection when it ended: 2 × 12 bytes each way.
    let line = old.wait_for_line(
        "the drained connection's access line",
        Duration::from_secs(5),
        |l| {
            l.contains("connection complete")
                && l.contains("bytes_sent=24 ")
                && l.contains("bytes_recv=24 ")
        },
    );
    assert!(line.is_ok(), "{:?}", old.log());
}

#[test]
fn a_pod_added_while_ztunnel_is_down_fails_and_succeeds_on_retry() {
    let mut mesh = Mesh::start(1).unwrap();
    mesh.cluster
        .set_namespace_labels("shop", dataplane(Some("ambient")))
        .unwrap();
    mesh.ztunnel(0).stop().unwrap();
    let error = mesh
        .cluster
        .add_pod(PodSpec::new("shop", "early-0").on_node(0))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("ztunnel"),
        "the CNI error names ztunnel: {error}"
    );
    mesh.replace_ztunnel(0).unwrap();
    // The kubelet retries the same pod.
    let pod = mesh
        .cluster
        .add_pod(PodSpec::new("shop", "early-0").on_node(0))
        .unwrap();
    mesh.wait_until_enrolled(0, &["early-0"]).unwrap();
    assert!(pod.ip().is_private());
}

#[test]
fn kubelet_probes_from_the_node_reach_enrolled_pods_directly() {
    let mut mesh = Mesh::start(1).unwrap();
    mesh.cluster
        .set_namespace_labels("shop", dataplane(Some("ambient")))
        .unwrap();
    let pod = mesh
        .add_pod(
            PodSpec::new("shop", "cart-0")
                .on_node(0)
                .service_account("cart")
                .port(8080)
                .probe(8080),
        )
        .unwrap();
    let mut echo = app().echo_server(pod.netns(), 8080).unwrap();
    // The kubelet runs in the node's network namespace. ztunnel SNATs connections from the
    // node to the pod's probe ports to 169.254.7.127, which the capture rules exempt.
    let report = wait_until_probe_passes(&mesh, &pod);
    assert!(report.intact(), "{report:?}");
    echo.wait_for_log("accepted from 169.254.7.127", Duration::from_secs(5))
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        mesh.access_log(0).unwrap().is_empty(),
        "a probe must not go through the proxy"
    );
    // A client from another pod on the same node is captured as usual.
    let client = mesh
        .add_pod(
            PodSpec::new("shop", "frontend-0")
                .on_node(0)
                .service_account("frontend"),
        )
        .unwrap();
    let report = app()
        .echo_client(client.netns(), pod.addr(8080), 100, None)
        .unwrap();
    assert!(report.intact());
    mesh.wait_for_access(0, Duration::from_secs(10), |l| {
        l.get("direction") == Some("inbound")
    })
    .unwrap();
}

/// The node's probe rules follow the snapshot a moment after the pod appears.
fn wait_until_probe_passes(mesh: &Mesh, pod: &Pod) -> ambit_tests::testapp::EchoReport {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match app().echo_client(mesh.cluster.node(0).netns(), pod.addr(8080), 100, None) {
            Ok(report) if report.intact() => return report,
            other if std::time::Instant::now() >= deadline => {
                panic!("the kubelet probe never got through: {other:?}")
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

#[test]
fn a_host_network_client_is_captured_and_policy_applies_to_it() {
    let mut mesh = Mesh::start(1).unwrap();
    mesh.cluster
        .set_namespace_labels("shop", dataplane(Some("ambient")))
        .unwrap();
    let pod = mesh
        .add_pod(
            PodSpec::new("shop", "cart-0")
                .on_node(0)
                .service_account("cart")
                .label("app", "cart")
                .port(8080)
                .port(9090)
                .probe(8080),
        )
        .unwrap();
    let _probe_target = app().echo_server(pod.netns(), 8080).unwrap();
    let _app = app().echo_server(pod.netns(), 9090).unwrap();
    wait_until_probe_passes(&mesh, &pod);
    // Deny-all for cart: an ALLOW policy with no rules.
    mesh.cluster
        .put_manifest(
            "policy-allow-nothing.yaml",
            vec![serde_json::json!({
                "apiVersion": "security.istio.io/v1",
                "kind": "AuthorizationPolicy",
                "metadata": {"name": "allow-nothing", "namespace": "shop"},
                "spec": {"selector": {"matchLabels": {"app": "cart"}}}
            })],
        )
        .unwrap();
    mesh.wait_for_dump(0, "the policy is loaded", |d| d.has_policy("allow-nothing"))
        .unwrap();
    // A host-network process (the node's namespace) on a port that is not a probe: it comes
    // from the node's address, as the kubelet's probes used to, and must not pass in clear.
    let refused = app().echo_client(mesh.cluster.node(0).netns(), pod.addr(9090), 100, None);
    assert!(
        refused.map(|r| !r.intact()).unwrap_or(true),
        "a host-network client must be subject to policy"
    );
    let denied = mesh
        .wait_for_access(0, Duration::from_secs(10), |l| {
            l.get("dst.addr") == Some(&*pod.addr(9090).to_string()) && l.get("error").is_some()
        })
        .unwrap();
    assert!(
        denied
            .get("error")
            .unwrap()
            .contains("ALLOW policies apply to shop/cart-0"),
        "{}",
        denied.raw
    );
    // The kubelet's probe still passes: policy does not apply to probes.
    assert!(wait_until_probe_passes(&mesh, &pod).intact());
}
