//! Finding the network namespace of a pod that is already running, by its IP. Used when a pod
//! joins the mesh after it started (label flip) and when ztunnel restarts: in both cases no CNI
//! call hands over the namespace, so ztunnel looks for it.
//!
//! Candidates are the namespaces pinned under `/var/run/netns` (containerd and CRI-O pin pod
//! sandboxes there, and so does `ip netns add`) and those of running processes
//! (`/proc/<pid>/ns/net`), each looked at once (deduplicated by inode).

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::netns::NetNs;

/// Where pinned namespaces live.
pub const PINNED_NETNS_DIR: &str = "/var/run/netns";

/// Paths of every candidate namespace: pinned ones first (cheap and usually right), then
/// those of processes.
fn candidates(pinned_dir: &Path) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Ok(entries) = std::fs::read_dir(pinned_dir) {
        let mut pinned: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        pinned.sort();
        paths.extend(pinned);
    }
    if let Ok(entries) = std::fs::read_dir("/proc") {
        paths.extend(
            entries
                .flatten()
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
                })
                .map(|e| e.path().join("ns/net")),
        );
    }
    paths
}

/// Whether `ip` is assigned to an interface of `netns`.
pub fn netns_has_ip(netns: &NetNs, ip: IpAddr) -> bool {
    netns
        .run_in(move || {
            nix::ifaddrs::getifaddrs().is_ok_and(|mut addresses| {
                addresses.any(|interface| {
                    interface.address.is_some_and(|address| {
                        let found = address
                            .as_sockaddr_in()
                            .map(|v4| IpAddr::V4(v4.ip()))
                            .or_else(|| address.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())));
                        found == Some(ip)
                    })
                })
            })
        })
        .unwrap_or(false)
}

/// The namespace (other than the caller's own) that has `ip` on one of its interfaces; the
/// first found. Prefer [`netns_holding_ip`], which sees every holder.
pub fn find_netns_by_ip(ip: IpAddr) -> Option<NetNs> {
    netns_holding_ip_in(Path::new(PINNED_NETNS_DIR), ip)
        .into_iter()
        .next()
}

/// Every namespace (other than the caller's own) that has `ip` on one of its interfaces, each
/// once. More than one means someone else claims the address too — a pod with NET_ADMIN can
/// add any address to its interface — and the caller must not guess which is the pod.
pub fn netns_holding_ip(ip: IpAddr) -> Vec<NetNs> {
    netns_holding_ip_in(Path::new(PINNED_NETNS_DIR), ip)
}

/// As [`find_netns_by_ip`], with another directory of pinned namespaces.
pub fn find_netns_by_ip_in(pinned_dir: &Path, ip: IpAddr) -> Option<NetNs> {
    netns_holding_ip_in(pinned_dir, ip).into_iter().next()
}

/// As [`netns_holding_ip`], with another directory of pinned namespaces.
pub fn netns_holding_ip_in(pinned_dir: &Path, ip: IpAddr) -> Vec<NetNs> {
    let own = NetNs::current().ok().map(|ns| ns.inode());
    let mut seen: HashSet<u64> = own.into_iter().collect();
    let mut found = Vec::new();
    for path in candidates(pinned_dir) {
        // Processes come and go and pinned files may be half-created: skip what cannot be opened.
        let Ok(netns) = NetNs::open(&path) else {
            continue;
        };
        if !seen.insert(netns.inode()) {
            continue;
        }
        if netns_has_ip(&netns, ip) {
            tracing::debug!(%ip, path = %path.display(), netns = %netns.id(), "found a network namespace holding the IP");
            found.push(netns);
        }
    }
    found
}
