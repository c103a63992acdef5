//! A root rotation over real sockets, with TLS configs built once and a shared trust bundle
//! changed underneath them: add root B beside A, issue from B, remove A. New handshakes follow
//! each step; a connection established before the rotation keeps working.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use certs::api::ca_identity;
use certs::tls::{ca_client_config, client_config, server_config};
use certs::{BundleUpdate, CurrentCertificate, HandshakeFailure, SharedTrustBundle};
use support::{bundle, connect, echo, id, workload, EchoServer, Root, TRUST_DOMAIN};

#[tokio::test]
async fn new_handshakes_follow_each_rotation_step_and_live_connections_survive_it() {
    let (root_a, root_b) = (Root::generate(), Root::generate());
    let (ca_a, ca_b) = (root_a.own_ca(), root_b.own_ca());
    let (server_id, client_id) = (id("cart"), id("frontend"));
    // Two nodes, each with its own handle on its own copy of the roots.
    let server_trust = SharedTrustBundle::new(bundle(&[&root_a]));
    let client_trust = SharedTrustBundle::new(bundle(&[&root_a]));
    let server_cert = CurrentCertificate::new(workload(&ca_a, &server_id));
    let client_cert = CurrentCertificate::new(workload(&ca_a, &client_id));
    // Built once, before any rotation, like a pod's HBONE server and a pool's client config.
    let mut server =
        EchoServer::start(server_config(server_cert.clone(), &server_trust).unwrap()).await;
    let client =
        || client_config(client_cert.clone(), &client_trust, vec![server_id.clone()]).unwrap();

    let (mut live, peer) = connect(server.address, client()).await.unwrap();
    assert_eq!(peer, server_id);
    assert_eq!(server.next_outcome().await.unwrap(), client_id);

    // Step 1: B beside A. Peers with a certificate from either root are accepted.
    for trust in [&server_trust, &client_trust] {
        let update = trust.replace(bundle(&[&root_a, &root_b])).unwrap();
        assert!(
            matches!(update, BundleUpdate::Changed(ref c) if c.added.len() == 1 && c.removed.is_empty()),
            "{update:?}"
        );
    }
    let b_client = CurrentCertificate::new(workload(&ca_b, &client_id));
    let b_config = client_config(b_client, &client_trust, vec![server_id.clone()]).unwrap();
    connect(server.address, b_config).await.unwrap();
    assert_eq!(server.next_outcome().await.unwrap(), client_id);
    server_cert.replace(workload(&ca_b, &server_id));
    connect(server.address, client()).await.unwrap();
    assert_eq!(server.next_outcome().await.unwrap(), client_id);

    // Step 2: everything issued from B.
    client_cert.replace(workload(&ca_b, &client_id));
    connect(server.address, client()).await.unwrap();
    assert_eq!(server.next_outcome().await.unwrap(), client_id);

    // Step 3: A removed.
    for trust in [&server_trust, &client_trust] {
        let update = trust.replace(bundle(&[&root_b])).unwrap();
        assert!(
            matches!(update, BundleUpdate::Changed(ref c) if c.added.is_empty() && c.removed.len() == 1),
            "{update:?}"
        );
    }
    // A client still holding an A certificate is refused by the server...
    let a_client = CurrentCertificate::new(workload(&ca_a, &client_id));
    let a_config = client_config(a_client, &client_trust, vec![server_id.clone()]).unwrap();
    let refused = connect(server.address, a_config).await.unwrap_err();
    assert!(
        matches!(refused, HandshakeFailure::RejectedByPeer(_)),
        "{refused:?}"
    );
    assert_eq!(
        server.next_outcome().await.unwrap_err(),
        HandshakeFailure::UntrustedIssuer
    );
    // ...and a server still presenting an A certificate is refused by the client.
    let a_server_cert = CurrentCertificate::new(workload(&ca_a, &server_id));
    let mut a_server =
        EchoServer::start(server_config(a_server_cert, &server_trust).unwrap()).await;
    let refused = connect(a_server.address, client()).await.unwrap_err();
    assert_eq!(refused, HandshakeFailure::UntrustedIssuer);
    assert!(a_server.next_outcome().await.is_err());

    // B peers still connect; the connection verified against A before the rotation still works.
    connect(server.address, client()).await.unwrap();
    assert_eq!(server.next_outcome().await.unwrap(), client_id);
    echo(&mut live, b"established before the rotation")
        .await
        .unwrap();
}

