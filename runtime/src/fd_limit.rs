//! The open-file limit: a proxy holds two descriptors per proxied connection, and the usual soft
//! limit (1024) is far below what the connection caps allow. Servers lift the soft limit to
//! the hard one at start-up (as Envoy and istio/ztunnel do), and say so when even the hard one
//! is below what they need.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now in force.
/// `needed` is what the process's connection caps can use: below it, a warning says what to
/// change.
pub fn raise_to_hard_limit(process: &'static str, needed: u64) -> Option<u64> {
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(error) => {
            tracing::warn!(%error, "cannot read RLIMIT_NOFILE; connections beyond it fail with too many open files");
            return None;
        }
    };
    let mut now = soft;
    if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => now = hard,
            Err(error) => tracing::warn!(%error, soft, hard, "cannot raise RLIMIT_NOFILE"),
        }
    }
    if now < needed {
        tracing::warn!(
            process,
            limit = now,
            needed,
            "the open-file limit is below what the connection limits allow: under load, connections fail with too many open files; raise the hard limit (ulimit -Hn, LimitNOFILE, the container runtime's nofile)"
        );
    }
    Some(now)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_soft_limit_ends_at_the_hard_one() {
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(raise_to_hard_limit("test", 0), Some(hard));
        assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap().0, hard);
    }
}
