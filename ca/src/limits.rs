//! How much the CA takes on at once, and how long each phase of a connection may last
//! (DESIGN §7). Anyone who can reach the port can open connections, so every resource a
//! connection holds is bounded before it has proven anything: by count (globally and per source
//! address, with a rate per source: runtime's [`ConnectionLimiter`], configured by
//! [`Limits::connection_limiter`]), by time (each phase has a deadline) and by size (HTTP/2
//! settings).

use std::num::NonZeroUsize;
use std::time::Duration;

use certs::api::MAX_MESSAGE_BYTES;
use runtime::limits::{ConnectionLimiter, Policy, SourceGrouping, WhenFull};

/// The limits flags of `ambit-ca serve`; every flag has an environment fallback.
#[derive(Debug, Clone, clap::Args)]
pub struct LimitArgs {
    /// Most connections open at once. When full, the longest-idle connection of the source with
    /// the most connections is closed to admit a new one; if none is idle, the new one is refused.
    #[arg(long, env = "AMBIT_CA_MAX_CONNECTIONS", default_value_t = Limits::default().max_connections, value_parser = at_least_one)]
    pub max_connections: usize,
    /// Most connections open at once from one source address (IPv6: one /64).
    #[arg(long, env = "AMBIT_CA_MAX_CONNECTIONS_PER_IP", default_value_t = Limits::default().max_connections_per_ip, value_parser = at_least_one)]
    pub max_connections_per_ip: usize,
    /// New connections per second one source address may open (bursts of twice that).
    #[arg(long, env = "AMBIT_CA_CONNECTIONS_PER_IP_PER_SECOND", default_value_t = Limits::default().connections_per_ip_per_second, value_parser = at_least_one)]
    pub connections_per_ip_per_second: usize,
    /// Deadline of the TLS handshake, and then again of the HTTP/2 preface and SETTINGS.
    #[arg(long, env = "AMBIT_CA_HANDSHAKE_TIMEOUT", default_value = "5s", value_parser = positive_duration)]
    pub handshake_timeout: Duration,
    /// Deadline for the headers of the first request once HTTP/2 is up.
    #[arg(long, env = "AMBIT_CA_HEADER_TIMEOUT", default_value = "5s", value_parser = positive_duration)]
    pub header_timeout: Duration,
    /// Deadline of a whole request once its headers are in: body, authentication, issuance.
    #[arg(long, env = "AMBIT_CA_REQUEST_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    pub request_timeout: Duration,
    /// A connection with no request in flight is closed after this long.
    #[arg(long, env = "AMBIT_CA_IDLE_TIMEOUT", default_value = "15s", value_parser = positive_duration)]
    pub idle_timeout: Duration,
    /// Kubernetes mode: most TokenReviews in flight at once (tokens not in the CA's caches).
    #[arg(long, env = "AMBIT_CA_MAX_TOKEN_REVIEWS", default_value_t = Limits::default().max_token_reviews, value_parser = at_least_one)]
    pub max_token_reviews: usize,
}

impl LimitArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            connections_per_ip_per_second: self.connections_per_ip_per_second,
            handshake_timeout: self.handshake_timeout,
            header_timeout: self.header_timeout,
            request_timeout: self.request_timeout,
            idle_timeout: self.idle_timeout,
            max_token_reviews: self.max_token_reviews,
        }
    }
}

/// The limits in force; see [`LimitArgs`] for what each one means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub connections_per_ip_per_second: usize,
    pub handshake_timeout: Duration,
    pub header_timeout: Duration,
    pub request_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_token_reviews: usize,
}

impl Limits {
    /// The admission of new connections, decided right after `accept` and before any TLS
    /// work: per source (an IPv4 address, an IPv6 /64) a rate of new connections and a cap on
    /// open ones; globally a cap, at which a connection with no request in flight — still
    /// handshaking, or idle — is closed to make room (the longest-idle one of the source
    /// holding the most), so a flood displaces its own connections first and a node that opens
    /// one connection per certificate still gets in.
    pub fn connection_limiter(&self) -> ConnectionLimiter {
        ConnectionLimiter::with_policy(
            "ambit-ca",
            runtime::Limits {
                max_connections: self.max_connections,
                max_connections_per_source: self.max_connections_per_ip,
            },
            Policy {
                // The flags refuse 0; should one get through anyway, 1 a second is the
                // closest rate that still lets a node in.
                new_connections_per_source_per_second: Some(
                    NonZeroUsize::new(self.connections_per_ip_per_second)
                        .unwrap_or(NonZeroUsize::MIN),
                ),
                sources: SourceGrouping::Ipv6Prefix64,
                when_full: WhenFull::DisplaceIdle,
                operator_hint: "if these are node agents and not a flood, raise --max-connections, --max-connections-per-ip or --connections-per-ip-per-second",
            },
        )
    }
}

impl Default for Limits {
    /// A node agent opens one short connection per certificate (a node starting 100 pods of 50
    /// service accounts opens ~50 at once), so the per-address limits leave room for that.
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_connections_per_ip: 128,
            connections_per_ip_per_second: 64,
            handshake_timeout: Duration::from_secs(5),
            header_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(15),
            max_token_reviews: 8,
        }
    }
}

/// HTTP/2 settings of the CA's server side. A request is one small protobuf message (a CSR, a
/// short chain back), so everything is sized for that, not for throughput.
pub mod http2 {
    use super::MAX_MESSAGE_BYTES;

