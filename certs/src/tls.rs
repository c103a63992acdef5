//! rustls configurations for the mesh (DESIGN §3, HBONE): TLS 1.3 only, AES-GCM, ALPN `h2`.
//!
//! Chain validation is webpki's; the only policy written here is which SPIFFE identity a peer
//! must present: a server accepts any client of its own trust domain, a client accepts only the
//! identities it expects the destination to have. Certificates are looked up per handshake from
//! a [`CurrentCertificate`], and roots from a [`SharedTrustBundle`], so a renewal or a root
//! rotation applies to new connections without touching live ones.
//!
//! Every function taking `trust: impl Into<SharedTrustBundle>` accepts a `&TrustBundle` (fixed
//! roots, as before) or a `&SharedTrustBundle` (roots that follow the node's bundle).

use std::sync::{Arc, RwLock};

use rustls::client::{ResolvesClientCert, Resumption};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, NoClientAuth, NoServerSessionStorage, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, ClientConfig, OtherError, ServerConfig, SignatureScheme};

use crate::identity::SpiffeId;
use crate::material::{identity_of, MaterialError, TrustBundle, WorkloadCertificate};
use crate::trust::SharedTrustBundle;

pub use crate::crypto::crypto_provider;
use crate::crypto::signature_algorithms;
pub use crate::material::verify_chain;

mod verifiers;
use verifiers::{SpiffeClientVerifier, SpiffeServerVerifier};

/// The ALPN protocol HBONE speaks.
pub const ALPN_H2: &[u8] = b"h2";

#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("cannot build the TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("cannot build the client-certificate verifier from the trust bundle: {0}")]
    Verifier(String),
}

/// Why a peer's certificate was refused by Ambit's identity policy (after webpki accepted the
/// chain). Carried inside `rustls::Error` and recovered by [`HandshakeFailure::classify`].
#[derive(Debug, thiserror::Error)]
pub enum PeerIdentityError {
    #[error("peer presented identity {got} but {expected} was expected; the destination runs as another service account, or something is intercepting traffic")]
    UnexpectedIdentity { got: String, expected: String },
    #[error("peer identity {got} is in trust domain {got_domain:?} but this mesh is {expected:?}; peers of other trust domains are refused")]
    WrongTrustDomain {
        got: String,
        got_domain: String,
        expected: String,
    },
    #[error("peer certificate carries no usable SPIFFE identity: {0}")]
    NoIdentity(#[from] MaterialError),
}

fn identity_rejection(error: PeerIdentityError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(error))))
}

/// The certificate a TLS config presents right now. Cheap to clone; all clones see a replacement.
#[derive(Clone, Debug)]
pub struct CurrentCertificate(Arc<RwLock<Arc<WorkloadCertificate>>>);

impl CurrentCertificate {
    pub fn new(certificate: WorkloadCertificate) -> Self {
        CurrentCertificate(Arc::new(RwLock::new(Arc::new(certificate))))
    }

    pub fn get(&self) -> Arc<WorkloadCertificate> {
        // A poisoned lock only means a writer panicked mid-assignment of an Arc, which cannot
        // leave a torn value; keep serving.
        match self.0.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn replace(&self, certificate: WorkloadCertificate) {
        let certificate = Arc::new(certificate);
        match self.0.write() {
            Ok(mut guard) => *guard = certificate,
            Err(poisoned) => *poisoned.into_inner() = certificate,
        }
    }

    fn certified_key(&self) -> Arc<CertifiedKey> {
        self.get().certified_key().clone()
    }
}

impl ResolvesServerCert for CurrentCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.certified_key())
    }
}

impl ResolvesClientCert for CurrentCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.certified_key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Server side of mTLS: requires a client certificate that chains to the roots in force at the
/// handshake and names an identity in the bundle's trust domain.
pub fn server_config(
    certificate: CurrentCertificate,
    trust: impl Into<SharedTrustBundle>,
) -> Result<ServerConfig, TlsConfigError> {
    let verifier = SpiffeClientVerifier::new(trust.into())?;
    build_server(certificate, Arc::new(verifier))
}

