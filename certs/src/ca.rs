//! The mesh certificate authority: a root (or an intermediate issued by an outside root) that
//! signs workload certificates for identities a caller has been *authorised* to hold.
//!
//! Issuance never trusts the CSR for anything but its public key and proof of possession: the
//! identity, lifetime, key usages and serial number are all decided here.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
    SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::CertificateDer;
use x509_parser::prelude::X509Certificate;

use crate::identity::SpiffeId;
use crate::material::{certificates_from_pem, der_to_pem, parse_x509, MaterialError, TrustBundle};

/// Default lifetime of workload certificates, as in Istio.
pub const DEFAULT_WORKLOAD_TTL: Duration = Duration::from_secs(24 * 3600);
/// Upper bound on what a caller may ask for; longer-lived leaves defeat rotation.
pub const MAX_WORKLOAD_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
/// Default lifetime of a root created by `ambit-ca init`.
pub const DEFAULT_ROOT_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Certificates are back-dated a little so that small clock differences between nodes do not
/// make a fresh certificate "not yet valid" on the peer.
const MAX_BACKDATE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error(transparent)]
    Material(#[from] MaterialError),
    #[error("the CA private key is unusable: {0}; provide an unencrypted PKCS#8 or SEC1 PEM key (ECDSA P-256 recommended)")]
    BadKey(String),
    #[error("the CA private key does not belong to the CA certificate (public keys differ); check that tls.key and tls.crt come from the same Secret")]
    KeyMismatch,
    #[error("the CA certificate is not a CA (basicConstraints CA:TRUE is missing); a mesh CA needs a certificate issued for signing")]
    NotACa,
    #[error("the CA certificate may not sign certificates (keyUsage lacks keyCertSign)")]
    CannotSign,
    #[error("the CA certificate expired or is not yet valid (valid {not_before} to {not_after}); issue a new CA certificate")]
    OutsideValidity {
        not_before: String,
        not_after: String,
    },
    #[error("the CA certificate is an intermediate but no root was provided; add the issuing root as ca.crt")]
    MissingRoot,
    #[error("the CA chain does not lead to any root in the trust bundle: {0}; check that ca.crt holds the root that issued tls.crt")]
    ChainNotTrusted(String),
    #[error("the certificate signing request is malformed: {0}")]
    MalformedCsr(String),
    #[error("the certificate signing request's signature does not verify; the requester does not hold the key it asks a certificate for")]
    BadCsrSignature,
    #[error("the certificate signing request uses an unsupported key ({0}); workload keys must be ECDSA P-256")]
    UnsupportedKeyType(String),
    #[error("the certificate signing request names {requested:?} but the caller is authorised for {authorised}; request the identity you were granted")]
    CsrIdentityMismatch {
        requested: String,
        authorised: String,
    },
    #[error("the identity's trust domain {got:?} is not this CA's trust domain {expected:?}")]
    WrongTrustDomain { got: String, expected: String },
    #[error("signing failed: {0}")]
    Signing(String),
}

/// A certificate the CA issued, as PEM.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    /// Leaf first, then any intermediates up to (not including) the root.
    pub chain_pem: String,
    pub serial_hex: String,
    pub not_after: SystemTime,
}

/// A freshly generated root, as PEM text, ready to be written out.
pub struct GeneratedRoot {
    pub cert_pem: String,
    pub key_pem: String,
}

