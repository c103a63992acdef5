//! `ambit-ca serve` in Kubernetes mode against a real kube-apiserver 1.20.2 (the cache
//! `scripts/kube-build.sh` fills; these tests fail, not skip, when it is missing).
//!
//! The CA runs as its own ServiceAccount with only the RBAC it needs (create TokenReviews, read
//! Pods, get/create its root Secret); node agents present projected-style tokens obtained from
//! the TokenRequest API, bound to their ztunnel pod, with the CA's audience.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ambit_tests::kube::{KubeApiServer, ISSUER};
use certs::api::{CaClient, CaClientError, CreateCertificateRequest, NodeToken};
use certs::{KeyAndCsr, SpiffeId, TrustBundle};

const CA: &str = env!("CARGO_BIN_EXE_ambit-ca");
const AUDIENCE: &str = "ambit-ca";
const ROOT_SECRET: &str = "ambit-system/ambit-ca-root";

const CLUSTER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: ambit-system}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: ztunnel, namespace: ambit-system}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: ambit-ca, namespace: ambit-system}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: web, namespace: shop}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: ambit-ca}
rules:
- {apiGroups: [authentication.k8s.io], resources: [tokenreviews], verbs: [create]}
- {apiGroups: [""], resources: [pods], verbs: [get, list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: ambit-ca}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: ambit-ca}
subjects: [{kind: ServiceAccount, name: ambit-ca, namespace: ambit-system}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: ambit-ca, namespace: ambit-system}
rules:
- {apiGroups: [""], resources: [secrets], verbs: [get, create]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: ambit-ca, namespace: ambit-system}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: ambit-ca}
subjects: [{kind: ServiceAccount, name: ambit-ca, namespace: ambit-system}]
"#;

fn pod(namespace: &str, name: &str, node: &str, sa: &str, labels: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {namespace}, labels: {{{labels}}}}}
spec:
  nodeName: {node}
  serviceAccountName: {sa}
  automountServiceAccountToken: false
  containers: [{{name: c, image: example.invalid/c:1}}]
"
    )
}

/// A running `ambit-ca serve`, killed on drop.
struct RunningCa {
    child: Child,
    address: SocketAddr,
    log: PathBuf,
}

