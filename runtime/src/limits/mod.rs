//! Connection limits, decided right after `accept` and before any work is done for the
//! connection (DESIGN §7). A server asks for a [`ConnectionPermit`] per accepted connection
//! and drops the connection when none is granted — under a flood, the sources that behave
//! keep their share.
//!
//! Always: a cap on connections open at once, in total and per source ([`Limits`]). A
//! [`Policy`] adds what a server that anyone can reach needs (the CA):
//!
//! - a rate of new connections per source (a token bucket, bursts of twice the rate);
//! - sources grouped by IPv6 /64 rather than by address ([`SourceGrouping`]);
//! - room made when full ([`WhenFull::DisplaceIdle`]): a connection with no request in flight
//!   — still handshaking, or idle — is closed to admit the newcomer, the longest-idle one of
//!   the source holding the most connections. A flood therefore displaces its own connections
//!   first, and a client that opens one short connection per request still gets in. Only when
//!   every connection is busy is the newcomer refused.
//!
//! Refusals are logged in one line per [`REPORT_INTERVAL`] with counts (see `shed`).

mod shed;
mod source;
#[cfg(test)]
mod tests;

pub use shed::{Shed, REPORT_INTERVAL};
pub use source::{SourceGrouping, SourceKey};

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use shed::{ShedCounts, ShedReport};
use source::TokenBucket;

/// How many connections a server keeps at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub max_connections_per_source: usize,
}

/// What a full server does with a newcomer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenFull {
    /// Refuse it.
    #[default]
    Refuse,
    /// Close an idle connection to admit it (see the module doc). A connection is idle from
    /// its admission until [`ConnectionPermit::mark_busy`], and again after
    /// [`ConnectionPermit::mark_idle`]; the server learns that one of its connections was
    /// chosen through [`ConnectionPermit::displaced`] and must then close it.
    DisplaceIdle,
}

/// What a limiter does beyond the counts of [`Limits`]; the default adds nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// New connections one source may open per second, with bursts of twice that. `None`: no
    /// rate limit.
    pub new_connections_per_source_per_second: Option<NonZeroUsize>,
    pub sources: SourceGrouping,
    pub when_full: WhenFull,
    /// The end of the shedding report: what an operator can change if it is real load.
    pub operator_hint: &'static str,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            new_connections_per_source_per_second: None,
            sources: SourceGrouping::Address,
            when_full: WhenFull::Refuse,
            operator_hint:
                "if this is real load and not a flood, raise the server's connection limits",
        }
    }
}

/// How long [`ConnectionLimiter::admit`] waits for displaced connections to close before
/// refusing.
const CLOSING_WAIT: Duration = Duration::from_millis(250);

/// Counts live connections against [`Limits`] and a [`Policy`]. Cheap to clone; clones share
/// the counts, so one limiter can bound many listeners together (e.g. every pod's HBONE
/// listener on a node).
#[derive(Clone)]
pub struct ConnectionLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    /// Which server this is, in the shedding report.
    name: &'static str,
    limits: Limits,
    policy: Policy,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    open: usize,
    sources: HashMap<SourceKey, Source>,
    /// Idle-table keys; they grow with time, so the smallest is the longest idle.
    next_id: u64,
    report: ShedReport,
}

struct Source {
    open: usize,
    /// With [`WhenFull::DisplaceIdle`]: its connections with no request in flight.
    idle: BTreeMap<u64, Arc<Notify>>,
    /// With a rate limit.
    bucket: Option<TokenBucket>,
}

/// Held for as long as the connection lives; gives its slot back when dropped.
pub struct ConnectionPermit {
    limiter: ConnectionLimiter,
    source: SourceKey,
    /// With [`WhenFull::DisplaceIdle`].
    displaceable: Option<Displaceable>,
}

struct Displaceable {
    /// Its key in the source's idle table, renewed each time it turns idle.
    id: AtomicU64,
    evict: Arc<Notify>,
}

impl ConnectionLimiter {
    /// `name` says which server this is in the log line when connections are shed.
    pub fn new(name: &'static str, limits: Limits) -> Self {
        Self::with_policy(name, limits, Policy::default())
    }

    pub fn with_policy(name: &'static str, limits: Limits, policy: Policy) -> Self {
        ConnectionLimiter {
            inner: Arc::new(Inner {
                name,
                limits,
                policy,
                state: Mutex::default(),
            }),
        }
    }

    pub fn limits(&self) -> Limits {
        self.inner.limits
    }

    pub fn policy(&self) -> Policy {
        self.inner.policy
    }

    /// Connections held now.
    pub fn active(&self) -> usize {
        self.lock().open
    }

    /// Connections held now by the source `ip` belongs to.
    pub fn active_from(&self, ip: IpAddr) -> usize {
        let key = self.key(ip);
        self.lock()
            .sources
            .get(&key)
            .map_or(0, |source| source.open)
    }

