//! Which endpoint of a backend serves a request: random-of-two by active requests (it tracks
//! load like least-request without a global scan), with passive outlier ejection — an endpoint
//! that failed `EJECT_AFTER` requests in a row (connect failures, resets, 5xx) is left out for
//! a while, unless every endpoint is out (then all are tried: some answer beats none). Pure
//! bookkeeping: time and randomness come from the caller, so tests are deterministic.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Consecutive failures that eject an endpoint (Envoy's `consecutive_5xx` default).
pub const EJECT_AFTER: u32 = 5;
/// How long an ejected endpoint stays out; doubled for each ejection in a row, up to 8×.
pub const EJECTION_BASE: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct EndpointHealth {
    consecutive_failures: u32,
    ejections: u32,
    ejected_until: Option<Instant>,
}

/// Per-endpoint load and health, shared by every request of the waypoint.
#[derive(Debug, Default)]
pub struct Balancer {
    active: Mutex<HashMap<SocketAddr, Arc<AtomicUsize>>>,
    health: Mutex<HashMap<SocketAddr, EndpointHealth>>,
}

/// Held while a request is at an endpoint: counts it as active.
#[derive(Debug)]
pub struct ActiveRequest {
    counter: Arc<AtomicUsize>,
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Balancer {
    /// Picks one of `candidates` (never empty when `Some` is returned). `random` supplies two
    /// independent random numbers.
    pub fn pick(
        &self,
        candidates: &[SocketAddr],
        now: Instant,
        random: (usize, usize),
    ) -> Option<SocketAddr> {
        let healthy: Vec<SocketAddr> = {
            let health = lock(&self.health);
            candidates
                .iter()
                .copied()
                .filter(|addr| {
                    health
                        .get(addr)
                        .and_then(|h| h.ejected_until)
                        .is_none_or(|until| until <= now)
                })
                .collect()
        };
        let pool = if healthy.is_empty() {
            candidates
        } else {
            &healthy
        };
        match pool.len() {
            0 => None,
            1 => Some(pool[0]),
            len => {
                let a = pool[random.0 % len];
                let mut b = pool[random.1 % len];
                if a == b {
                    b = pool[(random.1 + 1) % len];
                }
                Some(if self.load(b) < self.load(a) { b } else { a })
            }
        }
    }

    fn load(&self, addr: SocketAddr) -> usize {
        lock(&self.active)
            .get(&addr)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Counts a request at `addr` until the returned guard drops.
    pub fn start(&self, addr: SocketAddr) -> ActiveRequest {
        let counter = lock(&self.active).entry(addr).or_default().clone();
        counter.fetch_add(1, Ordering::Relaxed);
        ActiveRequest { counter }
    }

    /// Records how a request at `addr` ended: `failed` for connect failures, resets and 5xx.
    /// Returns whether this failure ejected the endpoint.
    pub fn record(&self, addr: SocketAddr, failed: bool, now: Instant) -> bool {
        let mut health = lock(&self.health);
        let entry = health.entry(addr).or_default();
        if !failed {
            entry.consecutive_failures = 0;
            if entry.ejected_until.is_some_and(|until| until <= now) {
                entry.ejected_until = None;
                entry.ejections = 0;
            }
            return false;
        }
        entry.consecutive_failures += 1;
        if entry.consecutive_failures < EJECT_AFTER {
            return false;
        }
        entry.consecutive_failures = 0;
        entry.ejections = (entry.ejections + 1).min(4);
        entry.ejected_until = Some(now + EJECTION_BASE * (1 << (entry.ejections - 1)));
        true
    }

    /// Forgets endpoints that are no longer in the cluster view.
    pub fn retain(&self, keep: impl Fn(&SocketAddr) -> bool) {
        lock(&self.health).retain(|addr, _| keep(addr));
        lock(&self.active).retain(|addr, counter| keep(addr) || Arc::strong_count(counter) > 1);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The maps stay consistent at every await-free step; a panic elsewhere cannot corrupt them.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: u8) -> Vec<SocketAddr> {
        (1..=n)
            .map(|i| SocketAddr::from(([10, 0, 0, i], 8080)))
            .collect()
    }

    #[test]
    fn of_two_random_endpoints_the_less_loaded_is_picked() {
        let balancer = Balancer::default();
        let endpoints = addrs(3);
        let now = Instant::now();
        let _busy = [balancer.start(endpoints[0]), balancer.start(endpoints[0])];
        assert_eq!(balancer.pick(&endpoints, now, (0, 1)), Some(endpoints[1]));
        assert_eq!(balancer.pick(&endpoints, now, (1, 0)), Some(endpoints[1]));
        // Equal load: the first draw wins.
        assert_eq!(balancer.pick(&endpoints, now, (2, 1)), Some(endpoints[2]));
    }

    #[test]
    fn an_endpoint_failing_in_a_row_is_ejected_then_returns() {
        let balancer = Balancer::default();
        let endpoints = addrs(2);
        let now = Instant::now();
        for i in 1..EJECT_AFTER {
            assert!(!balancer.record(endpoints[0], true, now), "failure {i}");
        }
        assert!(balancer.record(endpoints[0], true, now));
        for draw in 0..4 {
            assert_eq!(
                balancer.pick(&endpoints, now, (draw, draw + 1)),
                Some(endpoints[1])
            );
        }
        let later = now + EJECTION_BASE;
        let picked: Vec<_> = (0..2)
            .filter_map(|d| balancer.pick(&endpoints, later, (d, d)))
            .collect();
        assert!(picked.contains(&endpoints[0]), "back after the ejection");
    }

    #[test]
    fn a_success_resets_the_count_and_all_ejected_means_all_tried() {
        let balancer = Balancer::default();
        let endpoints = addrs(1);
        let now = Instant::now();
        for _ in 0..EJECT_AFTER - 1 {
            balancer.record(endpoints[0], true, now);
        }
        balancer.record(endpoints[0], false, now);
        assert!(!balancer.record(endpoints[0], true, now));
        for _ in 0..EJECT_AFTER {
            balancer.record(endpoints[0], true, now);
        }
        assert_eq!(balancer.pick(&endpoints, now, (0, 0)), Some(endpoints[0]));
        assert_eq!(balancer.pick(&[], now, (0, 0)), None);
    }
}
