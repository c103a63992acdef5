//! Who a connection comes from, for the per-source limits, and how fast one source may open
//! connections.

use std::net::IpAddr;
use std::time::Instant;

/// How connections are grouped into sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SourceGrouping {
    /// Every address is a source of its own.
    #[default]
    Address,
    /// IPv4 by address, IPv6 by /64: a single host usually owns a whole /64, so counting its
    /// addresses one by one would give it a fresh share per address. For servers anyone can
    /// reach (the CA); not for pod addresses, where neighbours share a prefix.
    Ipv6Prefix64,
}

/// One source, as the limits count it. An IPv4-mapped IPv6 address (a dual-stack listener's
/// view of an IPv4 client) is that IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SourceKey {
    address: IpAddr,
    /// Whether `address` stands for its /64.
    prefix64: bool,
}

impl SourceKey {
    pub fn of(ip: IpAddr, grouping: SourceGrouping) -> SourceKey {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (ip, grouping) {
            (IpAddr::V6(v6), SourceGrouping::Ipv6Prefix64) => SourceKey {
                address: IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
                prefix64: true,
            },
            (address, _) => SourceKey {
                address,
                prefix64: false,
            },
        }
    }
}

impl std::fmt::Display for SourceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.prefix64 {
            write!(f, "{}/64", self.address)
        } else {
            write!(f, "{}", self.address)
        }
    }
}

/// New connections of one source: `rate` a second on average, in bursts of up to twice that.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TokenBucket {
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    pub(crate) fn burst(rate: f64) -> f64 {
        rate * 2.0
    }

    pub(crate) fn full(rate: f64, now: Instant) -> TokenBucket {
        TokenBucket {
            tokens: Self::burst(rate),
            refilled: now,
        }
    }

    /// Adds what accrued since the last refill, up to the burst. An older `now` (another
    /// thread's clock reading) changes nothing.
    pub(crate) fn refill(&mut self, now: Instant, rate: f64) {
        if let Some(elapsed) = now.checked_duration_since(self.refilled) {
            self.tokens = (self.tokens + elapsed.as_secs_f64() * rate).min(Self::burst(rate));
            self.refilled = now;
        }
    }

    pub(crate) fn has_token(&self) -> bool {
        self.tokens >= 1.0
    }

    pub(crate) fn take(&mut self) {
        self.tokens -= 1.0;
    }

    /// Whether the bucket would be full at `now`: then it carries nothing worth remembering.
    pub(crate) fn full_at(&self, now: Instant, rate: f64) -> bool {
        let accrued = now.saturating_duration_since(self.refilled).as_secs_f64() * rate;
        self.tokens + accrued >= Self::burst(rate)
    }
}
