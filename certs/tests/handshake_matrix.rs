//! Mutual-TLS handshakes over real sockets: who may talk to whom, and what each refusal says.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use certs::testing::TestPki;
use certs::tls::{client_config, client_config_without_certificate, peer_identity, server_config};
use certs::{CurrentCertificate, HandshakeFailure, SpiffeId, TrustBundle};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

struct Outcome {
    server: Result<SpiffeId, HandshakeFailure>,
    client: Result<SpiffeId, HandshakeFailure>,
}

enum ClientCert {
    Present(CurrentCertificate),
    Absent,
}

/// Runs one handshake between a server and a client over loopback and reports what each side
/// concluded: the peer identity it verified, or why it refused.
async fn handshake(
    server_cert: CurrentCertificate,
    server_bundle: &TrustBundle,
    client_cert: ClientCert,
    client_bundle: &TrustBundle,
    expected_server: SpiffeId,
) -> Outcome {
    let acceptor = TlsAcceptor::from(Arc::new(server_config(server_cert, server_bundle).unwrap()));
    let client_config = match client_cert {
        ClientCert::Present(cert) => client_config(cert, client_bundle, vec![expected_server]),
        ClientCert::Absent => {
            client_config_without_certificate(client_bundle, vec![expected_server])
        }
    }
    .unwrap();
    let connector = TlsConnector::from(Arc::new(client_config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();

    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        match acceptor.accept(tcp).await {
            Ok(mut tls) => {
                let peer = peer_identity(tls.get_ref().1)
                    .map_err(|e| HandshakeFailure::Other(e.to_string()));
                // Prove the channel works both ways before reporting success.
                let mut buf = [0u8; 4];
                tls.read_exact(&mut buf).await.unwrap();
                tls.write_all(&buf).await.unwrap();
                tls.shutdown().await.ok();
                peer
            }
            Err(e) => Err(HandshakeFailure::classify_io(&e)),
        }
    });
    let tcp = TcpStream::connect(address).await.unwrap();
    let client = match connector.connect(ServerName::from(address.ip()), tcp).await {
        Ok(mut tls) => {
            let peer =
                peer_identity(tls.get_ref().1).map_err(|e| HandshakeFailure::Other(e.to_string()));
            // In TLS 1.3 the server checks the client certificate after the client finished, so
            // a refusal shows up on the first read.
            let io = async {
                tls.write_all(b"ping").await?;
                let mut buf = [0u8; 4];
                tls.read_exact(&mut buf).await?;
                Ok::<_, std::io::Error>(buf)
            }
            .await;
            match io {
                Ok(buf) if &buf == b"ping" => peer,
                Ok(_) => Err(HandshakeFailure::Other("echo mismatch".into())),
                Err(e) => Err(HandshakeFailure::classify_io(&e)),
            }
        }
        Err(e) => Err(HandshakeFailure::classify_io(&e)),
    };
    let server = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("server side finished")
        .unwrap();
    Outcome { server, client }
}

fn hours(h: u64) -> Duration {
    Duration::from_secs(h * 3600)
}

#[tokio::test]
async fn matching_identities_succeed_and_each_side_learns_the_other() {
    let pki = TestPki::new("cluster.local").unwrap();
    let (client_id, server_id) = (pki.id("shop", "frontend"), pki.id("shop", "cart"));
    let outcome = handshake(
        pki.certificate(&server_id).unwrap(),
        pki.bundle(),
        ClientCert::Present(pki.certificate(&client_id).unwrap()),
        pki.bundle(),
        server_id.clone(),
    )
    .await;
    assert_eq!(outcome.server.unwrap(), client_id);
    assert_eq!(outcome.client.unwrap(), server_id);
}

#[tokio::test]
async fn client_of_another_trust_domain_is_refused_by_the_server() {
    let mesh = TestPki::new("cluster.local").unwrap();
    let foreign = TestPki::new("evil.example").unwrap();
    // The server trusts both roots (as during a federation mistake), so only the trust-domain
    // policy stands between the foreign client and the workload.
    let mut roots = mesh.bundle().certificates().to_vec();
    roots.extend_from_slice(foreign.bundle().certificates());
    let server_bundle = TrustBundle::new("cluster.local", roots.clone()).unwrap();
    let client_bundle = TrustBundle::new("evil.example", roots).unwrap();
    let server_id = mesh.id("shop", "cart");
    let outcome = handshake(
        mesh.certificate(&server_id).unwrap(),
        &server_bundle,
        ClientCert::Present(
            foreign
                .certificate(&foreign.id("shop", "frontend"))
                .unwrap(),
        ),
        &client_bundle,
        server_id,
    )
    .await;
    let failure = outcome.server.unwrap_err();
    assert!(
        matches!(failure, HandshakeFailure::WrongTrustDomain(_)),
        "{failure:?}"
    );
    let message = failure.to_string();
    assert!(
        message.contains("evil.example") && message.contains("cluster.local"),
        "{message}"
    );
    assert!(matches!(
        outcome.client.unwrap_err(),
        HandshakeFailure::RejectedByPeer(_)
    ));
}

#[tokio::test]
async fn expired_client_certificate_is_refused() {
    let pki = TestPki::new("cluster.local").unwrap();
    let now = SystemTime::now();
    let server_id = pki.id("shop", "cart");
    let expired = pki
        .certificate_valid(&pki.id("shop", "frontend"), now - hours(3), now - hours(1))
        .unwrap();
    let outcome = handshake(
        pki.certificate(&server_id).unwrap(),
        pki.bundle(),
        ClientCert::Present(expired),
        pki.bundle(),
        server_id,
    )
    .await;
    let failure = outcome.server.unwrap_err();
    assert_eq!(failure, HandshakeFailure::PeerCertificateExpired);
    assert!(failure.to_string().contains("expired"));
}

