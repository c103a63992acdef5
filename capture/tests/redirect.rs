//! The nft capture rules move real connections in a throwaway pod netns.
//!
//! Topology (all in namespaces created here; nothing reaches the host):
//!   pod  198.18.X.2/24 ──veth── peer 198.18.X.1/24 (+ .3, the "node"
//!   probe source). The pod's default route points at the peer, so any
//!   address is routable from the pod; captured connections never leave it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use capture::rules::{self, ports, CheckError, RuleOptions};
use capture::socket::{
    dial_socket_in, listen_in, original_dst, udp_bind_in, DialOptions, ListenOptions,
};
use capture::testing::TestNetns;
use capture::{NetNs, ZTUNNEL_MARK};

const WAIT: Duration = Duration::from_secs(3);
const APP_PORT: u16 = 8080;

struct Pod {
    pod: TestNetns,
    peer: TestNetns,
    pod_ip: String,
    peer_ip: String,
    probe_ip: String,
    subnet: String,
}

impl Pod {
    fn new() -> Self {
        // Distinct subnets per test only for readability of failures; the
        // namespaces are isolated anyway.
        static NEXT: AtomicU8 = AtomicU8::new(1);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let subnet = format!("198.18.{n}");
        let pod = TestNetns::new("pod");
        let peer = TestNetns::new("peer");
        let (pod_ip, peer_ip, probe_ip) = (
            format!("{subnet}.2"),
            format!("{subnet}.1"),
            format!("{subnet}.3"),
        );
        pod.veth_to(&peer, &format!("{pod_ip}/24"), &format!("{peer_ip}/24"));
        peer.ip(&[
            "addr",
            "add",
            &format!("{probe_ip}/24"),
            "dev",
            &peer_link(&peer),
        ]);
        pod.ip(&["route", "add", "default", "via", &peer_ip]);
        Self {
            pod,
            peer,
            pod_ip,
            peer_ip,
            probe_ip,
            subnet,
        }
    }

    fn options(&self) -> RuleOptions {
        RuleOptions {
            probe_sources: vec![self.probe_ip.parse().unwrap()],
            capture_dns: true,
        }
    }

    fn addr(ip: &str, port: u16) -> SocketAddr {
        format!("{ip}:{port}").parse().unwrap()
    }

    /// A listener inside the pod, on all addresses.
    fn listen(&self, port: u16) -> TcpListener {
        listen_in(
            self.pod.netns(),
            &ListenOptions::new(Self::addr("0.0.0.0", port)),
        )
        .unwrap()
    }
}

