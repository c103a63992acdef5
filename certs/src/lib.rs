//! Identity and PKI for the mesh: SPIFFE identities, the mesh CA, CSR issuance, rustls
//! configurations that verify SPIFFE peers, and the node's certificate manager.

pub mod ca;
pub mod csr;
pub mod failure;
pub mod identity;
pub mod material;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
pub mod tls;

pub use ca::{CaError, CertificateAuthority, IssuedCertificate};
pub use csr::KeyAndCsr;
pub use failure::HandshakeFailure;
pub use identity::{IdentityError, SpiffeId, DEFAULT_TRUST_DOMAIN};
pub use material::{MaterialError, TrustBundle, WorkloadCertificate};
pub use tls::{CurrentCertificate, PeerIdentityError};