    /// Request headers are a path, a content type and one bearer token (a JWT of ~1 KiB).
    pub const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;
    /// Node agents send one request per connection; a few in parallel are tolerated.
    pub const MAX_CONCURRENT_STREAMS: u32 = 4;
    /// One whole message fits one stream's window; the connection's window is the same, so a
    /// connection buffers at most one message's worth of unread body.
    pub const STREAM_WINDOW: u32 = MAX_MESSAGE_BYTES as u32;
    pub const CONNECTION_WINDOW: u32 = MAX_MESSAGE_BYTES as u32;
    /// The protocol's minimum frame size.
    pub const MAX_FRAME_BYTES: u32 = 16 * 1024;
    /// Responses are a few KiB; a peer that does not read them cannot make the CA buffer more.
    pub const MAX_SEND_BUFFER_BYTES: usize = MAX_MESSAGE_BYTES;
    /// Streams a peer may reset before the CA accepted them (rapid-reset protection).
    pub const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 8;
    /// Locally reset streams remembered at once (h2's default is 1024 per connection).
    pub const MAX_CONCURRENT_RESET_STREAMS: usize = 16;

    // DESIGN §7: header lists ≤ 64 KiB; a whole message must still fit the windows.
    const _: () = assert!(MAX_HEADER_LIST_BYTES <= 64 * 1024);
    const _: () = assert!(STREAM_WINDOW as usize >= MAX_MESSAGE_BYTES);
    const _: () = assert!(CONNECTION_WINDOW >= STREAM_WINDOW);

    /// The server builder with these settings.
    pub fn server_builder() -> h2::server::Builder {
        let mut builder = h2::server::Builder::new();
        builder
            .max_header_list_size(MAX_HEADER_LIST_BYTES)
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_frame_size(MAX_FRAME_BYTES)
            .max_send_buffer_size(MAX_SEND_BUFFER_BYTES)
            .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESET_STREAMS)
            .max_concurrent_reset_streams(MAX_CONCURRENT_RESET_STREAMS);
        builder
    }
}

/// Lets one log line through per interval and counts the occurrences in between, so that a
/// flood of refusals becomes a line every few seconds, not a line per refusal.
#[derive(Debug, Default)]
pub struct LogThrottle {
    last: Option<std::time::Instant>,
    held: u64,
}

impl LogThrottle {
    pub const INTERVAL: Duration = Duration::from_secs(10);

    /// Counts one occurrence; `Some(count since the last report)` when a report is due.
    pub fn hit(&mut self, now: std::time::Instant) -> Option<u64> {
        self.held += 1;
        let due = self
            .last
            .is_none_or(|last| now.saturating_duration_since(last) >= Self::INTERVAL);
        if !due {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held))
    }
}

fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(value) => Ok(value),
        Err(error) => Err(format!("{text:?} is not a whole number: {error}")),
    }
}

fn positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(duration) if duration.is_zero() => Err("must be longer than 0s".to_owned()),
        Ok(duration) => Ok(duration),
        Err(error) => Err(format!(
            "{text:?} is not a duration such as 5s or 1m: {error}"
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        limits: LimitArgs,
    }

    #[test]
    fn flag_defaults_are_the_documented_defaults() {
        let flags = Flags::try_parse_from(["ambit-ca"]).unwrap();
        assert_eq!(flags.limits.limits(), Limits::default());
    }

    #[test]
    fn flags_override_defaults_and_nonsense_is_refused() {
        let flags = Flags::try_parse_from([
            "ambit-ca",
            "--max-connections",
            "10",
            "--request-timeout",
            "2s",
        ])
        .unwrap();
        assert_eq!(flags.limits.max_connections, 10);
        assert_eq!(flags.limits.request_timeout, Duration::from_secs(2));
        for bad in [
            ["--max-connections", "0"],
            ["--idle-timeout", "0s"],
            ["--handshake-timeout", "soon"],
            ["--max-token-reviews", "-1"],
        ] {
            let args = ["ambit-ca", bad[0], bad[1]];
            assert!(Flags::try_parse_from(args).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn the_connection_limiter_follows_the_flags() {
        let flags = Flags::try_parse_from([
            "ambit-ca",
            "--max-connections",
            "10",
            "--max-connections-per-ip",
            "3",
            "--connections-per-ip-per-second",
            "7",
        ])
        .unwrap();
        let limiter = flags.limits.limits().connection_limiter();
        assert_eq!(
            limiter.limits(),
            runtime::Limits {
                max_connections: 10,
                max_connections_per_source: 3
            }
        );
        let policy = limiter.policy();
        assert_eq!(
            policy.new_connections_per_source_per_second,
            NonZeroUsize::new(7)
        );
        assert_eq!(policy.sources, SourceGrouping::Ipv6Prefix64);
        assert_eq!(policy.when_full, WhenFull::DisplaceIdle);
    }

    #[test]
    fn throttled_reports_come_once_per_interval_with_the_count_held_back() {
        let mut throttle = LogThrottle::default();
        let start = std::time::Instant::now();
        assert_eq!(throttle.hit(start), Some(1));
        for _ in 0..999 {
            assert_eq!(throttle.hit(start + Duration::from_secs(1)), None);
        }
        assert_eq!(throttle.hit(start + LogThrottle::INTERVAL), Some(1000));
    }
}
