//! The L4 mesh end to end on the cluster-in-a-box: two nodes, pods captured in their own
//! network namespaces, HBONE between nodes, SPIFFE identities in both ztunnels' access logs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use ambit_tests::scenario::{testapp as app, Shop};
use ambit_tests::{AccessLine, MeshUnderTest, ServiceSpec};

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn cross_node_traffic_is_tunnelled_in_mtls_with_both_identities_logged() {
    let Shop {
        mut mesh,
        frontend: client,
        cart: server,
        echo: _echo,
    } = Shop::start().unwrap();
    let service = mesh
        .cluster
        .add_service(
            ServiceSpec::new("shop", "cart")
                .selector("app", "cart")
                .port("tcp", 80, 8080),
        )
        .unwrap();

    let capture = mesh.cluster.capture("tcp").unwrap();
    let marker = "AMBIT-PLAINTEXT-MARKER";
    let report = app()
        .echo_client(client.netns(), server.addr(8080), 8 << 20, Some(marker))
        .unwrap();
    assert!(report.intact(), "payload changed in transit: {report:?}");
    let packets = capture.stop().unwrap();
    assert!(
        !packets.contains(marker.as_bytes()),
        "the marker crossed the wire in clear"
    );
    assert!(
        packets.total_bytes() > 8 << 20,
        "the capture saw the transfer ({} bytes)",
        packets.total_bytes()
    );
    assert!(
        packets.has_tcp_port(15008),
        "the transfer crossed the wire on HBONE's port 15008"
    );
    assert!(
        !packets.has_tcp_port(8080),
        "no plaintext connection to the app port crossed the wire"
    );

    let outbound = mesh
        .wait_for_access(0, WAIT, |l| {
            l.get("direction") == Some("outbound")
                && l.get("dst.hbone_addr") == Some(&server.addr(8080).to_string())
        })
        .unwrap();
    let inbound = mesh
        .wait_for_access(1, WAIT, |l| l.get("direction") == Some("inbound"))
        .unwrap();
    for line in [&outbound, &inbound] {
        assert_eq!(
            line.get("src.identity"),
            Some("spiffe://cluster.local/ns/shop/sa/frontend"),
            "{}",
            line.raw
        );
        assert_eq!(
            line.get("dst.identity"),
            Some("spiffe://cluster.local/ns/shop/sa/cart"),
            "{}",
            line.raw
        );
        assert_eq!(line.bytes("bytes_sent"), 8 << 20, "{}", line.raw);
        assert_eq!(line.bytes("bytes_recv"), 8 << 20, "{}", line.raw);
        assert!(line.get("error").is_none(), "{}", line.raw);
    }
    // Istio's meaning: dst.addr is the address dialled (the HBONE port), dst.hbone_addr the
    // target inside the tunnel.
    assert_eq!(
        outbound.get("dst.addr"),
        Some(&*format!("{}:15008", server.ip()))
    );

    // Through the service VIP too: resolved to the endpoint and tunnelled the same way.
    let report = app()
        .echo_client(
            client.netns(),
            std::net::SocketAddr::from((service.vip, 80)),
            1 << 20,
            None,
        )
        .unwrap();
    assert!(report.intact(), "{report:?}");
    let via_vip: AccessLine = mesh
        .wait_for_access(0, WAIT, |l| {
            l.get("dst.hbone_addr") == Some(&server.addr(8080).to_string())
                && l.bytes("bytes_sent") == 1 << 20
        })
        .unwrap();
    assert_eq!(
        via_vip.get("dst.identity"),
        Some("spiffe://cluster.local/ns/shop/sa/cart")
    );
}

#[test]
fn metrics_readiness_and_config_dump_describe_the_node() {
    let Shop {
        mut mesh,
        frontend: client,
        cart: server,
        echo: _echo,
    } = Shop::start().unwrap();
    let report = app()
        .echo_client(client.netns(), server.addr(8080), 10_000, None)
        .unwrap();
    assert!(report.intact());
    mesh.wait_for_access(1, WAIT, |l| l.get("direction") == Some("inbound"))
        .unwrap();

    let metrics = mesh
        .http_get_on_node(1, 15020, "/stats/prometheus")
        .unwrap();
    let opened = metrics
        .lines()
        .find(|l| {
            l.starts_with("istio_tcp_connections_opened_total{")
                && l.contains("reporter=\"destination\"")
        })
        .unwrap_or_else(|| panic!("no destination-reported connection metric:\n{metrics}"));
    assert!(
        opened.contains("source_principal=\"spiffe://cluster.local/ns/shop/sa/frontend\""),
        "{opened}"
    );
    assert!(
        opened.contains("destination_workload=\"cart-0\""),
        "{opened}"
    );
    assert!(
        opened.contains("connection_security_policy=\"mutual_tls\""),
        "{opened}"
    );
    let received = metrics
        .lines()
        .find(|l| {
            l.starts_with("istio_tcp_received_bytes_total{")
                && l.contains("reporter=\"destination\"")
        })
        .unwrap();
    assert!(received.ends_with(" 10000"), "{received}");
    assert!(
        metrics.contains(
            "ambit_certificate_expiry_seconds{identity=\"spiffe://cluster.local/ns/shop/sa/cart\"}"
        ),
        "{metrics}"
    );

    assert_eq!(
        mesh.http_get_on_node(1, 15021, "/healthz/ready")
            .unwrap()
            .trim(),
        "ready"
    );

    let dump = mesh.config_dump(1).unwrap();
    let certificate = &dump.certificates[0];
    assert_eq!(
        certificate.identity,
        "spiffe://cluster.local/ns/shop/sa/cart"
    );
    let expires = certificate.expires_in_seconds.unwrap();
    assert!(
        expires > 3600 && expires <= 24 * 3600,
        "default lifetime is 24 h: {certificate:?}"
    );
    assert_eq!(dump.enrolled_pods[0].name, "cart-0");
    assert!(dump.workloads.len() >= 2);
}