#[tokio::test]
async fn a_config_built_from_a_fixed_bundle_ignores_changes_to_the_shared_one() {
    let (root_a, root_b) = (Root::generate(), Root::generate());
    let (ca_a, ca_b) = (root_a.own_ca(), root_b.own_ca());
    let (server_id, client_id) = (id("cart"), id("frontend"));
    let shared = SharedTrustBundle::new(bundle(&[&root_a]));
    let fixed = bundle(&[&root_a]);
    let server_cert = CurrentCertificate::new(workload(&ca_a, &server_id));
    let mut follows = EchoServer::start(server_config(server_cert.clone(), &shared).unwrap()).await;
    let mut frozen = EchoServer::start(server_config(server_cert, &fixed).unwrap()).await;

    shared.replace(bundle(&[&root_a, &root_b])).unwrap();
    let b_client = CurrentCertificate::new(workload(&ca_b, &client_id));
    let config = || client_config(b_client.clone(), &shared, vec![server_id.clone()]).unwrap();
    connect(follows.address, config()).await.unwrap();
    assert_eq!(follows.next_outcome().await.unwrap(), client_id);
    // A `&TrustBundle` caller keeps exactly the roots it passed, as before this change.
    connect(frozen.address, config()).await.unwrap_err();
    assert_eq!(
        frozen.next_outcome().await.unwrap_err(),
        HandshakeFailure::UntrustedIssuer
    );
}

#[tokio::test]
async fn the_ca_client_trusts_the_configured_roots_as_well_as_the_current_ones() {
    let (root_a, root_b, stranger) = (Root::generate(), Root::generate(), Root::generate());
    let ca = ca_identity(TRUST_DOMAIN).unwrap();
    let configured = bundle(&[&root_a]);
    let shared = SharedTrustBundle::new(bundle(&[&root_a]));
    let ca_client = || ca_client_config(&configured, &shared, vec![ca.clone()]).unwrap();
    let serving = |root: &Root| {
        let cert = CurrentCertificate::new(workload(&root.own_ca(), &ca));
        certs::tls::server_config_without_client_auth(cert).unwrap()
    };
    let mut ca_on_a = EchoServer::start(serving(&root_a)).await;
    let mut ca_on_b = EchoServer::start(serving(&root_b)).await;
    let mut ca_on_stranger = EchoServer::start(serving(&stranger)).await;

    // After a rotation the CA serves from B, which only the shared bundle knows.
    shared.replace(bundle(&[&root_b])).unwrap();
    assert_eq!(connect(ca_on_b.address, ca_client()).await.unwrap().1, ca);
    ca_on_b.next_outcome().await.ok();
    // Even with A gone from the shared bundle, the configured A still reaches the CA: a bad
    // bundle can never lock the node out of the CA that could correct it.
    assert_eq!(connect(ca_on_a.address, ca_client()).await.unwrap().1, ca);
    ca_on_a.next_outcome().await.ok();
    // Roots neither configured nor current are refused, with the usual cause.
    let refused = connect(ca_on_stranger.address, ca_client())
        .await
        .unwrap_err();
    assert_eq!(refused, HandshakeFailure::UntrustedIssuer);
    ca_on_stranger.next_outcome().await.ok();

    // The fallback is the CA client's only: an ordinary mesh client on the same shared bundle
    // refuses an A-signed peer once A is gone.
    let frontend = CurrentCertificate::new(workload(&root_b.own_ca(), &id("frontend")));
    let mesh_client = client_config(frontend, &shared, vec![ca.clone()]).unwrap();
    let refused = connect(ca_on_a.address, mesh_client).await.unwrap_err();
    assert_eq!(refused, HandshakeFailure::UntrustedIssuer);
}

#[test]
fn the_ca_client_refuses_configured_roots_of_another_trust_domain() {
    let shared = SharedTrustBundle::new(bundle(&[&Root::generate()]));
    let foreign = certs::testing::TestPki::new("evil.example").unwrap();
    let error = ca_client_config(
        foreign.bundle(),
        &shared,
        vec![ca_identity(TRUST_DOMAIN).unwrap()],
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("evil.example") && error.contains(TRUST_DOMAIN),
        "{error}"
    );
}
