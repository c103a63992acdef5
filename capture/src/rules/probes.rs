//! Kubelet probes, on the node (DESIGN §3: "Kubelet probes are exempt only by a dedicated
//! link-local SNAT address, never by the node's gateway IP").
//!
//! The kubelet probes pods from the node itself, so its packets reach a pod from the node's
//! address on the pod network — the same address that host-network pods, and NodePort traffic
//! SNAT-ed by kube-proxy, arrive from. Exempting that address from capture would let all of
//! them reach ambient pods in clear and skip policy. Instead, on the node, connections that
//! are *locally originated* (they have a local socket: never forwarded or NodePort traffic)
//! towards an ambient pod's *declared probe port* are SNAT-ed to [`PROBE_SNAT_V4`] /
//! [`PROBE_SNAT_V6`] (Istio's addresses), and the pod's capture rules exempt exactly those.
//! A host-network client reaching any other port of an ambient pod is captured like anyone
//! outside the mesh: policy applies to it.
//!
//! The node state is one table (nft `inet ambit_probes`) or one chain (iptables
//! `AMBIT_PROBES` in nat `POSTROUTING`), replaced atomically with the full target list, so it
//! is always exactly what ztunnel last computed; it survives a ztunnel restart, so probes keep
//! working meanwhile.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Source address of kubelet probes as ambient pods see them (IPv4).
pub const PROBE_SNAT_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 7, 127);
/// Source address of kubelet probes as ambient pods see them (IPv6).
pub const PROBE_SNAT_V6: Ipv6Addr = Ipv6Addr::new(
    0xfd16, 0x9254, 0x7127, 0x1337, 0xffff, 0xffff, 0xffff, 0xffff,
);

/// The addresses pods exempt from inbound capture: the probe SNAT addresses, nothing else.
pub fn probe_sources() -> Vec<IpAddr> {
    vec![IpAddr::V4(PROBE_SNAT_V4), IpAddr::V6(PROBE_SNAT_V6)]
}

/// The node's nft table.
pub const NODE_TABLE_NAME: &str = "ambit_probes";
const NODE_TABLE: &str = "inet ambit_probes";

/// Rule tags, shared by both backends.
pub(crate) const TAG_V4: &str = "ambit:probe-snat-v4";
pub(crate) const TAG_V6: &str = "ambit:probe-snat-v6";

/// The nft script that replaces the node's probe table with one holding `targets` (pod
/// address and probe port). An empty list leaves an empty table: nothing is SNAT-ed.
pub fn render_nft(targets: &[SocketAddr]) -> String {
    let (v4, v6): (Vec<&SocketAddr>, Vec<&SocketAddr>) = targets.iter().partition(|t| t.is_ipv4());
    let elements = |list: &[&SocketAddr]| {
        let items: Vec<String> = list
            .iter()
            .map(|t| format!("{} . {}", t.ip(), t.port()))
            .collect();
        if items.is_empty() {
            String::new()
        } else {
            format!(" elements = {{ {} }};", items.join(", "))
        }
    };
    let mut out = format!("add table {NODE_TABLE}\ndelete table {NODE_TABLE}\n");
    out.push_str(&format!("table {NODE_TABLE} {{\n"));
    out.push_str(&format!(
        "\tset targets_v4 {{ type ipv4_addr . inet_service;{} }}\n",
        elements(&v4)
    ));
    out.push_str(&format!(
        "\tset targets_v6 {{ type ipv6_addr . inet_service;{} }}\n",
        elements(&v6)
    ));
    out.push_str(
        "\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n",
    );
    // `meta skuid` only matches packets with a local socket: forwarded traffic (other nodes'
    // pods, NodePort after DNAT) has none and is never SNAT-ed here.
    out.push_str(&format!(
        "\t\tip daddr . tcp dport @targets_v4 meta skuid 0-4294967294 snat ip to {PROBE_SNAT_V4} comment \"{TAG_V4}\"\n"
    ));
    out.push_str(&format!(
        "\t\tip6 daddr . tcp dport @targets_v6 meta skuid 0-4294967294 snat ip6 to {PROBE_SNAT_V6} comment \"{TAG_V6}\"\n"
    ));
    out.push_str("\t}\n}\n");
    out
}

/// The nft script that removes the node's probe table.
pub fn render_nft_remove() -> String {
    format!("add table {NODE_TABLE}\ndelete table {NODE_TABLE}\n")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_table_lists_each_target_in_its_family() {
        let targets: Vec<SocketAddr> = ["10.1.1.2:8080", "10.1.1.3:9090", "[fd00::2]:8080"]
            .iter()
            .map(|t| t.parse().unwrap())
            .collect();
        let script = render_nft(&targets);
        assert!(script.starts_with("add table inet ambit_probes\ndelete table inet ambit_probes\n"));
        assert!(script.contains("elements = { 10.1.1.2 . 8080, 10.1.1.3 . 9090 }"));
        assert!(script.contains("elements = { fd00::2 . 8080 }"));
        assert!(script.contains("snat ip to 169.254.7.127"));
        assert!(script.contains("snat ip6 to fd16:9254:7127:1337:ffff:ffff:ffff:ffff"));
        // Only locally originated connections.
        assert_eq!(script.matches("meta skuid").count(), 2);
    }

    #[test]
    fn no_targets_is_an_empty_but_valid_table() {
        let script = render_nft(&[]);
        assert!(!script.contains("elements"));
        assert!(script.contains("set targets_v4 { type ipv4_addr . inet_service; }"));
    }
}