/// Server side without client authentication, for the CA's API: callers have no certificate
/// yet and authenticate with a token instead.
pub fn server_config_without_client_auth(
    certificate: CurrentCertificate,
) -> Result<ServerConfig, TlsConfigError> {
    build_server(certificate, Arc::new(NoClientAuth))
}

fn build_server(
    certificate: CurrentCertificate,
    client_verifier: Arc<dyn ClientCertVerifier>,
) -> Result<ServerConfig, TlsConfigError> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(crypto_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(client_verifier)
        .with_cert_resolver(Arc::new(certificate));
    finish_server(&mut config);
    Ok(config)
}

fn finish_server(config: &mut ServerConfig) {
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    // No resumption: every connection proves its identity with a full handshake, so a renewed
    // or revoked certificate takes effect on the next connection.
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
}

/// Client side of mTLS: presents `certificate` and accepts the server only if it chains to the
/// roots in force at the handshake and its URI SAN is one of `expected`. No SNI is sent.
pub fn client_config(
    certificate: CurrentCertificate,
    trust: impl Into<SharedTrustBundle>,
    expected: Vec<SpiffeId>,
) -> Result<ClientConfig, TlsConfigError> {
    let verifier = SpiffeServerVerifier::new(trust.into(), None, expected);
    let mut config = client_builder(verifier)?.with_client_cert_resolver(Arc::new(certificate));
    finish_client(&mut config);
    Ok(config)
}

/// Client side without a certificate, used to reach the CA before the node has any.
pub fn client_config_without_certificate(
    trust: impl Into<SharedTrustBundle>,
    expected: Vec<SpiffeId>,
) -> Result<ClientConfig, TlsConfigError> {
    let verifier = SpiffeServerVerifier::new(trust.into(), None, expected);
    let mut config = client_builder(verifier)?.with_no_client_auth();
    finish_client(&mut config);
    Ok(config)
}

/// The node agent's client for the CA (no certificate): the CA is accepted if it chains to the
/// roots in force now *or* to `configured`, the roots the node started with (`--ca-root`).
///
/// Why both: after a rotation the CA serves with a certificate from the new root, which only
/// the shared bundle knows (the file read at start-up may predate it); and if a CA answer ever
/// installed roots that do not cover the CA's serving certificate, the configured roots still
/// let the node reach its CA and be corrected, instead of locking it out until a restart. The
/// cost: a root removed from the mesh stays trusted *for the CA's identity only* until
/// `--ca-root` is updated and the node restarted; peers never get this fallback.
pub fn ca_client_config(
    configured: &TrustBundle,
    shared: &SharedTrustBundle,
    expected: Vec<SpiffeId>,
) -> Result<ClientConfig, TlsConfigError> {
    if configured.trust_domain() != shared.trust_domain() {
        return Err(TlsConfigError::Verifier(format!(
            "the configured roots are for trust domain {:?} but the node's bundle is for {:?}",
            configured.trust_domain(),
            shared.trust_domain()
        )));
    }
    let verifier = SpiffeServerVerifier::new(shared.clone(), Some(configured.clone()), expected);
    let mut config = client_builder(verifier)?.with_no_client_auth();
    finish_client(&mut config);
    Ok(config)
}

/// TLS 1.3 with the SPIFFE server verifier, up to the choice of client certificate.
fn client_builder(
    verifier: SpiffeServerVerifier,
) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>, TlsConfigError> {
    Ok(
        ClientConfig::builder_with_provider(Arc::new(crypto_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier)),
    )
}

fn finish_client(config: &mut ClientConfig) {
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.enable_sni = false;
    config.resumption = Resumption::disabled();
}

/// The identity the peer of an established connection proved.
pub fn peer_identity(connection: &rustls::CommonState) -> Result<SpiffeId, PeerIdentityError> {
    let certs = connection
        .peer_certificates()
        .ok_or(PeerIdentityError::NoIdentity(MaterialError::UriSanCount {
            count: 0,
        }))?;
    let leaf = certs
        .first()
        .ok_or(PeerIdentityError::NoIdentity(MaterialError::UriSanCount {
            count: 0,
        }))?;
    Ok(identity_of(leaf)?)
}