impl Drop for RunningCa {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RunningCa {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The binary under test; `AMBIT_CA_TEST_BINARY` points at another build (to reproduce a fixed
/// bug against an older one).
fn ca_binary() -> String {
    std::env::var("AMBIT_CA_TEST_BINARY").unwrap_or_else(|_| CA.to_owned())
}

fn start_ca(kubeconfig: &Path, work: &Path) -> RunningCa {
    let address = free_port();
    let log = work.join(format!("ca-{}.log", address.port()));
    let child = Command::new(ca_binary())
        .args(["serve", "--kubeconfig", kubeconfig.to_str().unwrap()])
        .args(["--root-secret", ROOT_SECRET])
        .args(["--listen", &address.to_string()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let ca = RunningCa {
        child,
        address,
        log,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(address).is_err() {
        assert!(
            Instant::now() < deadline,
            "ambit-ca did not start: {}",
            ca.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    ca
}

fn uid(server: &KubeApiServer, namespace: &str, name: &str) -> String {
    server
        .kubectl(&[
            "get",
            "pod",
            "-n",
            namespace,
            name,
            "-o",
            "jsonpath={.metadata.uid}",
        ])
        .unwrap()
        .trim()
        .to_owned()
}

/// A token as the kubelet projects it: for `audiences`, bound to the pod.
fn pod_token(
    server: &KubeApiServer,
    namespace: &str,
    sa: &str,
    pod: &str,
    audience: &str,
) -> String {
    let uid = uid(server, namespace, pod);
    server
        .service_account_token(namespace, sa, &[audience], Some((pod, &uid)))
        .unwrap()
}

fn trust_bundle(server: &KubeApiServer) -> (TrustBundle, String) {
    let (namespace, name) = ROOT_SECRET.split_once('/').unwrap();
    let pem = server
        .kubectl(&[
            "get",
            "secret",
            "-n",
            namespace,
            name,
            "-o",
            r#"go-template={{index .data "ca.crt" | base64decode}}"#,
        ])
        .unwrap();
    let bundle = TrustBundle::from_pem("cluster.local", pem.as_bytes(), ROOT_SECRET).unwrap();
    (bundle, pem)
}

fn request_for(identity: &str) -> CreateCertificateRequest {
    let id: SpiffeId = identity.parse().unwrap();
    let key = KeyAndCsr::generate(&id).unwrap();
    CreateCertificateRequest {
        csr: key.csr_pem.clone(),
        identity: identity.to_owned(),
        validity_seconds: 0,
    }
}

async fn ask(
    ca: &RunningCa,
    bundle: &TrustBundle,
    token: &str,
    identity: &str,
) -> Result<(), (u16, String)> {
    let client = CaClient::new(
        ca.address.to_string(),
        bundle,
        NodeToken::Value(token.to_owned()),
    )
    .unwrap();
    match client.create_certificate(request_for(identity)).await {
        Ok(_) => Ok(()),
        Err(CaClientError::Refused { status, reason }) => Err((status, reason)),
        Err(other) => panic!(
            "{identity}: neither issued nor refused: {other:?}\n{}",
            ca.log()
        ),
    }
}

const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";
const DB: &str = "spiffe://cluster.local/ns/shop/sa/db";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ztunnels_prove_their_node_with_service_account_tokens() {
    let work = tempfile::tempdir().unwrap();
    let server = KubeApiServer::start().unwrap_or_else(|error| {
        panic!(
            "cannot start the test API server: {error}\n(build it once with scripts/kube-build.sh)"
        )
    });
    server.kubectl_apply(CLUSTER).unwrap();
    server
        .kubectl(&["create", "serviceaccount", "-n", "shop", "db"])
        .unwrap();
    for manifest in [
        pod(
            "ambit-system",
            "ztunnel-a",
            "node-a",
            "ztunnel",
            "app: ztunnel",
        ),
        pod(
            "ambit-system",
            "ztunnel-b",
            "node-b",
            "ztunnel",
            "app: ztunnel",
        ),
        // Right service account, but not labelled as a ztunnel (a debugging pod, say).
        pod(
            "ambit-system",
            "impostor",
            "node-b",
            "ztunnel",
            "app: debug",
        ),
        pod("shop", "web-0", "node-a", "web", "app: web"),
        pod("shop", "db-0", "node-b", "db", "app: db"),
    ] {
        server.kubectl_apply(&manifest).unwrap();
    }

    // The CA's own credentials: its ServiceAccount, nothing more than its RBAC.
    let ca_token = server
        .service_account_token("ambit-system", "ambit-ca", &[ISSUER], None)
        .unwrap();
    let ca_kubeconfig = server.kubeconfig_for_token("ambit-ca", &ca_token).unwrap();
    let ca = tokio::task::block_in_place(|| start_ca(&ca_kubeconfig, work.path()));
    let (bundle, root_pem) = trust_bundle(&server);
    assert!(ca.log().contains("created a new mesh root"), "{}", ca.log());

    let ztunnel_a = pod_token(&server, "ambit-system", "ztunnel", "ztunnel-a", AUDIENCE);
    let ztunnel_b = pod_token(&server, "ambit-system", "ztunnel", "ztunnel-b", AUDIENCE);
    ask(&ca, &bundle, &ztunnel_a, WEB).await.unwrap();
    ask(&ca, &bundle, &ztunnel_b, DB).await.unwrap();

    // Identities of pods on another node.
    let (status, reason) = ask(&ca, &bundle, &ztunnel_a, DB).await.unwrap_err();
    assert_eq!(status, 403, "{reason}");
    assert!(
        reason.contains("node \"node-a\" has no pod running as"),
        "{reason}"
    );
    let (status, _) = ask(&ca, &bundle, &ztunnel_b, WEB).await.unwrap_err();
    assert_eq!(status, 403);

    // A forged token: a real one with its signature altered.
    let mut forged = ztunnel_a.clone().into_bytes();
    let last = forged.len() - 3;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let (status, reason) = ask(&ca, &bundle, &forged, WEB).await.unwrap_err();
    assert_eq!(status, 401, "{reason}");
    assert!(reason.contains("token rejected"), "{reason}");

    // Garbage that is not a JWT at all.
    let (status, _) = ask(&ca, &bundle, "not-a-token", WEB).await.unwrap_err();
    assert_eq!(status, 401);

    // A genuine ztunnel token, but for the API server's audience, not the CA's.
    let wrong_audience = pod_token(&server, "ambit-system", "ztunnel", "ztunnel-a", ISSUER);
    let (status, reason) = ask(&ca, &bundle, &wrong_audience, WEB).await.unwrap_err();
    assert_eq!(status, 401, "{reason}");
    assert!(
        reason.contains("is invalid for the target audiences"),
        "{reason}"
    );

    // The CA's audience, but a workload's service account in a pod that is not a waypoint:
    // only ztunnels (for their node's pods) and waypoints (for themselves) may call.
    let web = pod_token(&server, "shop", "web", "web-0", AUDIENCE);
    let (status, reason) = ask(&ca, &bundle, &web, WEB).await.unwrap_err();
    assert_eq!(status, 403, "{reason}");
    assert!(
        reason.contains("is not a waypoint pod")
            && reason.contains("only ztunnels and waypoints call the CA"),
        "{reason}"
    );

    // The ztunnel service account in a pod that is not a ztunnel.
    let impostor = pod_token(&server, "ambit-system", "ztunnel", "impostor", AUDIENCE);
    let (status, reason) = ask(&ca, &bundle, &impostor, DB).await.unwrap_err();
    assert_eq!(status, 403, "{reason}");
    assert!(reason.contains("not a ztunnel pod"), "{reason}");

    // A ztunnel token not bound to a pod proves no node.
    let unbound = server
        .service_account_token("ambit-system", "ztunnel", &[AUDIENCE], None)
        .unwrap();
    let (status, reason) = ask(&ca, &bundle, &unbound, WEB).await.unwrap_err();
    assert_eq!(status, 403, "{reason}");
    assert!(reason.contains("not bound to a pod"), "{reason}");

    // A pod scheduled after start-up is authorised without a CA restart.
    server
        .kubectl_apply(&pod("shop", "db-1", "node-a", "db", "app: db"))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Err((status, reason)) = ask(&ca, &bundle, &ztunnel_a, DB).await {
        assert!(
            Instant::now() < deadline,
            "db-1 never authorised: {status} {reason}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Every refusal is in the CA's log with its reason.
    let log = ca.log();
    for reason in [
        "has no pod running as",
        "token rejected",
        "is not a waypoint pod",
        "not a ztunnel pod",
        "not bound to a pod",
    ] {
        assert!(log.contains(reason), "log lacks {reason:?}:\n{log}");
    }

    // A restarted CA keeps the root in the Secret.
    drop(ca);
    let again = tokio::task::block_in_place(|| start_ca(&ca_kubeconfig, work.path()));
    assert!(
        again.log().contains("mesh root loaded from the Secret"),
        "{}",
        again.log()
    );
    assert_eq!(
        trust_bundle(&server).1,
        root_pem,
        "the root was not replaced"
    );
    ask(&again, &bundle, &ztunnel_b, DB).await.unwrap();
}

/// TokenReviews the API server has answered so far (its own request counter).
fn token_reviews(server: &KubeApiServer) -> u64 {
    let metrics = server.kubectl(&["get", "--raw", "/metrics"]).unwrap();
    metrics
        .lines()
        .filter(|line| {
            line.starts_with("apiserver_request_total{")
                && line.contains(r#"resource="tokenreviews""#)
                && line.contains(r#"verb="POST""#)
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Sends one request per token (same body) over a few HTTP/2 connections, bypassing the typed
/// client (which opens a connection per call); the statuses, in no particular order.
async fn post_each(
    ca: &RunningCa,
    bundle: &TrustBundle,
    tokens: Vec<String>,
    body: bytes::Bytes,
) -> Vec<u16> {
    use std::sync::Arc;
    const CONNECTIONS: usize = 4;
    let expected = certs::api::ca_identity("cluster.local").unwrap();
    let tls =
        Arc::new(certs::tls::client_config_without_certificate(bundle, vec![expected]).unwrap());
    let mut shares: Vec<Vec<String>> = vec![Vec::new(); CONNECTIONS];
    for (n, token) in tokens.into_iter().enumerate() {
        shares[n % CONNECTIONS].push(token);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for share in shares {
        let (tls, body, address) = (tls.clone(), body.clone(), ca.address);
        tasks.spawn(async move {
            let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
            let stream = tokio_rustls::TlsConnector::from(tls)
                .connect(rustls::pki_types::ServerName::from(address.ip()), tcp)
                .await
                .unwrap();
            let (sender, connection) = h2::client::handshake(stream).await.unwrap();
            tokio::spawn(connection);
            let mut statuses = Vec::new();
            for token in share {
                let mut sender = sender.clone().ready().await.unwrap();
                let request = http::Request::post(format!(
                    "https://ambit-ca{}",
                    certs::api::CREATE_CERTIFICATE_PATH
                ))
                .header("authorization", format!("Bearer {token}"))
                .body(())
                .unwrap();
                let (response, mut stream) = sender.send_request(request, false).unwrap();
                stream.send_data(body.clone(), true).unwrap();
                statuses.push(response.await.unwrap().status().as_u16());
            }
            statuses
        });
    }
    let mut statuses = Vec::new();
    while let Some(share) = tasks.join_next().await {
        statuses.extend(share.unwrap());
    }
    statuses
}

/// A real token with its signature altered in a way that depends on `n`.
fn forged(real: &str, n: usize) -> String {
    let (head, signature) = real.rsplit_once('.').unwrap();
    let mut signature = signature.as_bytes()[..signature.len() - 6].to_vec();
    signature.extend_from_slice(format!("{:06}", n % 1_000_000).as_bytes());
    format!("{head}.{}", String::from_utf8(signature).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_sent_in_bulk_cost_the_api_server_a_bounded_number_of_reviews() {
    let work = tempfile::tempdir().unwrap();
    let server = KubeApiServer::start().unwrap_or_else(|error| {
        panic!(
            "cannot start the test API server: {error}\n(build it once with scripts/kube-build.sh)"
        )
    });
    server.kubectl_apply(CLUSTER).unwrap();
    for manifest in [
        pod(
            "ambit-system",
            "ztunnel-a",
            "node-a",
            "ztunnel",
            "app: ztunnel",
        ),
        pod("shop", "web-0", "node-a", "web", "app: web"),
    ] {
        server.kubectl_apply(&manifest).unwrap();
    }
    let ca_token = server
        .service_account_token("ambit-system", "ambit-ca", &[ISSUER], None)
        .unwrap();
    let ca_kubeconfig = server.kubeconfig_for_token("ambit-ca", &ca_token).unwrap();
    let ca = tokio::task::block_in_place(|| start_ca(&ca_kubeconfig, work.path()));
    let (bundle, _) = trust_bundle(&server);
    let ztunnel_a = pod_token(&server, "ambit-system", "ztunnel", "ztunnel-a", AUDIENCE);
    ask(&ca, &bundle, &ztunnel_a, WEB).await.unwrap();
    let body = {
        use prost::Message;
        bytes::Bytes::from(request_for(WEB).encode_to_vec())
    };
    const FLOOD: usize = 300;

    // One forged token, again and again: one review, not one per request.
    let before = token_reviews(&server);
    let same = vec![forged(&ztunnel_a, 0); FLOOD];
    let statuses = post_each(&ca, &bundle, same, body.clone()).await;
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    let reviews = token_reviews(&server) - before;
    assert!(
        reviews <= 2,
        "{FLOOD} requests with the same forged token cost {reviews} TokenReviews"
    );

    // Garbage that is not a JWT at all: refused without asking the API server.
    let before = token_reviews(&server);
    let garbage = (0..FLOOD).map(|n| format!("garbage-{n}")).collect();
    let statuses = post_each(&ca, &bundle, garbage, body.clone()).await;
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    assert_eq!(
        token_reviews(&server) - before,
        0,
        "garbage cost TokenReviews"
    );

    // Distinct forged JWTs, while the node (remembered) keeps getting certificates.
    let distinct: Vec<String> = (1..=FLOOD).map(|n| forged(&ztunnel_a, n)).collect();
    let before = token_reviews(&server);
    let flood = post_each(&ca, &bundle, distinct.clone(), body.clone());
    let node = async {
        for _ in 0..3 {
            ask(&ca, &bundle, &ztunnel_a, WEB).await.unwrap();
        }
    };
    let (statuses, ()) = tokio::join!(flood, node);
    // Refused, or told to retry when reviews were all taken; never issued.
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 503),
        "{statuses:?}"
    );
    let first_pass = token_reviews(&server) - before;
    assert!(
        first_pass <= FLOOD as u64,
        "{first_pass} reviews for {FLOOD} tokens"
    );
    // The same tokens again: remembered as refused, no more reviews than those told to retry.
    let retried = statuses.iter().filter(|s| **s == 503).count() as u64;
    let before = token_reviews(&server);
    let statuses = post_each(&ca, &bundle, distinct, body).await;
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 503),
        "{statuses:?}"
    );
    let second_pass = token_reviews(&server) - before;
    assert!(
        second_pass <= retried,
        "resending {FLOOD} refused tokens cost {second_pass} TokenReviews ({retried} had been told to retry)"
    );
    eprintln!(
        "TokenReviews for {FLOOD} requests each: same forged token {reviews}, garbage 0, distinct forged {first_pass} ({retried} told to retry), the distinct ones again {second_pass}"
    );
    // Tokens are neither logged nor otherwise echoed.
    let log = ca.log();
    assert!(!log.contains(&forged(&ztunnel_a, 0)) && !log.contains(&ztunnel_a));
}
