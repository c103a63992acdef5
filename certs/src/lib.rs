//! Identity and PKI for the mesh: SPIFFE identities, the mesh CA, CSR issuance, rustls
//! configurations that verify SPIFFE peers, and the node's certificate manager.

pub mod api;
pub mod ca;
mod crypto;
pub mod csr;
pub mod failure;
pub mod identity;
pub mod manager;
pub mod material;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
pub mod tls;
pub mod trust;

pub use ca::{CaError, CertificateAuthority, IssuedCertificate};
pub use csr::KeyAndCsr;
pub use failure::HandshakeFailure;
pub use identity::{IdentityError, SpiffeId, DEFAULT_TRUST_DOMAIN};
pub use manager::{
    CertificateManager, CertificateSource, CertificateStatus, ManagerConfig, SignedChain,
};
pub use material::{MaterialError, RootFileError, TrustBundle, WorkloadCertificate};
pub use tls::{CurrentCertificate, PeerIdentityError};
pub use trust::{BundleChange, BundleUpdate, BundleUpdateError, SharedTrustBundle};
