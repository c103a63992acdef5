//! Remembers verdicts on tokens, so the CA does not ask the API server about the same token
//! again and again, and bounds how many questions it asks at once.
//!
//! Kubernetes mode verifies a token with a TokenReview: a round trip to the API server that
//! anyone who can reach the CA's port could otherwise trigger at will. So:
//! - accepted tokens are remembered for [`VALID_TTL`] and refused ones for [`REFUSED_TTL`]
//!   (a forged token resent in a loop costs one review), each in its own bounded table so junk
//!   never evicts a node's entry; the tables hold SHA-256 digests, never tokens;
//! - callers presenting the same unknown token at the same time share one review;
//! - a token neither table knows waits for one of `max_reviews` review slots; at most
//!   [`QUEUE_PER_REVIEW`]× that many wait, beyond which the caller is told to retry (503). A
//!   flood of distinct random tokens therefore costs the API server at most `max_reviews`
//!   concurrent reviews, and remembered nodes are answered from the table without waiting.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::{watch, Semaphore};

use crate::authz::{Authentication, NodeAuthenticator, Refusal};
use crate::limits::LogThrottle;

/// How long an accepted token is trusted without asking again. A node agent asks for one
/// certificate per identity at start-up, so this turns a burst of reviews into one; the price
/// is that a deleted ztunnel pod's token works this much longer (its certificates live hours).
pub const VALID_TTL: Duration = Duration::from_secs(30);
pub const VALID_MAX: usize = 1024;
/// How long a refused token stays refused without asking again.
pub const REFUSED_TTL: Duration = Duration::from_secs(30);
pub const REFUSED_MAX: usize = 4096;
/// Callers that may wait for a review slot, per slot.
pub const QUEUE_PER_REVIEW: usize = 8;

type TokenDigest = [u8; 32];

fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

/// Whether a refusal is a verdict on the token itself (worth remembering) or a passing state of
/// the CA or the API server (worth retrying at once).
fn is_verdict(refusal: &Refusal) -> bool {
    match refusal {
        Refusal::UnknownToken | Refusal::TokenRejected { .. } | Refusal::NotZtunnel(_) => true,
        Refusal::MissingToken
        | Refusal::TokensUnavailable(_)
        | Refusal::NotReady
        | Refusal::ReviewUnavailable(_)
        | Refusal::NoPodOnNode { .. }
        | Refusal::NotOwnIdentity { .. }
        | Refusal::ForeignTrustDomain { .. } => false,
    }
}

/// A [`NodeAuthenticator`] in front of a costly one.
pub struct CachingAuthenticator<A> {
    inner: A,
    reviews: Semaphore,
    max_reviews: usize,
    max_pending: usize,
    pending: AtomicUsize,
    tables: Mutex<Tables>,
}

struct Tables {
    valid: TtlTable<String>,
    refused: TtlTable<Refusal>,
    /// Callers turned away because every review slot and queue place was taken.
    turned_away: LogThrottle,
    /// Tokens under review now, so that concurrent callers with the same token share one review.
    reviewing: HashMap<TokenDigest, watch::Receiver<Verdict>>,
}

impl<A: NodeAuthenticator> CachingAuthenticator<A> {
    pub fn new(inner: A, max_reviews: usize) -> Self {
        let max_reviews = max_reviews.max(1);
        CachingAuthenticator {
            inner,
            reviews: Semaphore::new(max_reviews),
            max_reviews,
            max_pending: max_reviews * (QUEUE_PER_REVIEW + 1),
            pending: AtomicUsize::new(0),
            tables: Mutex::new(Tables {
                valid: TtlTable::new(VALID_TTL, VALID_MAX),
                refused: TtlTable::new(REFUSED_TTL, REFUSED_MAX),
                turned_away: LogThrottle::default(),
                reviewing: HashMap::new(),
            }),
        }
    }

    pub fn inner(&self) -> &A {
        &self.inner
    }

