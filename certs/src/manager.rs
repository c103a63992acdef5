//! The node's certificate manager: one workload certificate per identity that has pods on this
//! node, fetched from the CA, renewed at half of its lifetime, and kept in service while the CA
//! is unreachable (retrying with backoff) until it actually expires. Given the node's
//! [`SharedTrustBundle`], it also applies the roots each CA answer carries, so a root rotation
//! reaches the node without a restart (see [`crate::trust`] for the rules an answer must pass).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::csr::KeyAndCsr;
use crate::identity::SpiffeId;
use crate::material::WorkloadCertificate;
use crate::tls::CurrentCertificate;
use crate::trust::{BundleUpdate, SharedTrustBundle};

/// A signed chain and, when the source reports it, the roots its CA currently issues under.
#[derive(Debug, Clone, Default)]
pub struct SignedChain {
    /// PEM, leaf first.
    pub chain_pem: String,
    /// PEM roots (each entry one or more certificates); `None` when the source does not say.
    pub trust_bundle: Option<Vec<String>>,
}

/// Something that turns a CSR into a signed chain: the CA client in production, an in-process
/// CA in tests.
pub trait CertificateSource: Send + Sync + 'static {
    /// Returns the PEM chain, leaf first.
    fn sign<'a>(
        &'a self,
        identity: &'a SpiffeId,
        csr_pem: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>>;

    /// Like [`Self::sign`], plus the CA's current roots. The manager calls this one; the default
    /// reports no roots, so sources written before root rotation keep working unchanged.
    fn sign_with_bundle<'a>(
        &'a self,
        identity: &'a SpiffeId,
        csr_pem: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<SignedChain, String>> + Send + 'a>> {
        Box::pin(async move {
            let chain_pem = self.sign(identity, csr_pem).await?;
            Ok(SignedChain {
                chain_pem,
                trust_bundle: None,
            })
        })
    }
}

#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// First retry delay after a failed fetch; doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Longest retry delay while the identity has no valid certificate (none yet, or expired):
    /// its pods are refused by every peer meanwhile, so a CA that comes back must be noticed
    /// within seconds, not at the end of a long back-off.
    pub max_backoff_without_certificate: Duration,
    /// How long [`CertificateManager::certificate`] waits for a first certificate.
    pub first_fetch_timeout: Duration,
    /// How long a certificate outlives the last holder of its identity, still renewed: a pod
    /// of the same service account started meanwhile (a rolling restart, a Job's next run)
    /// gets it without a CA round trip. Zero releases it at once.
    pub keep_after_last_holder: Duration,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            max_backoff_without_certificate: Duration::from_secs(5),
            first_fetch_timeout: Duration::from_secs(10),
            keep_after_last_holder: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ManagerError {
    #[error("no certificate for {identity} yet: {last_error}; check that the CA is reachable (--ca-address) and that this node may hold that identity")]
    NotYetIssued {
        identity: String,
        last_error: String,
    },
    #[error("{identity} is not managed on this node")]
    NotTracked { identity: String },
}

/// What the admin endpoint and the expiry metric report for one identity.
#[derive(Debug, Clone)]
pub struct CertificateStatus {
    pub identity: SpiffeId,
    pub not_before: Option<SystemTime>,
    pub not_after: Option<SystemTime>,
    pub next_refresh: Option<SystemTime>,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
}

struct Entry {
    /// Pods on this node that hold the identity; the certificate is dropped once it has been
    /// zero for `keep_after_last_holder`.
    holders: usize,
    /// Counts the times `holders` reached zero: a release scheduled then applies only if no
    /// holder came and went since.
    idle_epoch: u64,
    state: watch::Receiver<EntryState>,
    worker: JoinHandle<()>,
}

#[derive(Clone, Default)]
struct EntryState {
    current: Option<CurrentCertificate>,
    next_refresh: Option<SystemTime>,
    consecutive_failures: u32,
    last_error: Option<String>,
}

/// Shared handle; clone freely.
#[derive(Clone)]
pub struct CertificateManager {
    inner: Arc<Inner>,
}

struct Inner {
    source: Arc<dyn CertificateSource>,
    config: ManagerConfig,
    /// Updated from CA answers when present.
    trust: Option<SharedTrustBundle>,
    entries: Mutex<HashMap<SpiffeId, Entry>>,
}