    /// Admits a connection from `ip`, or says why not (and logs it, rate-limited).
    pub fn try_acquire(&self, ip: IpAddr) -> Result<ConnectionPermit, Shed> {
        self.admit_at(ip, Instant::now(), true)
            .map(|(permit, _)| permit)
    }

    /// [`ConnectionLimiter::try_acquire`], except that when the connections told to make room
    /// have not closed yet (the accept loop admits faster than their tasks run when the CPU is
    /// saturated), it waits for them — up to [`CLOSING_WAIT`] — instead of refusing. Pending
    /// connections wait in the kernel's backlog meanwhile, so admission slows to the pace at
    /// which the server actually closes connections. Never waits without
    /// [`WhenFull::DisplaceIdle`].
    pub async fn admit(&self, ip: IpAddr) -> Result<ConnectionPermit, Shed> {
        let give_up = Instant::now() + CLOSING_WAIT;
        loop {
            match self.admit_at(ip, Instant::now(), false) {
                Err(Shed::StillClosing { .. }) if Instant::now() < give_up => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(Shed::StillClosing { .. }) => return self.try_acquire(ip),
                Ok((permit, displaced)) => {
                    if displaced {
                        // Give the displaced connection's task a turn to close it.
                        tokio::task::yield_now().await;
                    }
                    return Ok(permit);
                }
                Err(shed) => return Err(shed),
            }
        }
    }

    fn key(&self, ip: IpAddr) -> SourceKey {
        SourceKey::of(ip, self.inner.policy.sources)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn rate(&self) -> Option<f64> {
        self.inner
            .policy
            .new_connections_per_source_per_second
            .map(|rate| rate.get() as f64)
    }

    fn displaces(&self) -> bool {
        self.inner.policy.when_full == WhenFull::DisplaceIdle
    }

    /// Connections the table may hold beyond the cap when displacing: those told to close
    /// that have not yet.
    fn closing_headroom(&self) -> usize {
        self.inner.limits.max_connections / 16 + 16
    }

    /// Sources remembered at most before those with nothing open are forgotten (only a rate
    /// limit keeps such sources).
    fn source_table_bound(&self) -> usize {
        self.inner.limits.max_connections * 4 + 1024
    }

    /// `(permit, whether another connection was told to close for it)`. A refusal for
    /// [`Shed::StillClosing`] is only reported when `final_attempt`.
    fn admit_at(
        &self,
        ip: IpAddr,
        now: Instant,
        final_attempt: bool,
    ) -> Result<(ConnectionPermit, bool), Shed> {
        let key = self.key(ip);
        let mut guard = self.lock();
        let state = &mut *guard;
        let displaced = match self.decide(state, key, now) {
            Err(Shed::StillClosing { limit }) if !final_attempt => {
                return Err(Shed::StillClosing { limit })
            }
            Err(shed) => {
                tracing::debug!(server = self.inner.name, source = %key, reason = %shed, open = state.open, "connection refused");
                state.report.count_refusal(shed, key);
                if let Some(counts) = state.report.due(now) {
                    self.log_shedding(counts);
                }
                return Err(shed);
            }
            Ok(displaced) => displaced,
        };
        if displaced {
            state.report.count_displacement(key);
            if let Some(counts) = state.report.due(now) {
                self.log_shedding(counts);
            }
        }
        let rate = self.rate();
        let source = state.sources.entry(key).or_insert_with(|| Source {
            open: 0,
            idle: BTreeMap::new(),
            bucket: rate.map(|rate| TokenBucket::full(rate, now)),
        });
        if let Some(bucket) = &mut source.bucket {
            bucket.take();
        }
        source.open += 1;
        let displaceable = self.displaces().then(|| {
            let id = state.next_id;
            state.next_id += 1;
            let evict = Arc::new(Notify::new());
            source.idle.insert(id, evict.clone());
            Displaceable {
                id: AtomicU64::new(id),
                evict,
            }
        });
        state.open += 1;
        let permit = ConnectionPermit {
            limiter: self.clone(),
            source: key,
            displaceable,
        };
        Ok((permit, displaced))
    }

    /// `Ok(displaced)`: whether another connection was told to close to make room.
    fn decide(&self, state: &mut State, key: SourceKey, now: Instant) -> Result<bool, Shed> {
        let limits = self.inner.limits;
        if state.sources.len() > self.source_table_bound() {
            // Only the rate state of sources with nothing open is lost.
            state.sources.retain(|_, source| source.open > 0);
        }
        let own_open = match state.sources.get_mut(&key) {
            Some(source) => {
                if let (Some(bucket), Some(rate)) = (&mut source.bucket, self.rate()) {
                    bucket.refill(now, rate);
                    if !bucket.has_token() {
                        return Err(Shed::OverRate { source: key });
                    }
                }
                if source.open >= limits.max_connections_per_source {
                    return Err(Shed::SourceFull {
                        source: key,
                        limit: limits.max_connections_per_source,
                    });
                }
                source.open
            }
            None => 0,
        };
        if state.open < limits.max_connections {
            return Ok(false);
        }
        let full = Shed::Full {
            limit: limits.max_connections,
        };
        if !self.displaces() {
            return Err(full);
        }
        if state.open >= limits.max_connections + self.closing_headroom() {
            return Err(Shed::StillClosing {
                limit: limits.max_connections,
            });
        }
        // The source with the most connections gives one up (ties: the newcomer's own source),
        // but never to a source that would then hold more than it does.
        let victim = state
            .sources
            .iter()
            .filter(|(_, source)| !source.idle.is_empty())
            .max_by_key(|(candidate, source)| (source.open, **candidate == key))
            .map(|(candidate, source)| (*candidate, source.open));
        match victim {
            Some((victim, open)) if victim == key || open > own_open + 1 => {
                let source = state.sources.get_mut(&victim).ok_or(full)?;
                let (_, evict) = source.idle.pop_first().ok_or(full)?;
                evict.notify_one();
                Ok(true)
            }
            _ => Err(full),
        }
    }

    fn log_shedding(&self, counts: ShedCounts) {
        let Inner {
            name,
            limits,
            policy,
            ..
        } = &*self.inner;
        let last_source = counts
            .last_source
            .map(|source| source.to_string())
            .unwrap_or_default();
        tracing::warn!(
            server = name,
            over_rate = counts.over_rate,
            over_per_source = counts.source_full,
            full = counts.full,
            displaced_idle = counts.displaced,
            last_source = %last_source,
            max_connections = limits.max_connections,
            max_connections_per_source = limits.max_connections_per_source,
            new_connections_per_source_per_second = policy.new_connections_per_source_per_second.map_or(0, NonZeroUsize::get),
            "shedding connections (counts since the last report, at most one per {}s): refused over a source's rate or cap, refused with every slot busy, or idle ones closed to make room; {}",
            REPORT_INTERVAL.as_secs(),
            policy.operator_hint
        );
    }
}

impl std::fmt::Debug for ConnectionLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionLimiter")
            .field("name", &self.inner.name)
            .field("limits", &self.inner.limits)
            .field("policy", &self.inner.policy)
            .field("active", &self.active())
            .finish()
    }
}

