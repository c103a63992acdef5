//! The DNS proxy end to end on the cluster-in-a-box: an enrolled pod's port-53 traffic is
//! redirected to ztunnel's proxy on 15053 inside the pod, Service names resolve to their VIPs
//! from the cluster view, other names are forwarded to a fake upstream resolver on the fabric
//! (never the machine's own resolvers), and a dead upstream gives SERVFAIL, not a hang.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use ambit_tests::scenario::{ambient, testapp as app};
use ambit_tests::{Mesh, MeshUnderTest, PodSpec, ServiceSpec};

/// A value for the fake upstream to hand out (TEST-NET-1; nothing ever dials it).
const EXTERNAL_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

fn metric(metrics: &str, name: &str, labels: &[&str]) -> u64 {
    metrics
        .lines()
        .filter(|line| line.starts_with(name) && labels.iter().all(|l| line.contains(l)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn service_names_resolve_in_the_pod_and_other_names_go_upstream() {
    let mut mesh = Mesh::start(1).unwrap();
    mesh.cluster
        .set_namespace_labels("shop", ambient())
        .unwrap();
    let client = mesh
        .add_pod(PodSpec::new("shop", "frontend-0").service_account("frontend"))
        .unwrap();
    let outsider = mesh.add_pod(PodSpec::new("plain", "legacy-0")).unwrap();
    let cart = mesh
        .cluster
        .add_service(
            ServiceSpec::new("shop", "cart")
                .selector("app", "cart")
                .port("http", 80, 8080),
        )
        .unwrap();
    mesh.wait_for_dump(0, "ztunnel knows Service cart", |dump| {
        dump.services.iter().any(|s| s.name == "cart")
    })
    .unwrap();
    let mut upstream = mesh
        .start_dns_upstream(&[("external.example", IpAddr::V4(EXTERNAL_IP))])
        .unwrap();

    // Any resolver address will do: the pod's rules catch port 53 wherever it goes. This
    // one is routed nowhere, so only ztunnel can answer.
    let octet = mesh.cluster.octet();
    let nowhere = SocketAddr::from((Ipv4Addr::new(10, octet, 200, 250), 53));
    let vip = IpAddr::V4(cart.vip);
    for (name, tcp) in [
        ("cart.shop.svc.cluster.local", false),
        ("cart.shop.svc.cluster.local", true),
        // Spellings a resolver produces with the pod's search path, and bare ones.
        ("cart", false),
        ("cart.shop", false),
        ("cart.shop.svc", true),
        ("cart.shop.shop.svc.cluster.local", false),
    ] {
        let answer = app()
            .dns_query(client.netns(), nowhere, name, "A", tcp)
            .unwrap();
        assert_eq!(answer.rcode, "NOERROR", "{name} (tcp: {tcp}): {answer:?}");
        assert_eq!(answer.answers, vec![vip], "{name} (tcp: {tcp})");
    }
    // The Service has no IPv6 VIP: it exists, so NOERROR without records.
    let answer = app()
        .dns_query(
            client.netns(),
            nowhere,
            "cart.shop.svc.cluster.local",
            "AAAA",
            false,
        )
        .unwrap();
    assert_eq!(
        (answer.rcode.as_str(), answer.answers.len()),
        ("NOERROR", 0)
    );

    // Not a Service: forwarded to the upstream, from the node.
    for tcp in [false, true] {
        let answer = app()
            .dns_query(client.netns(), nowhere, "external.example", "A", tcp)
            .unwrap();
        assert_eq!(answer.answers, vec![IpAddr::V4(EXTERNAL_IP)], "tcp: {tcp}");
    }
    let answer = app()
        .dns_query(
            client.netns(),
            nowhere,
            "missing.shop.svc.cluster.local",
            "A",
            false,
        )
        .unwrap();
    assert_eq!(answer.rcode, "NXDOMAIN", "the upstream's answer is relayed");
    let node_ip = mesh.cluster.node(0).ip().to_string();
    let forwarded = upstream
        .wait_for_log(
            "query external.example. A via tcp from",
            Duration::from_secs(5),
        )
        .unwrap();
    assert!(
        forwarded.contains(&format!("from {node_ip}:")),
        "forwarded from the node's address: {forwarded}"
    );
    assert!(
        !upstream.log().unwrap().contains("cart.shop"),
        "Service names never reach the upstream"
    );

    // A pod outside the mesh is not intercepted: it talks to the upstream itself, which
    // knows nothing of Services.
    let answer = app()
        .dns_query(
            outsider.netns(),
            mesh.dns_upstream(),
            "cart.shop.svc.cluster.local",
            "A",
            false,
        )
        .unwrap();
    assert_eq!(answer.rcode, "NXDOMAIN", "{answer:?}");

    let metrics = mesh
        .http_get_on_node(0, 15020, "/stats/prometheus")
        .unwrap();
    let from_frontend = "source_workload=\"frontend-0\"";
    assert_eq!(
        metric(
            &metrics,
            "istio_dns_requests_total{",
            &[from_frontend, "answered_by=\"ztunnel\""]
        ),
        7,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "istio_dns_requests_total{",
            &[from_frontend, "answered_by=\"upstream\""]
        ),
        3,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "istio_dns_upstream_requests_total{", &[]),
        3
    );
    assert!(
        !metrics.contains("source_workload=\"legacy-0\""),
        "the outsider's query never reached ztunnel"
    );

    // The upstream goes away: SERVFAIL and a log line, within the upstream budget.
    upstream.stop().unwrap();
    for tcp in [false, true] {
        let answer = app()
            .dns_query(client.netns(), nowhere, "external.example", "A", tcp)
            .unwrap();
        assert_eq!(answer.rcode, "SERVFAIL", "tcp: {tcp}: {answer:?}");
    }
    // Service names do not depend on the upstream.
    let answer = app()
        .dns_query(client.netns(), nowhere, "cart", "A", false)
        .unwrap();
    assert_eq!(answer.answers, vec![vip]);
    let warning = mesh
        .ztunnel(0)
        .wait_for_log("replying SERVFAIL", Duration::from_secs(5))
        .unwrap();
    assert!(
        warning.contains(&mesh.dns_upstream().to_string()),
        "the log names the upstream: {warning}"
    );
    let metrics = mesh
        .http_get_on_node(0, 15020, "/stats/prometheus")
        .unwrap();
    assert!(
        metric(&metrics, "istio_dns_upstream_failures_total{", &[]) >= 2,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "istio_dns_requests_total{",
            &["response_code=\"SERVFAIL\""]
        ),
        2,
        "{metrics}"
    );
}
