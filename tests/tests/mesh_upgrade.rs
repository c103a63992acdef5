//! Upgrading ztunnel under traffic, as a DaemonSet rollout does it.
//!
//! - Surge (`maxSurge`): a successor starts on the node while the old ztunnel still runs and is
//!   never signalled. The successor re-enrolls every running pod beside the old one, takes the
//!   enrollment socket over, and the old one hands over: it stops accepting, lets its
//!   established connections finish, and exits 0. Under long-lived connections in both
//!   directions (a verified byte stream, a keep-alive echo loop) and a steady rate of new
//!   connections, no connection fails, no byte is lost or changed, nothing crosses the node link
//!   outside HBONE, and every connection gets exactly one access line on each side, from the
//!   process that carried it.
//! - Plain restart (the old one stopped first, the successor started after it exited): in the
//!   gap, new connections from and to the node's pods are refused (fail closed, never sent in
//!   clear); once the successor is ready they are served in mTLS again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "mesh_upgrade/traffic.rs"]
mod traffic;

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use ambit_tests::faults::plaintext_between;
use ambit_tests::scenario::{connect_from, testapp as app, Shop};
use ambit_tests::{AccessLine, Mesh, MeshOptions, MeshUnderTest, Pod, Process};
use nix::sys::signal::Signal;
use traffic::{close_cleanly, StopOnDrop, Way, WayReport, NEW_CONNECTION_BYTES};

const FRONTEND: &str = "spiffe://cluster.local/ns/shop/sa/frontend";
const CART: &str = "spiffe://cluster.local/ns/shop/sa/cart";
/// How long the long-lived connections of the surge run, from before the first successor
/// starts to after the second one took over.
const LONG_LIVED: Duration = Duration::from_secs(30);
/// The surge mesh's `--drain-timeout`: well beyond [`LONG_LIVED`], so a predecessor never cuts
/// the long-lived connections it carries.
const SURGE_DRAIN: Duration = Duration::from_secs(90);
/// How long a successor's predecessor may take to notice the take-over (it polls ~250 ms).
const NOTICE: Duration = Duration::from_secs(5);
/// How long a predecessor may take to exit once its last connection closed.
const EXIT: Duration = Duration::from_secs(20);
/// The predecessor's enrollment server, then the process, on seeing the take-over.
const SOCKET_TAKEN: &str = "a successor took over the enrollment socket";
const HANDING_OVER: &str = "handing the node over to the successor";
const TOOK_OVER: &str = "took over from the previous ztunnel";
const DRAINING: &str = "ztunnel stopping: no new connections, draining existing ones";
const DRAINED: &str = "ztunnel stopped: every connection finished";

// ---------------------------------------------------------------------------------------------
// Surge
// ---------------------------------------------------------------------------------------------

