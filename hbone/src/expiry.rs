//! A connection lives no longer than the certificates it was authenticated with. TLS checks
//! validity once, at the handshake; an HBONE connection is pooled for minutes and carries new
//! tunnels all along, so without this a peer whose certificate expired (its CA unreachable
//! past the certificate's lifetime) would keep opening tunnels on an old connection.

use std::time::{Duration, SystemTime};

use rustls::pki_types::CertificateDer;

/// When the leaf of `chain` expires; `None` when there is no parsable leaf (the handshake
/// verified it, so this does not happen in practice; then no limit is set).
pub(crate) fn leaf_not_after(chain: Option<&[CertificateDer<'_>]>) -> Option<SystemTime> {
    let leaf = chain?.first()?;
    certs::material::validity_of(leaf)
        .ok()
        .map(|(_, not_after)| not_after)
}

/// The earlier of two optional deadlines.
pub(crate) fn earliest(a: Option<SystemTime>, b: Option<SystemTime>) -> Option<SystemTime> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// How long from `now` until `deadline` (zero once passed).
pub(crate) fn time_left(deadline: SystemTime, now: SystemTime) -> Duration {
    deadline.duration_since(now).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_earliest_deadline_wins() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let later = t + Duration::from_secs(5);
        assert_eq!(earliest(Some(t), Some(later)), Some(t));
        assert_eq!(earliest(None, Some(later)), Some(later));
        assert_eq!(earliest(None, None), None);
        assert_eq!(time_left(t, later), Duration::ZERO);
        assert_eq!(time_left(later, t), Duration::from_secs(5));
    }
}
