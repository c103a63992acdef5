//! The certificate manager renews before expiry, keeps serving through CA outages, and a
//! renewal never breaks a connection that was established with the previous certificate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use certs::manager::LocalCaSource;
use certs::testing::TestPki;
use certs::tls::{client_config, peer_identity, server_config};
use certs::{CertificateManager, CertificateSource, ManagerConfig, SpiffeId};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// A CA that can be switched off, counting the certificates it signed.
struct SwitchableCa {
    inner: LocalCaSource,
    down: AtomicBool,
    signed: AtomicUsize,
}

impl CertificateSource for SwitchableCa {
    fn sign<'a>(
        &'a self,
        identity: &'a SpiffeId,
        csr_pem: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>> {
        Box::pin(async move {
            if self.down.load(Ordering::SeqCst) {
                return Err("connection refused (test CA is down)".to_owned());
            }
            let chain = self.inner.sign(identity, csr_pem).await?;
            self.signed.fetch_add(1, Ordering::SeqCst);
            Ok(chain)
        })
    }
}

fn fast_config() -> ManagerConfig {
    ManagerConfig {
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        max_backoff_without_certificate: Duration::from_millis(200),
        first_fetch_timeout: Duration::from_secs(5),
        keep_after_last_holder: Duration::ZERO,
    }
}

fn switchable(ttl: Duration) -> (Arc<SwitchableCa>, SpiffeId, TestPki) {
    let pki = TestPki::new("cluster.local").unwrap();
    let id = pki.id("shop", "cart");
    let source = Arc::new(SwitchableCa {
        inner: LocalCaSource {
            ca: TestPki::new("cluster.local").unwrap().ca,
            ttl: Some(ttl),
        },
        down: AtomicBool::new(false),
        signed: AtomicUsize::new(0),
    });
    (source, id, pki)
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..200 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn renews_at_half_lifetime_without_breaking_established_connections() {
    let (source, server_id, _) = switchable(Duration::from_secs(4));
    let bundle = source.inner.ca.trust_bundle().clone();
    let manager = CertificateManager::new(source.clone(), fast_config());
    let client_id = SpiffeId::new("cluster.local", "shop", "frontend").unwrap();
    manager.track(&server_id);
    manager.track(&client_id);
    let server_cert = manager.certificate(&server_id).await.unwrap();
    let client_cert = manager.certificate(&client_id).await.unwrap();
    let first_not_after = server_cert.get().not_after();
    let status = manager.status();
    assert_eq!(status.len(), 2);
    let refresh = status[1].next_refresh.unwrap();
    assert!(
        refresh < first_not_after,
        "refresh must be scheduled before expiry"
    );

    // A long-lived connection established with the first certificate.
    let acceptor = TlsAcceptor::from(Arc::new(
        server_config(server_cert.clone(), &bundle).unwrap(),
    ));
    let connector = TlsConnector::from(Arc::new(
        client_config(client_cert.clone(), &bundle, vec![server_id.clone()]).unwrap(),
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let echo = tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let mut tls = acceptor.accept(tcp).await.unwrap();
                let mut buf = [0u8; 64];
                loop {
                    let n = tls.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    tls.write_all(&buf[..n]).await.unwrap();
                }
            });
        }
    });
    let connect = || async {
        let tcp = TcpStream::connect(address).await.unwrap();
        connector
            .connect(ServerName::from(address.ip()), tcp)
            .await
            .unwrap()
    };
    let mut old_connection = connect().await;
    let old_leaf = old_connection.get_ref().1.peer_certificates().unwrap()[0].clone();

    // Renewal happens at about 2 s into a 4 s lifetime, well before expiry.
    wait_until("the certificate was renewed", || {
        server_cert.get().not_after() > first_not_after
    })
    .await;
    assert!(
        std::time::SystemTime::now() < first_not_after,
        "renewed only after expiry"
    );

    // The old connection still carries data both ways.
    old_connection.write_all(b"still alive").await.unwrap();
    let mut buf = [0u8; 11];
    old_connection.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"still alive");

    // New connections see the new certificate.
    let new_connection = connect().await;
    let new_leaf = new_connection.get_ref().1.peer_certificates().unwrap()[0].clone();
    assert_ne!(old_leaf, new_leaf);
    assert_eq!(
        peer_identity(new_connection.get_ref().1).unwrap(),
        server_id
    );
    echo.abort();
}