#[test]
fn a_surged_successor_takes_each_node_over_without_failing_a_connection_or_losing_a_byte() {
    let Shop {
        mut mesh,
        frontend,
        cart,
        echo: _cart_echo,
    } = Shop::start_with(MeshOptions::default().drain_timeout(SURGE_DRAIN)).unwrap();
    let _frontend_echo = app().echo_server(frontend.netns(), 8080).unwrap();
    let ways = [
        Way {
            name: "frontend-0 (node 0) → cart-0 (node 1)",
            client: &frontend,
            server: &cart,
        },
        Way {
            name: "cart-0 (node 1) → frontend-0 (node 0)",
            client: &cart,
            server: &frontend,
        },
    ];
    // HBONE (15008) is left out: it carries the stream at megabytes a second, all of it
    // ciphertext. Anything else between the pods would be plaintext.
    let capture = mesh.cluster.capture("tcp and not port 15008").unwrap();

    let stop = AtomicBool::new(false);
    let t0 = Instant::now();
    let (reports, mut predecessors, alive_at_stop) = thread::scope(|scope| {
        // Whatever happens below (a panic included), the loops end and the scope can join them.
        let _stop_loops = StopOnDrop(&stop);
        let running: Vec<_> = ways
            .iter()
            .map(|way| traffic::start(scope, way, &stop, t0))
            .collect();
        thread::sleep(Duration::from_secs(3));
        let mut predecessors = Vec::new();
        for node in 0..2 {
            predecessors.push(surge(&mut mesh, node, t0));
            thread::sleep(Duration::from_secs(5));
        }
        let until = (t0 + LONG_LIVED).max(Instant::now() + Duration::from_secs(3));
        thread::sleep(until.saturating_duration_since(Instant::now()));
        // The long-lived connections are still open: so must their predecessors be.
        let alive_at_stop: Vec<bool> = predecessors
            .iter_mut()
            .map(|old| old.try_exit_status().unwrap().is_none())
            .collect();
        stop.store(true, Ordering::SeqCst);
        let reports: Vec<WayReport> = running.into_iter().map(traffic::Running::join).collect();
        (reports, predecessors, alive_at_stop)
    });
    for (way, report) in ways.iter().zip(&reports) {
        eprintln!("{}: {}", way.name, report.summary());
    }

    // Not a connection failed, not a byte lost or changed.
    let problems: Vec<String> = ways
        .iter()
        .zip(&reports)
        .flat_map(|(way, report)| report.problems().map(move |p| format!("{}: {p}", way.name)))
        .collect();
    assert!(
        problems.is_empty(),
        "connections failed or were damaged during the surge:\n{}\n\n{}",
        problems.join("\n"),
        describe_ztunnels(&mesh, &predecessors)
    );
    for (way, report) in ways.iter().zip(&reports) {
        assert!(
            report.stream.verified >= 10 * traffic::STREAM_BYTES_PER_SECOND
                && report.keepalive.round_trips >= 100
                && report.new.served.len() >= 100,
            "{}: too little traffic to judge the surge: {}",
            way.name,
            report.summary()
        );
    }
    for (node, alive) in alive_at_stop.iter().enumerate() {
        assert!(
            alive,
            "node {node}'s predecessor exited while it still carried long-lived connections:\n{}",
            tail(&predecessors[node])
        );
    }

    // Each predecessor exits 0 once its connections are done, without hitting the deadline.
    for (node, old) in predecessors.iter_mut().enumerate() {
        let status = old.wait_exit(EXIT).unwrap();
        assert!(
            status.is_some_and(|s| s.success()),
            "node {node}'s predecessor did not exit 0 within {EXIT:?} of its last connection \
             closing ({status:?}):\n{}",
            tail(old)
        );
        let log = old.log().unwrap();
        assert!(
            log.contains(DRAINED),
            "node {node}'s predecessor did not report a complete drain:\n{}",
            tail(old)
        );
    }

    // Nothing between the pods crossed the node link outside the tunnel.
    let packets = capture.stop().unwrap();
    let clear = plaintext_between(&packets, &[frontend.ip(), cart.ip()]);
    assert!(
        clear.is_empty(),
        "plaintext between the pods on the node link: {clear:?}"
    );
    for marker in ["KEEPALIVE-MARKER", "NEWCONN-MARKER"] {
        assert!(
            !packets.contains(marker.as_bytes()),
            "{marker} crossed the node link outside HBONE"
        );
    }

    // Exactly one access line per connection on each side, from the process that carried it.
    for (way, report) in ways.iter().zip(&reports) {
        check_access_lines(&mesh, &predecessors, way, report);
    }
    // ...and once a predecessor stopped accepting, its successor took every new one.
    for (node, old) in predecessors.iter().enumerate() {
        let late = accepted_after_stopping(old);
        assert!(
            late.is_empty(),
            "node {node}'s predecessor carried connections that began after it stopped \
             accepting:\n{}",
            late.join("\n")
        );
    }
}

/// How late a connection a predecessor carried may have begun after its "stopping" line: the
/// listeners close right after it, and a connection's access-line duration is counted from its
/// accept (or its HBONE stream's arrival).
const ACCEPT_SLACK: f64 = 1.0;

/// The access lines of `old` whose connection began more than [`ACCEPT_SLACK`] after it logged
/// [`DRAINING`]: connections its listeners, or its HBONE server, took after the hand-over.
fn accepted_after_stopping(old: &Process) -> Vec<String> {
    let log = old.log().unwrap();
    let stopping = log
        .lines()
        .find(|l| l.contains(DRAINING))
        .and_then(log_time)
        .expect("the predecessor logged when it stopped accepting");
    AccessLine::all_in(&log)
        .into_iter()
        .filter(|line| {
            let ended = log_time(&line.raw).expect("access lines start with their time");
            let lasted = line
                .get("duration")
                .and_then(|d| d.strip_suffix("ms")?.parse::<f64>().ok())
                .expect("access lines carry their duration");
            ended - lasted / 1000.0 > stopping + ACCEPT_SLACK
        })
        .map(|line| line.raw)
        .collect()
}

