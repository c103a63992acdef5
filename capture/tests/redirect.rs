//! The capture rules move real connections in a throwaway pod netns, with
//! every backend: nftables, the node's `iptables`, and `iptables-legacy`
//! (each test runs once per backend, see `backend_tests!` at the end).
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

use capture::rules::{
    self, ports, Backend, BackendChoice, CheckError, Iptables, Nftables, RuleOptions, RulesBackend,
};
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

fn outbound_tcp_lands_on_15001_with_its_original_destination(flavor: Flavor) {
    let env = Pod::new();
    flavor
        .backend()
        .apply(env.pod.netns(), &env.options())
        .unwrap();
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

fn marked_and_loopback_traffic_bypasses_capture(flavor: Flavor) {
    let env = Pod::new();
    flavor
        .backend()
        .apply(env.pod.netns(), &env.options())
        .unwrap();
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

fn inbound_tcp_lands_on_15006_except_hbone_and_probes(flavor: Flavor) {
    let env = Pod::new();
    flavor
        .backend()
        .apply(env.pod.netns(), &env.options())
        .unwrap();
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

/// The node side of probe exemption: the node SNATs its own connections to the pod's probe
/// port to 169.254.7.127, the one address the pod exempts; its other connections (what a
/// host-network pod makes) are captured like anyone's.
fn node_probe_snat_exempts_only_probe_ports(flavor: Flavor) {
    let env = Pod::new();
    let backend = flavor.backend();
    let options = RuleOptions {
        probe_sources: rules::probes::probe_sources(),
        capture_dns: false,
    };
    backend.apply(env.pod.netns(), &options).unwrap();
    let app_addr = Pod::addr(&env.pod_ip, APP_PORT);
    backend
        .apply_probe_snat(env.peer.netns(), &[app_addr])
        .unwrap();
    // Applying again replaces, never duplicates.
    backend
        .apply_probe_snat(env.peer.netns(), &[app_addr])
        .unwrap();
    let inbound = env.listen(ports::INBOUND);
    let app = listen_in(
        env.pod.netns(),
        &ListenOptions::new(Pod::addr("0.0.0.0", APP_PORT)).mark(None),
    )
    .unwrap();
    let other_port = Pod::addr(&env.pod_ip, APP_PORT + 1);

    let _probe = connect_from(env.peer.netns(), app_addr, plain());
    let probed = accept(&app, "app (probe)");
    assert_eq!(
        probed.peer_addr().unwrap().ip().to_string(),
        "169.254.7.127",
        "the probe arrives from the SNAT address"
    );
    assert_idle(&inbound, "inbound listener");

    // From the node's own address (as before: the gateway) to another port: captured.
    let _host_client = connect_from(env.peer.netns(), other_port, plain());
    let captured = accept(&inbound, "inbound listener (host-network client)");
    assert_eq!(original_dst(&captured).unwrap(), other_port);
    assert_eq!(
        captured.peer_addr().unwrap().ip().to_string(),
        env.peer_ip,
        "not SNAT-ed: it is not a probe"
    );

    // Without targets nothing is SNAT-ed: the same probe is captured.
    backend.apply_probe_snat(env.peer.netns(), &[]).unwrap();
    let _unlisted = connect_from(env.peer.netns(), app_addr, plain());
    accept(&inbound, "inbound listener (unlisted probe port)");
}

fn dns_goes_to_15053_when_enabled(flavor: Flavor) {
    let env = Pod::new();
    flavor
        .backend()
        .apply(env.pod.netns(), &env.options())
        .unwrap();
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

fn apply_is_idempotent_and_check_and_remove_see_the_rules(flavor: Flavor) {
    let env = Pod::new();
    let netns = env.pod.netns();
    let backend = flavor.backend();
    let err = backend.check(netns).unwrap_err();
    assert!(
        matches!(&err, CheckError::Missing(m) if m.table_missing),
        "{err}"
    );

    backend.apply(netns, &env.options()).unwrap();
    let first = flavor.rule_count(&env.pod);
    assert!(first >= 6, "only {first} rules installed");
    backend.apply(netns, &env.options()).unwrap();
    assert_eq!(
        first,
        flavor.rule_count(&env.pod),
        "re-apply duplicated rules"
    );
    backend.check(netns).unwrap();

    // Someone removes part of the rules: check names what is gone.
    flavor.flush_inbound(&env.pod);
    let err = backend.check(netns).unwrap_err();
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
    // A re-apply repairs them.
    backend.apply(netns, &env.options()).unwrap();
    backend.check(netns).unwrap();

    // Other rules in the pod are left alone.
    flavor.add_foreign_rules(&env.pod);
    backend.remove(netns).unwrap();
    backend.remove(netns).unwrap(); // idempotent
    let err = backend.check(netns).unwrap_err();
    assert!(
        matches!(&err, CheckError::Missing(m) if m.table_missing),
        "{err}"
    );
    flavor.assert_foreign_rules(&env.pod);
}

/// With nft working (it does on every machine that runs these tests), auto
/// picks it; with a broken nft it falls back to iptables and says why.
#[test]
fn auto_detection_prefers_nft_and_falls_back_to_iptables() {
    capture::testing::require_root();
    let detected = rules::detect_backend().unwrap();
    assert_eq!(detected.backend.name(), "nftables", "{}", detected.reason);

    let fallback = rules::choose_backend(
        BackendChoice::Auto,
        Nftables::new("/bin/false"),
        Iptables::default(),
    )
    .unwrap();
    assert_eq!(fallback.backend.name(), "iptables");
    assert!(
        fallback.reason.contains("/bin/false") && fallback.reason.contains("using iptables"),
        "{}",
        fallback.reason
    );
    // The fallback really captures.
    outbound_tcp_lands_on_15001_with_its_original_destination(Flavor::Iptables("iptables"));
}

/// One rules backend, and how a test pokes at its rules from outside.
#[derive(Debug, Clone, Copy)]
enum Flavor {
    Nft,
    /// The v4 program prefix: `iptables`, `iptables-legacy`.
    Iptables(&'static str),
}

impl Flavor {
    fn backend(self) -> Backend {
        match self {
            Flavor::Nft => Backend::Nftables(Nftables::default()),
            Flavor::Iptables(variant) => Backend::Iptables(Iptables::variant(variant)),
        }
    }

    /// Runs a tool inside the pod netns (as an admin would, with `ip netns
    /// exec`), panicking on failure.
    fn tool(ns: &TestNetns, program: &str, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", ns.name(), program])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn rule_count(self, ns: &TestNetns) -> usize {
        match self {
            Flavor::Nft => Self::tool(ns, "nft", &["-j", "list", "table", "inet", "ambit"])
                .matches("\"rule\"")
                .count(),
            Flavor::Iptables(variant) => [
                variant.to_owned(),
                variant.replacen("iptables", "ip6tables", 1),
            ]
            .iter()
            .map(|prefix| {
                Self::tool(ns, &format!("{prefix}-save"), &["-t", "nat"])
                    .lines()
                    .filter(|l| l.starts_with("-A "))
                    .count()
            })
            .sum(),
        }
    }

    fn flush_inbound(self, ns: &TestNetns) {
        match self {
            Flavor::Nft => {
                Self::tool(
                    ns,
                    "nft",
                    &["flush", "chain", "inet", "ambit", "prerouting"],
                );
            }
            Flavor::Iptables(variant) => {
                Self::tool(ns, variant, &["-t", "nat", "-F", "AMBIT_PREROUTING"]);
            }
        }
    }

    fn add_foreign_rules(self, ns: &TestNetns) {
        match self {
            Flavor::Nft => {
                Self::tool(ns, "nft", &["add", "table", "inet", "app"]);
            }
            Flavor::Iptables(variant) => {
                Self::tool(ns, variant, &["-t", "nat", "-N", "APP"]);
                Self::tool(
                    ns,
                    variant,
                    &["-t", "nat", "-A", "OUTPUT", "-p", "udp", "-j", "APP"],
                );
            }
        }
    }

    fn assert_foreign_rules(self, ns: &TestNetns) {
        match self {
            Flavor::Nft => {
                Self::tool(ns, "nft", &["list", "table", "inet", "app"]);
            }
            Flavor::Iptables(variant) => {
                let save = Self::tool(ns, &format!("{variant}-save"), &["-t", "nat"]);
                assert!(save.contains("-A OUTPUT -p udp -j APP"), "{save}");
                assert!(!save.contains("AMBIT"), "{save}");
            }
        }
    }
}

/// Every test above, once per backend.
macro_rules! backend_tests {
    ($($module:ident => $flavor:expr),* $(,)?) => {$(
        mod $module {
            use super::*;

            #[test]
            fn outbound_tcp_lands_on_15001_with_its_original_destination() {
                super::outbound_tcp_lands_on_15001_with_its_original_destination($flavor);
            }

            #[test]
            fn marked_and_loopback_traffic_bypasses_capture() {
                super::marked_and_loopback_traffic_bypasses_capture($flavor);
            }

            #[test]
            fn inbound_tcp_lands_on_15006_except_hbone_and_probes() {
                super::inbound_tcp_lands_on_15006_except_hbone_and_probes($flavor);
            }

            #[test]
            fn node_probe_snat_exempts_only_probe_ports() {
                super::node_probe_snat_exempts_only_probe_ports($flavor);
            }

            #[test]
            fn dns_goes_to_15053_when_enabled() {
                super::dns_goes_to_15053_when_enabled($flavor);
            }

            #[test]
            fn apply_is_idempotent_and_check_and_remove_see_the_rules() {
                super::apply_is_idempotent_and_check_and_remove_see_the_rules($flavor);
            }
        }
    )*};
}

backend_tests! {
    nft => Flavor::Nft,
    iptables => Flavor::Iptables("iptables"),
    iptables_legacy => Flavor::Iptables("iptables-legacy"),
}

/// The iptables backend installs IPv6 rules too (nft's `inet` table covers
/// both families at once), and check() looks at them.
#[test]
fn iptables_checks_the_ipv6_rules_too() {
    let env = Pod::new();
    let backend = Iptables::default();
    backend.apply(env.pod.netns(), &env.options()).unwrap();
    backend.check(env.pod.netns()).unwrap();
    Flavor::tool(&env.pod, "ip6tables", &["-t", "nat", "-F", "AMBIT_OUTPUT"]);
    let msg = backend.check(env.pod.netns()).unwrap_err().to_string();
    assert!(
        msg.contains("rule ambit:out-redirect (redirect to :15001) in AMBIT_OUTPUT (IPv6)"),
        "{msg}"
    );
    assert!(!msg.contains("AMBIT_PREROUTING"), "{msg}");
    // IPv4-only mode ignores the IPv6 table.
    backend.clone().ipv4_only().check(env.pod.netns()).unwrap();
}

/// A capture table whose chains were made differently (say by an older release, with another
/// priority) cannot be refilled in place: apply replaces it whole, and the rules are right.
#[test]
fn nft_apply_replaces_a_table_whose_chains_differ() {
    let env = Pod::new();
    let netns = env.pod.netns();
    let script = "table inet ambit {\n\tchain output {\n\t\ttype nat hook output priority 0; policy accept;\n\t}\n}\n";
    let out = Command::new("ip")
        .args(["netns", "exec", env.pod.name(), "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child
                .stdin
                .take()
                .expect("piped")
                .write_all(script.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let backend = Nftables::default();
    backend.apply(netns, &env.options()).unwrap();
    backend.check(netns).unwrap();
    let listing = Flavor::tool(&env.pod, "nft", &["list", "table", "inet", "ambit"]);
    assert!(
        listing.contains("hook output priority -100"),
        "the chain is ambit's, not the old one: {listing}"
    );
}