pub struct CertificateAuthority {
    trust_domain: String,
    issuer: Issuer<'static, KeyPair>,
    /// Appended to every leaf: the CA certificate and its parents when the CA is an intermediate.
    intermediates: Vec<CertificateDer<'static>>,
    bundle: TrustBundle,
    not_after: SystemTime,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.trust_domain)
            .field("intermediates", &self.intermediates.len())
            .field("bundle", &self.bundle)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Creates a new self-signed root key and certificate for a trust domain.
    pub fn generate_root(trust_domain: &str, lifetime: Duration) -> Result<GeneratedRoot, CaError> {
        crate::identity::validate_trust_domain(trust_domain).map_err(MaterialError::from)?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| CaError::Signing(e.to_string()))?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "Ambit");
        name.push(
            DnType::CommonName,
            format!("Ambit mesh root CA {trust_domain}"),
        );
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial());
        let now = SystemTime::now();
        params.not_before = (now - MAX_BACKDATE).into();
        params.not_after = (now + lifetime).into();
        let cert = params
            .self_signed(&key)
            .map_err(|e| CaError::Signing(e.to_string()))?;
        Ok(GeneratedRoot {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Loads a CA from PEM laid out like a Kubernetes TLS Secret: `tls.crt` (the signing
    /// certificate, optionally followed by its parents), `tls.key`, and optional `ca.crt` (the
    /// root or roots; required when the signing certificate is an intermediate).
    pub fn from_pem(
        trust_domain: &str,
        tls_crt: &str,
        tls_key: &str,
        ca_crt: Option<&str>,
    ) -> Result<Self, CaError> {
        let chain = certificates_from_pem(tls_crt.as_bytes(), "tls.crt")?;
        let key = KeyPair::from_pem(tls_key).map_err(|e| CaError::BadKey(e.to_string()))?;
        let signing = parse_x509(&chain[0], "tls.crt")?;
        check_signing_certificate(&signing, &key)?;
        let self_signed = is_self_signed(&signing);
        let not_after = crate::material::validity_of(&chain[0])?.1;

        let bundle = match ca_crt {
            Some(pem) => TrustBundle::from_pem(trust_domain, pem.as_bytes(), "ca.crt")?,
            None if self_signed => TrustBundle::new(trust_domain, vec![chain[0].clone()])?,
            None => return Err(CaError::MissingRoot),
        };
        let roots = bundle.certificates();
        let intermediates = chain
            .iter()
            .filter(|cert| !roots.contains(cert))
            .cloned()
            .collect();
        let issuer =
            Issuer::from_ca_cert_der(&chain[0], key).map_err(|e| CaError::BadKey(e.to_string()))?;
        let ca = CertificateAuthority {
            trust_domain: trust_domain.to_owned(),
            issuer,
            intermediates,
            bundle,
            not_after,
        };
        ca.check_chain_reaches_bundle()?;
        Ok(ca)
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The roots peers must trust to accept what this CA issues.
    pub fn trust_bundle(&self) -> &TrustBundle {
        &self.bundle
    }

    /// Issues a workload certificate for `identity` to the holder of the key in `csr_pem`.
    ///
    /// The caller must already have decided that the requester may hold `identity`; the CSR is
    /// used only for its public key (after its signature proves possession of the private key).
    pub fn issue(
        &self,
        csr_pem: &str,
        identity: &SpiffeId,
        ttl: Option<Duration>,
    ) -> Result<IssuedCertificate, CaError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(csr_error)?;
        if csr.public_key.der_bytes().len() != 65
            || csr.public_key.algorithm() != &PKCS_ECDSA_P256_SHA256
        {
            return Err(CaError::UnsupportedKeyType(format!(
                "{:?}",
                csr.public_key.algorithm()
            )));
        }
        for san in &csr.params.subject_alt_names {
            if let SanType::URI(uri) = san {
                if uri.as_str() != identity.to_string() {
                    return Err(CaError::CsrIdentityMismatch {
                        requested: uri.as_str().to_owned(),
                        authorised: identity.to_string(),
                    });
                }
            }
        }
        let now = SystemTime::now();
        let ttl = ttl
            .filter(|ttl| !ttl.is_zero())
            .unwrap_or(DEFAULT_WORKLOAD_TTL)
            .min(MAX_WORKLOAD_TTL);
        let backdate = MAX_BACKDATE.min(ttl / 10);
        // A leaf never outlives the CA that signed it.
        let not_after = (now + ttl).min(self.not_after);
        self.issue_with_validity(&csr.public_key, identity, now - backdate, not_after)
    }

    /// Issues with an explicit validity window. Exposed for tests and tooling that need expired
    /// or not-yet-valid certificates; production issuance goes through [`Self::issue`].
    pub fn issue_with_validity(
        &self,
        public_key: &impl PublicKeyData,
        identity: &SpiffeId,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<IssuedCertificate, CaError> {
        if identity.trust_domain() != self.trust_domain {
            return Err(CaError::WrongTrustDomain {
                got: identity.trust_domain().to_owned(),
                expected: self.trust_domain.clone(),
            });
        }
        let mut params = CertificateParams::default();
        // Workload certificates have an empty subject; the identity is the URI SAN, which rcgen
        // then marks critical as RFC 5280 requires.
        params.distinguished_name = DistinguishedName::new();
        let uri = identity
            .to_string()
            .try_into()
            .map_err(|e: rcgen::Error| CaError::Signing(e.to_string()))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let serial = random_serial();
        let serial_hex = serial
            .to_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        params.serial_number = Some(serial);
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        let leaf = params
            .signed_by(public_key, &self.issuer)
            .map_err(|e| CaError::Signing(e.to_string()))?;
        let mut chain_pem = leaf.pem();
        for intermediate in &self.intermediates {
            chain_pem.push_str(&der_to_pem(intermediate));
        }
        Ok(IssuedCertificate {
            chain_pem,
            serial_hex,
            not_after,
        })
    }

    /// Issues a certificate for a key generated here, e.g. the CA's own serving certificate.
    pub fn issue_for_new_key(
        &self,
        identity: &SpiffeId,
        ttl: Duration,
    ) -> Result<(IssuedCertificate, KeyPair), CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| CaError::Signing(e.to_string()))?;
        let now = SystemTime::now();
        let issued = self.issue_with_validity(
            &key,
            identity,
            now - MAX_BACKDATE.min(ttl / 10),
            (now + ttl).min(self.not_after),
        )?;
        Ok((issued, key))
    }

    /// Proves at load time that what this CA signs will verify against its own bundle, so a
    /// mismatched `ca.crt` is reported at start-up rather than as failing handshakes later.
    fn check_chain_reaches_bundle(&self) -> Result<(), CaError> {
        let probe = SpiffeId::new(&self.trust_domain, "ambit-system", "ca-self-check")
            .map_err(MaterialError::from)?;
        let (issued, _key) = self.issue_for_new_key(&probe, Duration::from_secs(300))?;
        let chain = certificates_from_pem(issued.chain_pem.as_bytes(), "self-check chain")?;
        crate::material::verify_chain(&chain, &self.bundle)
            .map_err(|e| CaError::ChainNotTrusted(e.to_string()))
    }
}

fn csr_error(error: rcgen::Error) -> CaError {
    match error {
        rcgen::Error::InvalidCertificationRequestSignature => CaError::BadCsrSignature,
        rcgen::Error::UnsupportedExtension => CaError::MalformedCsr(
            "it carries an extension the CA does not accept; send only a URI SAN".to_owned(),
        ),
        rcgen::Error::UnsupportedSignatureAlgorithm => {
            CaError::UnsupportedKeyType("unsupported signature algorithm".to_owned())
        }
        other => CaError::MalformedCsr(format!("{other}; send a PEM \"CERTIFICATE REQUEST\"")),
    }
}

fn check_signing_certificate(cert: &X509Certificate<'_>, key: &KeyPair) -> Result<(), CaError> {
    if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(CaError::KeyMismatch);
    }
    match cert.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => {}
        _ => return Err(CaError::NotACa),
    }
    if let Ok(Some(usage)) = cert.key_usage() {
        if !usage.value.key_cert_sign() {
            return Err(CaError::CannotSign);
        }
    }
    if !cert.validity().is_valid() {
        return Err(CaError::OutsideValidity {
            not_before: cert.validity().not_before.to_string(),
            not_after: cert.validity().not_after.to_string(),
        });
    }
    Ok(())
}

fn is_self_signed(cert: &X509Certificate<'_>) -> bool {
    cert.subject() == cert.issuer() && cert.verify_signature(None).is_ok()
}

/// 128 random bits, positive as DER INTEGERs must be for serials (RFC 5280 §4.1.2.2).
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}
