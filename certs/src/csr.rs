//! Key generation and certificate signing requests on the requester's side. The private key is
//! created where it is used and never sent anywhere.

use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType, PKCS_ECDSA_P256_SHA256};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::identity::SpiffeId;

#[derive(Debug, thiserror::Error)]
#[error("cannot create a certificate signing request for {identity}: {reason}")]
pub struct CsrError {
    identity: String,
    reason: String,
}

/// A new ECDSA P-256 key and a CSR (PEM) for one identity.
pub struct KeyAndCsr {
    pub csr_pem: String,
    key: KeyPair,
}

impl KeyAndCsr {
    pub fn generate(identity: &SpiffeId) -> Result<Self, CsrError> {
        let fail = |e: rcgen::Error| CsrError {
            identity: identity.to_string(),
            reason: e.to_string(),
        };
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(fail)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names =
            vec![SanType::URI(identity.to_string().try_into().map_err(fail)?)];
        let csr = params.serialize_request(&key).map_err(fail)?;
        let csr_pem = csr.pem().map_err(fail)?;
        Ok(KeyAndCsr { csr_pem, key })
    }

    /// The private key in the form rustls loads.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }

    pub fn private_key_pem(&self) -> String {
        self.key.serialize_pem()
    }
}