    fn tables(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn remember(&self, digest: TokenDigest, verdict: &Result<String, Refusal>) {
        let now = Instant::now();
        let mut tables = self.tables();
        match verdict {
            Ok(node) => tables.valid.insert(digest, node.clone(), now),
            Err(refusal) if is_verdict(refusal) => {
                tables.refused.insert(digest, refusal.clone(), now)
            }
            Err(_) => {}
        }
    }

    fn turn_away(&self) -> Refusal {
        let held = self.tables().turned_away.hit(Instant::now());
        if let Some(count) = held {
            tracing::warn!(
                turned_away = count,
                max_token_reviews = self.max_reviews,
                "unknown tokens arrive faster than the API server reviews them (a flood of bad tokens?): callers are told to retry (count since the last report); remembered tokens are unaffected; if these are genuine node agents, raise --max-token-reviews"
            );
        }
        Refusal::ReviewUnavailable(format!(
            "the CA is already reviewing {} unknown tokens",
            self.max_pending
        ))
    }

    async fn authenticate_token(&self, token: &str) -> Result<String, Refusal> {
        // Cheap local checks first: a token that cannot be valid costs neither a slot nor a
        // table entry.
        self.inner.screen(token)?;
        let digest = digest(token);
        loop {
            let role = {
                let mut tables = self.tables();
                if let Some(verdict) = tables.remembered(&digest, Instant::now()) {
                    return verdict;
                }
                match tables.reviewing.get(&digest) {
                    Some(leader) => Role::Follow(leader.clone()),
                    None => {
                        let (sender, receiver) = watch::channel(None);
                        tables.reviewing.insert(digest, receiver);
                        Role::Lead(sender)
                    }
                }
            };
            match role {
                Role::Lead(sender) => {
                    let _leading = Leading {
                        tables: &self.tables,
                        digest,
                    };
                    let verdict = self.review(token, digest).await;
                    sender.send_replace(Some(verdict.clone()));
                    return verdict;
                }
                // The same token is being reviewed for another caller: share its answer.
                Role::Follow(mut leader) => {
                    if let Ok(verdict) = leader.wait_for(Option::is_some).await {
                        if let Some(verdict) = verdict.clone() {
                            return verdict;
                        }
                    }
                    // That caller was cut off before its answer: ask again.
                }
            }
        }
    }

    /// Asks the costly authenticator, within the review slots, and remembers the verdict.
    async fn review(&self, token: &str, digest: TokenDigest) -> Result<String, Refusal> {
        let _pending = match Pending::enter(&self.pending, self.max_pending) {
            Some(pending) => pending,
            None => return Err(self.turn_away()),
        };
        let _slot = self
            .reviews
            .acquire()
            .await
            .map_err(|_| Refusal::ReviewUnavailable("the CA is shutting down".to_owned()))?;
        let verdict = self.inner.authenticate(token).await;
        self.remember(digest, &verdict);
        verdict
    }
}

type Verdict = Option<Result<String, Refusal>>;

enum Role {
    Lead(watch::Sender<Verdict>),
    Follow(watch::Receiver<Verdict>),
}

/// The one caller reviewing a token; when it is done (or cut off) others stop following it.
struct Leading<'a> {
    tables: &'a Mutex<Tables>,
    digest: TokenDigest,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        let mut tables = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        tables.reviewing.remove(&self.digest);
    }
}

impl Tables {
    fn remembered(
        &mut self,
        digest: &TokenDigest,
        now: Instant,
    ) -> Option<Result<String, Refusal>> {
        if let Some(node) = self.valid.get(digest, now) {
            return Some(Ok(node.clone()));
        }
        self.refused.get(digest, now).cloned().map(Err)
    }
}

impl<A: NodeAuthenticator> NodeAuthenticator for CachingAuthenticator<A> {
    fn authenticate<'a>(&'a self, token: &'a str) -> Authentication<'a> {
        Box::pin(self.authenticate_token(token))
    }

    fn screen(&self, token: &str) -> Result<(), Refusal> {
        self.inner.screen(token)
    }
}

/// One caller counted as waiting for, or holding, a review slot.
struct Pending<'a>(&'a AtomicUsize);

impl<'a> Pending<'a> {
    fn enter(counter: &'a AtomicUsize, max: usize) -> Option<Pending<'a>> {
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Pending(counter))
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Entries that expire after one TTL, at most `capacity` of them (the oldest go first).
struct TtlTable<V> {
    ttl: Duration,
    capacity: usize,
    entries: HashMap<TokenDigest, (V, Instant)>,
    /// Insertion order with each entry's expiry; stale pairs (re-inserted keys) are skipped.
    order: VecDeque<(TokenDigest, Instant)>,
}

impl<V> TtlTable<V> {
    fn new(ttl: Duration, capacity: usize) -> Self {
        TtlTable {
            ttl,
            capacity,
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn get(&mut self, key: &TokenDigest, now: Instant) -> Option<&V> {
        match self.entries.get(key) {
            Some((_, expires)) if *expires <= now => {
                self.entries.remove(key);
                None
            }
            Some(_) => self.entries.get(key).map(|(value, _)| value),
            None => None,
        }
    }

    fn insert(&mut self, key: TokenDigest, value: V, now: Instant) {
        while let Some((oldest, expires)) = self.order.front().copied() {
            let expired = expires <= now;
            let over = self.entries.len() >= self.capacity || self.order.len() > 2 * self.capacity;
            if !expired && !over {
                break;
            }
            self.order.pop_front();
            if self
                .entries
                .get(&oldest)
                .is_some_and(|(_, e)| *e == expires)
            {
                self.entries.remove(&oldest);
            }
        }
        let expires = now + self.ttl;
        self.entries.insert(key, (value, expires));
        self.order.push_back((key, expires));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
#[path = "token_cache_tests.rs"]
mod tests;
