//! A throw-away PKI for tests of this crate and of the crates built on it (feature `test-util`).

use std::time::{Duration, SystemTime};

use crate::ca::{CaError, CertificateAuthority};
use crate::csr::KeyAndCsr;
use crate::identity::SpiffeId;
use crate::material::{TrustBundle, WorkloadCertificate};
use crate::tls::CurrentCertificate;

/// An in-memory CA for one trust domain.
pub struct TestPki {
    pub ca: CertificateAuthority,
}

impl TestPki {
    pub fn new(trust_domain: &str) -> Result<Self, CaError> {
        let root = CertificateAuthority::generate_root(trust_domain, Duration::from_secs(86400))?;
        let ca = CertificateAuthority::from_pem(trust_domain, &root.cert_pem, &root.key_pem, None)?;
        Ok(TestPki { ca })
    }

    pub fn bundle(&self) -> &TrustBundle {
        self.ca.trust_bundle()
    }

    /// `spiffe://<td>/ns/<ns>/sa/<sa>` in this PKI's trust domain.
    pub fn id(&self, namespace: &str, service_account: &str) -> SpiffeId {
        match SpiffeId::new(self.ca.trust_domain(), namespace, service_account) {
            Ok(id) => id,
            Err(e) => panic!("test identity is invalid: {e}"),
        }
    }

    /// A valid certificate for `identity` with the default lifetime.
    pub fn certificate(&self, identity: &SpiffeId) -> Result<CurrentCertificate, CaError> {
        let now = SystemTime::now();
        self.certificate_valid(
            identity,
            now - Duration::from_secs(60),
            now + Duration::from_secs(3600),
        )
    }

    /// A certificate with an explicit validity window (expired or not yet valid ones included).
    pub fn certificate_valid(
        &self,
        identity: &SpiffeId,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<CurrentCertificate, CaError> {
        Ok(CurrentCertificate::new(
            self.workload_certificate(identity, not_before, not_after)?,
        ))
    }

    pub fn workload_certificate(
        &self,
        identity: &SpiffeId,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<WorkloadCertificate, CaError> {
        let request = KeyAndCsr::generate(identity).map_err(|e| CaError::Signing(e.to_string()))?;
        let csr = rcgen::CertificateSigningRequestParams::from_pem(&request.csr_pem)
            .map_err(|e| CaError::MalformedCsr(e.to_string()))?;
        let issued =
            self.ca
                .issue_with_validity(&csr.public_key, identity, not_before, not_after)?;
        Ok(WorkloadCertificate::from_pem(
            &issued.chain_pem,
            request.private_key(),
        )?)
    }
}
