//! nftables backend: one table, `inet ambit`, replaced in one transaction.
//!
//! `nft` runs as a child process started from a thread inside the pod's
//! namespace ([`NetNs::run_in`]), so it works with a namespace fd received
//! from the CNI plugin and never depends on `ip netns` names or `nsenter`.
//!
//! Every rule carries a `comment "ambit:…"`: [`Nftables::check`] finds rules
//! by that tag in `nft -j` output instead of comparing expression trees,
//! which differ between nft versions.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use super::{ports, CheckError, MissingRules, RuleOptions, RulesBackend, RulesError};
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

/// A rule every captured pod must have, found by its comment tag.
struct Required {
    chain: &'static str,
    tag: &'static str,
    redirect_to: Option<u16>,
}

const REQUIRED: [Required; 6] = [
    Required {
        chain: "output",
        tag: "ambit:out-skip-ztunnel",
        redirect_to: None,
    },
    Required {
        chain: "output",
        tag: "ambit:out-skip-loopback",
        redirect_to: None,
    },
    Required {
        chain: "output",
        tag: "ambit:out-redirect",
        redirect_to: Some(ports::OUTBOUND),
    },
    Required {
        chain: "prerouting",
        tag: "ambit:in-skip-loopback",
        redirect_to: None,
    },
    Required {
        chain: "prerouting",
        tag: "ambit:in-skip-hbone",
        redirect_to: None,
    },
    Required {
        chain: "prerouting",
        tag: "ambit:in-redirect",
        redirect_to: Some(ports::INBOUND),
    },
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
        Self::new(find_nft())
    }
}

fn find_nft() -> PathBuf {
    let from_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("nft"));
    let fallbacks = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"].map(PathBuf::from);
    from_path
        .chain(fallbacks)
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| PathBuf::from("nft"))
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

    /// Runs `nft ARGS` inside `netns` with `stdin`; returns stdout on success.
    fn run(
        &self,
        netns: &NetNs,
        action: &'static str,
        args: &[&str],
        stdin: &str,
    ) -> Result<String, RulesError> {
        let program = self.program.display().to_string();
        let spawn_err = |source| RulesError::Spawn {
            program: program.clone(),
            source,
        };
        let output = netns.run_in(|| {
            let mut child = Command::new(&self.program)
                .args(args)
                // check() matches nft's English "No such file" message.
                .env("LC_ALL", "C")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()?;
            // nft reads the whole script before it writes anything, so
            // writing first and then collecting output cannot deadlock.
            let written = match child.stdin.take() {
                Some(mut pipe) => pipe.write_all(stdin.as_bytes()),
                None => Ok(()),
            };
            let output = child.wait_with_output()?;
            // A write error matters only if nft did not fail by itself
            // (then its stderr is the better explanation).
            if output.status.success() {
                written?;
            }
            Ok(output)
        })?;
        let output = output.map_err(spawn_err)?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(RulesError::Failed {
                program,
                action,
                netns: netns.id(),
                status: output.status.to_string(),
                stderr: match String::from_utf8_lossy(&output.stderr).trim() {
                    "" => "(no error output)".to_owned(),
                    text => text.to_owned(),
                },
            })
        }
    }
}

impl RulesBackend for Nftables {
    fn apply(&self, netns: &NetNs, opts: &RuleOptions) -> Result<(), RulesError> {
        self.run(
            netns,
            "install the capture rules",
            &["-f", "-"],
            &render(opts),
        )?;
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

/// The whole nft script: delete-and-recreate in one atomic transaction, so
/// a re-apply never leaves a window without rules nor duplicates them.
pub fn render(opts: &RuleOptions) -> String {
    let mark = format!("{ZTUNNEL_MARK:#x}");
    let (v4, v6): (Vec<IpAddr>, Vec<IpAddr>) =
        opts.probe_sources.iter().partition(|ip| ip.is_ipv4());
    let mut out = render_delete();
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
            let what = match req.redirect_to {
                Some(port) => format!("rule {} (redirect to :{port}) in {}", req.tag, req.chain),
                None => format!("rule {} in {}", req.tag, req.chain),
            };
            missing.push(what);
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
        assert!(plain.starts_with("add table inet ambit\ndelete table inet ambit\n"));
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
