//! Which CA answers may change the node's roots: an answer's bundle is applied only when it
//! parses, is non-empty, is of this trust domain and verifies the chain issued with it; anything
//! else keeps the current roots and says why. Through the certificate manager as well.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use certs::ca::CertificateAuthority;
use certs::trust::RootSummary;
use certs::{
    BundleUpdate, BundleUpdateError, CertificateManager, CertificateSource, ManagerConfig,
    SharedTrustBundle, SignedChain, SpiffeId,
};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose, SanType};
use support::{bundle, id, issued_chain, pem_list, LogCapture, Root, TRUST_DOMAIN};

fn roots_of(trust: &SharedTrustBundle) -> Vec<Vec<u8>> {
    let mut roots: Vec<Vec<u8>> = trust
        .get()
        .certificates()
        .iter()
        .map(|c| c.as_ref().to_vec())
        .collect();
    roots.sort();
    roots
}

fn der_set(roots: &[&Root]) -> Vec<Vec<u8>> {
    let mut set: Vec<Vec<u8>> = roots.iter().map(|r| r.der().as_ref().to_vec()).collect();
    set.sort();
    set
}

#[test]
fn a_consistent_bundle_is_applied_and_the_change_logged_once_with_fingerprints() {
    let logs = LogCapture::install();
    let (root_a, root_b) = (Root::generate(), Root::generate());
    let trust = SharedTrustBundle::new(bundle(&[&root_a]));
    let chain = issued_chain(&root_a.own_ca(), &id("cart"));

    let update = trust
        .apply_ca_response(trust.ticket(), &pem_list(&[&root_a, &root_b]), &chain)
        .unwrap();
    let added = RootSummary::of(&root_b.der());
    assert_eq!(
        update,
        BundleUpdate::Changed(certs::BundleChange {
            added: vec![added.clone()],
            removed: vec![],
            roots: 2,
        })
    );
    assert_eq!(roots_of(&trust), der_set(&[&root_a, &root_b]));
    // The same roots again, in another order and as one PEM text: nothing to do, nothing logged.
    let again = vec![format!("{}{}", root_b.cert_pem, root_a.cert_pem)];
    let update = trust
        .apply_ca_response(trust.ticket(), &again, &chain)
        .unwrap();
    assert_eq!(update, BundleUpdate::Unchanged);

    let changes = logs.matching(&["trust bundle changed"]);
    assert_eq!(changes.len(), 1, "{:?}", logs.lines());
    assert!(changes[0].starts_with("INFO"), "{}", changes[0]);
    assert!(changes[0].contains(&added.sha256), "{}", changes[0]);
    assert!(changes[0].contains("Ambit mesh root CA"), "{}", changes[0]);
    assert!(changes[0].contains("removed=none"), "{}", changes[0]);
}

