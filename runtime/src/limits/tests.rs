#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
}

fn key(last: u8) -> SourceKey {
    SourceKey::of(ip(last), SourceGrouping::Address)
}

fn plain(max: usize, per_source: usize) -> ConnectionLimiter {
    ConnectionLimiter::new(
        "test",
        Limits {
            max_connections: max,
            max_connections_per_source: per_source,
        },
    )
}

/// A limiter as the CA configures it: a rate per source, /64 grouping, displacing idle
/// connections when full.
fn open_to_anyone(max: usize, per_source: usize, rate: usize) -> ConnectionLimiter {
    ConnectionLimiter::with_policy(
        "test",
        Limits {
            max_connections: max,
            max_connections_per_source: per_source,
        },
        Policy {
            new_connections_per_source_per_second: NonZeroUsize::new(rate),
            sources: SourceGrouping::Ipv6Prefix64,
            when_full: WhenFull::DisplaceIdle,
            ..Policy::default()
        },
    )
}

/// Whether `permit` was told to close. A notification is stored, so a told connection
/// answers at once; waiting a little longer only guards against a missed one.
async fn displaced(permit: &ConnectionPermit) -> bool {
    tokio::time::timeout(Duration::from_millis(50), permit.displaced())
        .await
        .is_ok()
}

