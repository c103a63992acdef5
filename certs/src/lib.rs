//! Identity and PKI for the mesh: SPIFFE identities, the mesh CA, CSR issuance, rustls
//! configurations that verify SPIFFE peers, and the node's certificate manager.

pub mod identity;

pub use identity::{IdentityError, SpiffeId, DEFAULT_TRUST_DOMAIN};
