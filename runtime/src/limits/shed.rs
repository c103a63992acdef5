//! Why a connection was not admitted, and the counts behind the shedding report: refusals are
//! reported in one log line per [`REPORT_INTERVAL`], never one per connection, so that a flood
//! does not become a flood of log lines.

use std::time::{Duration, Instant};

use super::source::SourceKey;

/// At most one shedding report per this interval.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// The source opened connections faster than its rate allows.
    OverRate { source: SourceKey },
    /// The source holds `limit` connections already.
    SourceFull { source: SourceKey, limit: usize },
    /// The server holds `limit` connections and none can make room (all busy, or the server
    /// does not displace connections).
    Full { limit: usize },
    /// The server is full and the connections told to make room have not closed yet.
    StillClosing { limit: usize },
}

impl std::fmt::Display for Shed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shed::OverRate { source } => {
                write!(f, "{source} opens connections faster than its rate")
            }
            Shed::SourceFull { source, limit } => {
                write!(f, "{source} already holds {limit} connections")
            }
            Shed::Full { limit } => write!(
                f,
                "the server already holds {limit} connections, none of which can make room"
            ),
            Shed::StillClosing { limit } => write!(
                f,
                "the server already holds {limit} connections and those told to make room have not closed yet"
            ),
        }
    }
}

/// What one report line says: counts since the previous one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ShedCounts {
    pub over_rate: u64,
    pub source_full: u64,
    pub full: u64,
    /// Idle connections closed to admit another.
    pub displaced: u64,
    pub last_source: Option<SourceKey>,
}

/// Counts refusals and displacements, and says when a report is due.
#[derive(Debug, Default)]
pub(crate) struct ShedReport {
    last: Option<Instant>,
    counts: ShedCounts,
}

impl ShedReport {
    pub(crate) fn count_refusal(&mut self, shed: Shed, source: SourceKey) {
        match shed {
            Shed::OverRate { .. } => self.counts.over_rate += 1,
            Shed::SourceFull { .. } => self.counts.source_full += 1,
            Shed::Full { .. } | Shed::StillClosing { .. } => self.counts.full += 1,
        }
        self.counts.last_source = Some(source);
    }

    pub(crate) fn count_displacement(&mut self, for_source: SourceKey) {
        self.counts.displaced += 1;
        self.counts.last_source = Some(for_source);
    }

    /// The counts to report if a report is due at `now` (the first one is due at once), and
    /// a fresh start for the next.
    pub(crate) fn due(&mut self, now: Instant) -> Option<ShedCounts> {
        if self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < REPORT_INTERVAL)
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.counts))
    }
}