/// Seconds since the epoch of a log line's leading RFC 3339 UTC time
/// (`2026-12-04T21:20:36.168429Z …`).
fn log_time(line: &str) -> Option<f64> {
    let stamp = humantime::parse_rfc3339(line.split_whitespace().next()?).ok()?;
    Some(
        stamp
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs_f64(),
    )
}

/// Starts a successor on `node` without signalling the running ztunnel, and checks both sides
/// of the take-over; returns the predecessor (still draining).
fn surge(mesh: &mut Mesh, node: usize, t0: Instant) -> Process {
    let started = Instant::now();
    let mut old = match mesh.replace_ztunnel(node) {
        Ok(old) => old,
        Err(error) => panic!(
            "the surged successor on node {node} never became ready: {error}\n\
             running ztunnel:\n{}",
            tail(&mesh.ztunnels[node])
        ),
    };
    eprintln!(
        "+{:.1}s: node {node}'s successor ready after {:?}",
        t0.elapsed().as_secs_f64(),
        started.elapsed()
    );
    let successor_log = mesh.ztunnels[node].log().unwrap();
    assert!(
        successor_log.contains(TOOK_OVER),
        "node {node}'s successor is ready but never said it took over:\n{}",
        tail(&mesh.ztunnels[node])
    );
    for line in [SOCKET_TAKEN, HANDING_OVER, DRAINING] {
        if old.wait_for_log(line, NOTICE).is_err() {
            let status = old.try_exit_status().ok().flatten();
            panic!(
                "node {node}'s predecessor did not log {line:?} within {NOTICE:?} of the \
                 successor's take-over (exit: {status:?}):\n{}\n--- successor:\n{}",
                tail(&old),
                tail(&mesh.ztunnels[node])
            );
        }
    }
    eprintln!(
        "+{:.1}s: node {node}'s predecessor is handing over",
        t0.elapsed().as_secs_f64()
    );
    old
}

/// The access lines of `processes`, tagged with the index of the process that wrote each.
fn access_lines(processes: &[&Process]) -> Vec<(usize, AccessLine)> {
    processes
        .iter()
        .enumerate()
        .flat_map(|(index, process)| {
            AccessLine::all_in(&process.log().unwrap())
                .into_iter()
                .map(move |line| (index, line))
        })
        .collect()
}

