//! The two certificate verifiers of the mesh. Both read the roots from a [`SharedTrustBundle`]
//! at each handshake, so a changed bundle applies to the next handshake; chain validation itself
//! is webpki's, and the policy added here is only which SPIFFE identity a peer must present.

use std::sync::{Arc, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::ParsedCertificate;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::TlsConfigError;
use super::{crypto_provider, identity_rejection, signature_algorithms, PeerIdentityError};
use crate::identity::SpiffeId;
use crate::material::{identity_of, TrustBundle};
use crate::trust::SharedTrustBundle;

/// Client side: the server must chain to the current roots (or, for the CA client only, to the
/// roots configured at start-up) and present one of the expected identities.
#[derive(Debug)]
pub(super) struct SpiffeServerVerifier {
    trust: SharedTrustBundle,
    /// Roots trusted in addition to the shared ones; see [`super::ca_client_config`].
    pinned: Option<TrustBundle>,
    expected: Vec<SpiffeId>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl SpiffeServerVerifier {
    pub(super) fn new(
        trust: SharedTrustBundle,
        pinned: Option<TrustBundle>,
        expected: Vec<SpiffeId>,
    ) -> Self {
        SpiffeServerVerifier {
            trust,
            pinned,
            expected,
            algorithms: signature_algorithms(),
        }
    }

    fn verify_chain(
        &self,
        end_entity: &ParsedCertificate<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        let verify = |bundle: &TrustBundle| {
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                end_entity,
                bundle.roots(),
                intermediates,
                now,
                self.algorithms.all,
            )
        };
        let current = self.trust.get();
        match (verify(&current), &self.pinned) {
            (Ok(()), _) => Ok(()),
            // The error against the current roots is the one worth reporting: the pinned
            // roots are only a safety net.
            (Err(error), Some(pinned)) => verify(pinned).map_err(|_| error),
            (Err(error), None) => Err(error),
        }
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        self.verify_chain(&parsed, intermediates, now)?;
        let got = identity_of(end_entity)
            .map_err(|e| identity_rejection(PeerIdentityError::NoIdentity(e)))?;
        if self.expected.contains(&got) {
            return Ok(ServerCertVerified::assertion());
        }
        let expected = self
            .expected
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" or ");
        Err(identity_rejection(PeerIdentityError::UnexpectedIdentity {
            got: got.to_string(),
            expected,
        }))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// webpki's client verifier for one set of roots. Building one copies the roots' subjects, so
/// it is built once per bundle value rather than per handshake.
type BuiltVerifier = (Arc<TrustBundle>, Arc<dyn ClientCertVerifier>);

/// Server side: the client must chain to the current roots and name an identity of this
/// mesh's trust domain.
#[derive(Debug)]
pub(super) struct SpiffeClientVerifier {
    trust: SharedTrustBundle,
    built: RwLock<BuiltVerifier>,
    algorithms: WebPkiSupportedAlgorithms,
}

fn build_webpki(bundle: &TrustBundle) -> Result<Arc<dyn ClientCertVerifier>, TlsConfigError> {
    rustls::server::WebPkiClientVerifier::builder_with_provider(
        bundle.roots().clone(),
        Arc::new(crypto_provider()),
    )
    .build()
    .map_err(|e| TlsConfigError::Verifier(e.to_string()))
}

impl SpiffeClientVerifier {
    /// Builds the verifier for the current roots now, so a config that cannot work fails here
    /// rather than at the first handshake.
    pub(super) fn new(trust: SharedTrustBundle) -> Result<Self, TlsConfigError> {
        let current = trust.get();
        let webpki = build_webpki(&current)?;
        Ok(SpiffeClientVerifier {
            trust,
            built: RwLock::new((current, webpki)),
            algorithms: signature_algorithms(),
        })
    }

    /// webpki's verifier for the roots in force now, rebuilt when they changed.
    fn webpki(&self) -> Result<Arc<dyn ClientCertVerifier>, rustls::Error> {
        let current = self.trust.get();
        {
            // Poisoning cannot tear a pair of Arcs; keep serving.
            let built = self.built.read().unwrap_or_else(|p| p.into_inner());
            if Arc::ptr_eq(&built.0, &current) {
                return Ok(built.1.clone());
            }
        }
        let webpki = build_webpki(&current).map_err(|e| rustls::Error::General(e.to_string()))?;
        let mut built = self.built.write().unwrap_or_else(|p| p.into_inner());
        *built = (current, webpki.clone());
        Ok(webpki)
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Root hints only help clients with several certificates choose; ours have one.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.webpki()?
            .verify_client_cert(end_entity, intermediates, now)?;
        let got = identity_of(end_entity)
            .map_err(|e| identity_rejection(PeerIdentityError::NoIdentity(e)))?;
        let trust_domain = self.trust.trust_domain();
        if got.trust_domain() != trust_domain {
            return Err(identity_rejection(PeerIdentityError::WrongTrustDomain {
                got: got.to_string(),
                got_domain: got.trust_domain().to_owned(),
                expected: trust_domain.to_owned(),
            }));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Signatures do not depend on the roots: the same algorithms webpki's verifier uses.
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
