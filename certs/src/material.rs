//! Certificate material as the rest of the mesh handles it: a workload's certified key and the
//! trust bundle it verifies peers against. Parsing PEM and X.509 lives here so every caller gets
//! the same errors.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::identity::{IdentityError, SpiffeId};

/// Why certificate material could not be used.
/// Why the `--ca-root` file cannot be used; names the file and what to fix.
#[derive(Debug, thiserror::Error)]
pub enum RootFileError {
    #[error("cannot read the mesh root from --ca-root {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the --ca-root file {path} is not a usable trust bundle: {source}")]
    Unusable {
        path: std::path::PathBuf,
        source: MaterialError,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum MaterialError {
    #[error("{what} contains no PEM certificate; expected one or more \"-----BEGIN CERTIFICATE-----\" blocks")]
    NoCertificate { what: String },
    #[error("{what} is not valid PEM: {reason}")]
    BadPem { what: String, reason: String },
    #[error("{what} contains no private key; expected a PKCS#8, SEC1 (EC) or PKCS#1 PEM key")]
    NoPrivateKey { what: String },
    #[error("{what} is not a parsable X.509 certificate: {reason}")]
    BadCertificate { what: String, reason: String },
    #[error("the private key cannot be used for TLS: {0}")]
    UnusableKey(String),
    #[error("certificate has {count} URI SANs; an Ambit workload certificate carries exactly one spiffe:// URI SAN")]
    UriSanCount { count: usize },
    #[error("certificate URI SAN is not an Ambit identity: {0}")]
    BadIdentity(#[from] IdentityError),
    #[error("trust bundle {what} could not be used: {reason}")]
    BadTrustAnchor { what: String, reason: String },
}

/// Parses every certificate in a PEM text. `what` names the source (a path, a Secret) for errors.
pub fn certificates_from_pem(
    pem: &[u8],
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, MaterialError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| MaterialError::BadPem {
            what: what.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(MaterialError::NoCertificate {
            what: what.to_owned(),
        });
    }
    for cert in &certs {
        parse_x509(cert, what)?;
    }
    Ok(certs)
}

/// Parses the first private key in a PEM text.
pub fn private_key_from_pem(
    pem: &[u8],
    what: &str,
) -> Result<PrivateKeyDer<'static>, MaterialError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => MaterialError::NoPrivateKey {
            what: what.to_owned(),
        },
        other => MaterialError::BadPem {
            what: what.to_owned(),
            reason: other.to_string(),
        },
    })
}

pub(crate) fn parse_x509<'a>(
    cert: &'a CertificateDer<'_>,
    what: &str,
) -> Result<X509Certificate<'a>, MaterialError> {
    X509Certificate::from_der(cert.as_ref())
        .map(|(_, parsed)| parsed)
        .map_err(|e| MaterialError::BadCertificate {
            what: what.to_owned(),
            reason: e.to_string(),
        })
}

