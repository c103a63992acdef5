//! Table tests of the planning step over a small fake cluster: `frontend` (node-a) and `cart`
//! (node-b) are ambient in `shop`; `legacy` is a pod outside the mesh; `cart` and `legacy` have
//! Services; a DENY policy keeps `shop/sa/intruder` away from `cart`. Waypoints: the Service
//! `checkout` and the pod `pay-0` are bound to `shop/shop-waypoint` (one ready pod,
//! `shop-waypoint-0`); `orders` to a waypoint that does not exist; namespace `mall` binds its
//! Services to `mall-wp` (absent), and `mall/direct` opts out with `none`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use certs::SpiffeId;
use discovery::{LocalSource, LocalSourceConfig, Snapshot};

use super::*;

const CLUSTER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: legacy}
---
apiVersion: v1
kind: Pod
metadata: {name: frontend-0, namespace: shop, labels: {app: frontend}}
spec: {nodeName: node-a, serviceAccountName: frontend, containers: [{name: c}]}
status: {podIP: 10.1.1.2}
---
apiVersion: v1
kind: Pod
metadata: {name: cart-0, namespace: shop, labels: {app: cart}}
spec: {nodeName: node-b, serviceAccountName: cart, containers: [{name: c}]}
status: {podIP: 10.1.2.2}
---
apiVersion: v1
kind: Pod
metadata: {name: batch-0, namespace: legacy, labels: {app: batch}}
spec: {nodeName: node-b, containers: [{name: c}]}
status: {podIP: 10.1.2.3}
---
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec:
  clusterIP: 10.200.0.10
  selector: {app: cart}
  ports: [{name: http, port: 80, targetPort: 8080}, {name: loop, port: 81, targetPort: 15001}]
---
apiVersion: v1
kind: Service
metadata: {name: batch, namespace: legacy}
spec:
  clusterIP: 10.200.0.20
  selector: {app: batch}
  ports: [{name: http, port: 80, targetPort: 9090}]
---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: shop}
spec:
  clusterIP: 10.200.0.30
  selector: {app: nobody}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: checkout, namespace: shop, labels: {istio.io/use-waypoint: shop-waypoint}}
spec:
  clusterIP: 10.200.0.40
  selector: {app: cart}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: orders, namespace: shop, labels: {istio.io/use-waypoint: no-such-waypoint}}
spec:
  clusterIP: 10.200.0.41
  selector: {app: cart}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata:
  name: shop-waypoint-0
  namespace: shop
  labels: {gateway.networking.k8s.io/gateway-name: shop-waypoint, istio.io/dataplane-mode: none}
spec: {nodeName: node-a, serviceAccountName: shop-waypoint, containers: [{name: c}]}
status: {podIP: 10.1.1.9}
---
apiVersion: v1
kind: Service
metadata: {name: shop-waypoint, namespace: shop}
spec:
  clusterIP: 10.200.0.50
  selector: {gateway.networking.k8s.io/gateway-name: shop-waypoint}
  ports: [{name: mesh, port: 15008, targetPort: 15008}]
---
apiVersion: v1
kind: Pod
metadata: {name: pay-0, namespace: shop, labels: {app: pay, istio.io/use-waypoint: shop-waypoint}}
spec: {nodeName: node-b, serviceAccountName: pay, containers: [{name: c}]}
status: {podIP: 10.1.2.5}
---
apiVersion: v1
kind: Namespace
metadata: {name: mall, labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: mall-wp}}
---
apiVersion: v1
kind: Pod
metadata: {name: shoe-0, namespace: mall, labels: {app: shoe}}
spec: {nodeName: node-b, serviceAccountName: shoe, containers: [{name: c}]}
status: {podIP: 10.1.2.6}
---
apiVersion: v1
kind: Service
metadata: {name: shoe, namespace: mall}
spec:
  clusterIP: 10.200.0.60
  selector: {app: shoe}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: direct, namespace: mall, labels: {istio.io/use-waypoint: none}}
spec:
  clusterIP: 10.200.0.61
  selector: {app: shoe}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-intruder, namespace: shop}
spec:
  selector: {matchLabels: {app: cart}}
  action: DENY
  rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/intruder]}}]}]
"#;

