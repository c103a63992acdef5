//! `ambit-ca serve` under floods on its port, without credentials (DESIGN §7): connections that
//! never finish a phase, a flood from one address, header blocks that never end, bodies that
//! never arrive. Throughout, a node that behaves keeps getting certificates, the CA's open
//! descriptors (and, for header floods, its memory) stay bounded by its limits, and once the
//! flood stops reconnecting the CA closes what is left by itself.
//!
//! Floods are bounded (slots × a few seconds), on loopback only, one at a time. The CA's
//! limits are set through the flags' environment fallbacks, small enough that the bounds below
//! are far from what an unlimited server reaches. Nothing here asserts on speed: every wait is
//! generous and only correctness and resource bounds are checked.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use support::attacks::{loopback_sources, Attack, Flood, HUGE_HEADER_BYTES};
use support::{one_flood_at_a_time, raise_fd_limit, RunningCa, Sampler};

const MAX_CONNECTIONS: usize = 300;
const MAX_CONNECTIONS_PER_IP: usize = 60;
/// Descriptors the CA may hold beyond its connection cap: connections it decided to close but
/// has not closed yet, the listener, log, runtime. Generous on purpose.
const FD_SLACK: usize = MAX_CONNECTIONS / 8 + 48;
const FLOOD_FOR: Duration = Duration::from_secs(12);
/// How long the CA gets to close what the flood left open (its deadlines are 2–3 s here).
const DRAIN_WITHIN: Duration = Duration::from_secs(30);

fn limits_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("AMBIT_CA_MAX_CONNECTIONS", "300"),
        ("AMBIT_CA_MAX_CONNECTIONS_PER_IP", "60"),
        ("AMBIT_CA_CONNECTIONS_PER_IP_PER_SECOND", "30"),
        ("AMBIT_CA_HANDSHAKE_TIMEOUT", "2s"),
        ("AMBIT_CA_HEADER_TIMEOUT", "2s"),
        ("AMBIT_CA_REQUEST_TIMEOUT", "3s"),
        ("AMBIT_CA_IDLE_TIMEOUT", "3s"),
        (
            "RUST_LOG",
            "info,ambit_ca::server=debug,runtime::limits=debug",
        ),
    ]
}

fn attacker_tls(ca: &RunningCa) -> Arc<rustls::ClientConfig> {
    let expected = certs::api::ca_identity("cluster.local").unwrap();
    Arc::new(certs::tls::client_config_without_certificate(&ca.bundle, vec![expected]).unwrap())
}

/// What a flood test measured.
struct Outcome {
    baseline_fds: usize,
    peak_fds: usize,
    baseline_rss_kib: usize,
    peak_rss_kib: usize,
    issued: usize,
    attempts: usize,
    timed_out_requests: usize,
    fds_after: usize,
}

