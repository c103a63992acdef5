//! Connection limits: a cap on concurrent connections in total and per source IP. A server
//! asks for a [`ConnectionPermit`] per accepted connection and drops the connection when none
//! is granted — under a flood, the sources that behave keep their share.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How many connections a server keeps at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub max_connections_per_source: usize,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// The server holds `max_connections` already.
    Full { limit: usize },
    /// This source holds `max_connections_per_source` already.
    SourceFull { source: IpAddr, limit: usize },
}

impl std::fmt::Display for Shed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shed::Full { limit } => write!(f, "the server already holds {limit} connections"),
            Shed::SourceFull { source, limit } => {
                write!(f, "{source} already holds {limit} connections")
            }
        }
    }
}

#[derive(Default)]
struct Counts {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
    /// Shedding is logged at most once per interval, with how many were shed meanwhile.
    shed_since_log: u64,
    last_log: Option<Instant>,
}

/// Counts live connections against [`Limits`]. Cheap to clone; clones share the counts, so one
/// limiter can bound many listeners together (e.g. every pod's HBONE listener on a node).
#[derive(Clone)]
pub struct ConnectionLimiter {
    limits: Limits,
    name: &'static str,
    counts: Arc<Mutex<Counts>>,
}

impl std::fmt::Debug for ConnectionLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionLimiter")
            .field("name", &self.name)
            .field("limits", &self.limits)
            .field("active", &self.active())
            .finish()
    }
}

/// Held for as long as the connection lives; gives its slot back when dropped.
pub struct ConnectionPermit {
    limiter: ConnectionLimiter,
    source: IpAddr,
}

const SHED_LOG_INTERVAL: Duration = Duration::from_secs(10);

impl ConnectionLimiter {
    /// `name` says which server this is in the log line when connections are shed.
    pub fn new(name: &'static str, limits: Limits) -> Self {
        ConnectionLimiter {
            limits,
            name,
            counts: Arc::new(Mutex::new(Counts::default())),
        }
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Admits a connection from `source`, or says why not (and logs it, rate-limited).
    pub fn try_acquire(&self, source: IpAddr) -> Result<ConnectionPermit, Shed> {
        let mut counts = self.counts();
        let from_source = counts.by_source.get(&source).copied().unwrap_or(0);
        let shed = if counts.total >= self.limits.max_connections {
            Some(Shed::Full {
                limit: self.limits.max_connections,
            })
        } else if from_source >= self.limits.max_connections_per_source {
            Some(Shed::SourceFull {
                source,
                limit: self.limits.max_connections_per_source,
            })
        } else {
            None
        };
        if let Some(shed) = shed {
            counts.shed_since_log += 1;
            let due = counts
                .last_log
                .is_none_or(|last| last.elapsed() >= SHED_LOG_INTERVAL);
            if due {
                tracing::warn!(
                    server = self.name,
                    reason = %shed,
                    shed = counts.shed_since_log,
                    "connections refused: over the connection limit (a flood, or raise the limit if this is real load)"
                );
                counts.shed_since_log = 0;
                counts.last_log = Some(Instant::now());
            }
            return Err(shed);
        }
        counts.total += 1;
        *counts.by_source.entry(source).or_insert(0) += 1;
        Ok(ConnectionPermit {
            limiter: self.clone(),
            source,
        })
    }

    /// Connections held now.
    pub fn active(&self) -> usize {
        self.counts().total
    }

    /// Connections held now by `source`.
    pub fn active_from(&self, source: IpAddr) -> usize {
        self.counts().by_source.get(&source).copied().unwrap_or(0)
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut counts = self.limiter.counts();
        counts.total = counts.total.saturating_sub(1);
        if let Some(count) = counts.by_source.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                // Keep the map as small as the set of live sources.
                counts.by_source.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn one_source_cannot_take_every_slot() {
        let limiter = ConnectionLimiter::new(
            "test",
            Limits {
                max_connections: 4,
                max_connections_per_source: 2,
            },
        );
        let a1 = limiter.try_acquire(ip(1)).unwrap();
        let _a2 = limiter.try_acquire(ip(1)).unwrap();
        assert_eq!(
            limiter.try_acquire(ip(1)).err(),
            Some(Shed::SourceFull {
                source: ip(1),
                limit: 2
            })
        );
        // Another source still gets in, until the server is full.
        let _b1 = limiter.try_acquire(ip(2)).unwrap();
        let _b2 = limiter.try_acquire(ip(2)).unwrap();
        assert_eq!(
            limiter.try_acquire(ip(3)).err(),
            Some(Shed::Full { limit: 4 })
        );
        // A closed connection frees its slot for its own source.
        drop(a1);
        assert_eq!(limiter.active_from(ip(1)), 1);
        let _a3 = limiter.try_acquire(ip(1)).unwrap();
        assert_eq!(limiter.active(), 4);
    }

    #[test]
    fn clones_share_the_counts_and_sources_are_forgotten_when_gone() {
        let limiter = ConnectionLimiter::new(
            "test",
            Limits {
                max_connections: 1,
                max_connections_per_source: 1,
            },
        );
        let other = limiter.clone();
        let permit = limiter.try_acquire(ip(1)).unwrap();
        assert!(other.try_acquire(ip(2)).is_err());
        drop(permit);
        assert_eq!(other.active(), 0);
        assert!(other.counts().by_source.is_empty());
    }
}
