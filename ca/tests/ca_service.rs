//! `ambit-ca` as a node agent meets it: the real binary, a CA directory, a tokens file and Pod
//! manifests; requests through the real client. Who gets a certificate, who is refused and why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use certs::api::{CaClient, CaClientError, CreateCertificateRequest, NodeToken};
use certs::{KeyAndCsr, SpiffeId, TrustBundle};

const CA: &str = env!("CARGO_BIN_EXE_ambit-ca");

const PODS: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: Pod
metadata:
  name: cart-0
  namespace: shop
  uid: 11111111-0000-0000-0000-000000000001
spec:
  nodeName: node-a
  serviceAccountName: cart
  containers: [{name: app, image: cart}]
status:
  podIP: 10.1.1.5
---
apiVersion: v1
kind: Pod
metadata:
  name: payments-0
  namespace: shop
  uid: 11111111-0000-0000-0000-000000000002
spec:
  nodeName: node-b
  serviceAccountName: payments
  containers: [{name: app, image: payments}]
status:
  podIP: 10.1.2.5
"#;

/// A running `ambit-ca serve`, killed on drop.
struct RunningCa {
    child: Child,
    address: SocketAddr,
    bundle: TrustBundle,
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

    fn client(&self, token: &str) -> CaClient {
        CaClient::new(
            self.address.to_string(),
            &self.bundle,
            NodeToken::Value(token.to_owned()),
        )
        .unwrap()
    }
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn run(args: &[&str]) -> std::process::Output {
    let output = Command::new(CA).args(args).output().unwrap();
    output
}

fn start_ca(work: &Path) -> RunningCa {
    let dir = work.join("ca");
    if !dir.join("tls.key").exists() {
        let init = run(&["init", "--dir", dir.to_str().unwrap()]);
        assert!(
            init.status.success(),
            "{}",
            String::from_utf8_lossy(&init.stderr)
        );
    }
    std::fs::write(work.join("tokens"), "node-a token-a\nnode-b token-b\n").unwrap();
    std::fs::write(work.join("pods.yaml"), PODS).unwrap();
    let address = free_port();
    let log = work.join(format!("ca-{}.log", address.port()));
    let child = Command::new(CA)
        .args(["serve", "--dir", dir.to_str().unwrap()])
        .args(["--listen", &address.to_string()])
        .args(["--tokens-file", work.join("tokens").to_str().unwrap()])
        .args(["--manifests", work.join("pods.yaml").to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let bundle = TrustBundle::from_pem(
        "cluster.local",
        &std::fs::read(dir.join("ca.crt")).unwrap(),
        "ca.crt",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(address).is_err() {
        assert!(
            Instant::now() < deadline,
            "ambit-ca did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    RunningCa {
        child,
        address,
        bundle,
        log,
    }
}

fn request_for(identity: &str) -> (CreateCertificateRequest, KeyAndCsr) {
    let id: SpiffeId = identity.parse().unwrap();
    let key = KeyAndCsr::generate(&id).unwrap();
    (
        CreateCertificateRequest {
            csr: key.csr_pem.clone(),
            identity: identity.to_owned(),
            validity_seconds: 0,
        },
        key,
    )
}

fn refusal(result: Result<impl std::fmt::Debug, CaClientError>) -> (u16, String) {
    match result {
        Err(CaClientError::Refused { status, reason }) => (status, reason),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_node_obtains_the_identity_of_a_pod_it_runs_and_openssl_accepts_the_chain() {
    let work = tempfile::tempdir().unwrap();
    let ca = start_ca(work.path());
    let (request, _key) = request_for("spiffe://cluster.local/ns/shop/sa/cart");
    let response = ca
        .client("token-a")
        .create_certificate(request)
        .await
        .unwrap();
    assert_eq!(
        response.cert_chain.len(),
        1,
        "a root CA issues leaf-only chains"
    );
    let leaf = &response.cert_chain[0];
    let leaf_der = certs::material::certificates_from_pem(leaf.as_bytes(), "leaf").unwrap();
    assert_eq!(
        certs::material::identity_of(&leaf_der[0])
            .unwrap()
            .to_string(),
        "spiffe://cluster.local/ns/shop/sa/cart"
    );

    let leaf_path = work.path().join("leaf.pem");
    std::fs::write(&leaf_path, leaf).unwrap();
    let verify = Command::new("openssl")
        .args(["verify", "-purpose", "sslclient", "-CAfile"])
        .arg(work.path().join("ca/ca.crt"))
        .arg(&leaf_path)
        .output()
        .expect("openssl is installed by scripts/setup.sh");
    assert!(
        verify.status.success(),
        "openssl verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&leaf_path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("URI:spiffe://cluster.local/ns/shop/sa/cart"),
        "{text}"
    );
    assert!(
        text.contains("TLS Web Server Authentication, TLS Web Client Authentication"),
        "{text}"
    );
    assert!(text.contains("CA:FALSE"), "{text}");
    assert!(ca.log().contains("certificate issued"), "{}", ca.log());
}

#[tokio::test]
async fn unknown_token_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let ca = start_ca(work.path());
    let (request, _key) = request_for("spiffe://cluster.local/ns/shop/sa/cart");
    let (status, reason) = refusal(ca.client("not-a-token").create_certificate(request).await);
    assert_eq!(status, 401);
    assert!(reason.contains("unknown token"), "{reason}");
    assert!(
        ca.log().contains("certificate request refused"),
        "{}",
        ca.log()
    );
}

#[tokio::test]
async fn a_node_cannot_obtain_identities_of_pods_on_other_nodes() {
    let work = tempfile::tempdir().unwrap();
    let ca = start_ca(work.path());
    // payments runs on node-b; node-a asks for it.
    let (request, _key) = request_for("spiffe://cluster.local/ns/shop/sa/payments");
    let (status, reason) = refusal(ca.client("token-a").create_certificate(request).await);
    assert_eq!(status, 403);
    assert!(
        reason.contains("node-a") && reason.contains("sa/payments"),
        "{reason}"
    );
    let log = ca.log();
    assert!(
        log.contains("certificate request refused") && log.contains("node-a"),
        "{log}"
    );
    // The rightful node gets it.
    let (request, _key) = request_for("spiffe://cluster.local/ns/shop/sa/payments");
    ca.client("token-b")
        .create_certificate(request)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_csr_whose_signature_does_not_verify_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let ca = start_ca(work.path());
    let (mut request, _key) = request_for("spiffe://cluster.local/ns/shop/sa/cart");
    // Flip one bit of the signature, the last bytes of the DER.
    let mut der = pem::parse(&request.csr).unwrap().into_contents();
    let last = der.len() - 1;
    der[last] ^= 0x01;
    request.csr = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
    let (status, reason) = refusal(ca.client("token-a").create_certificate(request).await);
    assert_eq!(status, 400);
    assert!(reason.contains("signature does not verify"), "{reason}");
}

#[tokio::test]
async fn a_csr_naming_another_identity_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let ca = start_ca(work.path());
    let (mut request, _key) = request_for("spiffe://cluster.local/ns/shop/sa/payments");
    request.identity = "spiffe://cluster.local/ns/shop/sa/cart".to_owned();
    let (status, reason) = refusal(ca.client("token-a").create_certificate(request).await);
    assert_eq!(status, 400);
    assert!(reason.contains("authorised for"), "{reason}");
}

#[tokio::test]
async fn a_malformed_request_body_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let ca = start_ca(work.path());
    // A body that is not a protobuf message at all, sent with the real client's transport.
    let garbage = CreateCertificateRequest {
        csr: "-----BEGIN CERTIFICATE REQUEST-----\nnot base64 at all\n-----END CERTIFICATE REQUEST-----\n".into(),
        identity: "spiffe://cluster.local/ns/shop/sa/cart".into(),
        validity_seconds: 0,
    };
    let (status, reason) = refusal(ca.client("token-a").create_certificate(garbage).await);
    assert_eq!(status, 400);
    assert!(reason.contains("malformed"), "{reason}");
    let (bad_id, _key) = request_for("spiffe://cluster.local/ns/shop/sa/cart");
    let bad_id = CreateCertificateRequest {
        identity: "spiffe://cluster.local/ns/shop".into(),
        ..bad_id
    };
    let (status, reason) = refusal(ca.client("token-a").create_certificate(bad_id).await);
    assert_eq!(status, 400);
    assert!(reason.contains("bad identity"), "{reason}");
    let raw = raw_post(&ca, b"\xff\xff\xff\xff not protobuf").await;
    assert_eq!(raw.0, 400);
    assert!(raw.1.contains("malformed request body"), "{}", raw.1);
}

/// Posts arbitrary bytes to the API, bypassing the typed client.
async fn raw_post(ca: &RunningCa, body: &'static [u8]) -> (u16, String) {
    use std::sync::Arc;
    let expected = certs::api::ca_identity("cluster.local").unwrap();
    let config = certs::tls::client_config_without_certificate(&ca.bundle, vec![expected]).unwrap();
    let tcp = tokio::net::TcpStream::connect(ca.address).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(rustls::pki_types::ServerName::from(ca.address.ip()), tcp)
        .await
        .unwrap();
    let (sender, connection) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(connection);
    let mut sender = sender.ready().await.unwrap();
    let request = http::Request::post(format!(
        "https://ambit-ca{}",
        certs::api::CREATE_CERTIFICATE_PATH
    ))
    .header("authorization", "Bearer token-a")
    .body(())
    .unwrap();
    let (response, mut stream) = sender.send_request(request, false).unwrap();
    stream
        .send_data(bytes::Bytes::from_static(body), true)
        .unwrap();
    let response = response.await.unwrap();
    let status = response.status().as_u16();
    let body = certs::api::read_body(response.into_body(), 65536)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn a_restarted_ca_keeps_its_root() {
    let work = tempfile::tempdir().unwrap();
    let root_before = {
        let _ca = start_ca(work.path());
        std::fs::read(work.path().join("ca/ca.crt")).unwrap()
    };
    // A second `init` refuses to replace the CA.
    let again = run(&["init", "--dir", work.path().join("ca").to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("never overwrites"));
    let ca = start_ca(work.path());
    assert_eq!(
        std::fs::read(work.path().join("ca/ca.crt")).unwrap(),
        root_before
    );
    // Certificates from the restarted CA verify against the root nodes already trust.
    let (request, _key) = request_for("spiffe://cluster.local/ns/shop/sa/cart");
    let response = ca
        .client("token-a")
        .create_certificate(request)
        .await
        .unwrap();
    let chain =
        certs::material::certificates_from_pem(response.cert_chain.concat().as_bytes(), "chain")
            .unwrap();
    let old_bundle = TrustBundle::from_pem("cluster.local", &root_before, "old root").unwrap();
    certs::tls::verify_chain(&chain, &old_bundle).unwrap();
}

#[test]
fn key_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("ca");
    assert!(run(&["init", "--dir", dir.to_str().unwrap()])
        .status
        .success());
    let mode = |p: &str| std::fs::metadata(dir.join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("tls.key"), 0o600);
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let out = work.path().join("issued");
    let issue = run(&[
        "issue",
        "--dir",
        dir.to_str().unwrap(),
        "--identity",
        "spiffe://cluster.local/ns/shop/sa/cart",
        "--out-dir",
        out.to_str().unwrap(),
    ]);
    assert!(
        issue.status.success(),
        "{}",
        String::from_utf8_lossy(&issue.stderr)
    );
    assert_eq!(
        std::fs::metadata(out.join("tls.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let verify = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(dir.join("ca.crt"))
        .arg(out.join("tls.crt"))
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}
