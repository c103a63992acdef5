//! The CA side shared by the `ca_request` and `csr` targets: one in-memory CA, and the check
//! that what it issued is what the mesh accepts.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use certs::ca::{CaError, CertificateAuthority, MAX_WORKLOAD_TTL};
use certs::material::{certificates_from_pem, identity_of, validity_of};
use certs::{IssuedCertificate, SpiffeId};
use x509_parser::prelude::FromDer;

pub const TRUST_DOMAIN: &str = "cluster.local";

pub fn ca() -> &'static CertificateAuthority {
    static CA: OnceLock<CertificateAuthority> = OnceLock::new();
    CA.get_or_init(|| {
        let root = CertificateAuthority::generate_root(TRUST_DOMAIN, Duration::from_secs(86_400))
            .expect("root");
        CertificateAuthority::from_pem(TRUST_DOMAIN, &root.cert_pem, &root.key_pem, None)
            .expect("CA")
    })
}

/// Asserts that `issued` is a chain the mesh accepts, for exactly `identity`, for the key the
/// CSR (`csr_der`) carries, and no longer than the CA allows.
pub fn check_issued(issued: &IssuedCertificate, identity: &SpiffeId, csr_der: Option<&[u8]>) {
    let chain = certificates_from_pem(issued.chain_pem.as_bytes(), "issued chain")
        .expect("the CA issued unparsable PEM");
    certs::tls::verify_chain(&chain, ca().trust_bundle())
        .expect("the CA issued a chain its own bundle rejects");
    let leaf = &chain[0];
    assert_eq!(
        identity_of(leaf).as_ref().ok(),
        Some(identity),
        "issued for another identity"
    );
    let (_not_before, not_after) = validity_of(leaf).expect("validity");
    assert!(not_after <= SystemTime::now() + MAX_WORKLOAD_TTL + Duration::from_secs(1));
    if let Some(csr_der) = csr_der {
        let (_, csr) =
            x509_parser::certification_request::X509CertificationRequest::from_der(csr_der)
                .expect("rcgen accepted a CSR x509-parser cannot read");
        let (_, cert) = x509_parser::parse_x509_certificate(leaf).expect("leaf");
        assert_eq!(
            cert.public_key().raw,
            csr.certification_request_info.subject_pki.raw,
            "the leaf certifies a key other than the CSR's"
        );
    }
}

/// A refusal of caller input must be a 4xx reason (the CA's server maps these to 400), never an
/// internal failure.
pub fn assert_caller_error(error: &CaError) {
    assert!(
        matches!(
            error,
            CaError::MalformedCsr(_)
                | CaError::BadCsrSignature
                | CaError::UnsupportedKeyType(_)
                | CaError::CsrIdentityMismatch { .. }
                | CaError::WrongTrustDomain { .. }
        ),
        "bad input reported as an internal error: {error:?}"
    );
    assert!(!error.to_string().is_empty());
}

/// The DER inside the first `CERTIFICATE REQUEST` PEM block, if there is one.
pub fn csr_der(pem_text: &str) -> Option<Vec<u8>> {
    let block = pem::parse(pem_text).ok()?;
    (block.tag() == "CERTIFICATE REQUEST").then(|| block.into_contents())
}