fn snapshot() -> Arc<Snapshot> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cluster.yaml");
    std::fs::write(&file, CLUSTER).unwrap();
    LocalSource::load(LocalSourceConfig::new([file]))
        .unwrap()
        .current()
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|ip| ip.parse().unwrap()).collect()
}

fn id(sa: &str) -> SpiffeId {
    SpiffeId::new("cluster.local", "shop", sa).unwrap()
}

/// What a plan amounts to, in one comparable line.
fn outbound(original: &str) -> String {
    outbound_from("frontend-0", "10.1.1.2", original)
}

/// [`outbound`] from another pod of `shop`.
fn outbound_from(name: &str, ip: &str, original: &str) -> String {
    let own = ips(&[ip]);
    let source = PodFacts {
        namespace: "shop",
        name,
        ips: &own,
    };
    let plan = plan_outbound(&snapshot(), source, addr(original), "cluster.local", |_| 0);
    match plan {
        OutboundPlan::Tunnel(t) => format!(
            "tunnel {} via {} to {} service {:?}",
            t.target, t.hbone_addr, t.identity, t.service
        ),
        OutboundPlan::Waypoint {
            tunnel: t,
            waypoint,
        } => format!(
            "waypoint {waypoint}: tunnel {} via {} to {} service {:?}",
            t.target, t.hbone_addr, t.identity, t.service
        ),
        OutboundPlan::Passthrough(p) => format!(
            "passthrough {} workload {:?} service {:?}",
            p.target,
            p.workload.map(|w| w.name.clone()),
            p.service
        ),
        OutboundPlan::Refuse(refusal) => format!("refuse {}: {refusal}", refusal.flag()),
    }
}

#[test]
fn outbound_plans() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "ambient pod by IP",
            "10.1.2.2:8080",
            "tunnel 10.1.2.2:8080 via 10.1.2.2:15008 to spiffe://cluster.local/ns/shop/sa/cart service None",
        ),
        (
            "ambient service VIP",
            "10.200.0.10:80",
            "tunnel 10.1.2.2:8080 via 10.1.2.2:15008 to spiffe://cluster.local/ns/shop/sa/cart service Some(\"cart.shop\")",
        ),
        (
            "pod outside the mesh",
            "10.1.2.3:9090",
            "passthrough 10.1.2.3:9090 workload Some(\"batch-0\") service None",
        ),
        (
            "service outside the mesh",
            "10.200.0.20:80",
            "passthrough 10.1.2.3:9090 workload Some(\"batch-0\") service Some(\"batch.legacy\")",
        ),
        (
            "unknown destination",
            "192.0.2.7:443",
            "passthrough 192.0.2.7:443 workload None service None",
        ),
        (
            "service without endpoints",
            "10.200.0.30:80",
            "refuse NR: service empty.shop port 80 has no ready endpoints",
        ),
        (
            "own capture port",
            "10.1.1.2:15001",
            "refuse NR: refused: 10.1.1.2:15001 is ztunnel's own port 15001 on the pod's own address",
        ),
        (
            "own HBONE port",
            "10.1.1.2:15008",
            "refuse NR: refused: 10.1.1.2:15008 is ztunnel's own port 15008 on the pod's own address",
        ),
        (
            "loopback outbound port",
            "127.0.0.1:15001",
            "refuse NR: refused: 127.0.0.1:15001 is ztunnel's own port 15001 on loopback",
        ),
        (
            "loopback inbound port",
            "127.0.0.1:15006",
            "refuse NR: refused: 127.0.0.1:15006 is ztunnel's own port 15006 on loopback",
        ),
        (
            "loopback admin port",
            "127.0.0.1:15000",
            "refuse NR: refused: 127.0.0.1:15000 is ztunnel's own port 15000 on loopback",
        ),
        (
            "ambient peer's capture port",
            "10.1.2.2:15001",
            "refuse NR: refused: 10.1.2.2:15001 is ztunnel's own port 15001 on an ambient pod",
        ),
        (
            "service resolving to a peer's capture port",
            "10.200.0.10:81",
            "refuse NR: refused: 10.1.2.2:15001 is ztunnel's own port 15001 on an ambient pod",
        ),
        (
            "non-ambient pod's own port 15020 is the app's",
            "10.1.2.3:15020",
            "passthrough 10.1.2.3:15020 workload Some(\"batch-0\") service None",
        ),
        (
            "loopback app port is not ztunnel's",
            "127.0.0.1:8080",
            "passthrough 127.0.0.1:8080 workload None service None",
        ),
        (
            "service bound to a waypoint: the CONNECT names the VIP, the waypoint picks",
            "10.200.0.40:80",
            "waypoint shop/shop-waypoint: tunnel 10.200.0.40:80 via 10.1.1.9:15008 to spiffe://cluster.local/ns/shop/sa/shop-waypoint service Some(\"checkout.shop\")",
        ),
        (
            "pod bound to a waypoint, called by its IP",
            "10.1.2.5:8080",
            "waypoint shop/shop-waypoint: tunnel 10.1.2.5:8080 via 10.1.1.9:15008 to spiffe://cluster.local/ns/shop/sa/shop-waypoint service None",
        ),
        (
            "service bound to a waypoint that does not exist: refused, never around it",
            "10.200.0.41:80",
            "refuse NR: service shop/orders is bound to waypoint shop/no-such-waypoint (istio.io/use-waypoint), which has no ready endpoints",
        ),
        (
            "namespace waypoint applies to its services",
            "10.200.0.60:80",
            "refuse NR: service mall/shoe is bound to waypoint mall/mall-wp",
        ),
        (
            "a service opts out of its namespace's waypoint with none",
            "10.200.0.61:80",
            "tunnel 10.1.2.6:8080 via 10.1.2.6:15008 to spiffe://cluster.local/ns/mall/sa/shoe service Some(\"direct.mall\")",
        ),
        (
            "namespace waypoint does not capture calls to a pod's own IP",
            "10.1.2.6:8080",
            "tunnel 10.1.2.6:8080 via 10.1.2.6:15008 to spiffe://cluster.local/ns/mall/sa/shoe service None",
        ),
    ];
    for (case, original, expected) in cases {
        let got = outbound(original);
        assert!(
            got.starts_with(expected),
            "{case}: planned {got:?}, expected {expected:?}"
        );
    }
}

