//! What the waypoint `shop/waypoint` serves: the Service `cart` (bound by its namespace), the
//! pod `pay-0` (bound by its own label); not `legacy/batch` (unbound), not `mall/shoes` (bound
//! to another waypoint), not `shop/direct` (opted out with `none`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use discovery::{LocalSource, LocalSourceConfig};

use super::*;

const CLUSTER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint}}
---
apiVersion: v1
kind: Namespace
metadata: {name: mall, labels: {istio.io/use-waypoint: mall-wp}}
---
apiVersion: v1
kind: Pod
metadata: {name: cart-0, namespace: shop, labels: {app: cart}}
spec: {nodeName: node-b, serviceAccountName: cart, containers: [{name: c}]}
status: {podIP: 10.1.2.2}
---
apiVersion: v1
kind: Pod
metadata: {name: pay-0, namespace: shop, labels: {app: pay, istio.io/use-waypoint: waypoint}}
spec: {nodeName: node-b, serviceAccountName: pay, containers: [{name: c}]}
status: {podIP: 10.1.2.3}
---
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  selector: {app: cart}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: grpc, port: 7070, appProtocol: grpc}
  - {name: tcp, port: 9090}
  - {name: web, port: 8081, appProtocol: kubernetes.io/h2c}
---
apiVersion: v1
kind: Service
metadata: {name: pay, namespace: shop}
spec:
  clusterIP: 10.96.0.11
  selector: {app: pay}
  ports: [{name: http-api, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: direct, namespace: shop, labels: {istio.io/use-waypoint: none}}
spec:
  clusterIP: 10.96.0.12
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: shoes, namespace: mall}
spec:
  clusterIP: 10.96.0.20
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: batch, namespace: legacy}
spec:
  clusterIP: 10.96.0.30
  ports: [{name: http, port: 80}]
"#;

fn snapshot() -> std::sync::Arc<Snapshot> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cluster.yaml");
    std::fs::write(&file, CLUSTER).unwrap();
    LocalSource::load(LocalSourceConfig::new([file]))
        .unwrap()
        .current()
}

fn this() -> GatewayName {
    GatewayName {
        namespace: "shop".into(),
        name: "waypoint".into(),
    }
}

#[test]
fn bound_services_are_served_by_protocol() {
    let snapshot = snapshot();
    let cases = [
        ("10.96.0.10:80", Traffic::Http),
        ("10.96.0.10:7070", Traffic::Http),
        ("10.96.0.10:9090", Traffic::Tcp),
        ("10.96.0.10:8081", Traffic::Http),
    ];
    for (authority, traffic) in cases {
        let destination = resolve(&snapshot, &this(), authority.parse().unwrap()).unwrap();
        assert_eq!(destination.traffic, traffic, "{authority}");
        assert!(
            matches!(&destination.target, Target::Service { key, .. } if key.name == "cart"),
            "{authority}: {destination:?}"
        );
    }
}

#[test]
fn a_pod_bound_by_its_own_label_is_served_with_its_services_protocol() {
    let snapshot = snapshot();
    let destination = resolve(&snapshot, &this(), "10.1.2.3:8080".parse().unwrap()).unwrap();
    assert_eq!(destination.traffic, Traffic::Http);
    assert!(matches!(destination.target, Target::Workload(w) if w.name == "pay-0"));
    let other_port = resolve(&snapshot, &this(), "10.1.2.3:5000".parse().unwrap()).unwrap();
    assert_eq!(other_port.traffic, Traffic::Tcp);
}

#[test]
fn what_is_not_bound_here_is_refused_with_the_reason() {
    let snapshot = snapshot();
    let refused = |authority: &str| {
        resolve(&snapshot, &this(), authority.parse().unwrap())
            .unwrap_err()
            .to_string()
    };
    assert!(refused("10.96.0.12:80").contains("not bound to any waypoint"));
    assert!(refused("10.96.0.30:80").contains("istio.io/use-waypoint=waypoint"));
    assert!(refused("10.96.0.20:80").contains("bound to waypoint mall/mall-wp"));
    assert!(refused("10.9.9.9:80").contains("neither a Service VIP"));
}

#[test]
fn a_pod_whose_every_service_is_bound_is_served_by_address_too() {
    // cart-0's only Service is bound (through the namespace): every path to it crosses this
    // waypoint, so ztunnel sends its pod-addressed traffic here as well.
    let destination = resolve(&snapshot(), &this(), "10.1.2.2:8080".parse().unwrap()).unwrap();
    assert_eq!(destination.traffic, Traffic::Http);
    assert!(matches!(destination.target, Target::Workload(w) if w.name == "cart-0"));
}

#[test]
fn upstream_protocol_follows_app_protocol_then_port_name() {
    let port = |name: &str, app: Option<&str>| ServicePort {
        name: name.into(),
        port: 80,
        target_port: discovery::TargetPort::Number(80),
        protocol: discovery::Protocol::Tcp,
        app_protocol: app.map(str::to_owned),
    };
    assert_eq!(
        upstream_protocol(&port("grpc", None)),
        UpstreamProtocol::Http2
    );
    assert_eq!(
        upstream_protocol(&port("grpc-web", None)),
        UpstreamProtocol::Http2
    );
    assert_eq!(
        upstream_protocol(&port("x", Some("kubernetes.io/h2c"))),
        UpstreamProtocol::Http2
    );
    assert_eq!(
        upstream_protocol(&port("http", None)),
        UpstreamProtocol::Http1
    );
    assert_eq!(
        upstream_protocol(&port("grpc", Some("http"))),
        UpstreamProtocol::Http1
    );
    assert_eq!(traffic_of(&port("mysql", None)), Traffic::Tcp);
    assert_eq!(
        traffic_of(&port("tcp", Some("kubernetes.io/ws"))),
        Traffic::Http
    );
}
