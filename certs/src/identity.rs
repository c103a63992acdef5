//! SPIFFE workload identities, defined in the `identity` crate so that crates which only name
//! identities (discovery, say) need not build the PKI stack; re-exported here so `certs::SpiffeId`
//! and `crate::identity::…` keep working.

pub use ::identity::{validate_trust_domain, IdentityError, SpiffeId, DEFAULT_TRUST_DOMAIN};
