#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use super::*;
use crate::decode::Collector;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn build_with(yaml: &str, options: &SnapshotOptions) -> (Snapshot, Vec<Conflict>) {
    // Skip the local source's conflict check, to see the conflicts themselves.
    let mut collector = Collector::new(options);
    collector.add_file(Path::new("test.yaml"), yaml);
    let objects = collector.into_objects().expect("fixture loads");
    Snapshot::build(objects, options)
}

fn build(yaml: &str) -> Snapshot {
    let (snapshot, conflicts) = build_with(yaml, &SnapshotOptions::default());
    assert!(conflicts.is_empty(), "{conflicts:?}");
    snapshot
}

fn pod(name: &str, ns: &str, node: &str, ip: &str, extra_labels: &str, sa: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}, labels: {{app: {name}{extra_labels}}}}}
spec:
  nodeName: {node}
  serviceAccountName: {sa}
  containers: [{{name: c, ports: [{{name: http, containerPort: 8080}}]}}]
status: {{podIP: '{ip}'}}"
    )
}

const NAMESPACES: &str = "apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: plain}";

fn fixture() -> String {
    [
        NAMESPACES.to_owned(),
        pod("web", "shop", "node-a", "10.0.1.5", ", tier: front", "web"),
        pod("api", "shop", "node-b", "10.0.2.5", ", tier: front", "api"),
        pod(
            "out",
            "shop",
            "node-a",
            "10.0.1.6",
            ", istio.io/dataplane-mode: none",
            "default",
        ),
        pod(
            "solo",
            "plain",
            "node-b",
            "10.0.2.6",
            ", istio.io/dataplane-mode: ambient",
            "solo",
        ),
        pod("legacy", "plain", "node-a", "10.0.1.7", "", "legacy"),
        pod("lost", "nowhere", "node-a", "10.0.1.8", "", "lost"),
        "apiVersion: v1
kind: Service
metadata: {name: front, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  selector: {tier: front}
  ports: [{name: http, port: 80, targetPort: http}, {name: direct, port: 81, targetPort: 9000}]"
            .to_owned(),
    ]
    .join("\n---\n")
}

#[test]
fn service_vip_to_endpoints_with_named_target_port() {
    let snapshot = build(&fixture());
    let (service, port) = snapshot.service_by_vip(ip("10.96.0.10"), 80).unwrap();
    assert_eq!(
        (service.name.as_str(), port.name.as_str()),
        ("front", "http")
    );
    let endpoints = snapshot.endpoints_for(service, port);
    let addrs: Vec<SocketAddr> = endpoints.iter().map(|e| e.addr).collect();
    assert_eq!(
        addrs,
        vec![
            "10.0.2.5:8080".parse().unwrap(),
            "10.0.1.5:8080".parse().unwrap()
        ],
        "ready pods matched by the selector, named port resolved per pod, sorted by name"
    );
    assert_eq!(endpoints[0].workload.as_ref().unwrap().name, "api");

    let (service, port) = snapshot.service_by_vip(ip("10.96.0.10"), 81).unwrap();
    let ports: Vec<u16> = snapshot
        .endpoints_for(service, port)
        .iter()
        .map(|e| e.addr.port())
        .collect();
    assert_eq!(ports, vec![9000, 9000]);

    assert!(snapshot.service_by_vip(ip("10.96.0.10"), 82).is_none());
    assert!(snapshot.service_by_vip(ip("10.96.0.11"), 80).is_none());
}

#[test]
fn endpoint_slices_take_precedence_over_the_selector() {
    let yaml = fixture()
        + "\n---\napiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: front-1, namespace: shop, labels: {kubernetes.io/service-name: front}}
addressType: IPv4
ports: [{name: http, port: 7000}]
endpoints:
- addresses: [10.0.1.5]
- addresses: [10.0.9.9]
- addresses: [10.0.2.5]
  conditions: {ready: false}
- addresses: [10.0.3.3]
  targetRef: {kind: Pod, name: api}";
    let snapshot = build(&yaml);
    let (service, port) = snapshot.service_by_vip(ip("10.96.0.10"), 80).unwrap();
    let endpoints = snapshot.endpoints_for(service, port);
    let summary: Vec<(String, Option<&str>)> = endpoints
        .iter()
        .map(|e| {
            (
                e.addr.to_string(),
                e.workload.as_ref().map(|w| w.name.as_str()),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("10.0.1.5:7000".to_owned(), Some("web")),
            ("10.0.9.9:7000".to_owned(), None),
            ("10.0.3.3:7000".to_owned(), Some("api")),
        ]
    );
    // The slice has no port named "direct": that port has no endpoints.
    let (service, port) = snapshot.service_by_vip(ip("10.96.0.10"), 81).unwrap();
    assert!(snapshot.endpoints_for(service, port).is_empty());
}

#[test]
fn ambient_follows_pod_label_then_namespace() {
    let host = pod("host", "shop", "node-a", "192.168.0.1", "", "host").replace(
        "  nodeName: node-a",
        "  nodeName: node-a\n  hostNetwork: true",
    );
    let snapshot = build(&format!("{}\n---\n{host}", fixture()));
    let cases = [
        ("shop", "web", true),   // namespace enrolls
        ("shop", "out", false),  // pod `none` opts out
        ("plain", "solo", true), // pod `ambient` enrolls in a plain namespace
        ("plain", "legacy", false),
        ("nowhere", "lost", false), // namespace not in the manifests
        ("shop", "host", false),    // host network can never be captured
    ];
    for (ns, name, want) in cases {
        let w = snapshot.workload(ns, name).unwrap();
        assert_eq!(snapshot.is_ambient(w), want, "{ns}/{name}");
    }
    assert!(
        snapshot.workload_by_ip(ip("192.168.0.1")).is_none(),
        "host network not indexed"
    );
}

#[test]
fn workload_by_ip_and_identity() {
    let snapshot = build(&fixture());
    let w = snapshot.workload_by_ip(ip("10.0.2.5")).unwrap();
    assert_eq!(w.name, "api");
    assert_eq!(
        w.identity("cluster.local").unwrap().to_string(),
        "spiffe://cluster.local/ns/shop/sa/api"
    );
    assert!(snapshot.workload_by_ip(ip("10.0.2.99")).is_none());
}

#[test]
fn nodes_list_their_pods_and_service_accounts() {
    let snapshot = build(&fixture());
    let on_a: Vec<&str> = snapshot
        .workloads_on_node("node-a")
        .map(|w| w.name.as_str())
        .collect();
    assert_eq!(on_a, vec!["lost", "legacy", "out", "web"]);
    let cases: &[(&str, &[(&str, &str)])] = &[
        (
            "node-a",
            &[
                ("nowhere", "lost"),
                ("plain", "legacy"),
                ("shop", "default"),
                ("shop", "web"),
            ],
        ),
        ("node-b", &[("plain", "solo"), ("shop", "api")]),
        ("node-x", &[]),
    ];
    for (node, want) in cases {
        let got: Vec<(&str, &str)> = snapshot
            .service_accounts_on_node(node)
            .into_iter()
            .collect();
        assert_eq!(got, *want, "{node}");
    }
    assert!(snapshot.node_runs_service_account("node-b", "shop", "api"));
    assert!(!snapshot.node_runs_service_account("node-a", "shop", "api"));
}

fn policy(name: &str, ns: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: {name}, namespace: {ns}}}
spec: {spec}"
    )
}

