//! Which connections the CA takes on. Decided right after `accept`, before any TLS work:
//!
//! - per source address (IPv4 address, IPv6 /64): a token bucket of new connections per second
//!   and a cap on connections open at once;
//! - globally, a cap on open connections. When it is reached, a connection with no request in
//!   flight — still handshaking, or idle — is closed to make room: the longest-idle one of the
//!   source holding the most connections. A flood therefore displaces its own connections first
//!   and a node that opens one connection per certificate still gets in. Only when every
//!   connection is busy with a request is the newcomer refused.
//!
//! Refusals are reported in one log line per [`REPORT_INTERVAL`], not per connection: a flood
//! must not become a flood of log lines.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::limits::Limits;

pub const REPORT_INTERVAL: Duration = crate::limits::LogThrottle::INTERVAL;
/// How long the accept loop waits for displaced connections to close before refusing.
const CLOSING_WAIT: Duration = Duration::from_millis(250);

/// Why a connection was not taken on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// The source opened connections faster than its rate.
    Rate,
    /// The source already holds its share of connections.
    PerSource,
    /// Every connection slot is busy with a request.
    Full,
    /// Every slot is taken and the connections told to make room have not closed yet.
    Closing,
}

/// Where a connection comes from, for the per-source limits: one IPv4 address, or one IPv6 /64
/// (what a single host usually owns).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SourceKey(IpAddr);

impl SourceKey {
    pub fn of(ip: IpAddr) -> SourceKey {
        match ip {
            IpAddr::V4(v4) => SourceKey(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => SourceKey(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    SourceKey(IpAddr::V6(prefix.into()))
                }
            },
        }
    }
}

impl std::fmt::Display for SourceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

pub struct Admission {
    limits: Limits,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    open: usize,
    sources: HashMap<SourceKey, Source>,
    next_id: u64,
    report: Report,
}

struct Source {
    open: usize,
    /// Connections with no request in flight, by when they became so (ids grow with time).
    idle: BTreeMap<u64, Arc<Notify>>,
    tokens: f64,
    refilled: Instant,
}

/// Counts since the last report line.
#[derive(Default)]
struct Report {
    last: Option<Instant>,
    rate: u64,
    per_source: u64,
    full: u64,
    displaced: u64,
    last_source: Option<SourceKey>,
}

impl Admission {
    pub fn new(limits: Limits) -> Arc<Admission> {
        Arc::new(Admission {
            limits,
            state: Mutex::default(),
        })
    }

    /// Connections the table may track beyond the cap: those told to close that have not yet.
    fn closing_headroom(&self) -> usize {
        self.limits.max_connections / 16 + 16
    }

    fn burst(&self) -> f64 {
        (self.limits.connections_per_ip_per_second * 2) as f64
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes on a connection from `ip`, or says why not. When the connections told to make
    /// room have not closed yet (the accept loop admits faster than their tasks run when the
    /// CPU is saturated), the loop waits for them — up to [`CLOSING_WAIT`] — instead of
    /// refusing: pending connections wait in the kernel's backlog meanwhile, so admission
    /// slows to the pace at which the CA actually closes connections.
    pub async fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Connection, Shed> {
        let give_up = Instant::now() + CLOSING_WAIT;
        loop {
            match self.admit_at(ip, Instant::now(), false) {
                Err(Shed::Closing) if Instant::now() < give_up => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(Shed::Closing) => return self.try_admit(ip),
                Ok((connection, displaced)) => {
                    if displaced {
                        // Give the displaced connection's task a turn to close it.
                        tokio::task::yield_now().await;
                    }
                    return Ok(connection);
                }
                Err(shed) => return Err(shed),
            }
        }
    }

    /// [`Admission::admit`] without waiting.
    pub fn try_admit(self: &Arc<Self>, ip: IpAddr) -> Result<Connection, Shed> {
        self.admit_at(ip, Instant::now(), true)
            .map(|(connection, _)| connection)
    }

    /// `(connection, whether another was told to close for it)`. A refusal for
    /// [`Shed::Closing`] is only reported when `final_attempt`.
    fn admit_at(
        self: &Arc<Self>,
        ip: IpAddr,
        now: Instant,
        final_attempt: bool,
    ) -> Result<(Connection, bool), Shed> {
        let key = SourceKey::of(ip);
        let mut guard = self.lock();
        let state = &mut *guard;
        let displaced = match self.decide(state, key, now) {
            Err(Shed::Closing) if !final_attempt => return Err(Shed::Closing),
            Err(shed) => {
                tracing::debug!(source = %key, ?shed, open = state.open, "connection refused");
                state.report.count(shed, key);
                state.report.maybe_log(now, &self.limits);
                return Err(shed);
            }
            Ok(displaced) => displaced,
        };
        if displaced {
            state.report.displaced += 1;
            state.report.last_source = Some(key);
            state.report.maybe_log(now, &self.limits);
        }
        let id = state.next_id;
        state.next_id += 1;
        let evict = Arc::new(Notify::new());
        let source = state
            .sources
            .entry(key)
            .or_insert_with(|| Source::new(self.burst(), now));
        source.tokens -= 1.0;
        source.open += 1;
        source.idle.insert(id, evict.clone());
        state.open += 1;
        let connection = Connection {
            admission: self.clone(),
            key,
            id: AtomicU64::new(id),
            evict,
        };
        Ok((connection, displaced))
    }

    /// `Ok(displaced)`: whether another connection was told to close to make room.
    fn decide(&self, state: &mut State, key: SourceKey, now: Instant) -> Result<bool, Shed> {
        if state.sources.len() > self.limits.max_connections * 4 + 1024 {
            // Only the rate state of sources with nothing open is lost.
            state.sources.retain(|_, source| source.open > 0);
        }
        let (rate, burst) = (
            self.limits.connections_per_ip_per_second as f64,
            self.burst(),
        );
        let own_open = match state.sources.get_mut(&key) {
            Some(source) => {
                source.refill(now, rate, burst);
                if source.tokens < 1.0 {
                    return Err(Shed::Rate);
                }
                if source.open >= self.limits.max_connections_per_ip {
                    return Err(Shed::PerSource);
                }
                source.open
            }
            None => 0,
        };
        if state.open < self.limits.max_connections {
            return Ok(false);
        }
        if state.open >= self.limits.max_connections + self.closing_headroom() {
            return Err(Shed::Closing);
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
                let source = state.sources.get_mut(&victim).ok_or(Shed::Full)?;
                let (_, evict) = source.idle.pop_first().ok_or(Shed::Full)?;
                evict.notify_one();
                Ok(true)
            }
            _ => Err(Shed::Full),
        }
    }
}

