//! Floods on ztunnel's listening ports (DESIGN §7): thousands of half-open TLS handshakes on a
//! pod's HBONE port, idle and oversized requests on the node's metrics and readiness ports.
//! Under each, a client that behaves keeps being served, and ztunnel's descriptors and memory
//! stay bounded and come back down afterwards. Loads are bounded in count and time, and stay
//! inside the test's own namespaces.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use ambit_tests::scenario::{connect_from, testapp as app, Shop};
use ambit_tests::{Mesh, MeshUnderTest, PodSpec};

/// A TLS 1.3 ClientHello that stops after its record header: the server waits for the rest.
const HALF_CLIENT_HELLO: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc];

/// ztunnel's open descriptors, from /proc.
fn open_fds(pid: u32) -> usize {
    ambit_tests::faults::open_fds(pid).unwrap()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

/// The flood needs more sockets than the default soft limit of this test process.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn half_open_handshakes_on_hbone_do_not_starve_real_tunnels() {
    raise_fd_limit();
    let Shop {
        mut mesh,
        frontend,
        cart,
        echo: _echo,
    } = Shop::start().unwrap();
    let attacker = mesh
        .add_pod(PodSpec::new("legacy", "flooder-0").on_node(0))
        .unwrap();
    let warm = app()
        .echo_client(frontend.netns(), cart.addr(8080), 1024, None)
        .unwrap();
    assert!(warm.intact());
    let pid = mesh.ztunnels[1].pid();
    let (fds_before, rss_before) = (open_fds(pid), rss_kib(pid));

    // 2 000 connections to cart's HBONE port, each sending half a ClientHello and holding on.
    let mut flood = Vec::new();
    for _ in 0..2000 {
        if let Ok(mut stream) = connect_from(&attacker, cart.addr(15008)) {
            let _ = stream.write_all(HALF_CLIENT_HELLO);
            flood.push(stream);
        }
    }
    let fds_during = open_fds(pid);
    // The flood's source may hold 256 connections; the rest are closed on arrival.
    assert!(
        fds_during <= fds_before + 256 + 64,
        "ztunnel holds {fds_during} fds under the flood (was {fds_before})"
    );
    // Meanwhile the mesh works, on new connections too.
    for _ in 0..5 {
        let report = app()
            .echo_client(frontend.netns(), cart.addr(8080), 64 * 1024, None)
            .unwrap();
        assert!(
            report.intact(),
            "a real tunnel during the flood: {report:?}"
        );
    }
    let rss_during = rss_kib(pid);
    assert!(
        rss_during < rss_before + 64 * 1024,
        "RSS {rss_before} → {rss_during} KiB under the flood"
    );
    // The handshake deadline reclaims what the flood still holds, though it keeps its sockets.
    wait_until(
        "ztunnel's fds are back near baseline",
        Duration::from_secs(30),
        || open_fds(pid) <= fds_before + 8,
    );
    drop(flood);
    assert!(mesh.ztunnel(1).try_exit_status().unwrap().is_none());
}

#[test]
fn idle_and_oversized_requests_on_metrics_and_readiness_are_shed() {
    raise_fd_limit();
    let mut mesh = Mesh::start(1).unwrap();
    let pid = mesh.ztunnels[0].pid();
    let fds_before = open_fds(pid);
    let outsider = mesh
        .add_pod(PodSpec::new("legacy", "scraper-0").on_node(0))
        .unwrap();
    let node_ip = IpAddr::V4(mesh.cluster.node(0).ip());
    let mut idle = Vec::new();
    for port in [15020, 15021] {
        for _ in 0..500 {
            if let Ok(stream) = connect_from(&outsider, SocketAddr::new(node_ip, port)) {
                idle.push(stream);
            }
        }
    }
    let fds_during = open_fds(pid);
    // 32 per source per server at most.
    assert!(
        fds_during <= fds_before + 2 * 32 + 16,
        "ztunnel holds {fds_during} fds for 1000 idle sockets (was {fds_before})"
    );
    // The kubelet (the node itself) still gets its answer.
    let ready = mesh.http_get_on_node(0, 15021, "/healthz/ready").unwrap();
    assert!(ready.contains("ready"), "{ready}");

    // A 100 KiB header block is refused, not buffered.
    let mut huge = connect_from(&outsider, SocketAddr::new(node_ip, 15020)).unwrap();
    let mut request = String::from("GET /stats/prometheus HTTP/1.1\r\nhost: x\r\n");
    for i in 0..100 {
        request.push_str(&format!("x-filler-{i}: {}\r\n", "y".repeat(1000)));
    }
    request.push_str("\r\n");
    let _ = huge.write_all(request.as_bytes());
    let mut answer = Vec::new();
    let _ = huge.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        !answer.contains("200 OK"),
        "oversized headers were served: {answer:.200}"
    );

    // Idle sockets are dropped at the header deadline, so ztunnel's descriptors come back.
    wait_until("idle sockets are dropped", Duration::from_secs(20), || {
        open_fds(pid) <= fds_before + 8
    });
    drop(idle);
    // And a scraper that behaves is served afterwards.
    let metrics = mesh
        .http_get_on_node(0, 15020, "/stats/prometheus")
        .unwrap();
    assert!(metrics.contains("ambit_enrolled_pods"), "{metrics:.200}");
    assert!(mesh.ztunnel(0).try_exit_status().unwrap().is_none());
}
