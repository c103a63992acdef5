//! What the CA serves with: its signing authority, how callers are authenticated and
//! authorised, lifetimes, and the server's bounds. Shared by the connection handling (`server`)
//! and the request handling (`handler`).

use std::sync::Arc;
use std::time::Duration;

use certs::CertificateAuthority;

use crate::authz::{NodeAuthenticator, NodeWorkloads};
use crate::limits::Limits;

pub struct CaService {
    pub ca: CertificateAuthority,
    pub authenticator: Box<dyn NodeAuthenticator>,
    pub workloads: Arc<dyn NodeWorkloads>,
    /// Lifetime of issued certificates when the caller does not ask for one.
    pub default_ttl: Duration,
    /// Longest lifetime a caller may obtain.
    pub max_ttl: Duration,
    /// Connection caps and phase deadlines.
    pub limits: Limits,
}