impl Source {
    fn new(burst: f64, now: Instant) -> Source {
        Source {
            open: 0,
            idle: BTreeMap::new(),
            tokens: burst,
            refilled: now,
        }
    }

    /// Tokens the bucket would hold at `now`, before the cap.
    fn tokens_at(&self, now: Instant, rate: f64) -> f64 {
        self.tokens + now.saturating_duration_since(self.refilled).as_secs_f64() * rate
    }

    fn refill(&mut self, now: Instant, rate: f64, burst: f64) {
        if let Some(elapsed) = now.checked_duration_since(self.refilled) {
            self.tokens = (self.tokens + elapsed.as_secs_f64() * rate).min(burst);
            self.refilled = now;
        }
    }
}

impl Report {
    fn count(&mut self, shed: Shed, key: SourceKey) {
        match shed {
            Shed::Rate => self.rate += 1,
            Shed::PerSource => self.per_source += 1,
            Shed::Full | Shed::Closing => self.full += 1,
        }
        self.last_source = Some(key);
    }

    fn maybe_log(&mut self, now: Instant, limits: &Limits) {
        if self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < REPORT_INTERVAL)
        {
            return;
        }
        self.last = Some(now);
        let source = self.last_source.map(|s| s.to_string()).unwrap_or_default();
        tracing::warn!(
            over_rate = self.rate,
            over_per_source = self.per_source,
            full = self.full,
            displaced_idle = self.displaced,
            last_source = %source,
            max_connections = limits.max_connections,
            max_connections_per_ip = limits.max_connections_per_ip,
            connections_per_ip_per_second = limits.connections_per_ip_per_second,
            "shedding connections (counts since the last report, at most one per {}s): refused over the per-address rate or cap, refused with every slot busy, or displaced idle ones; if these are node agents and not a flood, raise --max-connections, --max-connections-per-ip or --connections-per-ip-per-second",
            REPORT_INTERVAL.as_secs()
        );
        (self.rate, self.per_source, self.full, self.displaced) = (0, 0, 0, 0);
    }
}

/// An admitted connection; dropping it gives its slot back.
pub struct Connection {
    admission: Arc<Admission>,
    key: SourceKey,
    /// Its key in the source's idle table (renewed each time it turns idle).
    id: AtomicU64,
    evict: Arc<Notify>,
}

impl Connection {
    /// A request is in flight: the connection may no longer be displaced. `false` if it was
    /// already told to close.
    pub fn busy(&self) -> bool {
        let mut state = self.admission.lock();
        state.sources.get_mut(&self.key).is_some_and(|source| {
            source
                .idle
                .remove(&self.id.load(Ordering::Relaxed))
                .is_some()
        })
    }

    /// No request in flight any more: displaceable again, as the most recently idle.
    pub fn idle(&self) {
        let mut guard = self.admission.lock();
        let state = &mut *guard;
        let id = state.next_id;
        state.next_id += 1;
        // Under the lock, so the table and the id never disagree.
        let old = self.id.swap(id, Ordering::Relaxed);
        if let Some(source) = state.sources.get_mut(&self.key) {
            source.idle.remove(&old);
            source.idle.insert(id, self.evict.clone());
        }
    }

    /// Resolves when the admission wants this connection closed to make room for another.
    pub async fn displaced(&self) {
        self.evict.notified().await;
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let limits = &self.admission.limits;
        let (rate, burst) = (
            limits.connections_per_ip_per_second as f64,
            self.admission.burst(),
        );
        let mut guard = self.admission.lock();
        let state = &mut *guard;
        state.open = state.open.saturating_sub(1);
        let forget = match state.sources.get_mut(&self.key) {
            Some(source) => {
                source.open = source.open.saturating_sub(1);
                source.idle.remove(&self.id.load(Ordering::Relaxed));
                // A source with nothing open and a full bucket carries no state worth keeping;
                // one that reconnects quickly keeps its (partly spent) bucket.
                source.open == 0 && source.tokens_at(Instant::now(), rate) >= burst
            }
            None => false,
        };
        if forget {
            state.sources.remove(&self.key);
        }
    }
}

#[cfg(test)]
#[path = "admission_tests.rs"]
mod tests;
