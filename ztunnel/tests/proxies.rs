//! The proxies in one process, without pod namespaces or capture rules: a client pod's
//! outbound proxy tunnels to a server pod's HBONE server over loopback, with a real mTLS PKI,
//! and every scenario checks what an operator sees — the bytes, the access-log lines (Istio's
//! field meaning) and the metrics.
//!
//! Pods live on their own loopback addresses (127.0.0.0/8 is all local on Linux), one set per
//! test so tests can run in parallel.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use capture::NetNs;
use certs::testing::TestPki;
use certs::SharedTrustBundle;
use discovery::{LocalSource, LocalSourceConfig, Snapshot};
use prometheus_client::registry::Registry;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use ztunnel::connections::ConnectionTable;
use ztunnel::enrolled::{EnrolledPod, HostSockets, SocketFactory};
use ztunnel::inbound::HboneInbound;
use ztunnel::metrics::{encode, ConnectionMetrics};
use ztunnel::proxy::ProxyContext;

const TRUST_DOMAIN: &str = "cluster.local";

/// `frontend` (client, ambient) and `cart` (server, ambient, app on 8080) in `shop`, and
/// `legacy/db` outside the mesh; `policy` is appended (AuthorizationPolicies for cart).
fn cluster(client: IpAddr, server: IpAddr, outside: IpAddr, policy: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: shop, labels: {{istio.io/dataplane-mode: ambient}}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: legacy}}
---
apiVersion: v1
kind: Pod
metadata: {{name: frontend-0, namespace: shop, labels: {{app: frontend}}}}
spec: {{nodeName: node-a, serviceAccountName: frontend, containers: [{{name: c}}]}}
status: {{podIP: {client}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: cart-0, namespace: shop, labels: {{app: cart}}}}
spec: {{nodeName: node-b, serviceAccountName: cart, containers: [{{name: c}}]}}
status: {{podIP: {server}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: db-0, namespace: legacy, labels: {{app: db}}}}
spec: {{nodeName: node-b, containers: [{{name: c}}]}}
status: {{podIP: {outside}}}
{policy}
"#
    )
}

const ALLOW_FRONTEND: &str = r#"---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: cart-allow, namespace: shop}
spec:
  selector: {matchLabels: {app: cart}}
  action: ALLOW
  rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/frontend]}}]}]
"#;

const DENY_FRONTEND: &str = r#"---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: cart-deny, namespace: shop}
spec:
  selector: {matchLabels: {app: cart}}
  action: DENY
  rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/frontend]}}]}]
"#;

fn load(yaml: &str) -> Arc<Snapshot> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cluster.yaml");
    std::fs::write(&file, yaml).unwrap();
    LocalSource::load(LocalSourceConfig::new([file]))
        .unwrap()
        .current()
}