#[test]
fn the_waypoint_itself_goes_straight_to_the_backend() {
    // Traffic the waypoint sends on after routing must not be sent back to it.
    assert_eq!(
        outbound_from("shop-waypoint-0", "10.1.1.9", "10.200.0.40:80"),
        "tunnel 10.1.2.2:8080 via 10.1.2.2:15008 to spiffe://cluster.local/ns/shop/sa/cart service Some(\"checkout.shop\")"
    );
    assert_eq!(
        outbound_from("shop-waypoint-0", "10.1.1.9", "10.1.2.5:8080"),
        "tunnel 10.1.2.5:8080 via 10.1.2.5:15008 to spiffe://cluster.local/ns/shop/sa/pay service None"
    );
}

/// An inbound plan in one line; `peer_identity` `None` is a plaintext client.
fn inbound(target: &str, peer_ip: &str, peer_identity: Option<&SpiffeId>) -> String {
    let own = ips(&["10.1.2.2"]);
    let facts = InboundFacts {
        destination: PodFacts {
            namespace: "shop",
            name: "cart-0",
            ips: &own,
        },
        target: addr(target),
        peer_ip: peer_ip.parse().unwrap(),
        peer_identity,
    };
    match plan_inbound(&snapshot(), &facts) {
        InboundPlan::Forward { target } => format!("forward {target}"),
        InboundPlan::Refuse(refusal) => format!(
            "refuse {} {}: {refusal}",
            refusal.flag(),
            refusal.hbone_status().code().as_u16()
        ),
    }
}

