//! Contract between the harness and `discovery`: the manifests folder the harness writes loads
//! in discovery's local source with the pods, IPs, nodes, Services and endpoints it describes.
//! Needs no root: it renders objects without building namespaces.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr};

use ambit_tests::manifests::{
    ClusterObjects, ContainerPort, ManifestDir, NamespaceObject, NodeObject, PodObject,
    ServiceObject, ServicePort,
};
use ambit_tests::Labels;
use discovery::{LocalSource, LocalSourceConfig};

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn pod(name: &str, node: u8, ip: Option<Ipv4Addr>) -> PodObject {
    PodObject {
        namespace: "shop".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        labels: labels(&[("app", "web")]),
        node_name: format!("node-{node}"),
        host_ip: Ipv4Addr::new(10, 30, 0, 10 + node),
        service_account: "web".into(),
        ports: vec![ContainerPort {
            name: Some("http".into()),
            port: 8080,
        }],
        probe_ports: Vec::new(),
        ip,
    }
}

#[test]
fn harness_manifests_load_in_discovery() {
    let web0_ip = Ipv4Addr::new(10, 30, 1, 2);
    let vip = Ipv4Addr::new(10, 30, 200, 10);
    let mut objects = ClusterObjects::default();
    objects.namespaces.insert(
        "shop".into(),
        NamespaceObject {
            name: "shop".into(),
            labels: labels(&[("istio.io/dataplane-mode", "ambient")]),
        },
    );
    for node in 0..2u8 {
        objects.nodes.push(NodeObject {
            name: format!("node-{node}"),
            internal_ip: Ipv4Addr::new(10, 30, 0, 10 + node),
            pod_cidr: format!("10.30.{}.0/24", node + 1),
        });
    }
    let key = |name: &str| ("shop".to_string(), name.to_string());
    objects
        .pods
        .insert(key("web-0"), pod("web-0", 0, Some(web0_ip)));
    // A pod whose sandbox is still being created (Pending, no IP) must not break loading.
    objects.pods.insert(key("web-1"), pod("web-1", 1, None));
    objects.services.insert(
        key("web"),
        ServiceObject {
            namespace: "shop".into(),
            name: "web".into(),
            labels: Labels::new(),
            selector: labels(&[("app", "web")]),
            vip,
            ports: vec![ServicePort {
                name: "http".into(),
                port: 80,
                target_port: 8080,
            }],
        },
    );
    let temp = tempfile::tempdir().unwrap();
    let mut dir = ManifestDir::create(temp.path().join("manifests")).unwrap();
    dir.sync(&objects.files()).unwrap();

    let source = LocalSource::load(LocalSourceConfig::new([dir.path()])).unwrap();
    let snapshot = source.current();
    let web0 = snapshot.workload_by_ip(IpAddr::V4(web0_ip)).unwrap();
    assert_eq!(web0.name, "web-0");
    assert_eq!(web0.uid, "uid-web-0");
    assert_eq!(web0.node, "node-0");
    assert_eq!(web0.service_account, "web");
    assert!(web0.ready && snapshot.is_ambient(web0));
    let (service, port) = snapshot.service_by_vip(IpAddr::V4(vip), 80).unwrap();
    let endpoints: Vec<_> = snapshot
        .endpoints_for(service, port)
        .iter()
        .map(|e| e.addr)
        .collect();
    assert_eq!(endpoints, [(web0_ip, 8080).into()]);
}