/// The peer's end of the veth (the only non-lo link there).
fn peer_link(peer: &TestNetns) -> String {
    let out = Command::new("ip")
        .args(["-n", peer.name(), "-o", "link", "show", "type", "veth"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let name = text.split(':').nth(1).unwrap().trim();
    name.split('@').next().unwrap().to_owned()
}

fn connect_from(netns: &NetNs, dst: SocketAddr, opts: DialOptions) -> TcpStream {
    dial_socket_in(netns, dst, &opts)
        .unwrap()
        .connect_timeout(dst, WAIT)
        .unwrap_or_else(|e| panic!("connect to {dst}: {e}"))
}

fn plain() -> DialOptions {
    DialOptions {
        mark: None,
        ..DialOptions::default()
    }
}

/// The next connection on `listener` within [`WAIT`].
fn accept(listener: &TcpListener, what: &str) -> TcpStream {
    let deadline = Instant::now() + WAIT;
    loop {
        match listener.accept() {
            Ok((stream, _)) => return stream,
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("{what}: no connection arrived: {e}"),
        }
    }
}

fn assert_idle(listener: &TcpListener, what: &str) {
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("{what} got an unexpected connection: {other:?}"),
    }
}

#[test]
fn outbound_tcp_lands_on_15001_with_its_original_destination() {
    let env = Pod::new();
    rules::apply(env.pod.netns(), &env.options()).unwrap();
    let outbound = env.listen(ports::OUTBOUND);

    // To the peer, and to an address that exists nowhere: both captured.
    for dst in [
        Pod::addr(&env.peer_ip, APP_PORT),
        Pod::addr(&format!("{}.99", env.subnet), 443),
    ] {
        let mut app = connect_from(env.pod.netns(), dst, plain());
        let mut accepted = accept(&outbound, "outbound listener");
        assert_eq!(original_dst(&accepted).unwrap(), dst);
        // Bytes flow through the redirected connection.
        app.write_all(b"ping").unwrap();
        accepted.set_nonblocking(false).unwrap();
        let mut buf = [0u8; 4];
        accepted.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
    }
}

#[test]
fn marked_and_loopback_traffic_bypasses_capture() {
    let env = Pod::new();
    rules::apply(env.pod.netns(), &env.options()).unwrap();
    let outbound = env.listen(ports::OUTBOUND);
    let inbound = env.listen(ports::INBOUND);
    let app = listen_in(
        env.pod.netns(),
        &ListenOptions::new(Pod::addr("0.0.0.0", APP_PORT)).mark(None),
    )
    .unwrap();
    let remote = listen_in(
        env.peer.netns(),
        &ListenOptions::new(Pod::addr("0.0.0.0", APP_PORT)).mark(None),
    )
    .unwrap();

    // ztunnel's own sockets (SO_MARK 0x539) reach the real destination.
    let dst = Pod::addr(&env.peer_ip, APP_PORT);
    let _conn = connect_from(env.pod.netns(), dst, DialOptions::default());
    assert_eq!(DialOptions::default().mark, Some(ZTUNNEL_MARK));
    accept(&remote, "peer app (marked connection)");

    // Loopback and the pod's own address stay inside the pod, uncaptured.
    for ip in ["127.0.0.1", env.pod_ip.as_str()] {
        let _conn = connect_from(env.pod.netns(), Pod::addr(ip, APP_PORT), plain());
        accept(&app, ip);
    }
    assert_idle(&outbound, "outbound listener");
    assert_idle(&inbound, "inbound listener");
}

#[test]
fn inbound_tcp_lands_on_15006_except_hbone_and_probes() {
    let env = Pod::new();
    rules::apply(env.pod.netns(), &env.options()).unwrap();
    let inbound = env.listen(ports::INBOUND);
    let hbone = env.listen(ports::HBONE);
    let app = listen_in(
        env.pod.netns(),
        &ListenOptions::new(Pod::addr("0.0.0.0", APP_PORT)).mark(None),
    )
    .unwrap();

    let app_addr = Pod::addr(&env.pod_ip, APP_PORT);
    let _conn = connect_from(env.peer.netns(), app_addr, plain());
    let accepted = accept(&inbound, "inbound listener");
    assert_eq!(original_dst(&accepted).unwrap(), app_addr);

    let _conn = connect_from(
        env.peer.netns(),
        Pod::addr(&env.pod_ip, ports::HBONE),
        plain(),
    );
    let tunnel = accept(&hbone, "HBONE listener");
    assert_eq!(tunnel.local_addr().unwrap().port(), ports::HBONE);

    // kubelet probes from the node's address go straight to the app.
    let probe = DialOptions {
        bind: Some(Pod::addr(&env.probe_ip, 0)),
        ..plain()
    };
    let _conn = connect_from(env.peer.netns(), app_addr, probe);
    accept(&app, "app (probe)");
    assert_idle(&inbound, "inbound listener");
}

#[test]
fn dns_goes_to_15053_when_enabled() {
    let env = Pod::new();
    rules::apply(env.pod.netns(), &env.options()).unwrap();
    let dns = udp_bind_in(
        env.pod.netns(),
        Pod::addr("0.0.0.0", ports::DNS),
        Some(ZTUNNEL_MARK),
    )
    .unwrap();
    dns.set_nonblocking(false).unwrap();
    dns.set_read_timeout(Some(WAIT)).unwrap();
    let app: UdpSocket = udp_bind_in(env.pod.netns(), Pod::addr("0.0.0.0", 0), None).unwrap();
    app.send_to(b"query", Pod::addr(&env.peer_ip, 53)).unwrap();
    let mut buf = [0u8; 16];
    let (n, _) = dns.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"query");
}

#[test]
fn apply_is_idempotent_and_check_and_remove_see_the_table() {
    let env = Pod::new();
    let netns = env.pod.netns();
    let err = rules::check(netns).unwrap_err();
    assert!(
        matches!(&err, CheckError::Missing(m) if m.table_missing),
        "{err}"
    );

    rules::apply(netns, &env.options()).unwrap();
    let first = list(&env.pod);
    rules::apply(netns, &env.options()).unwrap();
    assert_eq!(
        rule_count(&first),
        rule_count(&list(&env.pod)),
        "re-apply duplicated rules"
    );
    rules::check(netns).unwrap();

    // Someone removes part of the rules: check names what is gone.
    nft(&env.pod, &["flush", "chain", "inet", "ambit", "prerouting"]);
    let err = rules::check(netns).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(&err, CheckError::Missing(m) if !m.table_missing),
        "{msg}"
    );
    assert!(
        msg.contains("ambit:in-redirect") && msg.contains("ambit:in-skip-hbone"),
        "{msg}"
    );
    assert!(!msg.contains("ambit:out-redirect"), "{msg}");

    // Other tables in the pod are left alone.
    nft(&env.pod, &["add", "table", "inet", "app"]);
    rules::remove(netns).unwrap();
    rules::remove(netns).unwrap(); // idempotent
    let err = rules::check(netns).unwrap_err();
    assert!(
        matches!(&err, CheckError::Missing(m) if m.table_missing),
        "{err}"
    );
    nft(&env.pod, &["list", "table", "inet", "app"]);
}

fn nft(ns: &TestNetns, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns.name(), "nft"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nft {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn list(ns: &TestNetns) -> String {
    nft(ns, &["-j", "list", "table", "inet", "ambit"])
}

fn rule_count(json: &str) -> usize {
    json.matches("\"rule\"").count()
}
