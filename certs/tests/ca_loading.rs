//! Loading a CA the way operators bring one: a self-made root, or an intermediate issued by an
//! outside root (cert-manager, a corporate PKI), and the mistakes they make doing so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use certs::ca::CaError;
use certs::{CertificateAuthority, KeyAndCsr, SpiffeId};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

struct OutsidePki {
    root_pem: String,
    intermediate_pem: String,
    intermediate_key_pem: String,
}

/// An outside root that issues an intermediate for the mesh, as cert-manager would.
fn outside_pki(intermediate_is_ca: bool) -> OutsidePki {
    let root_key = KeyPair::generate().unwrap();
    let mut root_params = CertificateParams::default();
    root_params
        .distinguished_name
        .push(DnType::CommonName, "Corp Root");
    root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let root = root_params.self_signed(&root_key).unwrap();
    let root_issuer = Issuer::new(root_params, root_key);

    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "Ambit intermediate");
    if intermediate_is_ca {
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    } else {
        params.is_ca = IsCa::ExplicitNoCa;
    }
    let intermediate = params.signed_by(&key, &root_issuer).unwrap();
    OutsidePki {
        root_pem: root.pem(),
        intermediate_pem: intermediate.pem(),
        intermediate_key_pem: key.serialize_pem(),
    }
}

fn issue(ca: &CertificateAuthority) -> certs::IssuedCertificate {
    let id = SpiffeId::new("cluster.local", "shop", "cart").unwrap();
    let request = KeyAndCsr::generate(&id).unwrap();
    ca.issue(&request.csr_pem, &id, Some(Duration::from_secs(600)))
        .unwrap()
}

#[test]
fn an_intermediate_from_an_outside_root_issues_chains_that_verify_against_that_root() {
    let pki = outside_pki(true);
    let ca = CertificateAuthority::from_pem(
        "cluster.local",
        &pki.intermediate_pem,
        &pki.intermediate_key_pem,
        Some(&pki.root_pem),
    )
    .unwrap();
    let issued = issue(&ca);
    let chain =
        certs::material::certificates_from_pem(issued.chain_pem.as_bytes(), "chain").unwrap();
    assert_eq!(chain.len(), 2, "leaf and intermediate travel together");
    certs::tls::verify_chain(&chain, ca.trust_bundle()).unwrap();

    // openssl agrees: the leaf verifies against the outside root with the intermediate untrusted.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("root.pem"), &pki.root_pem).unwrap();
    std::fs::write(dir.path().join("chain.pem"), &issued.chain_pem).unwrap();
    std::fs::write(
        dir.path().join("leaf.pem"),
        certs::material::der_to_pem(&chain[0]),
    )
    .unwrap();
    let verify = std::process::Command::new("openssl")
        .current_dir(dir.path())
        .args([
            "verify",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "chain.pem",
            "leaf.pem",
        ])
        .output()
        .expect("openssl is installed by scripts/setup.sh");
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}

#[test]
fn an_intermediate_without_its_root_is_refused() {
    let pki = outside_pki(true);
    let error = CertificateAuthority::from_pem(
        "cluster.local",
        &pki.intermediate_pem,
        &pki.intermediate_key_pem,
        None,
    )
    .unwrap_err();
    assert!(matches!(error, CaError::MissingRoot), "{error}");
    assert!(error.to_string().contains("ca.crt"));
}

#[test]
fn a_root_that_did_not_issue_the_intermediate_is_refused() {
    let pki = outside_pki(true);
    let other = outside_pki(true);
    let error = CertificateAuthority::from_pem(
        "cluster.local",
        &pki.intermediate_pem,
        &pki.intermediate_key_pem,
        Some(&other.root_pem),
    )
    .unwrap_err();
    assert!(matches!(error, CaError::ChainNotTrusted(_)), "{error}");
}

#[test]
fn a_key_from_another_certificate_is_refused() {
    let pki = outside_pki(true);
    let other = outside_pki(true);
    let error = CertificateAuthority::from_pem(
        "cluster.local",
        &pki.intermediate_pem,
        &other.intermediate_key_pem,
        Some(&pki.root_pem),
    )
    .unwrap_err();
    assert!(matches!(error, CaError::KeyMismatch), "{error}");
}

#[test]
fn a_certificate_that_is_not_a_ca_is_refused() {
    let pki = outside_pki(false);
    let error = CertificateAuthority::from_pem(
        "cluster.local",
        &pki.intermediate_pem,
        &pki.intermediate_key_pem,
        Some(&pki.root_pem),
    )
    .unwrap_err();
    assert!(matches!(error, CaError::NotACa), "{error}");
}

#[test]
fn garbage_pem_is_refused_with_the_file_named() {
    let error =
        CertificateAuthority::from_pem("cluster.local", "hello", "world", None).unwrap_err();
    assert!(error.to_string().contains("tls.crt"), "{error}");
}

#[test]
fn issued_leaves_follow_the_identity_contract() {
    let root =
        CertificateAuthority::generate_root("cluster.local", Duration::from_secs(3600)).unwrap();
    let ca = CertificateAuthority::from_pem("cluster.local", &root.cert_pem, &root.key_pem, None)
        .unwrap();
    let first = issue(&ca);
    let second = issue(&ca);
    assert_ne!(first.serial_hex, second.serial_hex, "serials are random");
    assert!(first.serial_hex.len() >= 32, "128-bit serials");
    let der = certs::material::certificates_from_pem(first.chain_pem.as_bytes(), "leaf").unwrap();
    let (_, leaf) = x509_parser::parse_x509_certificate(der[0].as_ref()).unwrap();
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    assert!(!leaf.is_ca());
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    assert!(san.critical, "an empty subject requires a critical SAN");
    assert_eq!(san.value.general_names.len(), 1);
    assert_eq!(
        leaf.public_key()
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .map(|o| o.to_id_string()),
        Some("1.2.840.10045.3.1.7".to_owned()),
        "ECDSA P-256"
    );
    // An identity outside the CA's trust domain is never issued.
    let foreign = SpiffeId::new("other.local", "shop", "cart").unwrap();
    let request = KeyAndCsr::generate(&foreign).unwrap();
    let error = ca.issue(&request.csr_pem, &foreign, None).unwrap_err();
    assert!(matches!(error, CaError::WrongTrustDomain { .. }), "{error}");
}

#[test]
fn a_csr_with_a_non_p256_key_is_refused() {
    let root =
        CertificateAuthority::generate_root("cluster.local", Duration::from_secs(3600)).unwrap();
    let ca = CertificateAuthority::from_pem("cluster.local", &root.cert_pem, &root.key_pem, None)
        .unwrap();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let id = SpiffeId::new("cluster.local", "shop", "cart").unwrap();
    let error = ca.issue(&csr, &id, None).unwrap_err();
    assert!(matches!(error, CaError::UnsupportedKeyType(_)), "{error}");
}