#[test]
fn a_bundle_that_does_not_verify_the_issued_chain_is_refused() {
    let (root_a, root_b) = (Root::generate(), Root::generate());
    let trust = SharedTrustBundle::new(bundle(&[&root_a]));
    // The CA signs with A but claims B alone: applying it would cut the node off every peer.
    let chain = issued_chain(&root_a.own_ca(), &id("cart"));
    let error = trust
        .apply_ca_response(trust.ticket(), &pem_list(&[&root_b]), &chain)
        .unwrap_err();
    assert!(
        matches!(error, BundleUpdateError::DoesNotVerifyIssued { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("spiffe://cluster.local/ns/shop/sa/cart")
            && message.contains("keeping the current roots")
            && message.contains("ca.crt"),
        "{message}"
    );
    assert_eq!(roots_of(&trust), der_set(&[&root_a]));
}

#[test]
fn an_empty_or_unparsable_bundle_is_refused() {
    let root_a = Root::generate();
    let trust = SharedTrustBundle::new(bundle(&[&root_a]));
    let chain = issued_chain(&root_a.own_ca(), &id("cart"));
    for empty in [
        vec![],
        vec![String::new()],
        vec!["\n".to_owned(), " ".to_owned()],
    ] {
        let error = trust
            .apply_ca_response(trust.ticket(), &empty, &chain)
            .unwrap_err();
        assert!(matches!(error, BundleUpdateError::Empty), "{error:?}");
        assert!(error.to_string().contains("no trust bundle"), "{error}");
    }
    let garbage =
        vec!["-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n".to_owned()];
    let error = trust
        .apply_ca_response(trust.ticket(), &garbage, &chain)
        .unwrap_err();
    assert!(
        matches!(error, BundleUpdateError::Unparsable(_)),
        "{error:?}"
    );
    let no_pem = vec!["hello".to_owned()];
    let error = trust
        .apply_ca_response(trust.ticket(), &no_pem, &chain)
        .unwrap_err();
    assert!(
        matches!(error, BundleUpdateError::Unparsable(_)),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("keeping the current roots"),
        "{error}"
    );
    assert_eq!(roots_of(&trust), der_set(&[&root_a]));
}

/// A root that names trust domain `evil.example` in its SPIFFE ID, with its key.
fn root_naming(trust_domain: &str) -> (String, String) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.subject_alt_names = vec![SanType::URI(
        format!("spiffe://{trust_domain}").try_into().unwrap(),
    )];
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

#[test]
fn a_bundle_of_another_trust_domain_is_refused() {
    let root_a = Root::generate();
    let trust = SharedTrustBundle::new(bundle(&[&root_a]));
    // Even one that does verify the chain: its root says it belongs to another mesh.
    let (foreign_pem, foreign_key) = root_naming("evil.example");
    let foreign_ca =
        CertificateAuthority::from_pem(TRUST_DOMAIN, &foreign_pem, &foreign_key, None).unwrap();
    let chain = issued_chain(&foreign_ca, &id("cart"));
    let error = trust
        .apply_ca_response(trust.ticket(), &[foreign_pem], &chain)
        .unwrap_err();
    assert!(
        matches!(error, BundleUpdateError::WrongTrustDomain { ref got, .. } if got == "evil.example"),
        "{error:?}"
    );
    assert!(error.to_string().contains("--ca-address"), "{error}");

    // A root naming our own trust domain is fine.
    let (own_pem, own_key) = root_naming(TRUST_DOMAIN);
    let own_ca = CertificateAuthority::from_pem(TRUST_DOMAIN, &own_pem, &own_key, None).unwrap();
    let chain = issued_chain(&own_ca, &id("cart"));
    let update = trust
        .apply_ca_response(trust.ticket(), &[own_pem], &chain)
        .unwrap();
    assert!(matches!(update, BundleUpdate::Changed(_)), "{update:?}");

    // So is the check on an operator's replacement.
    let other = certs::testing::TestPki::new("evil.example").unwrap();
    let error = trust.replace(other.bundle().clone()).unwrap_err();
    assert!(
        matches!(error, BundleUpdateError::WrongTrustDomain { .. }),
        "{error:?}"
    );
}

#[test]
fn an_answer_to_an_older_request_cannot_undo_a_newer_one() {
    let (root_a, root_b) = (Root::generate(), Root::generate());
    let trust = SharedTrustBundle::new(bundle(&[&root_a, &root_b]));
    let chain = issued_chain(&root_b.own_ca(), &id("cart"));
    let (older, newer) = (trust.ticket(), trust.ticket());
    // The newer request saw A removed; the older one, still in flight, was answered before.
    trust
        .apply_ca_response(newer, &pem_list(&[&root_b]), &chain)
        .unwrap();
    let update = trust
        .apply_ca_response(older, &pem_list(&[&root_a, &root_b]), &chain)
        .unwrap();
    assert_eq!(update, BundleUpdate::Superseded);
    assert_eq!(roots_of(&trust), der_set(&[&root_b]));
}

/// A CA whose signing root and published roots a test sets at each step.
struct ScriptedCa {
    step: Mutex<(Arc<CertificateAuthority>, Vec<String>)>,
}

impl ScriptedCa {
    fn new(ca: CertificateAuthority, published: Vec<String>) -> Arc<Self> {
        Arc::new(ScriptedCa {
            step: Mutex::new((Arc::new(ca), published)),
        })
    }

    fn set(&self, ca: CertificateAuthority, published: Vec<String>) {
        *self.step.lock().unwrap() = (Arc::new(ca), published);
    }
}

impl CertificateSource for ScriptedCa {
    fn sign<'a>(
        &'a self,
        identity: &'a SpiffeId,
        csr_pem: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>> {
        Box::pin(async move {
            let signed = self.sign_with_bundle(identity, csr_pem).await?;
            Ok(signed.chain_pem)
        })
    }

    fn sign_with_bundle<'a>(
        &'a self,
        identity: &'a SpiffeId,
        csr_pem: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<SignedChain, String>> + Send + 'a>> {
        let (ca, published) = self.step.lock().unwrap().clone();
        Box::pin(async move {
            let issued = ca
                .issue(csr_pem, identity, None)
                .map_err(|e| e.to_string())?;
            Ok(SignedChain {
                chain_pem: issued.chain_pem,
                trust_bundle: Some(published),
            })
        })
    }
}

fn config() -> ManagerConfig {
    ManagerConfig {
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        max_backoff_without_certificate: Duration::from_millis(200),
        first_fetch_timeout: Duration::from_secs(10),
        ..ManagerConfig::default()
    }
}

/// Each step issues one new identity; once its certificate is there, the answer's roots have
/// been judged (the manager applies them before publishing the certificate).
async fn issue(manager: &CertificateManager, service_account: &str) {
    let identity = id(service_account);
    manager.track(&identity);
    manager.certificate(&identity).await.unwrap();
}

#[tokio::test]
async fn the_manager_applies_each_answer_s_roots_through_a_whole_rotation() {
    let logs = LogCapture::install();
    let (root_a, root_b) = (Root::generate(), Root::generate());
    let trust = SharedTrustBundle::new(bundle(&[&root_a]));
    let ca = ScriptedCa::new(root_a.own_ca(), pem_list(&[&root_a, &root_b]));
    let manager = CertificateManager::with_trust_bundle(ca.clone(), config(), trust.clone());
    assert!(manager.trust_bundle().is_some());

    issue(&manager, "step-1-add-b").await;
    assert_eq!(roots_of(&trust), der_set(&[&root_a, &root_b]));
    ca.set(
        root_b.ca(&[&root_a, &root_b]),
        pem_list(&[&root_a, &root_b]),
    );
    issue(&manager, "step-2-issue-from-b").await;
    assert_eq!(roots_of(&trust), der_set(&[&root_a, &root_b]));
    ca.set(root_b.own_ca(), pem_list(&[&root_b]));
    issue(&manager, "step-3-remove-a").await;
    assert_eq!(roots_of(&trust), der_set(&[&root_b]));

    let changes = logs.matching(&["trust bundle changed", "updated from the CA"]);
    assert_eq!(changes.len(), 2, "one line per change: {changes:?}");
    let (a, b) = (
        RootSummary::of(&root_a.der()),
        RootSummary::of(&root_b.der()),
    );
    assert!(
        changes[0].contains(&b.sha256) && changes[0].contains("removed=none"),
        "{}",
        changes[0]
    );
    assert!(
        changes[1].contains("added=none") && changes[1].contains(&a.sha256),
        "{}",
        changes[1]
    );
}

#[tokio::test]
async fn the_manager_keeps_the_roots_and_logs_why_when_an_answer_is_inconsistent() {
    let logs = LogCapture::install();
    let (root_a, stranger) = (Root::generate(), Root::generate());
    let trust = SharedTrustBundle::new(bundle(&[&root_a]));
    let ca = ScriptedCa::new(root_a.own_ca(), pem_list(&[&stranger]));
    let manager = CertificateManager::with_trust_bundle(ca.clone(), config(), trust.clone());

    issue(&manager, "cart").await;
    ca.set(root_a.own_ca(), vec![]);
    issue(&manager, "frontend").await;
    assert_eq!(roots_of(&trust), der_set(&[&root_a]));

    let refused = logs.matching(&["WARN", "trust bundle from the CA not applied"]);
    assert_eq!(refused.len(), 2, "{:?}", logs.lines());
    assert!(
        refused[0].contains("identity=spiffe://cluster.local/ns/shop/sa/cart")
            && refused[0].contains("does not verify against the trust bundle"),
        "{}",
        refused[0]
    );
    assert!(refused[1].contains("no trust bundle"), "{}", refused[1]);
    assert!(logs.matching(&["trust bundle changed"]).is_empty());
    // The certificates themselves were still issued and are in service.
    assert!(manager.all_issued());
}

#[tokio::test]
async fn a_manager_without_a_shared_bundle_leaves_roots_alone() {
    let (root_a, root_b) = (Root::generate(), Root::generate());
    let trust = SharedTrustBundle::new(bundle(&[&root_a]));
    let ca = ScriptedCa::new(root_a.own_ca(), pem_list(&[&root_a, &root_b]));
    let manager = CertificateManager::new(ca, config());
    assert!(manager.trust_bundle().is_none());
    issue(&manager, "cart").await;
    assert_eq!(roots_of(&trust), der_set(&[&root_a]));
}