impl ConnectionPermit {
    /// A request is in flight: the connection may no longer be displaced. `false` if it was
    /// already told to close (it lost the race; close it). Always `true` for a limiter that
    /// does not displace connections.
    pub fn mark_busy(&self) -> bool {
        let Some(displaceable) = &self.displaceable else {
            return true;
        };
        let mut state = self.limiter.lock();
        state.sources.get_mut(&self.source).is_some_and(|source| {
            source
                .idle
                .remove(&displaceable.id.load(Ordering::Relaxed))
                .is_some()
        })
    }

    /// No request in flight any more: displaceable again, as the most recently idle.
    pub fn mark_idle(&self) {
        let Some(displaceable) = &self.displaceable else {
            return;
        };
        let mut guard = self.limiter.lock();
        let state = &mut *guard;
        let id = state.next_id;
        state.next_id += 1;
        // Under the lock, so the table and the id never disagree.
        let old = displaceable.id.swap(id, Ordering::Relaxed);
        if let Some(source) = state.sources.get_mut(&self.source) {
            source.idle.remove(&old);
            source.idle.insert(id, displaceable.evict.clone());
        }
    }

    /// Resolves when the limiter wants this connection closed to make room for another;
    /// never for a limiter that does not displace connections.
    pub async fn displaced(&self) {
        match &self.displaceable {
            Some(displaceable) => displaceable.evict.notified().await,
            None => std::future::pending().await,
        }
    }

    /// The source this connection counts against.
    pub fn source(&self) -> SourceKey {
        self.source
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let rate = self.limiter.rate();
        let mut guard = self.limiter.lock();
        let state = &mut *guard;
        state.open = state.open.saturating_sub(1);
        let forget = match state.sources.get_mut(&self.source) {
            Some(source) => {
                source.open = source.open.saturating_sub(1);
                if let Some(displaceable) = &self.displaceable {
                    source.idle.remove(&displaceable.id.load(Ordering::Relaxed));
                }
                // A source with nothing open and a full bucket (or none) carries no state worth
                // keeping; one that reconnects quickly keeps its partly spent bucket.
                source.open == 0
                    && match (&source.bucket, rate) {
                        (Some(bucket), Some(rate)) => bucket.full_at(Instant::now(), rate),
                        _ => true,
                    }
            }
            None => false,
        };
        if forget {
            // Keep the map as small as the set of sources worth remembering.
            state.sources.remove(&self.source);
        }
    }
}
