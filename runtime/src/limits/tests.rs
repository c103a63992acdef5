#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;

fn limits(max: usize, per_ip: usize, rate: usize) -> Limits {
    Limits {
        max_connections: max,
        max_connections_per_ip: per_ip,
        connections_per_ip_per_second: rate,
        ..Limits::default()
    }
}

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
}

/// Whether `connection` was told to close. A notification is stored, so a told connection
/// answers at once; waiting a little longer only guards against a missed one.
async fn displaced(connection: &Connection) -> bool {
    tokio::time::timeout(Duration::from_millis(50), connection.displaced())
        .await
        .is_ok()
}

#[test]
fn one_source_gets_at_most_its_cap() {
    let admission = Admission::new(limits(100, 3, 1000));
    let held: Vec<_> = (0..3)
        .map(|_| admission.try_admit(ip(1)).unwrap())
        .collect();
    assert_eq!(admission.try_admit(ip(1)).err(), Some(Shed::PerSource));
    // Others are not affected, and a slot given back can be taken again.
    let _other = admission.try_admit(ip(2)).unwrap();
    drop(held);
    let _again = admission.try_admit(ip(1)).unwrap();
}

#[test]
fn one_source_opens_at_most_its_rate_with_bursts_of_twice_that() {
    let admission = Admission::new(limits(100, 100, 2));
    let start = Instant::now();
    for _ in 0..4 {
        drop(admission.admit_at(ip(1), start, true).unwrap());
    }
    assert_eq!(
        admission.admit_at(ip(1), start, true).err(),
        Some(Shed::Rate)
    );
    assert!(admission.admit_at(ip(2), start, true).is_ok(), "per source");
    let later = start + Duration::from_secs(1);
    for _ in 0..2 {
        drop(admission.admit_at(ip(1), later, true).unwrap());
    }
    assert_eq!(
        admission.admit_at(ip(1), later, true).err(),
        Some(Shed::Rate)
    );
}

#[tokio::test]
async fn when_full_the_busiest_source_gives_up_its_longest_idle_connection() {
    let admission = Admission::new(limits(4, 100, 1000));
    let node = admission.try_admit(ip(1)).unwrap();
    let flood: Vec<_> = (0..3)
        .map(|_| admission.try_admit(ip(9)).unwrap())
        .collect();
    // Full. A newcomer from a third source displaces the flood's oldest, not the node.
    let newcomer = admission.try_admit(ip(2)).unwrap();
    assert!(displaced(&flood[0]).await);
    assert!(!displaced(&flood[1]).await && !displaced(&node).await);
    // The displaced connection has not closed yet: the table still counts it, and can hold a
    // few more such beyond the cap before refusing.
    drop(flood);
    drop(newcomer);
    assert_eq!(admission.lock().open, 1);
}

#[tokio::test]
async fn connections_with_a_request_in_flight_are_never_displaced() {
    let admission = Admission::new(limits(2, 100, 1000));
    let first = admission.try_admit(ip(9)).unwrap();
    let second = admission.try_admit(ip(9)).unwrap();
    assert!(first.busy() && second.busy());
    assert_eq!(admission.try_admit(ip(1)).err(), Some(Shed::Full));
    // Once a request is done, that connection may be displaced again.
    first.idle();
    let _newcomer = admission.try_admit(ip(1)).unwrap();
    assert!(displaced(&first).await);
    assert!(!displaced(&second).await);
    // A displaced connection cannot turn busy: it is on its way out.
    assert!(!first.busy());
}

#[tokio::test]
async fn no_source_is_displaced_in_favour_of_one_that_would_then_hold_more() {
    let admission = Admission::new(limits(2, 100, 1000));
    let a = admission.try_admit(ip(1)).unwrap();
    let b = admission.try_admit(ip(2)).unwrap();
    // Everyone holds one: a third source is refused rather than taking someone's only slot.
    assert_eq!(admission.try_admit(ip(3)).err(), Some(Shed::Full));
    // A source already holding one displaces its own idle connection, not the other source's.
    let _a2 = admission.try_admit(ip(1)).unwrap();
    assert!(displaced(&a).await);
    assert!(!displaced(&b).await);
}

#[test]
fn past_the_closing_headroom_newcomers_are_refused() {
    let admission = Admission::new(limits(16, 1000, 1000));
    let headroom = admission.closing_headroom();
    // Displaced connections that never close (their tasks stuck) fill the headroom.
    let held: Vec<_> = (0..16 + headroom)
        .map(|_| admission.try_admit(ip(9)).unwrap())
        .collect();
    assert_eq!(admission.try_admit(ip(9)).err(), Some(Shed::Closing));
    assert_eq!(admission.lock().open, 16 + headroom);
    drop(held);
    assert_eq!(admission.lock().open, 0);
}

#[test]
fn the_source_table_stays_bounded() {
    let admission = Admission::new(limits(8, 8, 1));
    // Each source spends a token, so none is forgotten on close; the table is pruned instead.
    for n in 0..20_000u32 {
        let address = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n));
        drop(admission.try_admit(address).unwrap());
    }
    let tracked = admission.lock().sources.len();
    assert!(tracked <= 8 * 4 + 1024 + 1, "{tracked} sources tracked");
}

#[test]
fn ipv6_sources_are_grouped_by_64_and_mapped_ipv4_is_ipv4() {
    let a: Ipv6Addr = "2001:db8:1:2::1".parse().unwrap();
    let b: Ipv6Addr = "2001:db8:1:2:ffff::9".parse().unwrap();
    let c: Ipv6Addr = "2001:db8:1:3::1".parse().unwrap();
    assert_eq!(SourceKey::of(a.into()), SourceKey::of(b.into()));
    assert_ne!(SourceKey::of(a.into()), SourceKey::of(c.into()));
    assert_eq!(SourceKey::of(a.into()).to_string(), "2001:db8:1:2::/64");
    let mapped: Ipv6Addr = "::ffff:10.0.0.1".parse().unwrap();
    assert_eq!(SourceKey::of(mapped.into()), SourceKey::of(ip(1)));
    let admission = Admission::new(limits(100, 2, 1000));
    let _held = (
        admission.try_admit(a.into()).unwrap(),
        admission.try_admit(b.into()).unwrap(),
    );
    assert_eq!(admission.try_admit(a.into()).err(), Some(Shed::PerSource));
}

#[tokio::test]
async fn admit_gives_displaced_connections_a_turn_to_close_before_refusing() {
    let admission = Admission::new(limits(16, 1000, 1000));
    let headroom = admission.closing_headroom();
    // Past the cap every newcomer displaced an older one; those close when their task runs.
    for _ in 0..16 + headroom {
        let connection = admission.try_admit(ip(9)).unwrap();
        tokio::spawn(async move {
            connection.displaced().await;
            drop(connection);
        });
    }
    // Their tasks have not run yet (one thread, no yield so far).
    assert_eq!(admission.try_admit(ip(1)).err(), Some(Shed::Closing));
    let _newcomer = admission.admit(ip(1)).await.unwrap();
    assert!(admission.lock().open <= 16 + 1);
}
