//! A cluster without the Gateway API CRDs: the Kubernetes source treats those kinds as empty and
//! keeps watching the rest, instead of failing to start or retrying in a loop. The API server is
//! a stand-in on loopback that serves Namespaces and answers 404 for the Gateway API group, as
//! a real one does before the CRDs are installed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use discovery::{Kind, KubeConnection, KubeSource, KubeSourceConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const NAMESPACES: &str = r#"{"kind":"NamespaceList","apiVersion":"v1","metadata":{"resourceVersion":"7"},"items":[{"metadata":{"name":"shop","resourceVersion":"7"}}]}"#;
const NOT_FOUND: &str = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"the server could not find the requested resource","reason":"NotFound","code":404}"#;

/// Serves until dropped; counts the discovery requests for the Gateway API group.
async fn stand_in_api_server(gateway_api_lookups: Arc<AtomicUsize>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let lookups = Arc::clone(&gateway_api_lookups);
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&request);
                let target = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                let (status, body) = if target.starts_with("/apis/gateway.networking.k8s.io/") {
                    lookups.fetch_add(1, Ordering::SeqCst);
                    ("404 Not Found", NOT_FOUND)
                } else if target.starts_with("/api/v1/namespaces") && target.contains("watch=true")
                {
                    // A watch with nothing to report: keep it open.
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").await;
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    return;
                } else if target.starts_with("/api/v1/namespaces") {
                    ("200 OK", NAMESPACES)
                } else {
                    ("404 Not Found", NOT_FOUND)
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn without_the_crds_the_gateway_api_kinds_are_empty_and_the_rest_is_watched() {
    let lookups = Arc::new(AtomicUsize::new(0));
    let addr = stand_in_api_server(Arc::clone(&lookups)).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: 'http://{addr}'}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: x, context: {{cluster: c, user: u}}}}]
current-context: x
"
        ),
    )
    .unwrap();
    let client = KubeConnection::Kubeconfig {
        path: kubeconfig,
        context: None,
    }
    .client()
    .await
    .unwrap();
    let mut kinds = vec![Kind::Namespace];
    kinds.extend(Kind::GATEWAY_API);
    let config = KubeSourceConfig {
        kinds,
        sync_timeout: Duration::from_secs(20),
        recheck_absent: Duration::from_millis(200),
        ..KubeSourceConfig::default()
    };
    let source = KubeSource::start(client, config).await.unwrap();
    let snapshot = source.current();
    assert_eq!(snapshot.generation(), 1);
    assert!(
        snapshot.namespace("shop").is_some(),
        "the rest of the cluster is watched"
    );
    assert!(snapshot.gateway_api().gateways().is_empty());
    assert!(
        source.failures().is_empty(),
        "an absent CRD is no failure: {:?}",
        source.failures()
    );

    // Looked for again now and then (every recheck_absent), not in a tight loop.
    let before = lookups.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let during = lookups.load(Ordering::SeqCst) - before;
    // Six kinds, each trying its versions (at most three) about every 200 ms.
    assert!(during > 0, "absent kinds are looked for again");
    assert!(
        during <= 6 * 3 * 7,
        "{during} discovery requests in one second"
    );
}