/// Both ztunnels of each end logged every connection of `way` exactly once: the client's node
/// an outbound line per client address, the server's node an inbound line per connection (its
/// source is the tunnel's, so those are matched by count and bytes); the long-lived ones by the
/// predecessor that carried them, with their byte counts.
fn check_access_lines(mesh: &Mesh, predecessors: &[Process], way: &Way, report: &WayReport) {
    let (client_node, server_node) = (way.client.node(), way.server.node());
    let target = way.target().to_string();
    let client_ip = way.client.ip().to_string();
    let stream_local = report.stream.local.expect("the stream connected");
    let keepalive_local = report
        .keepalive
        .local
        .expect("the keep-alive connection connected");
    let expected = report.new.served.len() + 2;
    let is_of_way = |line: &AccessLine, direction: &str| {
        line.get("direction") == Some(direction)
            && line.get("dst.hbone_addr") == Some(target.as_str())
            && line
                .get("src.addr")
                .and_then(|a| a.parse::<SocketAddr>().ok())
                .is_some_and(|a| a.ip().to_string() == client_ip)
    };
    let process_name = |index: usize| ["predecessor", "successor"][index];
    // Lines are written when connections close: give the successors a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (outbound, inbound) = loop {
        let outbound: Vec<(usize, AccessLine)> =
            access_lines(&[&predecessors[client_node], &mesh.ztunnels[client_node]])
                .into_iter()
                .filter(|(_, l)| is_of_way(l, "outbound"))
                .collect();
        let inbound: Vec<(usize, AccessLine)> =
            access_lines(&[&predecessors[server_node], &mesh.ztunnels[server_node]])
                .into_iter()
                .filter(|(_, l)| is_of_way(l, "inbound"))
                .collect();
        if (outbound.len() >= expected && inbound.len() >= expected) || Instant::now() >= deadline {
            break (outbound, inbound);
        }
        thread::sleep(Duration::from_millis(200));
    };
    let context = || {
        format!(
            "{}: {}\n\n{}",
            way.name,
            report.summary(),
            describe_ztunnels(mesh, predecessors)
        )
    };

    // Outbound, on the client's node: one line per client address, none with an error.
    let mut by_client: HashMap<SocketAddr, Vec<&(usize, AccessLine)>> = HashMap::new();
    for entry in &outbound {
        let addr = entry.1.get("src.addr").unwrap().parse().unwrap();
        by_client.entry(addr).or_default().push(entry);
    }
    let failed: Vec<String> = outbound
        .iter()
        .map(|entry| (client_node, entry))
        .chain(inbound.iter().map(|entry| (server_node, entry)))
        .filter(|(_, (_, l))| l.get("error").is_some())
        .map(|(node, (by, l))| format!("node {node}'s {}: {}", process_name(*by), l.raw))
        .collect();
    assert!(
        failed.is_empty(),
        "access lines with an error: {failed:#?}\n{}",
        context()
    );
    let twice: Vec<_> = by_client
        .iter()
        .filter(|(_, lines)| lines.len() > 1)
        .collect();
    assert!(
        twice.is_empty(),
        "connections logged more than once on node {client_node}: {twice:#?}"
    );
    let mut made: Vec<SocketAddr> = report.new.served.clone();
    made.extend([stream_local, keepalive_local]);
    let unlogged: Vec<&SocketAddr> = made.iter().filter(|a| !by_client.contains_key(a)).collect();
    assert!(
        unlogged.is_empty(),
        "connections without an outbound access line on node {client_node}: {unlogged:?}\n{}",
        context()
    );
    assert_eq!(
        outbound.len(),
        expected,
        "outbound access lines on node {client_node} for connections this test never made\n{}",
        context()
    );
    for (local, bytes, what) in [
        (stream_local, report.stream.sent, "stream"),
        (
            keepalive_local,
            report.keepalive.bytes,
            "keep-alive connection",
        ),
    ] {
        let (by, line) = by_client[&local][0];
        assert_eq!(
            (*by, line.bytes("bytes_recv"), line.bytes("bytes_sent")),
            (0, bytes, bytes),
            "{}: the {what} should be logged by the predecessor that carried it, with \
             {bytes} bytes each way; {} logged: {}",
            way.name,
            process_name(*by),
            line.raw
        );
    }
    let by_successor = outbound.iter().filter(|(by, _)| *by == 1).count();
    assert!(
        by_successor > 0,
        "{}: node {client_node}'s successor carried no new connection after it took over\n{}",
        way.name,
        context()
    );
    let (src_identity, dst_identity) = if client_node == 0 {
        (FRONTEND, CART)
    } else {
        (CART, FRONTEND)
    };
    for (_, line) in outbound.iter().chain(&inbound) {
        assert_eq!(
            (line.get("src.identity"), line.get("dst.identity")),
            (Some(src_identity), Some(dst_identity)),
            "not mTLS between the two identities: {}",
            line.raw
        );
    }

    // Inbound, on the server's node: as many lines, the long-lived ones by the predecessor.
    assert_eq!(
        inbound.len(),
        expected,
        "{}: {} inbound access lines on node {server_node} for {expected} connections\n{}",
        way.name,
        inbound.len(),
        context()
    );
    for (bytes, what) in [
        (report.stream.sent, "stream"),
        (report.keepalive.bytes, "keep-alive connection"),
    ] {
        let lines: Vec<&(usize, AccessLine)> = inbound
            .iter()
            .filter(|(_, l)| l.bytes("bytes_recv") == bytes && l.bytes("bytes_sent") == bytes)
            .collect();
        assert!(
            lines.len() == 1 && lines[0].0 == 0,
            "{}: the {what} ({bytes} bytes each way) should have one inbound line on node \
             {server_node}, by the predecessor: {lines:?}",
            way.name
        );
    }
    let short = inbound
        .iter()
        .filter(|(_, l)| {
            l.bytes("bytes_recv") == NEW_CONNECTION_BYTES as u64
                && l.bytes("bytes_sent") == NEW_CONNECTION_BYTES as u64
        })
        .count();
    assert_eq!(
        short,
        report.new.served.len(),
        "{}: inbound lines on node {server_node} with the new connections' byte counts\n{}",
        way.name,
        context()
    );
}