#[test]
fn policies_for_selectors_and_root_namespace() {
    let yaml = [
        fixture(),
        policy("ns-wide", "shop", "{}"),
        policy("web-only", "shop", "{selector: {matchLabels: {app: web}}}"),
        policy(
            "front",
            "shop",
            "{selector: {matchLabels: {tier: front}}, action: DENY}",
        ),
        policy(
            "for-waypoint",
            "shop",
            "{targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: wp}]}",
        ),
        policy("mesh-wide", "ambit-system", "{}"),
        policy(
            "root-web",
            "ambit-system",
            "{selector: {matchLabels: {app: web}}}",
        ),
        policy("other", "plain", "{}"),
    ]
    .join("\n---\n");
    let names = |snapshot: &Snapshot, ns: &str, name: &str| -> Vec<String> {
        let w = snapshot.workload(ns, name).unwrap();
        snapshot
            .policies_for(w)
            .map(|p| format!("{}/{}", p.namespace, p.name))
            .collect()
    };
    let snapshot = build(&yaml);
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "shop",
            "web",
            &[
                "shop/front",
                "shop/ns-wide",
                "shop/web-only",
                "ambit-system/mesh-wide",
                "ambit-system/root-web",
            ],
        ),
        (
            "shop",
            "api",
            &["shop/front", "shop/ns-wide", "ambit-system/mesh-wide"],
        ),
        ("shop", "out", &["shop/ns-wide", "ambit-system/mesh-wide"]),
        (
            "plain",
            "legacy",
            &["plain/other", "ambit-system/mesh-wide"],
        ),
        ("nowhere", "lost", &["ambit-system/mesh-wide"]),
    ];
    for (ns, name, want) in cases {
        assert_eq!(names(&snapshot, ns, name), *want, "{ns}/{name}");
    }

    // Another root namespace: ambit-system is then an ordinary namespace.
    let options = SnapshotOptions {
        root_namespace: "istio-system".into(),
    };
    let (snapshot, _) = build_with(&yaml, &options);
    assert_eq!(names(&snapshot, "plain", "legacy"), vec!["plain/other"]);
}