/// Runs `flood` against `ca` for [`FLOOD_FOR`] while the good node asks for certificates; then
/// stops the flood's reconnecting and waits for the CA to close what is left.
async fn under_flood(ca: &RunningCa, flood: impl FnOnce() -> Flood) -> Outcome {
    // Warm up: the first issuance allocates what every later one reuses.
    ca.valid_node_request().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let baseline_fds = ca.fd_count();
    let baseline_rss_kib = ca.rss_kib();
    let sampler = Sampler::start(ca.pid());
    let flood = flood();
    let until = Instant::now() + FLOOD_FOR;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut issued = 0;
    while Instant::now() < until {
        if let Err(error) = ca.valid_node_request().await {
            let log = ca.log();
            let about_node: Vec<&str> = log
                .lines()
                .filter(|line| {
                    (line.contains("127.0.0.1:") || line.contains("127.0.0.1 "))
                        && !line.contains("certificate issued")
                })
                .collect();
            panic!(
                "a node that behaves got no certificate during the flood ({issued} issued before; {} flood connections attempted): {error}\nCA log about the node's connections:\n{}\nCA log tail:\n{}",
                flood.attempts(),
                about_node.join("\n"),
                tail(&log)
            );
        }
        issued += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    flood.stop_reconnecting();
    let fds_after = ca
        .wait_for_fds_at_most(baseline_fds + 8, DRAIN_WITHIN)
        .await;
    let outcome = Outcome {
        baseline_fds,
        peak_fds: sampler.peak_fds(),
        baseline_rss_kib,
        peak_rss_kib: sampler.peak_rss_kib(),
        issued,
        attempts: flood.attempts(),
        timed_out_requests: flood
            .counters
            .timed_out_requests
            .load(std::sync::atomic::Ordering::Relaxed),
        fds_after,
    };
    flood.end().await;
    eprintln!(
        "flood: {} attempts, {} certificates issued meanwhile, fds {} -> peak {} -> {}, rss {} KiB -> peak {} KiB",
        outcome.attempts,
        outcome.issued,
        outcome.baseline_fds,
        outcome.peak_fds,
        outcome.fds_after,
        outcome.baseline_rss_kib,
        outcome.peak_rss_kib
    );
    outcome
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn assert_fds_bounded(outcome: &Outcome, cap: usize, log: &str) {
    assert!(
        outcome.peak_fds <= outcome.baseline_fds + cap + FD_SLACK,
        "the CA held {} descriptors during the flood (baseline {}, connection cap {cap}): the cap does not hold\n{}",
        outcome.peak_fds,
        outcome.baseline_fds,
        tail(log)
    );
    assert!(
        outcome.fds_after <= outcome.baseline_fds + 8,
        "{DRAIN_WITHIN:?} after the flood stopped reconnecting the CA still held {} descriptors (baseline {}): connections that never finish a phase are kept open\n{}",
        outcome.fds_after,
        outcome.baseline_fds,
        tail(log)
    );
}

/// Lines of the CA's log that report shedding.
fn shed_reports(log: &str) -> usize {
    log.lines()
        .filter(|line| line.contains("shedding connections"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_finish_a_phase_do_not_lock_out_a_good_node() {
    let _one = one_flood_at_a_time().await;
    raise_fd_limit();
    let work = tempfile::tempdir().unwrap();
    let ca = RunningCa::start(work.path(), &limits_env());
    let tls = attacker_tls(&ca);
    // 2500 clients over 50 addresses (50 each, under the per-address cap): only the global
    // cap, the phase deadlines and the choice of whom to close protect the good node.
    let kinds = [
        Attack::IdleTcp,
        Attack::PartialTlsRecord,
        Attack::StalledHandshake,
        Attack::TlsNoPreface,
        Attack::PrefaceNoRequest,
    ];
    let sources = loopback_sources(10, 50);
    let outcome = under_flood(&ca, || {
        Flood::start(ca.address, tls, &sources, 2500, |slot| {
            kinds[slot % kinds.len()]
        })
    })
    .await;
    let log = ca.log();
    assert!(outcome.attempts >= 2500, "the flood did not happen");
    assert!(outcome.issued >= 3, "{}", tail(&log));
    assert_fds_bounded(&outcome, MAX_CONNECTIONS, &log);
    assert!(
        shed_reports(&log) >= 1,
        "the CA shed connections without saying so\n{}",
        tail(&log)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_address_is_capped_per_address_and_reported_once_in_a_while() {
    let _one = one_flood_at_a_time().await;
    raise_fd_limit();
    let work = tempfile::tempdir().unwrap();
    let ca = RunningCa::start(work.path(), &limits_env());
    let tls = attacker_tls(&ca);
    let sources = loopback_sources(2, 1);
    let outcome = under_flood(&ca, || {
        Flood::start(ca.address, tls, &sources, 2000, |slot| {
            if slot % 2 == 0 {
                Attack::IdleTcp
            } else {
                Attack::TlsNoPreface
            }
        })
    })
    .await;
    let log = ca.log();
    assert!(outcome.attempts >= 2000, "the flood did not happen");
    assert!(outcome.issued >= 3, "{}", tail(&log));
    assert_fds_bounded(&outcome, MAX_CONNECTIONS_PER_IP, &log);
    // Thousands of refused connections, a handful of lines: one report per interval at most.
    let reports = shed_reports(&log);
    assert!(
        (1..=(FLOOD_FOR.as_secs() as usize) / 5 + 2).contains(&reports),
        "{reports} shedding reports for {} refused connections: expected a few, rate-limited\n{}",
        outcome.attempts,
        tail(&log)
    );
    assert!(
        log.contains("127.0.0.2"),
        "the report does not name the source\n{}",
        tail(&log)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_blocks_that_never_end_are_cut_off_early() {
    let _one = one_flood_at_a_time().await;
    raise_fd_limit();
    let work = tempfile::tempdir().unwrap();
    let ca = RunningCa::start(work.path(), &limits_env());
    let tls = attacker_tls(&ca);
    // 100 clients × a 2 MiB header block each: 200 MiB if the CA buffered them.
    let sources = loopback_sources(10, 10);
    let outcome = under_flood(&ca, || {
        Flood::start(ca.address, tls, &sources, 100, |_| Attack::HugeHeaders)
    })
    .await;
    let log = ca.log();
    assert!(outcome.issued >= 3, "{}", tail(&log));
    let grown_kib = outcome
        .peak_rss_kib
        .saturating_sub(outcome.baseline_rss_kib);
    let flood_kib = 100 * HUGE_HEADER_BYTES / 1024;
    assert!(
        grown_kib < 64 * 1024,
        "the CA grew by {grown_kib} KiB while clients sent {flood_kib} KiB of never-ending header blocks: header lists are not limited\n{}",
        tail(&log)
    );
    assert_fds_bounded(&outcome, MAX_CONNECTIONS, &log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_never_arrive_are_cut_off_at_the_request_deadline() {
    let _one = one_flood_at_a_time().await;
    raise_fd_limit();
    let work = tempfile::tempdir().unwrap();
    let ca = RunningCa::start(work.path(), &limits_env());
    let tls = attacker_tls(&ca);
    // 250 slow requests from 10 addresses: each holds a stream (and its connection) open for
    // as long as the CA lets it.
    let sources = loopback_sources(10, 10);
    let outcome = under_flood(&ca, || {
        Flood::start(ca.address, tls, &sources, 250, |_| Attack::SlowBody)
    })
    .await;
    let log = ca.log();
    assert!(outcome.issued >= 3, "{}", tail(&log));
    assert_fds_bounded(&outcome, MAX_CONNECTIONS, &log);
    assert!(
        outcome.timed_out_requests > 0,
        "no slow request was answered 408 Request Timeout\n{}",
        tail(&log)
    );
}
