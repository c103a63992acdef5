//! The trust bundle a running node verifies peers against, as a shared handle that can change
//! without a restart.
//!
//! A root is rotated in three steps: add the new root beside the old one everywhere, switch the
//! CA to issue from the new root, then remove the old root. Every TLS configuration built from a
//! [`SharedTrustBundle`] reads the current roots at each handshake, so each step reaches new
//! connections at once while established connections keep what they verified.
//!
//! The bundle changes from the CA's answers ([`SharedTrustBundle::apply_ca_response`]), which are
//! only believed when they are internally consistent: parsable, non-empty, of this trust domain,
//! and trusting the very chain the CA just issued with them. A CA answer that fails any of these
//! leaves the current bundle in place.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use rustls::pki_types::CertificateDer;

use crate::material::{
    certificates_from_pem, identity_of, parse_x509, uri_sans, MaterialError, TrustBundle,
};

/// Why a new trust bundle was not applied. Each message names the cause and what to check; the
/// current bundle stays in force in every case.
#[derive(Debug, thiserror::Error)]
pub enum BundleUpdateError {
    #[error("the CA's answer carried no trust bundle; keeping the current roots. Check that ambit-ca sends its roots (trust_bundle) and that its ca.crt is not empty")]
    Empty,
    #[error("the CA's trust bundle cannot be used: {0}; keeping the current roots. Check the root certificates in the CA's Secret (ca.crt)")]
    Unparsable(MaterialError),
    #[error("the trust bundle holds root {root} of trust domain {got:?} but this mesh is {expected:?}; keeping the current roots. Check that --ca-address points at this mesh's CA and that its ca.crt holds only this mesh's roots")]
    WrongTrustDomain {
        root: RootSummary,
        got: String,
        expected: String,
    },
    #[error("the certificate just issued is for {got} but this mesh is {expected:?}; keeping the current roots. Check that --ca-address points at this mesh's CA")]
    IssuedForWrongTrustDomain { got: String, expected: String },
    #[error("the certificate just issued{identity} does not verify against the trust bundle sent with it ({reason}); keeping the current roots. Check that the CA's ca.crt contains the root that signs its tls.crt")]
    DoesNotVerifyIssued { identity: String, reason: String },
}

/// One root as logs show it: SHA-256 fingerprint of the DER and the subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootSummary {
    /// Lower-case hex without separators; `openssl x509 -noout -fingerprint -sha256` prints the
    /// same digits, upper-case with colons.
    pub sha256: String,
    pub subject: String,
}

impl RootSummary {
    pub fn of(root: &CertificateDer<'_>) -> Self {
        let subject = match parse_x509(root, "root certificate") {
            Ok(parsed) => parsed.subject().to_string(),
            Err(_) => "<unparsable subject>".to_owned(),
        };
        RootSummary {
            sha256: sha256_hex(root.as_ref()),
            subject,
        }
    }
}

impl fmt::Display for RootSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{} ({:?})", self.sha256, self.subject)
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    // rustls' own SHA-256 (the one its TLS 1.3 suites use), so no hashing crate is needed here.
    match rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256.tls13() {
        Some(suite) => suite
            .common
            .hash_provider
            .hash(bytes)
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        None => "unknown".to_owned(),
    }
}

/// What a bundle change did, as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleChange {
    pub added: Vec<RootSummary>,
    pub removed: Vec<RootSummary>,
    /// How many roots the bundle holds now.
    pub roots: usize,
}

/// The outcome of offering a bundle that passed the safety rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleUpdate {
    /// Same roots as now (in any order): nothing changed, nothing logged.
    Unchanged,
    Changed(BundleChange),
    /// An answer to a request sent after this one was applied already; applying this older
    /// one would undo a newer step of the rotation.
    Superseded,
}

/// Orders CA answers by when their request was sent: see [`SharedTrustBundle::ticket`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct UpdateTicket(u64);

/// The roots a node trusts right now. Cheap to clone; all clones see a replacement. The trust
/// domain is fixed for the handle's life: a mesh never changes trust domain under a running node.
#[derive(Clone)]
pub struct SharedTrustBundle {
    inner: Arc<Shared>,
}