impl CertificateManager {
    /// A manager that leaves the roots alone: CA answers' trust bundles are not applied.
    pub fn new(source: Arc<dyn CertificateSource>, config: ManagerConfig) -> Self {
        Self::build(source, config, None)
    }

    /// A manager that applies the trust bundle of every CA answer to `trust` (after the checks
    /// of [`SharedTrustBundle::apply_ca_response`]); give the same handle to every TLS config
    /// so they follow a root rotation.
    pub fn with_trust_bundle(
        source: Arc<dyn CertificateSource>,
        config: ManagerConfig,
        trust: SharedTrustBundle,
    ) -> Self {
        Self::build(source, config, Some(trust))
    }

    fn build(
        source: Arc<dyn CertificateSource>,
        config: ManagerConfig,
        trust: Option<SharedTrustBundle>,
    ) -> Self {
        CertificateManager {
            inner: Arc::new(Inner {
                source,
                config,
                trust,
                entries: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The bundle this manager updates, if any.
    pub fn trust_bundle(&self) -> Option<&SharedTrustBundle> {
        self.inner.trust.as_ref()
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<SpiffeId, Entry>> {
        // The map holds no invariant a panicking holder could break half-way.
        self.inner
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers one more holder of `identity` and starts fetching its certificate if needed.
    /// Must be called from within a tokio runtime.
    pub fn track(&self, identity: &SpiffeId) {
        let mut entries = self.entries();
        if let Some(entry) = entries.get_mut(identity) {
            entry.holders += 1;
            return;
        }
        let (sender, receiver) = watch::channel(EntryState::default());
        let worker = tokio::spawn(renew_forever(
            self.inner.source.clone(),
            self.inner.trust.clone(),
            self.inner.config.clone(),
            identity.clone(),
            sender,
        ));
        entries.insert(
            identity.clone(),
            Entry {
                holders: 1,
                idle_epoch: 0,
                state: receiver,
                worker,
            },
        );
    }

    /// Drops one holder. Once the last one is gone for `keep_after_last_holder`, renewal
    /// stops and the certificate is forgotten.
    pub fn untrack(&self, identity: &SpiffeId) {
        let keep = self.inner.config.keep_after_last_holder;
        let mut entries = self.entries();
        let Some(entry) = entries.get_mut(identity) else {
            return;
        };
        entry.holders = entry.holders.saturating_sub(1);
        if entry.holders > 0 {
            return;
        }
        if keep.is_zero() {
            Self::release(&mut entries, identity);
            return;
        }
        entry.idle_epoch += 1;
        let epoch = entry.idle_epoch;
        let inner = Arc::downgrade(&self.inner);
        let identity = identity.clone();
        tokio::spawn(async move {
            tokio::time::sleep(keep).await;
            let Some(inner) = inner.upgrade() else { return };
            let manager = CertificateManager { inner };
            let mut entries = manager.entries();
            if entries
                .get(&identity)
                .is_some_and(|e| e.holders == 0 && e.idle_epoch == epoch)
            {
                Self::release(&mut entries, &identity);
            }
        });
    }

    fn release(entries: &mut HashMap<SpiffeId, Entry>, identity: &SpiffeId) {
        if let Some(entry) = entries.remove(identity) {
            entry.worker.abort();
            tracing::info!(identity = %identity, "certificate released: no pod on this node holds the identity any more");
        }
    }

    /// The certificate for a tracked identity, waiting for the first issuance if necessary.
    pub async fn certificate(
        &self,
        identity: &SpiffeId,
    ) -> Result<CurrentCertificate, ManagerError> {
        let mut state = self
            .entries()
            .get(identity)
            .map(|entry| entry.state.clone())
            .ok_or_else(|| ManagerError::NotTracked {
                identity: identity.to_string(),
            })?;
        let outcome = {
            let wait = state.wait_for(|s| s.current.is_some());
            match tokio::time::timeout(self.inner.config.first_fetch_timeout, wait).await {
                Ok(Ok(s)) => s.current.clone(),
                _ => None,
            }
        };
        outcome.ok_or_else(|| ManagerError::NotYetIssued {
            identity: identity.to_string(),
            last_error: state
                .borrow()
                .last_error
                .clone()
                .unwrap_or_else(|| "the CA has not answered yet".to_owned()),
        })
    }

    /// The certificate if one has been issued, without waiting.
    pub fn current(&self, identity: &SpiffeId) -> Option<CurrentCertificate> {
        self.entries()
            .get(identity)
            .and_then(|entry| entry.state.borrow().current.clone())
    }

    /// Every tracked identity with its expiry and renewal state, sorted by identity.
    pub fn status(&self) -> Vec<CertificateStatus> {
        let mut all: Vec<CertificateStatus> = self
            .entries()
            .iter()
            .map(|(identity, entry)| {
                let state = entry.state.borrow();
                let certificate = state.current.as_ref().map(CurrentCertificate::get);
                CertificateStatus {
                    identity: identity.clone(),
                    not_before: certificate.as_ref().map(|c| c.not_before()),
                    not_after: certificate.as_ref().map(|c| c.not_after()),
                    next_refresh: state.next_refresh,
                    consecutive_failures: state.consecutive_failures,
                    last_error: state.last_error.clone(),
                }
            })
            .collect();
        all.sort_by(|a, b| a.identity.cmp(&b.identity));
        all
    }

    /// True when every tracked identity has a certificate (readiness).
    pub fn all_issued(&self) -> bool {
        self.entries()
            .values()
            .all(|entry| entry.state.borrow().current.is_some())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let entries = self
            .entries
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for entry in entries.values() {
            entry.worker.abort();
        }
    }
}

/// When to renew: half-way through the certificate's lifetime.
fn refresh_time(certificate: &WorkloadCertificate) -> SystemTime {
    let lifetime = certificate
        .not_after()
        .duration_since(certificate.not_before())
        .unwrap_or(Duration::ZERO);
    certificate.not_before() + lifetime / 2
}

async fn fetch(
    source: &dyn CertificateSource,
    trust: Option<&SharedTrustBundle>,
    identity: &SpiffeId,
) -> Result<WorkloadCertificate, String> {
    let request = KeyAndCsr::generate(identity).map_err(|e| e.to_string())?;
    // Taken before the request leaves, so an answer that raced a newer one cannot undo it.
    let ticket = trust.map(SharedTrustBundle::ticket);
    let signed = source.sign_with_bundle(identity, &request.csr_pem).await?;
    let certificate = WorkloadCertificate::from_pem(&signed.chain_pem, request.private_key())
        .map_err(|e| format!("the CA returned an unusable certificate: {e}"))?;
    if certificate.identity() != identity {
        return Err(format!(
            "the CA returned a certificate for {} instead of {identity}",
            certificate.identity()
        ));
    }
    if let (Some(trust), Some(ticket), Some(bundle)) = (trust, ticket, &signed.trust_bundle) {
        let chain = &certificate.certified_key().cert;
        match trust.apply_ca_response(ticket, bundle, chain) {
            // A change was logged by the bundle itself, with the roots added and removed.
            Ok(BundleUpdate::Changed(_) | BundleUpdate::Unchanged | BundleUpdate::Superseded) => {}
            // The certificate itself is still used: whether peers accept it is for their
            // roots to decide, and refusing it here would only add an outage to a CA mistake.
            Err(error) => tracing::warn!(
                identity = %identity,
                error = %error,
                "trust bundle from the CA not applied"
            ),
        }
    }
    Ok(certificate)
}

async fn renew_forever(
    source: Arc<dyn CertificateSource>,
    trust: Option<SharedTrustBundle>,
    config: ManagerConfig,
    identity: SpiffeId,
    state: watch::Sender<EntryState>,
) {
    let mut backoff = config.initial_backoff;
    loop {
        match fetch(source.as_ref(), trust.as_ref(), &identity).await {
            Ok(certificate) => {
                let refresh_at = refresh_time(&certificate);
                tracing::info!(
                    identity = %identity,
                    not_after = ?certificate.not_after(),
                    refresh_at = ?refresh_at,
                    "workload certificate issued"
                );
                state.send_modify(|s| {
                    match &s.current {
                        // Live TLS configs hold this handle: new handshakes pick up the new
                        // certificate, established connections keep theirs.
                        Some(current) => current.replace(certificate),
                        None => s.current = Some(CurrentCertificate::new(certificate)),
                    }
                    s.next_refresh = Some(refresh_at);
                    s.consecutive_failures = 0;
                    s.last_error = None;
                });
                backoff = config.initial_backoff;
                let wait = refresh_at
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO);
                tokio::time::sleep(wait).await;
            }
            Err(error) => {
                let mut still_valid = None;
                let current_not_after =
                    state.borrow().current.as_ref().map(|c| c.get().not_after());
                backoff = retry_delay(backoff, current_not_after, SystemTime::now(), &config);
                state.send_modify(|s| {
                    s.consecutive_failures += 1;
                    s.last_error = Some(error.clone());
                    s.next_refresh = Some(SystemTime::now() + backoff);
                    still_valid = s.current.as_ref().map(|c| c.get().not_after());
                });
                match still_valid {
                    Some(not_after) => tracing::warn!(
                        identity = %identity,
                        error = %error,
                        retry_in = ?backoff,
                        expires = ?not_after,
                        "certificate renewal failed; still serving the current certificate"
                    ),
                    None => tracing::warn!(
                        identity = %identity,
                        error = %error,
                        retry_in = ?backoff,
                        "certificate fetch failed; pods with this identity cannot join the mesh yet"
                    ),
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(config.max_backoff);
            }
        }
    }
}

/// The delay before the next retry: the back-off, but never past the point where the current
/// certificate would have expired unrenewed, and short once there is no valid certificate.
fn retry_delay(
    backoff: Duration,
    not_after: Option<SystemTime>,
    now: SystemTime,
    config: &ManagerConfig,
) -> Duration {
    let left = not_after.and_then(|t| t.duration_since(now).ok());
    match left {
        // Valid for a while yet: retry at least twice more before it expires.
        Some(left) if !left.is_zero() => backoff.min(left / 2).max(config.initial_backoff),
        // None yet, or expired.
        _ => backoff.min(config.max_backoff_without_certificate),
    }
}

/// An in-process CA as a source, for tests and single-process setups.
pub struct LocalCaSource {
    pub ca: crate::ca::CertificateAuthority,
    pub ttl: Option<Duration>,
}

impl CertificateSource for LocalCaSource {
    fn sign<'a>(
        &'a self,
        identity: &'a SpiffeId,
        csr_pem: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>> {
        Box::pin(async move {
            self.ca
                .issue(csr_pem, identity, self.ttl)
                .map(|issued| issued.chain_pem)
                .map_err(|e| e.to_string())
        })
    }

    fn sign_with_bundle<'a>(
        &'a self,
        identity: &'a SpiffeId,
        csr_pem: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<SignedChain, String>> + Send + 'a>> {
        Box::pin(async move {
            let chain_pem = self.sign(identity, csr_pem).await?;
            Ok(SignedChain {
                chain_pem,
                trust_bundle: Some(vec![self.ca.trust_bundle().to_pem()]),
            })
        })
    }
}

#[cfg(test)]
mod retry_tests {
    use super::*;

    #[test]
    fn retries_come_sooner_when_the_certificate_is_missing_or_about_to_expire() {
        let config = ManagerConfig::default();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let long = Duration::from_secs(60);
        // Hours left: the plain back-off.
        let hours = Some(now + Duration::from_secs(7200));
        assert_eq!(retry_delay(long, hours, now, &config), long);
        // 20 s left: retry within 10 s.
        let soon = Some(now + Duration::from_secs(20));
        assert_eq!(
            retry_delay(long, soon, now, &config),
            Duration::from_secs(10)
        );
        // Expired, or never issued: every 5 s at most.
        let expired = Some(now - Duration::from_secs(1));
        assert_eq!(
            retry_delay(long, expired, now, &config),
            Duration::from_secs(5)
        );
        assert_eq!(
            retry_delay(long, None, now, &config),
            Duration::from_secs(5)
        );
        // Never below the first step.
        let almost = Some(now + Duration::from_millis(100));
        assert_eq!(
            retry_delay(long, almost, now, &config),
            config.initial_backoff
        );
    }
}
