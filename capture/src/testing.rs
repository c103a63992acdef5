//! Throwaway network namespaces and veth links for tests (feature
//! `test-util`). Needs root and iproute2. Everything created here is removed
//! on drop, which also runs when a test panics.
//!
//! Helpers panic with a message naming the failed command: they are for
//! tests only.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::netns::NetNs;

/// Fails the test unless it runs as root.
pub fn require_root() {
    if !nix::unistd::geteuid().is_root() {
        panic!("needs root (network namespaces): run the tests as root");
    }
}

/// `ab` + 8 random hex digits + `role`, cut to 15 characters (the limit for
/// link names), unique across parallel tests and processes.
pub fn unique_name(role: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    let mut name = format!("ab{:08x}{role}", hasher.finish() as u32);
    name.truncate(15);
    name
}

/// Runs `ip ARGS`, panicking with its stderr on failure.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip` (install iproute2): {e}"));
    if !out.status.success() {
        panic!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
}

/// A named network namespace (`ip netns add`), deleted on drop. Its
/// loopback is up.
#[derive(Debug)]
pub struct TestNetns {
    name: String,
    netns: NetNs,
}

impl TestNetns {
    pub fn new(role: &str) -> Self {
        require_root();
        let name = unique_name(role);
        ip(&["netns", "add", &name]);
        let netns = match NetNs::open(format!("/var/run/netns/{name}")) {
            Ok(netns) => netns,
            Err(e) => {
                let _ = Command::new("ip").args(["netns", "del", &name]).status();
                panic!("{e}");
            }
        };
        let ns = Self { name, netns };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    pub fn netns(&self) -> &NetNs {
        &self.netns
    }

    /// `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// Connects `self` and `peer` with a veth pair, addresses them
    /// (`self_cidr`, `peer_cidr`, e.g. "198.18.0.2/24") and brings both ends
    /// up. Returns the link names (self side, peer side). The link goes away
    /// with the namespaces; nothing touches the host's interfaces.
    pub fn veth_to(&self, peer: &TestNetns, self_cidr: &str, peer_cidr: &str) -> (String, String) {
        let here = unique_name("a");
        let there = unique_name("b");
        self.ip(&[
            "link",
            "add",
            &here,
            "type",
            "veth",
            "peer",
            "name",
            &there,
            "netns",
            peer.name(),
        ]);
        self.ip(&["addr", "add", self_cidr, "dev", &here]);
        self.ip(&["link", "set", &here, "up"]);
        peer.ip(&["addr", "add", peer_cidr, "dev", &there]);
        peer.ip(&["link", "set", &there, "up"]);
        (here, there)
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