/// The tails of every ztunnel's log (the running ones and `predecessors`), for failure messages.
fn describe_ztunnels(mesh: &Mesh, predecessors: &[Process]) -> String {
    let mut text = String::new();
    for (node, process) in mesh.ztunnels.iter().enumerate() {
        text.push_str(&format!(
            "--- node {node}'s running ztunnel:\n{}\n",
            tail(process)
        ));
    }
    for (node, process) in predecessors.iter().enumerate() {
        text.push_str(&format!(
            "--- node {node}'s predecessor:\n{}\n",
            tail(process)
        ));
    }
    text
}

/// The last 60 lines of a process's log, per-connection lines left out (there are thousands;
/// the access lines are counted elsewhere).
fn tail(process: &Process) -> String {
    let log = process.log().unwrap_or_default();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| !l.contains("connection complete") && !l.contains("hbone tunnel established"))
        .collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// Plain restart
// ---------------------------------------------------------------------------------------------

/// How one connection tried from a pod ended.
#[derive(Debug)]
struct Attempt {
    /// The client's address, when the connect succeeded (the local capture accepted it).
    local: Option<SocketAddr>,
    /// The bytes that came back.
    echoed: usize,
    /// What ended it, if it was not served.
    error: Option<std::io::Error>,
    elapsed: Duration,
}

impl Attempt {
    fn served(&self, marker: &str) -> bool {
        self.error.is_none() && self.echoed == marker.len()
    }

    /// Refused by the kernel: RST to the SYN, nothing accepted it.
    fn connection_refused(&self) -> bool {
        self.local.is_none()
            && self
                .error
                .as_ref()
                .is_some_and(|e| e.kind() == ErrorKind::ConnectionRefused)
    }

    /// Ended without an echo and without waiting for a timeout: refused, reset or closed.
    fn failed_fast(&self) -> bool {
        self.echoed == 0
            && self
                .error
                .as_ref()
                .is_some_and(|e| !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut))
            && self.elapsed < Duration::from_secs(3)
    }
}

/// Connects from `from` to `to`, sends `marker`, reads as much back.
fn attempt(from: &Pod, to: SocketAddr, marker: &str) -> Attempt {
    let begun = Instant::now();
    let mut stream = match connect_from(from, to) {
        Ok(stream) => stream,
        Err(error) => {
            return Attempt {
                local: None,
                echoed: 0,
                error: Some(error),
                elapsed: begun.elapsed(),
            }
        }
    };
    let local = stream.local_addr().ok();
    let mut echoed = 0;
    let mut buf = vec![0u8; marker.len()];
    let error = stream
        .write_all(marker.as_bytes())
        .and_then(|()| {
            while echoed < buf.len() {
                match stream.read(&mut buf[echoed..])? {
                    0 => return Err(std::io::Error::from(ErrorKind::UnexpectedEof)),
                    n => echoed += n,
                }
            }
            Ok(())
        })
        .err();
    let error = error.or_else(|| {
        (buf != marker.as_bytes())
            .then(|| std::io::Error::other(format!("echoed {:?}", String::from_utf8_lossy(&buf))))
    });
    if error.is_none() {
        let _ = close_cleanly(&mut stream);
    }
    Attempt {
        local,
        echoed,
        error,
        elapsed: begun.elapsed(),
    }
}