#[tokio::test]
async fn not_yet_valid_server_certificate_is_refused_by_the_client() {
    let pki = TestPki::new("cluster.local").unwrap();
    let now = SystemTime::now();
    let server_id = pki.id("shop", "cart");
    let future = pki
        .certificate_valid(&server_id, now + hours(1), now + hours(3))
        .unwrap();
    let outcome = handshake(
        future,
        pki.bundle(),
        ClientCert::Present(pki.certificate(&pki.id("shop", "frontend")).unwrap()),
        pki.bundle(),
        server_id,
    )
    .await;
    let failure = outcome.client.unwrap_err();
    assert_eq!(failure, HandshakeFailure::PeerCertificateNotYetValid);
    assert!(failure.to_string().contains("clocks"));
}

#[tokio::test]
async fn client_certificate_from_an_untrusted_root_is_refused() {
    let pki = TestPki::new("cluster.local").unwrap();
    let rogue = TestPki::new("cluster.local").unwrap();
    let server_id = pki.id("shop", "cart");
    let outcome = handshake(
        pki.certificate(&server_id).unwrap(),
        pki.bundle(),
        // Same trust domain, same identity shape, but signed by a CA nobody trusts.
        ClientCert::Present(rogue.certificate(&rogue.id("shop", "frontend")).unwrap()),
        pki.bundle(),
        server_id,
    )
    .await;
    let failure = outcome.server.unwrap_err();
    assert_eq!(failure, HandshakeFailure::UntrustedIssuer);
    assert!(failure.to_string().contains("trusted root"));
}

#[tokio::test]
async fn server_certificate_from_an_untrusted_root_is_refused() {
    let pki = TestPki::new("cluster.local").unwrap();
    let rogue = TestPki::new("cluster.local").unwrap();
    let server_id = pki.id("shop", "cart");
    let outcome = handshake(
        rogue.certificate(&server_id).unwrap(),
        rogue.bundle(),
        ClientCert::Present(pki.certificate(&pki.id("shop", "frontend")).unwrap()),
        pki.bundle(),
        server_id,
    )
    .await;
    assert_eq!(
        outcome.client.unwrap_err(),
        HandshakeFailure::UntrustedIssuer
    );
}

#[tokio::test]
async fn client_without_certificate_is_refused() {
    let pki = TestPki::new("cluster.local").unwrap();
    let server_id = pki.id("shop", "cart");
    let outcome = handshake(
        pki.certificate(&server_id).unwrap(),
        pki.bundle(),
        ClientCert::Absent,
        pki.bundle(),
        server_id,
    )
    .await;
    let failure = outcome.server.unwrap_err();
    assert_eq!(failure, HandshakeFailure::MissingClientCertificate);
    assert!(failure.to_string().contains("mutual TLS"));
    let client = outcome.client.unwrap_err();
    assert!(
        matches!(client, HandshakeFailure::RejectedByPeer(_)),
        "{client:?}"
    );
}

#[tokio::test]
async fn server_with_the_wrong_identity_is_refused_by_the_client() {
    let pki = TestPki::new("cluster.local").unwrap();
    let impostor = pki.id("shop", "payments");
    let outcome = handshake(
        pki.certificate(&impostor).unwrap(),
        pki.bundle(),
        ClientCert::Present(pki.certificate(&pki.id("shop", "frontend")).unwrap()),
        pki.bundle(),
        pki.id("shop", "cart"),
    )
    .await;
    let failure = outcome.client.unwrap_err();
    assert!(
        matches!(failure, HandshakeFailure::UnexpectedPeerIdentity(_)),
        "{failure:?}"
    );
    let message = failure.to_string();
    assert!(
        message.contains("sa/payments") && message.contains("sa/cart"),
        "{message}"
    );
}

#[tokio::test]
async fn every_refusal_names_a_distinct_cause() {
    let causes = [
        HandshakeFailure::PeerCertificateExpired,
        HandshakeFailure::PeerCertificateNotYetValid,
        HandshakeFailure::UntrustedIssuer,
        HandshakeFailure::MissingClientCertificate,
        HandshakeFailure::UnexpectedPeerIdentity("x".into()),
        HandshakeFailure::WrongTrustDomain("x".into()),
    ];
    let messages: std::collections::HashSet<String> =
        causes.iter().map(ToString::to_string).collect();
    assert_eq!(messages.len(), causes.len());
}

#[tokio::test]
async fn root_rotation_peers_on_old_and_new_roots_interoperate_through_a_shared_bundle() {
    let old = TestPki::new("cluster.local").unwrap();
    let new = TestPki::new("cluster.local").unwrap();
    let mut roots = old.bundle().certificates().to_vec();
    roots.extend_from_slice(new.bundle().certificates());
    let both = TrustBundle::new("cluster.local", roots).unwrap();
    let (client_id, server_id) = (old.id("shop", "frontend"), new.id("shop", "cart"));
    let outcome = handshake(
        new.certificate(&server_id).unwrap(),
        &both,
        ClientCert::Present(old.certificate(&client_id).unwrap()),
        &both,
        server_id.clone(),
    )
    .await;
    assert_eq!(outcome.server.unwrap(), client_id);
    assert_eq!(outcome.client.unwrap(), server_id);
}
