//! Turns a failed TLS handshake into a cause an operator can act on. rustls reports what broke;
//! this says why it matters for a mesh and what to check.

use std::fmt;
use std::io;

use rustls::{AlertDescription, CertificateError};

use crate::tls::PeerIdentityError;

/// The reason a mesh handshake failed, from the point of view of the side that saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The peer's certificate is past its notAfter.
    PeerCertificateExpired,
    /// The peer's certificate's notBefore is in the future.
    PeerCertificateNotYetValid,
    /// The peer's chain does not lead to any root we trust.
    UntrustedIssuer,
    /// A client connected without presenting a certificate.
    MissingClientCertificate,
    /// The server's identity is not one the client expected.
    UnexpectedPeerIdentity(String),
    /// The peer belongs to another trust domain.
    WrongTrustDomain(String),
    /// The peer's certificate has no (single, valid) SPIFFE identity.
    NoPeerIdentity(String),
    /// The peer refused *our* certificate and said so with an alert.
    RejectedByPeer(String),
    /// The peer does not speak TLS 1.3 with AES-GCM and ALPN h2.
    ProtocolMismatch(String),
    /// Anything else (I/O, timeouts, ...).
    Other(String),
}

impl HandshakeFailure {
    /// Classifies an error from a tokio-rustls handshake (rustls errors arrive wrapped in
    /// `io::Error`).
    pub fn classify_io(error: &io::Error) -> Self {
        match error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(tls) => Self::classify(tls),
            None => HandshakeFailure::Other(error.to_string()),
        }
    }

    pub fn classify(error: &rustls::Error) -> Self {
        use HandshakeFailure as F;
        match error {
            rustls::Error::InvalidCertificate(cert) => match cert {
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    F::PeerCertificateExpired
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    F::PeerCertificateNotYetValid
                }
                CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                    F::UntrustedIssuer
                }
                CertificateError::Other(other) => {
                    match other.0.downcast_ref::<PeerIdentityError>() {
                        Some(PeerIdentityError::UnexpectedIdentity { .. }) => {
                            F::UnexpectedPeerIdentity(other.0.to_string())
                        }
                        Some(PeerIdentityError::WrongTrustDomain { .. }) => {
                            F::WrongTrustDomain(other.0.to_string())
                        }
                        Some(PeerIdentityError::NoIdentity(_)) => {
                            F::NoPeerIdentity(other.0.to_string())
                        }
                        None => F::Other(other.0.to_string()),
                    }
                }
                other => F::Other(format!("invalid peer certificate: {other:?}")),
            },
            rustls::Error::NoCertificatesPresented => F::MissingClientCertificate,
            rustls::Error::AlertReceived(alert) => match alert {
                AlertDescription::CertificateRequired => F::RejectedByPeer(
                    "the server requires a client certificate and we sent none".to_owned(),
                ),
                AlertDescription::NoApplicationProtocol
                | AlertDescription::ProtocolVersion
                | AlertDescription::HandshakeFailure => F::ProtocolMismatch(format!("{alert:?}")),
                other => F::RejectedByPeer(format!("{other:?}")),
            },
            rustls::Error::PeerIncompatible(why) => F::ProtocolMismatch(format!("{why:?}")),
            rustls::Error::NoApplicationProtocol => {
                F::ProtocolMismatch("no common ALPN protocol (HBONE needs h2)".to_owned())
            }
            other => F::Other(other.to_string()),
        }
    }
}

impl fmt::Display for HandshakeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use HandshakeFailure as F;
        match self {
            F::PeerCertificateExpired => write!(
                f,
                "peer certificate expired: its node agent failed to renew it (can it reach the CA?) or the clocks of the two nodes differ"
            ),
            F::PeerCertificateNotYetValid => write!(
                f,
                "peer certificate is not yet valid: the clocks of the two nodes differ; check time synchronisation"
            ),
            F::UntrustedIssuer => write!(
                f,
                "peer certificate is not signed by a trusted root: the peer uses another CA; check that both sides use the same trust bundle (--ca-root)"
            ),
            F::MissingClientCertificate => write!(
                f,
                "client presented no certificate: HBONE requires mutual TLS; the client is not a mesh node agent or has no workload certificate"
            ),
            F::UnexpectedPeerIdentity(detail) => write!(f, "wrong peer identity: {detail}"),
            F::WrongTrustDomain(detail) => write!(f, "wrong trust domain: {detail}"),
            F::NoPeerIdentity(detail) => write!(f, "peer identity unusable: {detail}"),
            F::RejectedByPeer(alert) => write!(
                f,
                "the peer rejected our certificate ({alert}); its log says why"
            ),
            F::ProtocolMismatch(detail) => write!(
                f,
                "protocol mismatch ({detail}): HBONE needs TLS 1.3, AES-GCM and ALPN h2"
            ),
            F::Other(detail) => write!(f, "TLS handshake failed: {detail}"),
        }
    }
}
