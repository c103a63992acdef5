//! nftables backend: one table, `inet ambit`, replaced in one transaction.
//!
//! Every rule carries a `comment "ambit:…"`: [`Nftables::check`] finds rules
//! by that tag in `nft -j` output instead of comparing expression trees,
//! which differ between nft versions.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::describe;
use super::exec::{find_program, Tool};
use super::{ports, CheckError, MissingRules, RuleOptions, RulesBackend, RulesError, REQUIRED};
use crate::netns::{NetNs, NetNsId};
use crate::socket::ZTUNNEL_MARK;

/// Family and name of the table Ambit owns in each pod namespace.
pub const TABLE: &str = "inet ambit";
const TABLE_NAME: &str = "ambit";

/// A chain every captured pod must have: (name, type, hook).
const CHAINS: [(&str, &str, &str); 2] = [
    ("output", "nat", "output"),
    ("prerouting", "nat", "prerouting"),
];

/// The nftables backend.
#[derive(Debug, Clone)]
pub struct Nftables {
    program: PathBuf,
}

impl Default for Nftables {
    /// `nft` from `PATH`, else the usual sbin locations (CNI plugins often
    /// run with a minimal `PATH`).
    fn default() -> Self {
        Self::new(find_program("nft"))
    }
}

impl Nftables {
    /// Uses the `nft` binary at `program`.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
        }
    }

    pub fn program(&self) -> &Path {
        &self.program
    }

    fn tool(&self) -> Tool<'_> {
        Tool {
            program: &self.program,
            spawn_fix: "install the nftables package on the node, or set the path of the nft \
                        binary (nftPath in the ambit-cni config)",
            failure_fix: "check that the kernel has nf_tables with NAT/redirect support \
                          (modules nft_nat, nft_redir), or use the iptables backend",
        }
    }

    /// Runs `nft ARGS` inside `netns` with `stdin`; returns stdout on success.
    fn run(
        &self,
        netns: &NetNs,
        action: &'static str,
        args: &[&str],
        stdin: &str,
    ) -> Result<String, RulesError> {
        self.tool().run(netns, action, args, stdin)
    }

    /// Whether nft works here: `nft list tables` in the caller's namespace
    /// (the host's, when the CNI plugin asks). Reads, changes nothing.
    pub fn probe(&self) -> Result<(), RulesError> {
        let host = NetNs::current()?;
        self.run(&host, "list tables", &["list", "tables"], "")
            .map(drop)
    }
}

impl Nftables {
    /// Replaces the node's probe SNAT table with `targets` (see `rules::probes`).
    pub fn apply_probe_snat(
        &self,
        node: &NetNs,
        targets: &[std::net::SocketAddr],
    ) -> Result<(), RulesError> {
        self.run(
            node,
            "install the probe SNAT rules",
            &["-f", "-"],
            &super::probes::render_nft(targets),
        )
        .map(drop)
    }
}

impl RulesBackend for Nftables {
    fn apply(&self, netns: &NetNs, opts: &RuleOptions) -> Result<(), RulesError> {
        let flushed = self.run(
            netns,
            "install the capture rules",
            &["-f", "-"],
            &render(opts),
        );
        if let Err(error) = flushed {
            // A table whose chains were made differently (an older release) cannot be
            // refilled in place: replace it whole.
            tracing::debug!(netns = %netns.id(), %error, "refilling the capture table failed; replacing it");
            self.run(
                netns,
                "install the capture rules",
                &["-f", "-"],
                &render_replacing(opts),
            )?;
        }
        tracing::debug!(netns = %netns.id(), ?opts, "capture rules applied");
        Ok(())
    }

    fn remove(&self, netns: &NetNs) -> Result<(), RulesError> {
        self.run(
            netns,
            "remove the capture rules",
            &["-f", "-"],
            &render_delete(),
        )?;
        tracing::debug!(netns = %netns.id(), "capture rules removed");
        Ok(())
    }

    fn check(&self, netns: &NetNs) -> Result<(), CheckError> {
        let args = ["-j", "list", "table", "inet", TABLE_NAME];
        match self.run(netns, "list the capture rules", &args, "") {
            Ok(json) => check_listing(netns.id(), &json),
            Err(RulesError::Failed { stderr, .. }) if stderr.contains("No such file") => {
                Err(MissingRules {
                    netns: netns.id(),
                    table_missing: true,
                    missing: vec![format!("table {TABLE}")],
                }
                .into())
            }
            Err(other) => Err(other.into()),
        }
    }
}

/// `add` + `delete` makes deleting a table that may not exist succeed, in
/// the same transaction (nft < 1.0.8 has no `destroy`).
fn render_delete() -> String {
    format!("add table {TABLE}\ndelete table {TABLE}\n")
}

