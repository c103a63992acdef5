//! The node's probe SNAT with iptables: the nat chain `AMBIT_PROBES`, jumped to first thing
//! from `POSTROUTING` (see `rules::probes` for why). Replaced in one `--noflush` restore per
//! family, like the pod chains.

use std::net::SocketAddr;

use super::{Family, Iptables, Listing};
use crate::netns::NetNs;
use crate::rules::probes::{PROBE_SNAT_V4, PROBE_SNAT_V6, TAG_V4, TAG_V6};
use crate::rules::RulesError;

/// Ambit's chain on the node, jumped to from `POSTROUTING`.
pub const PROBES_CHAIN: &str = "AMBIT_PROBES";

/// The restore script for one family: (re)declare the chain, which empties it, move its jump
/// to the top of `POSTROUTING`, then one SNAT rule per target of this family.
pub fn render_probe_snat(family: Family, targets: &[SocketAddr], existing: &Listing) -> String {
    let mut out = format!("*nat\n:{PROBES_CHAIN} - [0:0]\n");
    for jump in probe_jumps(existing) {
        out.push_str(&format!("-D POSTROUTING {}\n", jump));
    }
    out.push_str(&format!("-I POSTROUTING 1 -j {PROBES_CHAIN}\n"));
    let (tag, to) = match family {
        Family::V4 => (TAG_V4, PROBE_SNAT_V4.to_string()),
        Family::V6 => (TAG_V6, PROBE_SNAT_V6.to_string()),
    };
    for target in targets.iter().filter(|t| family.contains(&t.ip())) {
        // `--socket-exists`: only locally originated connections, never forwarded ones.
        out.push_str(&format!(
            "-A {PROBES_CHAIN} -p tcp -d {}/{} --dport {} -m owner --socket-exists -m comment --comment \"{tag}\" -j SNAT --to-source {to}\n",
            target.ip(),
            family.host_prefix(),
            target.port()
        ));
    }
    out.push_str("COMMIT\n");
    out
}

/// The jumps from `POSTROUTING` into Ambit's probe chain, as `iptables-save` spells them.
fn probe_jumps(existing: &Listing) -> impl Iterator<Item = &str> {
    existing
        .rules
        .iter()
        .filter(|r| r.chain == "POSTROUTING" && r.target() == Some(PROBES_CHAIN))
        .map(|r| r.rest.as_str())
}

impl Iptables {
    /// Replaces the node's probe SNAT rules with `targets` (see `rules::probes`).
    pub fn apply_probe_snat(&self, node: &NetNs, targets: &[SocketAddr]) -> Result<(), RulesError> {
        for programs in self.families() {
            let existing = programs.list(node)?;
            let script = render_probe_snat(programs.family, targets, &existing);
            programs.restore(node, "install the probe SNAT rules", &script)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_jump_moves_to_the_top_and_each_target_gets_one_rule() {
        let existing = Listing::parse(
            "*nat\n:POSTROUTING ACCEPT [0:0]\n:AMBIT_PROBES - [0:0]\n-A POSTROUTING -s 10.0.0.0/8 -j MASQUERADE\n-A POSTROUTING -j AMBIT_PROBES\nCOMMIT\n",
        );
        let targets: Vec<SocketAddr> = vec![
            "10.1.1.2:8080".parse().unwrap(),
            "[fd00::2]:80".parse().unwrap(),
        ];
        let script = render_probe_snat(Family::V4, &targets, &existing);
        assert_eq!(
            script,
            "*nat\n:AMBIT_PROBES - [0:0]\n-D POSTROUTING -j AMBIT_PROBES\n-I POSTROUTING 1 -j AMBIT_PROBES\n\
             -A AMBIT_PROBES -p tcp -d 10.1.1.2/32 --dport 8080 -m owner --socket-exists -m comment --comment \"ambit:probe-snat-v4\" -j SNAT --to-source 169.254.7.127\nCOMMIT\n"
        );
        let v6 = render_probe_snat(Family::V6, &targets, &Listing::default());
        assert!(v6.contains("-d fd00::2/128 --dport 80"), "{v6}");
        assert!(!v6.contains("-D POSTROUTING"));
    }
}