#[tokio::test]
async fn keeps_serving_the_old_certificate_while_the_ca_is_down_then_recovers() {
    let (source, id, _) = switchable(Duration::from_secs(3));
    let manager = CertificateManager::new(source.clone(), fast_config());
    manager.track(&id);
    let current = manager.certificate(&id).await.unwrap();
    let first = current.get();
    source.down.store(true, Ordering::SeqCst);

    wait_until("renewal attempts failed twice", || {
        manager.status()[0].consecutive_failures >= 2
    })
    .await;
    let status = &manager.status()[0];
    assert!(status
        .last_error
        .as_deref()
        .unwrap()
        .contains("test CA is down"));
    // Still the very same certificate, still valid.
    assert_eq!(current.get().not_after(), first.not_after());
    assert!(manager.current(&id).is_some());

    source.down.store(false, Ordering::SeqCst);
    wait_until("the certificate was renewed after the outage", || {
        current.get().not_after() > first.not_after()
    })
    .await;
    let status = &manager.status()[0];
    assert_eq!(status.consecutive_failures, 0);
    assert!(status.last_error.is_none());
}

#[tokio::test]
async fn a_first_fetch_that_cannot_succeed_reports_why() {
    let (source, id, _) = switchable(Duration::from_secs(60));
    source.down.store(true, Ordering::SeqCst);
    let config = ManagerConfig {
        first_fetch_timeout: Duration::from_millis(300),
        ..fast_config()
    };
    let manager = CertificateManager::new(source, config);
    manager.track(&id);
    let error = manager.certificate(&id).await.unwrap_err().to_string();
    assert!(
        error.contains("test CA is down") && error.contains("--ca-address"),
        "{error}"
    );
    assert!(!manager.all_issued());
}

#[tokio::test]
async fn the_last_holder_releasing_an_identity_stops_its_renewal() {
    let (source, id, _) = switchable(Duration::from_secs(60));
    let manager = CertificateManager::new(source.clone(), fast_config());
    manager.track(&id);
    manager.track(&id);
    manager.certificate(&id).await.unwrap();
    manager.untrack(&id);
    assert!(
        manager.current(&id).is_some(),
        "one pod still holds the identity"
    );
    manager.untrack(&id);
    assert!(manager.current(&id).is_none());
    assert!(manager.status().is_empty());
    let error = manager.certificate(&id).await.unwrap_err().to_string();
    assert!(error.contains("not managed"), "{error}");
    assert_eq!(source.signed.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_pod_of_the_same_identity_started_soon_after_the_last_one_left_reuses_its_certificate() {
    let (source, id, _) = switchable(Duration::from_secs(60));
    let config = ManagerConfig {
        keep_after_last_holder: Duration::from_millis(300),
        ..fast_config()
    };
    let manager = CertificateManager::new(source.clone(), config);
    manager.track(&id);
    let first = manager.certificate(&id).await.unwrap().get();
    manager.untrack(&id);

    // A rolling restart: the next pod comes within the grace and gets the same certificate.
    tokio::time::sleep(Duration::from_millis(100)).await;
    manager.track(&id);
    let again = manager.certificate(&id).await.unwrap().get();
    assert_eq!(
        again.not_after(),
        first.not_after(),
        "no new certificate was issued"
    );
    assert_eq!(source.signed.load(Ordering::SeqCst), 1);

    // The release scheduled when the first pod left does not apply to the second one.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(manager.current(&id).is_some(), "a pod holds the identity");

    // Once the last holder has been gone for the grace, the certificate is forgotten.
    manager.untrack(&id);
    assert!(manager.current(&id).is_some(), "kept for the grace");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(manager.current(&id).is_none());
    assert!(manager.status().is_empty());
}