#[test]
fn address_conflicts_are_reported() {
    let yaml = [
        fixture(),
        pod("twin", "shop", "node-a", "10.0.1.5", "", "web"),
        pod("a-done", "shop", "node-a", "10.0.2.5", "", "web")
            .replace("status: {", "status: {phase: Succeeded, "),
        "apiVersion: v1
kind: Service
metadata: {name: clash, namespace: shop}
spec: {clusterIP: 10.96.0.10, ports: [{port: 80}, {port: 53, protocol: UDP}]}"
            .to_owned(),
    ]
    .join("\n---\n");
    let (snapshot, conflicts) = build_with(&yaml, &SnapshotOptions::default());
    let key = |ns: &str, name: &str| (ns.to_owned(), name.to_owned());
    assert_eq!(
        conflicts,
        vec![
            Conflict::WorkloadIp {
                ip: ip("10.0.1.5"),
                kept: key("shop", "twin"),
                dropped: key("shop", "web"),
            },
            Conflict::ServiceVip {
                ip: ip("10.96.0.10"),
                port: 80,
                kept: key("shop", "clash"),
                dropped: key("shop", "front"),
            },
        ]
    );
    // A finished pod's IP belongs to the running pod that reuses it.
    assert_eq!(snapshot.workload_by_ip(ip("10.0.2.5")).unwrap().name, "api");
}

#[test]
fn dual_stack_pods_behind_single_stack_service() {
    let web = pod("web", "shop", "node-a", "10.0.1.5", ", tier: front", "web").replace(
        "status: {podIP: '10.0.1.5'}",
        "status: {podIP: '10.0.1.5', podIPs: [{ip: 'fd00::5'}]}",
    );
    let yaml = [
        NAMESPACES.to_owned(),
        web,
        "apiVersion: v1
kind: Service
metadata: {name: v6, namespace: shop}
spec: {clusterIP: 'fd00:96::1', selector: {tier: front}, ports: [{port: 80, targetPort: http}]}"
            .to_owned(),
    ]
    .join("\n---\n");
    let snapshot = build(&yaml);
    let (service, port) = snapshot.service_by_vip(ip("fd00:96::1"), 80).unwrap();
    let addrs: Vec<String> = snapshot
        .endpoints_for(service, port)
        .iter()
        .map(|e| e.addr.to_string())
        .collect();
    assert_eq!(addrs, vec!["[fd00::5]:8080"]);
}