/// The whole nft script, refilling the table in one atomic transaction (`add` + `flush`, then
/// the chains and rules), so a re-apply never leaves a window without rules nor duplicates
/// them. Refilling rather than deleting the table is what makes a pod start fast: in the fresh
/// network namespace of a CNI ADD it costs ~5 ms, where deleting a table in the transaction
/// costs ~15 ms (the kernel waits for its hooks to be unregistered). The chains are the same
/// in every script, so none is left over.
pub fn render(opts: &RuleOptions) -> String {
    render_after(&format!("add table {TABLE}\nflush table {TABLE}\n"), opts)
}

/// [`render`], deleting and recreating the table instead: for a table whose chains differ.
pub fn render_replacing(opts: &RuleOptions) -> String {
    render_after(&render_delete(), opts)
}

fn render_after(header: &str, opts: &RuleOptions) -> String {
    let mark = format!("{ZTUNNEL_MARK:#x}");
    let (v4, v6): (Vec<IpAddr>, Vec<IpAddr>) =
        opts.probe_sources.iter().partition(|ip| ip.is_ipv4());
    let mut out = header.to_string();
    out.push_str(&format!("table {TABLE} {{\n"));

    out.push_str("\tchain output {\n\t\ttype nat hook output priority -100; policy accept;\n");
    out.push_str(&format!(
        "\t\tmeta mark {mark} return comment \"ambit:out-skip-ztunnel\"\n"
    ));
    // Loopback covers 127/8 and ::1 and also the pod's own addresses
    // (routed via lo): pod-local traffic is not mesh traffic.
    out.push_str("\t\toifname \"lo\" return comment \"ambit:out-skip-loopback\"\n");
    if opts.capture_dns {
        let dns = ports::DNS;
        out.push_str(&format!(
            "\t\tudp dport 53 redirect to :{dns} comment \"ambit:out-dns-udp\"\n"
        ));
        out.push_str(&format!(
            "\t\ttcp dport 53 redirect to :{dns} comment \"ambit:out-dns-tcp\"\n"
        ));
    }
    out.push_str(&format!(
        "\t\tmeta l4proto tcp redirect to :{} comment \"ambit:out-redirect\"\n\t}}\n",
        ports::OUTBOUND
    ));

    out.push_str(
        "\tchain prerouting {\n\t\ttype nat hook prerouting priority -100; policy accept;\n",
    );
    out.push_str("\t\tiifname \"lo\" return comment \"ambit:in-skip-loopback\"\n");
    if !v4.is_empty() {
        out.push_str(&format!(
            "\t\tip saddr {{ {} }} return comment \"ambit:in-skip-probes-v4\"\n",
            join(&v4)
        ));
    }
    if !v6.is_empty() {
        out.push_str(&format!(
            "\t\tip6 saddr {{ {} }} return comment \"ambit:in-skip-probes-v6\"\n",
            join(&v6)
        ));
    }
    out.push_str(&format!(
        "\t\ttcp dport {} return comment \"ambit:in-skip-hbone\"\n",
        ports::HBONE
    ));
    out.push_str(&format!(
        "\t\tmeta l4proto tcp redirect to :{} comment \"ambit:in-redirect\"\n\t}}\n}}\n",
        ports::INBOUND
    ));
    out
}

fn join(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Verifies `nft -j list table inet ambit` output against [`CHAINS`] and
/// [`REQUIRED`].
pub(crate) fn check_listing(netns: NetNsId, json: &str) -> Result<(), CheckError> {
    let bad = |reason: String| RulesError::BadListing { netns, reason };
    let doc: Value = serde_json::from_str(json).map_err(|e| bad(format!("not JSON: {e}")))?;
    let items = doc
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no \"nftables\" array".to_owned()))?;
    let objects = |kind: &'static str| items.iter().filter_map(move |item| item.get(kind));

    let mut missing = Vec::new();
    for (name, kind, hook) in CHAINS {
        let found = objects("chain").any(|c| {
            c["name"] == name && c["type"] == kind && c["hook"] == hook && c["table"] == TABLE_NAME
        });
        if !found {
            missing.push(format!("chain {name} (type {kind} hook {hook})"));
        }
    }
    for req in &REQUIRED {
        let rule = objects("rule").find(|r| r["chain"] == req.chain && r["comment"] == req.tag);
        let ok = match (rule, req.redirect_to) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(rule), Some(port)) => redirects_to(rule, port),
        };
        if !ok {
            missing.push(describe(req, req.chain));
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(MissingRules {
            netns,
            table_missing: false,
            missing,
        }
        .into())
    }
}