struct Shared {
    trust_domain: String,
    state: RwLock<State>,
    next_ticket: AtomicU64,
}

struct State {
    current: Arc<TrustBundle>,
    /// Ticket of the newest accepted answer; older answers are superseded.
    applied: u64,
}

impl fmt::Debug for SharedTrustBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SharedTrustBundle")
            .field(&self.get())
            .finish()
    }
}

impl From<TrustBundle> for SharedTrustBundle {
    /// A handle of its own, which nothing else updates: the bundle stays fixed.
    fn from(bundle: TrustBundle) -> Self {
        SharedTrustBundle::new(bundle)
    }
}

impl From<&TrustBundle> for SharedTrustBundle {
    /// A handle of its own, which nothing else updates: the bundle stays fixed.
    fn from(bundle: &TrustBundle) -> Self {
        SharedTrustBundle::new(bundle.clone())
    }
}

impl From<&SharedTrustBundle> for SharedTrustBundle {
    /// Another handle on the same bundle: it sees every change.
    fn from(shared: &SharedTrustBundle) -> Self {
        shared.clone()
    }
}

impl SharedTrustBundle {
    pub fn new(bundle: TrustBundle) -> Self {
        SharedTrustBundle {
            inner: Arc::new(Shared {
                trust_domain: bundle.trust_domain().to_owned(),
                state: RwLock::new(State {
                    current: Arc::new(bundle),
                    applied: 0,
                }),
                next_ticket: AtomicU64::new(1),
            }),
        }
    }

    pub fn trust_domain(&self) -> &str {
        &self.inner.trust_domain
    }

    /// The roots in force now; a handshake uses the value it read for its whole verification.
    pub fn get(&self) -> Arc<TrustBundle> {
        // A poisoned lock only means a writer panicked while assigning plain values; the state
        // is never torn, so keep serving.
        match self.inner.state.read() {
            Ok(state) => state.current.clone(),
            Err(poisoned) => poisoned.into_inner().current.clone(),
        }
    }

    /// Takes a ticket before asking the CA, to hand back with its answer. Two requests can be in
    /// flight across a rotation step; the ticket lets the answer to the later request win even
    /// when the earlier one arrives last.
    pub fn ticket(&self) -> UpdateTicket {
        UpdateTicket(self.inner.next_ticket.fetch_add(1, Ordering::Relaxed))
    }

    /// Replaces the roots with `bundle` (for example an operator's re-read `--ca-root`). Only a
    /// bundle of the same trust domain is accepted. Logs the change once; supersedes any CA
    /// answer to a request sent before this call.
    pub fn replace(&self, bundle: TrustBundle) -> Result<BundleUpdate, BundleUpdateError> {
        if bundle.trust_domain() != self.trust_domain() {
            let root = bundle
                .certificates()
                .first()
                .map(RootSummary::of)
                .unwrap_or(RootSummary {
                    sha256: "none".to_owned(),
                    subject: String::new(),
                });
            return Err(BundleUpdateError::WrongTrustDomain {
                root,
                got: bundle.trust_domain().to_owned(),
                expected: self.trust_domain().to_owned(),
            });
        }
        let ticket = self.ticket();
        Ok(self.install(ticket, bundle, "replaced"))
    }