/// Access-log lines (and everything else) the proxies write, as JSON.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// The `access` lines' fields, in order.
    fn access(&self) -> Vec<Value> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| line["target"] == "access")
            .map(|line| line["fields"].clone())
            .collect()
    }

    async fn wait_for_access(&self, count: usize) -> Vec<Value> {
        for _ in 0..200 {
            let lines = self.access();
            if lines.len() >= count {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("expected {count} access lines, got {:?}", self.access());
    }

    fn line(&self, direction: &str) -> Value {
        self.access()
            .into_iter()
            // `direction` is recorded with Debug, as the text format shows it: quoted.
            .find(|l| l["direction"] == format!("\"{direction}\""))
            .unwrap_or_else(|| panic!("no {direction} access line in {:?}", self.access()))
    }
}

/// One node's shared proxy state over a snapshot that a test can replace.
struct Node {
    context: Arc<ProxyContext>,
    registry: Registry,
    current: Arc<Mutex<Arc<Snapshot>>>,
    /// What a stopping ztunnel starts: it waits for every connection's record.
    drain: runtime::DrainTrigger,
}

impl Node {
    fn new(snapshot: Arc<Snapshot>) -> Self {
        let current = Arc::new(Mutex::new(snapshot));
        let reader = current.clone();
        let mut registry = Registry::default();
        let (drain, _) = runtime::drain::channel();
        let context = Arc::new(ProxyContext {
            snapshots: Arc::new(move || reader.lock().unwrap().clone()),
            trust_domain: TRUST_DOMAIN.into(),
            metrics: Arc::new(ConnectionMetrics::register(&mut registry)),
            connections: ConnectionTable::default(),
            in_flight: drain.source(),
        });
        Node {
            context,
            registry,
            current,
            drain,
        }
    }

    /// Replaces the cluster view and re-authorises live connections, as ztunnel does on every
    /// snapshot; returns how many were revoked.
    fn update(&self, snapshot: Arc<Snapshot>) -> usize {
        *self.current.lock().unwrap() = snapshot.clone();
        self.context.connections.revalidate(&snapshot)
    }

    fn metrics(&self) -> String {
        encode(&self.registry)
    }
}

fn pod(pki: &TestPki, namespace: &str, name: &str, sa: &str) -> Arc<EnrolledPod> {
    let identity = pki.id(namespace, sa);
    let sockets: Arc<dyn SocketFactory> = Arc::new(HostSockets);
    let dialer = sockets.clone();
    let pool = hbone::Pool::new(
        hbone::ClientConfig::default(),
        SharedTrustBundle::new(pki.bundle().clone()),
        Arc::new(move |key: &hbone::PoolKey| dialer.connect(key.address)),
    );
    Arc::new(EnrolledPod {
        uid: format!("{namespace}/{name}"),
        name: name.into(),
        namespace: namespace.into(),
        certificate: pki.certificate(&identity).unwrap(),
        identity,
        netns: Arc::new(NetNs::current().unwrap()),
        sockets,
        pool,
        stop: CancellationToken::new(),
        connections: CancellationToken::new(),
    })
}

/// The server pod's HBONE listener on `<ip>:15008`.
async fn serve_hbone(node: &Node, pki: &TestPki, pod: &Arc<EnrolledPod>, ip: IpAddr) {
    let tls = certs::tls::server_config(
        pod.certificate.clone(),
        SharedTrustBundle::new(pki.bundle().clone()),
    )
    .unwrap();
    let server = hbone::Server::forwarding(
        hbone::ServerConfig::default(),
        tls,
        HboneInbound {
            context: node.context.clone(),
            pod: pod.clone(),
        },
    );
    let listener = TcpListener::bind((ip, 15008)).await.unwrap();
    let stop = pod.stop.clone();
    tokio::spawn(async move { server.serve(listener, stop).await });
}

/// An echo server (the app) on `address`.
async fn echo(address: SocketAddr) {
    let listener = TcpListener::bind(address).await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
}

/// A client in the pod at `client_ip` calls `original`; its connection reaches the outbound
/// proxy as if redirected to 15001. Returns the client's end.
async fn call(
    node: &Node,
    pod: &Arc<EnrolledPod>,
    client_ip: IpAddr,
    original: SocketAddr,
) -> TcpStream {
    let capture = TcpListener::bind((client_ip, 0)).await.unwrap();
    let client = TcpStream::connect(capture.local_addr().unwrap())
        .await
        .unwrap();
    let (downstream, peer) = capture.accept().await.unwrap();
    let (context, pod) = (node.context.clone(), pod.clone());
    tokio::spawn(async move {
        ztunnel::outbound::proxy(&context, &pod, downstream, peer, original).await
    });
    client
}

async fn exchange(client: &mut TcpStream, payload: &[u8]) -> Vec<u8> {
    client.write_all(payload).await.unwrap();
    let mut back = vec![0; payload.len()];
    tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut back))
        .await
        .expect("no echo within 10 s")
        .unwrap();
    back
}

fn logging() -> (Logs, tracing::subscriber::DefaultGuard) {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(move || writer.clone())
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}

/// One scenario's world on `127.0.<subnet>.0/24`: the client pod `frontend` at .1, the server
/// pod `cart` at .2, the outside pod `db` at .3, one node's proxies over that cluster plus
/// `policy`, and the logs they write.
struct Scenario {
    logs: Logs,
    _logging: tracing::subscriber::DefaultGuard,
    pki: TestPki,
    node: Node,
    frontend: Arc<EnrolledPod>,
    cart: Arc<EnrolledPod>,
    client_ip: IpAddr,
    server_ip: IpAddr,
    outside_ip: IpAddr,
}

impl Scenario {
    fn new(subnet: u8, policy: &str) -> Self {
        let (logs, _logging) = logging();
        let address = |host: u8| IpAddr::from([127, 0, subnet, host]);
        let (client_ip, server_ip, outside_ip) = (address(1), address(2), address(3));
        let pki = TestPki::new(TRUST_DOMAIN).unwrap();
        let node = Node::new(load(&cluster(client_ip, server_ip, outside_ip, policy)));
        let frontend = pod(&pki, "shop", "frontend-0", "frontend");
        let cart = pod(&pki, "shop", "cart-0", "cart");
        Scenario {
            logs,
            _logging,
            pki,
            node,
            frontend,
            cart,
            client_ip,
            server_ip,
            outside_ip,
        }
    }