#[test]
fn inbound_plans() {
    let frontend = id("frontend");
    let intruder = id("intruder");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "mTLS peer to the app",
            inbound("10.1.2.2:8080", "10.1.1.2", Some(&frontend)),
            "forward 10.1.2.2:8080",
        ),
        (
            "plaintext client to the app",
            inbound("10.1.2.2:8080", "10.1.2.3", None),
            "forward 10.1.2.2:8080",
        ),
        (
            "denied by policy",
            inbound("10.1.2.2:8080", "10.1.1.9", Some(&intruder)),
            "refuse DENY 401: denied by AuthorizationPolicy shop/deny-intruder",
        ),
        (
            "CONNECT to the pod's capture port",
            inbound("10.1.2.2:15001", "10.1.1.2", Some(&frontend)),
            "refuse NR 400: refused: 10.1.2.2:15001 is ztunnel's own port 15001",
        ),
        (
            "CONNECT to the pod's inbound port",
            inbound("10.1.2.2:15006", "10.1.1.2", Some(&frontend)),
            "refuse NR 400: refused: 10.1.2.2:15006",
        ),
        (
            "plaintext redirected from the pod's HBONE port",
            inbound("10.1.2.2:15008", "10.1.2.3", None),
            "refuse NR 400: refused: 10.1.2.2:15008",
        ),
        (
            "plaintext to the pod's DNS port",
            inbound("10.1.2.2:15053", "10.1.2.3", None),
            "refuse NR 400: refused: 10.1.2.2:15053",
        ),
        (
            "CONNECT to loopback metrics port",
            inbound("127.0.0.1:15020", "10.1.1.2", Some(&frontend)),
            "refuse NR 400: refused: 127.0.0.1:15020 is ztunnel's own port 15020 on loopback",
        ),
    ];
    for (case, got, expected) in cases {
        assert!(
            got.starts_with(expected),
            "{case}: planned {got:?}, expected {expected:?}"
        );
    }
}

/// An inbound plan for the waypoint-bound pod `pay-0` (10.1.2.5) from `peer_ip`.
fn inbound_to_pay(peer_ip: &str, peer_identity: Option<&SpiffeId>) -> String {
    let own = ips(&["10.1.2.5"]);
    let facts = InboundFacts {
        destination: PodFacts {
            namespace: "shop",
            name: "pay-0",
            ips: &own,
        },
        target: addr("10.1.2.5:8080"),
        peer_ip: peer_ip.parse().unwrap(),
        peer_identity,
    };
    match plan_inbound(&snapshot(), &facts) {
        InboundPlan::Forward { target } => format!("forward {target}"),
        InboundPlan::Refuse(refusal) => format!("refuse {}: {refusal}", refusal.flag()),
    }
}

#[test]
fn a_waypoint_bound_pod_accepts_only_its_waypoint() {
    let waypoint = id("shop-waypoint");
    let frontend = id("frontend");
    assert_eq!(
        inbound_to_pay("10.1.1.9", Some(&waypoint)),
        "forward 10.1.2.5:8080"
    );
    let bypass = inbound_to_pay("10.1.1.2", Some(&frontend));
    assert!(
        bypass.starts_with("refuse DENY: refused: pod shop/pay-0 is bound to waypoint shop/shop-waypoint (istio.io/use-waypoint) and spiffe://cluster.local/ns/shop/sa/frontend did not come through it"),
        "{bypass}"
    );
    // The waypoint's identity from another address is not the waypoint pod.
    assert!(inbound_to_pay("10.1.1.2", Some(&waypoint)).starts_with("refuse DENY"));
    assert!(inbound_to_pay("10.1.2.3", None)
        .contains("plaintext client 10.1.2.3 did not come through it"));
    // cart-0 is also behind the unbound Service `cart`: reaching it directly is legitimate.
    assert_eq!(
        inbound("10.1.2.2:8080", "10.1.1.2", Some(&frontend)),
        "forward 10.1.2.2:8080"
    );
}

#[test]
fn an_unknown_destination_pod_is_refused() {
    let own = ips(&["10.1.9.9"]);
    let facts = InboundFacts {
        destination: PodFacts {
            namespace: "shop",
            name: "gone-0",
            ips: &own,
        },
        target: addr("10.1.9.9:8080"),
        peer_ip: "10.1.1.2".parse().unwrap(),
        peer_identity: None,
    };
    assert!(matches!(
        plan_inbound(&snapshot(), &facts),
        InboundPlan::Refuse(Refusal::UnknownDestination { .. })
    ));
}

#[test]
fn endpoint_choice_is_the_pickers() {
    // The picker's index is honoured; an out-of-range index falls back to the first endpoint
    // rather than failing the connection.
    let own = ips(&["10.1.1.2"]);
    let source = PodFacts {
        namespace: "shop",
        name: "frontend-0",
        ips: &own,
    };
    let snapshot = snapshot();
    let plan = plan_outbound(
        &snapshot,
        source,
        addr("10.200.0.10:80"),
        "cluster.local",
        |e| e.len() + 5,
    );
    assert!(matches!(plan, OutboundPlan::Tunnel(t) if t.target == addr("10.1.2.2:8080")));
}