    /// Offers the trust bundle of a CA answer (`bundle_pem`: PEM texts, one or more roots each)
    /// together with the chain issued in the same answer (leaf first). Applied only if the
    /// bundle parses, is non-empty, names no other trust domain, and verifies that chain;
    /// otherwise the current roots stay and the error says why (the caller logs it, with the
    /// context it has). A change is logged here, once, with the roots added and removed.
    pub fn apply_ca_response(
        &self,
        ticket: UpdateTicket,
        bundle_pem: &[String],
        issued_chain: &[CertificateDer<'static>],
    ) -> Result<BundleUpdate, BundleUpdateError> {
        let candidate = self.check_ca_bundle(bundle_pem, issued_chain)?;
        Ok(self.install(ticket, candidate, "updated from the CA"))
    }

    fn check_ca_bundle(
        &self,
        bundle_pem: &[String],
        issued_chain: &[CertificateDer<'static>],
    ) -> Result<TrustBundle, BundleUpdateError> {
        let text = bundle_pem.concat();
        if text.trim().is_empty() {
            return Err(BundleUpdateError::Empty);
        }
        let roots = certificates_from_pem(text.as_bytes(), "the CA's trust bundle")
            .map_err(BundleUpdateError::Unparsable)?;
        for root in &roots {
            self.check_root_trust_domain(root)?;
        }
        let candidate =
            TrustBundle::new(self.trust_domain(), roots).map_err(BundleUpdateError::Unparsable)?;
        let leaf_identity = issued_chain.first().map(identity_of);
        if let Some(Ok(identity)) = &leaf_identity {
            if identity.trust_domain() != self.trust_domain() {
                return Err(BundleUpdateError::IssuedForWrongTrustDomain {
                    got: identity.to_string(),
                    expected: self.trust_domain().to_owned(),
                });
            }
        }
        crate::material::verify_chain(issued_chain, &candidate).map_err(|e| {
            BundleUpdateError::DoesNotVerifyIssued {
                identity: match leaf_identity {
                    Some(Ok(identity)) => format!(" for {identity}"),
                    _ => String::new(),
                },
                reason: e.to_string(),
            }
        })?;
        Ok(candidate)
    }

    /// A root need not name a trust domain, but one that carries a SPIFFE ID (as the SPIFFE
    /// X.509 profile allows for CA certificates) must name ours.
    fn check_root_trust_domain(&self, root: &CertificateDer<'_>) -> Result<(), BundleUpdateError> {
        let parsed =
            parse_x509(root, "the CA's trust bundle").map_err(BundleUpdateError::Unparsable)?;
        for uri in uri_sans(&parsed) {
            let Some(rest) = uri.strip_prefix("spiffe://") else {
                continue;
            };
            let domain = rest.split('/').next().unwrap_or_default();
            if domain != self.trust_domain() {
                return Err(BundleUpdateError::WrongTrustDomain {
                    root: RootSummary::of(root),
                    got: domain.to_owned(),
                    expected: self.trust_domain().to_owned(),
                });
            }
        }
        Ok(())
    }

    fn install(&self, ticket: UpdateTicket, bundle: TrustBundle, how: &str) -> BundleUpdate {
        let mut state = match self.inner.state.write() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        };
        if ticket.0 < state.applied {
            tracing::debug!(
                trust_domain = %self.trust_domain(),
                "trust bundle from an older CA answer ignored: a newer answer was applied already"
            );
            return BundleUpdate::Superseded;
        }
        state.applied = ticket.0;
        let change = diff(&state.current, &bundle);
        if change.added.is_empty() && change.removed.is_empty() {
            return BundleUpdate::Unchanged;
        }
        state.current = Arc::new(bundle);
        drop(state);
        tracing::info!(
            trust_domain = %self.trust_domain(),
            roots = change.roots,
            added = %join(&change.added),
            removed = %join(&change.removed),
            change = how,
            "trust bundle changed: new handshakes verify peers against these roots, established connections are unaffected"
        );
        BundleUpdate::Changed(change)
    }
}

fn diff(old: &TrustBundle, new: &TrustBundle) -> BundleChange {
    let old_set: HashSet<&[u8]> = old.certificates().iter().map(|c| c.as_ref()).collect();
    let new_set: HashSet<&[u8]> = new.certificates().iter().map(|c| c.as_ref()).collect();
    BundleChange {
        added: new
            .certificates()
            .iter()
            .filter(|c| !old_set.contains(c.as_ref()))
            .map(RootSummary::of)
            .collect(),
        removed: old
            .certificates()
            .iter()
            .filter(|c| !new_set.contains(c.as_ref()))
            .map(RootSummary::of)
            .collect(),
        roots: new_set.len(),
    }
}

fn join(roots: &[RootSummary]) -> String {
    if roots.is_empty() {
        return "none".to_owned();
    }
    roots
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