    /// cart's HBONE listener, and its app (an echo server on 8080) when `with_app`.
    async fn serve_cart(&self, with_app: bool) {
        serve_hbone(&self.node, &self.pki, &self.cart, self.server_ip).await;
        if with_app {
            echo(SocketAddr::new(self.server_ip, 8080)).await;
        }
    }

    /// `frontend` calls `original`.
    async fn call(&self, original: SocketAddr) -> TcpStream {
        call(&self.node, &self.frontend, self.client_ip, original).await
    }

    /// `frontend` calls cart's app by pod IP.
    async fn call_cart(&self) -> TcpStream {
        self.call(SocketAddr::new(self.server_ip, 8080)).await
    }

    /// The cluster of this scenario with another `policy`.
    fn cluster_with(&self, policy: &str) -> Arc<Snapshot> {
        load(&cluster(
            self.client_ip,
            self.server_ip,
            self.outside_ip,
            policy,
        ))
    }
}

/// Whether the peer ends `client`'s connection (EOF or reset) within `within`, whatever it
/// sends before.
async fn ends(client: &mut TcpStream, within: Duration) -> bool {
    let mut buffer = [0u8; 64];
    tokio::time::timeout(within, async {
        loop {
            match client.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .is_ok()
}

fn error_of(line: &Value) -> &str {
    line["error"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "current_thread")]
async fn a_tunnelled_connection_carries_the_bytes_and_logs_both_identities_on_both_sides() {
    let scenario = Scenario::new(10, ALLOW_FRONTEND);
    scenario.serve_cart(true).await;

    let mut client = scenario.call_cart().await;
    assert_eq!(exchange(&mut client, b"hello, cart").await, b"hello, cart");
    drop(client);

    let logs = &scenario.logs;
    let lines = logs.wait_for_access(2).await;
    assert_eq!(lines.len(), 2, "one line per side: {lines:?}");
    let outbound = logs.line("outbound");
    assert_eq!(outbound["dst.addr"], "127.0.10.2:15008", "{outbound}");
    assert_eq!(outbound["dst.hbone_addr"], "127.0.10.2:8080", "{outbound}");
    assert_eq!(
        outbound["src.identity"],
        "\"spiffe://cluster.local/ns/shop/sa/frontend\""
    );
    assert_eq!(
        outbound["dst.identity"],
        "\"spiffe://cluster.local/ns/shop/sa/cart\""
    );
    assert_eq!(outbound["bytes_sent"], 11);
    assert_eq!(outbound["bytes_recv"], 11);
    let inbound = logs.line("inbound");
    assert_eq!(inbound["dst.addr"], "127.0.10.2:15008", "{inbound}");
    assert_eq!(inbound["dst.hbone_addr"], "127.0.10.2:8080", "{inbound}");
    assert_eq!(
        inbound["src.identity"],
        "\"spiffe://cluster.local/ns/shop/sa/frontend\""
    );
    assert_eq!(inbound["dst.workload"], "cart-0");
    assert!(inbound.get("error").is_none(), "{inbound}");

    let metrics = scenario.node.metrics();
    for reporter in ["source", "destination"] {
        let opened = format!("istio_tcp_connections_opened_total{{reporter=\"{reporter}\"");
        assert!(metrics.contains(&opened), "{metrics}");
    }
    assert!(
        metrics.contains("connection_security_policy=\"mutual_tls\""),
        "{metrics}"
    );
    assert!(metrics.contains("ambit_active_connections 0"), "{metrics}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_connection_the_policy_denies_is_refused_on_both_sides_with_the_policy_named() {
    let scenario = Scenario::new(11, DENY_FRONTEND);
    scenario.serve_cart(true).await;

    let mut client = scenario.call_cart().await;
    assert!(
        ends(&mut client, Duration::from_secs(10)).await,
        "the client's connection must end"
    );
    let logs = &scenario.logs;
    logs.wait_for_access(2).await;
    let inbound = logs.line("inbound");
    assert!(
        error_of(&inbound).contains("denied by AuthorizationPolicy shop/cart-deny"),
        "{inbound}"
    );
    let outbound = logs.line("outbound");
    assert!(outbound["error"].as_str().is_some(), "{outbound}");
    let metrics = scenario.node.metrics();
    assert!(
        metrics.contains("response_flags=\"DENY\""),
        "the refusal is counted as DENY: {metrics}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_policy_change_revokes_a_live_connection_and_says_why() {
    let scenario = Scenario::new(12, ALLOW_FRONTEND);
    scenario.serve_cart(true).await;
    let node = &scenario.node;

    let mut client = scenario.call_cart().await;
    assert_eq!(exchange(&mut client, b"before").await, b"before");
    assert_eq!(
        node.context.connections.len(),
        1,
        "the tunnel is registered"
    );

    let revoked = node.update(scenario.cluster_with(DENY_FRONTEND));
    assert_eq!(revoked, 1);
    assert!(
        ends(&mut client, Duration::from_secs(10)).await,
        "the revoked connection must end"
    );
    scenario.logs.wait_for_access(2).await;
    let inbound = scenario.logs.line("inbound");
    assert!(
        error_of(&inbound).contains(
            "connection revoked: policy change, now denied by AuthorizationPolicy shop/cart-deny"
        ),
        "{inbound}"
    );
    assert_eq!(
        inbound["bytes_recv"], 6,
        "bytes moved before the revocation count"
    );
    assert!(node.context.connections.is_empty(), "deregistered");
}

#[tokio::test(flavor = "current_thread")]
async fn a_destination_outside_the_mesh_is_passed_through_in_plain_tcp() {
    let scenario = Scenario::new(13, "");
    let db = SocketAddr::new(scenario.outside_ip, 5432);
    echo(db).await;

    let mut client = scenario.call(db).await;
    assert_eq!(exchange(&mut client, b"select 1").await, b"select 1");
    drop(client);
    scenario.logs.wait_for_access(1).await;
    let line = scenario.logs.line("outbound");
    assert_eq!(line["dst.addr"], "127.0.13.3:5432", "{line}");
    assert_eq!(line["dst.hbone_addr"], "-", "not tunnelled: {line}");
    assert_eq!(line["dst.workload"], "db-0");
    assert_eq!(line["dst.identity"], "\"-\"", "{line}");
    let metrics = scenario.node.metrics();
    assert!(
        metrics.contains("connection_security_policy=\"none\""),
        "{metrics}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_call_to_the_pods_own_capture_port_is_refused_without_dialling() {
    let scenario = Scenario::new(14, "");
    let mut client = scenario
        .call(SocketAddr::new(scenario.client_ip, 15001))
        .await;
    assert!(
        ends(&mut client, Duration::from_secs(5)).await,
        "closed at once"
    );
    scenario.logs.wait_for_access(1).await;
    let line = scenario.logs.line("outbound");
    assert!(
        // The pods here live on loopback addresses, so that is what the refusal names.
        error_of(&line)
            .contains("refused: 127.0.14.1:15001 is ztunnel's own port 15001 on loopback"),
        "{line}"
    );
    assert!(scenario.node.metrics().contains("response_flags=\"NR\""));
}

#[tokio::test(flavor = "current_thread")]
async fn an_unreachable_app_gets_a_503_and_an_upstream_failure_on_both_sides() {
    let scenario = Scenario::new(15, "");
    // Nothing listens on 8080.
    scenario.serve_cart(false).await;
    let mut client = scenario.call_cart().await;
    let _ = ends(&mut client, Duration::from_secs(10)).await;
    let logs = &scenario.logs;
    logs.wait_for_access(2).await;
    let inbound = logs.line("inbound");
    let error = error_of(&inbound);
    assert!(
        error.contains("cannot connect to 127.0.15.2:8080 (the workload)")
            && error.contains("is the app listening on that port?"),
        "{inbound}"
    );
    let outbound = logs.line("outbound");
    let error = error_of(&outbound);
    assert!(
        error.contains("HBONE to 127.0.15.2:15008 failed") && error.contains("503"),
        "{outbound}"
    );
    assert!(scenario.node.metrics().contains("response_flags=\"UF\""));
}

#[tokio::test(flavor = "current_thread")]
async fn a_stopping_node_waits_for_its_live_connections() {
    let scenario = Scenario::new(16, ALLOW_FRONTEND);
    scenario.serve_cart(true).await;
    let mut client = scenario.call_cart().await;
    assert_eq!(exchange(&mut client, b"live").await, b"live");

    // Both sides' records are open, one watcher each.
    assert_eq!(scenario.node.drain.holders(), 2);
    let Scenario { node, logs, .. } = scenario;
    let waiting = tokio::spawn(node.drain.start_drain_and_wait(Duration::from_secs(30)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !waiting.is_finished(),
        "the drain waits for the open connection"
    );
    // The client finishes: both records are written, nothing is left in flight.
    drop(client);
    let outcome = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the drain ends once the connection is done")
        .unwrap();
    assert_eq!(outcome, runtime::DrainOutcome::Drained);
    assert_eq!(logs.wait_for_access(2).await.len(), 2);
}