#[test]
fn a_plain_restart_refuses_new_connections_in_the_gap_and_serves_them_in_mtls_once_the_successor_is_ready(
) {
    let Shop {
        mut mesh,
        frontend,
        cart,
        echo: _cart_echo,
    } = Shop::start().unwrap();
    let _frontend_echo = app().echo_server(frontend.netns(), 8080).unwrap();
    let capture = mesh.cluster.capture("tcp").unwrap();
    let mut markers = Vec::new();
    let mut marker = |text: String| {
        markers.push(text.clone());
        text
    };
    // From node 0's pod, and to it.
    let ways = [
        ("from", &frontend, cart.addr(8080)),
        ("to", &cart, frontend.addr(8080)),
    ];
    for (dir, client, target) in ways {
        let m = marker(format!("BEFORE-RESTART-{dir}"));
        let served = attempt(client, target, &m);
        assert!(
            served.served(&m),
            "{dir} frontend-0 before the restart: {served:?}"
        );
    }

    mesh.ztunnel(0).signal(Signal::SIGTERM).unwrap();
    let status = mesh.ztunnel(0).wait_exit(Duration::from_secs(15)).unwrap();
    assert!(
        status.is_some(),
        "node 0's ztunnel did not exit within 15 s of SIGTERM with no connection open:\n{}",
        tail(&mesh.ztunnels[0])
    );
    eprintln!("node 0's ztunnel exited: {status:?}");

    // The gap: node 0's redirect rules stay, nothing listens behind them.
    let mut gap_inbound = Vec::new();
    for round in 0..5 {
        for (dir, client, target) in ways {
            let m = marker(format!("GAP-MARKER-{dir}-{round}"));
            let outcome = attempt(client, target, &m);
            eprintln!("gap, {dir} frontend-0, round {round}: {outcome:?}");
            assert!(
                outcome.failed_fast(),
                "gap, {dir} frontend-0, round {round}: a new connection was not refused at \
                 once with no ztunnel on node 0: {outcome:?}"
            );
            if dir == "from" {
                assert!(
                    outcome.connection_refused(),
                    "gap, from frontend-0: the pod's own redirect must refuse the connect \
                     (RST): {outcome:?}"
                );
            } else if let Some(local) = outcome.local {
                gap_inbound.push(local);
            }
        }
        thread::sleep(Duration::from_millis(200));
    }

    let _old = mesh.replace_ztunnel(0).unwrap();
    mesh.wait_until_enrolled(0, &["frontend-0"]).unwrap();
    let mut after = Vec::new();
    for round in 0..3 {
        for (dir, client, target) in ways {
            let m = marker(format!("AFTER-RESTART-{dir}-{round}"));
            let outcome = attempt(client, target, &m);
            assert!(
                outcome.served(&m),
                "{dir} frontend-0 once the successor is ready, round {round}: {outcome:?}\n\
                 successor:\n{}",
                tail(&mesh.ztunnels[0])
            );
            after.push((dir, outcome.local.unwrap()));
        }
    }

    let packets = capture.stop().unwrap();
    for m in &markers {
        assert!(
            !packets.contains(m.as_bytes()),
            "{m} crossed the node link in clear"
        );
    }
    let clear = plaintext_between(&packets, &[frontend.ip(), cart.ip()]);
    assert!(clear.is_empty(), "plaintext between the pods: {clear:?}");
    assert!(
        packets.has_tcp_port(15008),
        "no HBONE on the node link at all"
    );

    // Every connection has one access line on its client's node: the gap's attempts towards
    // node 0 one failure each on node 1; after the restart, mTLS lines (frontend's on the
    // successor).
    thread::sleep(Duration::from_millis(500));
    let node1 = mesh.access_log(1).unwrap();
    for local in &gap_inbound {
        let lines: Vec<&AccessLine> = node1
            .iter()
            .filter(|l| l.get("src.addr") == Some(&*local.to_string()))
            .collect();
        assert!(
            lines.len() == 1 && lines[0].get("error").is_some(),
            "the gap's connection from {local} should have one failed access line on node 1: \
             {lines:?}"
        );
    }
    for (dir, local) in after {
        let node = if dir == "from" { 0 } else { 1 };
        let line = mesh
            .wait_for_access(node, Duration::from_secs(10), |l| {
                l.get("src.addr") == Some(&*local.to_string())
                    && l.get("direction") == Some("outbound")
            })
            .unwrap();
        let expected = if dir == "from" {
            (Some(FRONTEND), Some(CART))
        } else {
            (Some(CART), Some(FRONTEND))
        };
        assert_eq!(
            (
                line.get("src.identity"),
                line.get("dst.identity"),
                line.get("error")
            ),
            (expected.0, expected.1, None),
            "after the restart, {dir} frontend-0: {}",
            line.raw
        );
    }
}