fn redirects_to(rule: &Value, port: u16) -> bool {
    rule["expr"]
        .as_array()
        .is_some_and(|exprs| exprs.iter().any(|e| e["redirect"]["port"] == port))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const ID: NetNsId = NetNsId {
        dev: 4,
        inode: 4026531840,
    };

    #[test]
    fn render_has_fixed_rules_and_options() {
        let plain = render(&RuleOptions::default());
        assert!(plain.starts_with("add table inet ambit\nflush table inet ambit\n"));
        let replacing = render_replacing(&RuleOptions::default());
        assert!(replacing.starts_with("add table inet ambit\ndelete table inet ambit\n"));
        assert_eq!(
            replacing
                .split_once("table inet ambit {")
                .map(|(_, body)| body),
            plain.split_once("table inet ambit {").map(|(_, body)| body),
            "both forms install the same table"
        );
        assert!(plain.contains("meta mark 0x539 return"));
        assert!(plain.contains("redirect to :15001"));
        assert!(plain.contains("tcp dport 15008 return"));
        assert!(plain.contains("redirect to :15006"));
        assert!(!plain.contains("15053"));
        assert!(!plain.contains("saddr"));

        let opts = RuleOptions {
            probe_sources: vec!["10.1.0.1".parse().unwrap(), "fd00::1".parse().unwrap()],
            capture_dns: true,
        };
        let full = render(&opts);
        assert!(full.contains("ip saddr { 10.1.0.1 } return"));
        assert!(full.contains("ip6 saddr { fd00::1 } return"));
        assert!(full.contains("udp dport 53 redirect to :15053"));
        assert!(full.contains("tcp dport 53 redirect to :15053"));
        // Probe exclusion and DNS come before the catch-all redirects.
        assert!(full.find("saddr").unwrap() < full.find(":15006").unwrap());
        assert!(full.find(":15053").unwrap() < full.find(":15001").unwrap());
    }

    fn rule(chain: &str, tag: &str, port: Option<u16>) -> Value {
        let expr = match port {
            Some(p) => serde_json::json!([{"redirect": {"port": p}}]),
            None => serde_json::json!([{"return": null}]),
        };
        serde_json::json!({"rule": {"family": "inet", "table": "ambit", "chain": chain,
            "comment": tag, "expr": expr}})
    }

    fn listing(skip_tag: Option<&str>, out_port: u16) -> String {
        let mut items = vec![
            serde_json::json!({"metainfo": {"version": "1.0.6"}}),
            serde_json::json!({"table": {"family": "inet", "name": "ambit"}}),
            serde_json::json!({"chain": {"table": "ambit", "name": "output", "type": "nat", "hook": "output"}}),
            serde_json::json!({"chain": {"table": "ambit", "name": "prerouting", "type": "nat", "hook": "prerouting"}}),
        ];
        for req in &REQUIRED {
            if Some(req.tag) == skip_tag {
                continue;
            }
            let port = req
                .redirect_to
                .map(|p| if p == ports::OUTBOUND { out_port } else { p });
            items.push(rule(req.chain, req.tag, port));
        }
        serde_json::json!({ "nftables": items }).to_string()
    }

    #[test]
    fn complete_listing_passes() {
        check_listing(ID, &listing(None, 15001)).unwrap();
    }

    #[test]
    fn each_missing_rule_is_named() {
        for req in &REQUIRED {
            let err = check_listing(ID, &listing(Some(req.tag), 15001)).unwrap_err();
            let CheckError::Missing(m) = err else {
                panic!("{err}")
            };
            assert!(!m.table_missing);
            assert_eq!(m.missing.len(), 1, "{m}");
            assert!(m.missing[0].contains(req.tag), "{m}");
        }
    }

    #[test]
    fn wrong_redirect_port_is_missing() {
        let err = check_listing(ID, &listing(None, 15999)).unwrap_err();
        assert!(
            err.to_string()
                .contains("ambit:out-redirect (redirect to :15001)"),
            "{err}"
        );
    }

    #[test]
    fn missing_chain_is_named() {
        let json = serde_json::json!({"nftables": [
            {"chain": {"table": "ambit", "name": "output", "type": "filter", "hook": "output"}}
        ]});
        let err = check_listing(ID, &json.to_string()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("chain output (type nat hook output)"), "{msg}");
        assert!(msg.contains("chain prerouting"), "{msg}");
        assert!(msg.contains("net:[4026531840]"), "{msg}");
    }

    #[test]
    fn garbage_listing_is_a_bad_listing() {
        for json in ["", "[]", "{\"nftables\": 3}", "not json"] {
            let err = check_listing(ID, json).unwrap_err();
            assert!(
                matches!(err, CheckError::Rules(RulesError::BadListing { .. })),
                "{json}: {err}"
            );
        }
    }
}
