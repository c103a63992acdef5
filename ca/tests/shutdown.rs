//! `ambit-ca serve` stopped by SIGTERM, as the kubelet stops it: it takes no new connections,
//! answers the request it has in flight, then exits cleanly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use certs::api::{CreateCertificateRequest, CreateCertificateResponse, CREATE_CERTIFICATE_PATH};
use certs::{KeyAndCsr, SpiffeId};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use prost::Message;
use support::{RunningCa, CART};

/// An HTTP/2 connection to the CA, up on both ends.
async fn connect(ca: &RunningCa) -> h2::client::SendRequest<Bytes> {
    let expected = certs::api::ca_identity("cluster.local").unwrap();
    let config = certs::tls::client_config_without_certificate(&ca.bundle, vec![expected]).unwrap();
    let tcp = tokio::net::TcpStream::connect(ca.address).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(rustls::pki_types::ServerName::from(ca.address.ip()), tcp)
        .await
        .unwrap();
    let (sender, connection) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(connection);
    sender
}

/// Starts a request for `identity` and sends the first half of its body; the rest is for
/// the caller to send.
async fn half_sent_request(
    sender: &mut h2::client::SendRequest<Bytes>,
    body: &[u8],
) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
    let request = http::Request::post(format!("https://ambit-ca{CREATE_CERTIFICATE_PATH}"))
        .header("authorization", "Bearer token-a")
        .body(())
        .unwrap();
    let mut ready = sender.clone().ready().await.unwrap();
    let (response, mut stream) = ready.send_request(request, false).unwrap();
    stream
        .send_data(Bytes::copy_from_slice(&body[..body.len() / 2]), false)
        .unwrap();
    (response, stream)
}

async fn status_and_body(response: h2::client::ResponseFuture) -> (u16, Vec<u8>) {
    let response = response.await.unwrap();
    let status = response.status().as_u16();
    let body = certs::api::read_body(response.into_body(), 65536)
        .await
        .unwrap();
    (status, body.to_vec())
}

#[tokio::test]
async fn on_sigterm_the_ca_stops_accepting_answers_the_request_in_flight_and_exits() {
    let work = tempfile::tempdir().unwrap();
    let mut ca = RunningCa::start(work.path(), &[]);
    let identity: SpiffeId = CART.parse().unwrap();
    let key = KeyAndCsr::generate(&identity).unwrap();
    let body = CreateCertificateRequest {
        csr: key.csr_pem.clone(),
        identity: CART.to_owned(),
        validity_seconds: 0,
    }
    .encode_to_vec();
    let mut sender = connect(&ca).await;
    // One whole request first: the connection is then up on the CA's side too.
    let (first, mut rest) = half_sent_request(&mut sender, &body).await;
    rest.send_data(Bytes::copy_from_slice(&body[body.len() / 2..]), true)
        .unwrap();
    assert_eq!(status_and_body(first).await.0, 200, "{}", ca.log());
    let (in_flight, mut rest) = half_sent_request(&mut sender, &body).await;

    kill(Pid::from_raw(ca.pid() as i32), Signal::SIGTERM).unwrap();
    // The listener closes while the request waits for the rest of its body.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(ca.address).is_ok() {
        assert!(
            Instant::now() < deadline,
            "ambit-ca still accepts connections after SIGTERM\n{}",
            ca.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rest.send_data(Bytes::copy_from_slice(&body[body.len() / 2..]), true)
        .unwrap();
    let (status, answer) = status_and_body(in_flight).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let issued = CreateCertificateResponse::decode(answer.as_slice()).unwrap();
    assert!(!issued.cert_chain.is_empty());

    let exit = ca.wait_for_exit(Duration::from_secs(20)).await;
    assert!(
        exit.is_some_and(|status| status.success()),
        "ambit-ca did not exit cleanly after its drain ({exit:?})\n{}",
        ca.log()
    );
    assert!(ca.log().contains("every connection closed"), "{}", ca.log());
}