/// Kubernetes deletes the old pod as soon as the new one looks ready, and on the node's shared
/// readiness port that may be the old agent answering. Told to stop while its successor is
/// still capturing the pods (here: waiting for a CA that is down, up to its
/// `--takeover-timeout`), the old agent keeps serving until the take-over, then drains.
#[test]
fn a_ztunnel_told_to_stop_while_its_successor_waits_for_the_ca_serves_until_the_take_over() {
    const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(4);
    let Shop {
        mut mesh,
        frontend,
        cart,
        echo: _cart_echo,
    } = Shop::start().unwrap();
    let target = cart.addr(8080);
    mesh.ca.stop().unwrap();

    let (successor, served_after_sigterm) = thread::scope(|scope| {
        let predecessor = &mesh.ztunnels[0];
        let client = scope.spawn(|| {
            // Once the successor is bound beside it (it starts at once), the old one is told
            // to stop; it must go on serving new connections.
            thread::sleep(Duration::from_secs(1));
            predecessor.signal(Signal::SIGTERM).unwrap();
            let mut served = Vec::new();
            let until = Instant::now() + TAKEOVER_TIMEOUT - Duration::from_millis(1500);
            let mut round = 0;
            while Instant::now() < until {
                let marker = format!("WHILE-PENDING-{round}");
                served.push((marker.clone(), attempt(&frontend, target, &marker)));
                round += 1;
                thread::sleep(Duration::from_millis(200));
            }
            served
        });
        let timeout = format!("{}ms", TAKEOVER_TIMEOUT.as_millis());
        let successor = mesh.spawn_ztunnel_with(0, &["--takeover-timeout", &timeout]);
        (successor, client.join().unwrap())
    });
    let successor = successor.unwrap();
    let mut old = std::mem::replace(&mut mesh.ztunnels_mut()[0], successor);
    assert!(
        served_after_sigterm.len() >= 5,
        "too few attempts: {served_after_sigterm:?}"
    );
    for (marker, outcome) in &served_after_sigterm {
        assert!(
            outcome.served(marker),
            "the old ztunnel, told to stop while its successor was pending, refused a \
             connection: {outcome:?}\nold:\n{}",
            tail(&old)
        );
    }
    old.wait_for_log(
        "asked to stop while a successor is taking over",
        Duration::from_secs(1),
    )
    .unwrap();
    old.wait_for_log(HANDING_OVER, Duration::from_secs(5))
        .unwrap();
    let status = old.wait_exit(Duration::from_secs(15)).unwrap();
    assert!(
        status.is_some_and(|s| s.success()),
        "the old ztunnel exits 0 after the hand-over: {status:?}\n{}",
        tail(&old)
    );
    mesh.ztunnel(0)
        .wait_for_log(
            "not every running pod could be captured in time",
            Duration::from_secs(1),
        )
        .unwrap();

    // The successor took over without the pod (no certificate): its connections fail closed
    // until the CA is back, then the reconciler captures it without anything else changing.
    let refused = attempt(&frontend, target, "NO-CERTIFICATE-YET");
    assert!(refused.failed_fast(), "{refused:?}");
    mesh.ca = mesh.spawn_ca().unwrap();
    mesh.wait_until_enrolled(0, &["frontend-0"]).unwrap();
    let back = attempt(&frontend, target, "CA-BACK");
    assert!(
        back.served("CA-BACK"),
        "{back:?}\n{}",
        tail(&mesh.ztunnels[0])
    );
}

#[test]
fn log_times_read_as_seconds_since_the_epoch() {
    let at = |line: &str| log_time(line).map(|t| (t * 1e6).round() as i64);
    assert_eq!(at("1970-01-01T00:00:01.5Z  INFO x"), Some(1_500_000));
    assert_eq!(
        at("2024-02-29T00:00:00.000000Z x"),
        Some(1_709_164_800_000_000)
    );
    assert_eq!(
        at("2026-12-04T21:20:36.168429Z  INFO access: connection complete"),
        Some(1_796_419_236_168_429)
    );
    assert_eq!(at("not a time"), None);
}