#[test]
fn one_source_cannot_take_every_slot() {
    let limiter = plain(4, 2);
    let a1 = limiter.try_acquire(ip(1)).unwrap();
    let _a2 = limiter.try_acquire(ip(1)).unwrap();
    assert_eq!(
        limiter.try_acquire(ip(1)).err(),
        Some(Shed::SourceFull {
            source: key(1),
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
    let limiter = plain(1, 1);
    let other = limiter.clone();
    let permit = limiter.try_acquire(ip(1)).unwrap();
    assert!(other.try_acquire(ip(2)).is_err());
    drop(permit);
    assert_eq!(other.active(), 0);
    assert!(other.lock().sources.is_empty());
}

#[tokio::test]
async fn without_displacement_a_full_server_refuses_and_idle_connections_stay() {
    let limiter = plain(2, 2);
    let first = limiter.try_acquire(ip(9)).unwrap();
    let second = limiter.admit(ip(9)).await.unwrap();
    // Marking means nothing here: nobody is ever displaced.
    first.mark_idle();
    assert!(second.mark_busy());
    assert_eq!(
        limiter.admit(ip(1)).await.err(),
        Some(Shed::Full { limit: 2 })
    );
    assert!(!displaced(&first).await && !displaced(&second).await);
}

#[test]
fn one_source_opens_at_most_its_rate_with_bursts_of_twice_that() {
    let limiter = open_to_anyone(100, 100, 2);
    let start = Instant::now();
    for _ in 0..4 {
        drop(limiter.admit_at(ip(1), start, true).unwrap());
    }
    assert_eq!(
        limiter.admit_at(ip(1), start, true).err(),
        Some(Shed::OverRate { source: key(1) })
    );
    assert!(limiter.admit_at(ip(2), start, true).is_ok(), "per source");
    let later = start + Duration::from_secs(1);
    for _ in 0..2 {
        drop(limiter.admit_at(ip(1), later, true).unwrap());
    }
    assert_eq!(
        limiter.admit_at(ip(1), later, true).err(),
        Some(Shed::OverRate { source: key(1) })
    );
}

#[tokio::test]
async fn when_full_the_busiest_source_gives_up_its_longest_idle_connection() {
    let limiter = open_to_anyone(4, 100, 1000);
    let node = limiter.try_acquire(ip(1)).unwrap();
    let flood: Vec<_> = (0..3)
        .map(|_| limiter.try_acquire(ip(9)).unwrap())
        .collect();
    // Full. A newcomer from a third source displaces the flood's oldest, not the node.
    let newcomer = limiter.try_acquire(ip(2)).unwrap();
    assert!(displaced(&flood[0]).await);
    assert!(!displaced(&flood[1]).await && !displaced(&node).await);
    // The displaced connection has not closed yet: the table still counts it, and can hold a
    // few more such beyond the cap before refusing.
    assert_eq!(limiter.active(), 5);
    drop(flood);
    drop(newcomer);
    assert_eq!(limiter.active(), 1);
}

#[tokio::test]
async fn connections_with_a_request_in_flight_are_never_displaced() {
    let limiter = open_to_anyone(2, 100, 1000);
    let first = limiter.try_acquire(ip(9)).unwrap();
    let second = limiter.try_acquire(ip(9)).unwrap();
    assert!(first.mark_busy() && second.mark_busy());
    assert_eq!(
        limiter.try_acquire(ip(1)).err(),
        Some(Shed::Full { limit: 2 })
    );
    // Once a request is done, that connection may be displaced again.
    first.mark_idle();
    let _newcomer = limiter.try_acquire(ip(1)).unwrap();
    assert!(displaced(&first).await);
    assert!(!displaced(&second).await);
    // A displaced connection cannot turn busy: it is on its way out.
    assert!(!first.mark_busy());
}

#[tokio::test]
async fn no_source_is_displaced_in_favour_of_one_that_would_then_hold_more() {
    let limiter = open_to_anyone(2, 100, 1000);
    let a = limiter.try_acquire(ip(1)).unwrap();
    let b = limiter.try_acquire(ip(2)).unwrap();
    // Everyone holds one: a third source is refused rather than taking someone's only slot.
    assert_eq!(
        limiter.try_acquire(ip(3)).err(),
        Some(Shed::Full { limit: 2 })
    );
    // A source already holding one displaces its own idle connection, not the other source's.
    let _a2 = limiter.try_acquire(ip(1)).unwrap();
    assert!(displaced(&a).await);
    assert!(!displaced(&b).await);
}

#[test]
fn past_the_closing_headroom_newcomers_are_refused() {
    let limiter = open_to_anyone(16, 1000, 1000);
    let headroom = limiter.closing_headroom();
    // Displaced connections that never close (their tasks stuck) fill the headroom.
    let held: Vec<_> = (0..16 + headroom)
        .map(|_| limiter.try_acquire(ip(9)).unwrap())
        .collect();
    assert_eq!(
        limiter.try_acquire(ip(9)).err(),
        Some(Shed::StillClosing { limit: 16 })
    );
    assert_eq!(limiter.active(), 16 + headroom);
    drop(held);
    assert_eq!(limiter.active(), 0);
}

#[test]
fn the_source_table_stays_bounded() {
    let limiter = open_to_anyone(8, 8, 1);
    // Each source spends a token, so none is forgotten on close; the table is pruned instead.
    for n in 0..20_000u32 {
        let address = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n));
        drop(limiter.try_acquire(address).unwrap());
    }
    let tracked = limiter.lock().sources.len();
    assert!(
        tracked <= limiter.source_table_bound() + 1,
        "{tracked} sources tracked"
    );
}

#[test]
fn ipv6_sources_are_grouped_by_64_when_asked_and_mapped_ipv4_is_ipv4() {
    let a: Ipv6Addr = "2001:db8:1:2::1".parse().unwrap();
    let b: Ipv6Addr = "2001:db8:1:2:ffff::9".parse().unwrap();
    let c: Ipv6Addr = "2001:db8:1:3::1".parse().unwrap();
    let by_64 = |ip: Ipv6Addr| SourceKey::of(ip.into(), SourceGrouping::Ipv6Prefix64);
    assert_eq!(by_64(a), by_64(b));
    assert_ne!(by_64(a), by_64(c));
    assert_eq!(by_64(a).to_string(), "2001:db8:1:2::/64");
    // Pod addresses share prefixes: by address, neighbours are sources of their own.
    let by_address = |ip: Ipv6Addr| SourceKey::of(ip.into(), SourceGrouping::Address);
    assert_ne!(by_address(a), by_address(b));
    assert_eq!(by_address(a).to_string(), "2001:db8:1:2::1");
    let mapped: Ipv6Addr = "::ffff:10.0.0.1".parse().unwrap();
    assert_eq!(
        by_64(mapped),
        SourceKey::of(ip(1), SourceGrouping::Ipv6Prefix64)
    );
    assert_eq!(by_address(mapped), key(1));
    let limiter = open_to_anyone(100, 2, 1000);
    let _held = (
        limiter.try_acquire(a.into()).unwrap(),
        limiter.try_acquire(b.into()).unwrap(),
    );
    assert_eq!(
        limiter.try_acquire(a.into()).err(),
        Some(Shed::SourceFull {
            source: by_64(a),
            limit: 2
        })
    );
}

#[tokio::test]
async fn admit_gives_displaced_connections_a_turn_to_close_before_refusing() {
    let limiter = open_to_anyone(16, 1000, 1000);
    let headroom = limiter.closing_headroom();
    // Past the cap every newcomer displaced an older one; those close when their task runs.
    for _ in 0..16 + headroom {
        let permit = limiter.try_acquire(ip(9)).unwrap();
        tokio::spawn(async move {
            permit.displaced().await;
            drop(permit);
        });
    }
    // Their tasks have not run yet (one thread, no yield so far).
    assert_eq!(
        limiter.try_acquire(ip(1)).err(),
        Some(Shed::StillClosing { limit: 16 })
    );
    let _newcomer = limiter.admit(ip(1)).await.unwrap();
    assert!(limiter.active() <= 16 + 1);
}

#[test]
fn shedding_is_reported_once_per_interval_with_the_counts_held_back() {
    let mut report = ShedReport::default();
    let start = Instant::now();
    report.count_refusal(Shed::Full { limit: 1 }, key(1));
    assert_eq!(
        report.due(start),
        Some(ShedCounts {
            full: 1,
            last_source: Some(key(1)),
            ..ShedCounts::default()
        })
    );
    for _ in 0..999 {
        report.count_refusal(
            Shed::SourceFull {
                source: key(2),
                limit: 1,
            },
            key(2),
        );
        assert_eq!(report.due(start + Duration::from_secs(1)), None);
    }
    report.count_displacement(key(3));
    let counts = report.due(start + REPORT_INTERVAL).unwrap();
    assert_eq!((counts.source_full, counts.displaced), (999, 1));
    assert_eq!(counts.last_source, Some(key(3)));
}