/// The URI SANs of a certificate, in order.
pub(crate) fn uri_sans(cert: &X509Certificate<'_>) -> Vec<String> {
    match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::URI(uri) => Some((*uri).to_owned()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Reads the single SPIFFE identity out of an end-entity certificate (DER).
pub fn identity_of(cert: &CertificateDer<'_>) -> Result<SpiffeId, MaterialError> {
    let parsed = parse_x509(cert, "peer certificate")?;
    identity_of_parsed(&parsed)
}

pub(crate) fn identity_of_parsed(cert: &X509Certificate<'_>) -> Result<SpiffeId, MaterialError> {
    let uris = uri_sans(cert);
    if uris.len() != 1 {
        return Err(MaterialError::UriSanCount { count: uris.len() });
    }
    Ok(uris[0].parse()?)
}

fn to_system_time(time: x509_parser::time::ASN1Time) -> SystemTime {
    let secs = time.timestamp();
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// Validity window of a certificate.
pub fn validity_of(cert: &CertificateDer<'_>) -> Result<(SystemTime, SystemTime), MaterialError> {
    let parsed = parse_x509(cert, "certificate")?;
    let validity = parsed.validity();
    Ok((
        to_system_time(validity.not_before),
        to_system_time(validity.not_after),
    ))
}

/// A workload's certificate chain and key, ready for rustls, with the facts the mesh reports.
#[derive(Clone)]
pub struct WorkloadCertificate {
    identity: SpiffeId,
    certified_key: Arc<CertifiedKey>,
    not_before: SystemTime,
    not_after: SystemTime,
    chain_pem: String,
}

impl std::fmt::Debug for WorkloadCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadCertificate")
            .field("identity", &self.identity.to_string())
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl WorkloadCertificate {
    /// Assembles a workload certificate from a PEM chain (leaf first) and its private key, checking
    /// that the leaf carries exactly one SPIFFE identity and that the key belongs to it.
    pub fn from_pem(chain_pem: &str, key: PrivateKeyDer<'static>) -> Result<Self, MaterialError> {
        let chain = certificates_from_pem(chain_pem.as_bytes(), "certificate chain")?;
        let leaf = parse_x509(&chain[0], "leaf certificate")?;
        let identity = identity_of_parsed(&leaf)?;
        let validity = leaf.validity();
        let (not_before, not_after) = (
            to_system_time(validity.not_before),
            to_system_time(validity.not_after),
        );
        let provider = crate::crypto::crypto_provider();
        let certified_key = CertifiedKey::from_der(chain, key, &provider)
            .map_err(|e| MaterialError::UnusableKey(e.to_string()))?;
        Ok(WorkloadCertificate {
            identity,
            certified_key: Arc::new(certified_key),
            not_before,
            not_after,
            chain_pem: chain_pem.to_owned(),
        })
    }

    pub fn identity(&self) -> &SpiffeId {
        &self.identity
    }

    pub fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.certified_key
    }

    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The chain as PEM, leaf first, as written to disk or shown by the admin endpoint.
    pub fn chain_pem(&self) -> &str {
        &self.chain_pem
    }

    /// Time left until expiry; zero once expired.
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.not_after.duration_since(now).unwrap_or(Duration::ZERO)
    }
}

/// The roots a node trusts. Several roots may be present at once, which is how a root is rotated:
/// add the new root everywhere, switch the CA, then remove the old root.
#[derive(Clone)]
pub struct TrustBundle {
    trust_domain: String,
    roots: Arc<RootCertStore>,
    certificates: Vec<CertificateDer<'static>>,
}

impl std::fmt::Debug for TrustBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustBundle")
            .field("trust_domain", &self.trust_domain)
            .field("roots", &self.certificates.len())
            .finish()
    }
}

impl TrustBundle {
    pub fn new(
        trust_domain: &str,
        certificates: Vec<CertificateDer<'static>>,
    ) -> Result<Self, MaterialError> {
        crate::identity::validate_trust_domain(trust_domain)?;
        if certificates.is_empty() {
            return Err(MaterialError::NoCertificate {
                what: "trust bundle".to_owned(),
            });
        }
        let mut roots = RootCertStore::empty();
        for (index, cert) in certificates.iter().enumerate() {
            roots
                .add(cert.clone())
                .map_err(|e| MaterialError::BadTrustAnchor {
                    what: format!("certificate #{}", index + 1),
                    reason: e.to_string(),
                })?;
        }
        Ok(TrustBundle {
            trust_domain: trust_domain.to_owned(),
            roots: Arc::new(roots),
            certificates,
        })
    }

    /// Reads a bundle from PEM (one or more root certificates).
    pub fn from_pem(trust_domain: &str, pem: &[u8], what: &str) -> Result<Self, MaterialError> {
        Self::new(trust_domain, certificates_from_pem(pem, what)?)
    }

    /// Reads the mesh root a binary is given (`--ca-root PATH`).
    pub fn from_root_file(
        trust_domain: &str,
        path: &std::path::Path,
    ) -> Result<Self, RootFileError> {
        let pem = std::fs::read(path).map_err(|source| RootFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_pem(trust_domain, &pem, &path.display().to_string()).map_err(|source| {
            RootFileError::Unusable {
                path: path.to_owned(),
                source,
            }
        })
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn roots(&self) -> &Arc<RootCertStore> {
        &self.roots
    }

    pub fn certificates(&self) -> &[CertificateDer<'static>] {
        &self.certificates
    }

    pub fn to_pem(&self) -> String {
        self.certificates.iter().map(|c| der_to_pem(c)).collect()
    }
}

/// Encodes a DER certificate as a PEM block.
pub fn der_to_pem(cert: &CertificateDer<'_>) -> String {
    pem_block("CERTIFICATE", cert.as_ref())
}

pub(crate) fn pem_block(label: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(label, der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// Checks that a chain (leaf first) verifies against the bundle, as a TLS client would.
pub fn verify_chain(
    chain: &[CertificateDer<'static>],
    bundle: &TrustBundle,
) -> Result<(), rustls::Error> {
    let leaf = chain
        .first()
        .ok_or(rustls::Error::NoCertificatesPresented)?;
    let parsed = rustls::server::ParsedCertificate::try_from(leaf)?;
    rustls::client::verify_server_cert_signed_by_trust_anchor(
        &parsed,
        bundle.roots(),
        &chain[1..],
        rustls::pki_types::UnixTime::now(),
        crate::crypto::signature_algorithms().all,
    )
}
