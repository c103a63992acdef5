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

/// The namespace (other than the caller's own) that has `ip` on one of its interfaces.
pub fn find_netns_by_ip(ip: IpAddr) -> Option<NetNs> {
    find_netns_by_ip_in(Path::new(PINNED_NETNS_DIR), ip)
}

/// As [`find_netns_by_ip`], with another directory of pinned namespaces.
pub fn find_netns_by_ip_in(pinned_dir: &Path, ip: IpAddr) -> Option<NetNs> {
    let own = NetNs::current().ok().map(|ns| ns.inode());
    let mut seen: HashSet<u64> = own.into_iter().collect();
    for path in candidates(pinned_dir) {
        // Processes come and go and pinned files may be half-created: skip what cannot be opened.
        let Ok(netns) = NetNs::open(&path) else {
            continue;
        };
        if !seen.insert(netns.inode()) {
            continue;
        }
        if netns_has_ip(&netns, ip) {
            tracing::debug!(%ip, path = %path.display(), netns = %netns.id(), "found the pod's network namespace");
            return Some(netns);
        }
    }
    None
}

/// The IPv4 default gateway of `netns` (the node's address on the pod's bridge, where kubelet
/// probes come from), read from `/proc/thread-self/net/route` inside the namespace.
pub fn default_gateway_v4(netns: &NetNs) -> Option<IpAddr> {
    netns
        .run_in(|| std::fs::read_to_string("/proc/thread-self/net/route").ok())
        .ok()
        .flatten()
        .and_then(|table| parse_default_gateway(&table))
}

fn parse_default_gateway(route_table: &str) -> Option<IpAddr> {
    route_table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // Iface Destination Gateway Flags ...; the default route has destination 0.
        if fields.get(1) != Some(&"00000000") {
            return None;
        }
        let gateway = u32::from_str_radix(fields.get(2)?, 16).ok()?;
        // The kernel prints the address in host byte order of a little-endian u32.
        (gateway != 0).then(|| IpAddr::from(gateway.to_le_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_gateway_is_read_from_the_route_table() {
        let table =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth0\t00000000\t0101F50A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                     eth0\t0001F50A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(
            parse_default_gateway(table),
            Some("10.245.1.1".parse().unwrap())
        );
        assert_eq!(parse_default_gateway("Iface\tDestination\n"), None);
    }
}
