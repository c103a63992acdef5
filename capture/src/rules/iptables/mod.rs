//! iptables backend, for hosts without nftables: the chains `AMBIT_OUTPUT`
//! and `AMBIT_PREROUTING` of the nat table, jumped to first thing from
//! `OUTPUT` and `PREROUTING`, for IPv4 and (when the host has IPv6) IPv6.
//!
//! Atomicity: each family is one `iptables-restore --noflush` transaction.
//! Declaring `:AMBIT_OUTPUT - [0:0]` in a `--noflush` restore creates the
//! chain or empties it, and the jumps are deleted and re-inserted in the same
//! transaction, so a re-apply never leaves a moment without rules nor
//! duplicates a jump. The two families are separate transactions (iptables
//! has no common one); if IPv6 fails after IPv4 succeeded, `apply` fails and
//! the CNI ADD fails, so the pod never starts half-captured.
//!
//! Which jumps exist is read from `iptables-save` just before the restore.
//! That read and the write are not one transaction, but nothing else edits
//! Ambit's chains, and the runtime never runs two CNI calls for the same pod
//! at once.
//!
//! Every rule carries the same `ambit:…` comment as its nft twin, so
//! [`Iptables::check`] and its messages are the same for both backends.
//! "iptables" here is whatever the node's `iptables` is (legacy or nft
//! flavour); [`Iptables::variant`] picks one explicitly.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::exec::{find_program, Tool};
use super::{
    describe, ports, CheckError, MissingRules, RuleOptions, RulesBackend, RulesError, REQUIRED,
};
use crate::netns::NetNs;
use crate::socket::ZTUNNEL_MARK;

mod probes;
#[cfg(test)]
mod tests;

pub use probes::PROBES_CHAIN;

/// Ambit's chain for outbound traffic, jumped to from `OUTPUT`.
pub const OUTPUT_CHAIN: &str = "AMBIT_OUTPUT";
/// Ambit's chain for inbound traffic, jumped to from `PREROUTING`.
pub const PREROUTING_CHAIN: &str = "AMBIT_PREROUTING";

/// (built-in chain, Ambit's chain, hook name used by [`REQUIRED`]).
const HOOKS: [(&str, &str, &str); 2] = [
    ("OUTPUT", OUTPUT_CHAIN, "output"),
    ("PREROUTING", PREROUTING_CHAIN, "prerouting"),
];

/// Seconds iptables-restore waits for the xtables lock, which is global to
/// the host (not per namespace): kube-proxy may be holding it.
const LOCK_WAIT: &str = "--wait=5";

const SPAWN_FIX: &str = "install the iptables package on the node (it provides iptables-restore \
                         and iptables-save), or use the nftables backend";
const FAILURE_FIX: &str = "check that the kernel supports iptables NAT (modules iptable_nat, \
                           ip6table_nat, xt_REDIRECT, xt_comment, xt_mark), or use the \
                           nftables backend";

/// IP family of one iptables flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn contains(self, ip: &IpAddr) -> bool {
        match self {
            Family::V4 => ip.is_ipv4(),
            Family::V6 => ip.is_ipv6(),
        }
    }

    fn host_prefix(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    /// Appended to the names in [`MissingRules`].
    fn suffix(self) -> &'static str {
        match self {
            Family::V4 => "",
            Family::V6 => " (IPv6)",
        }
    }
}

/// `*-restore` and `*-save` of one family.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Programs {
    family: Family,
    restore: PathBuf,
    save: PathBuf,
}

impl Programs {
    fn find(prefix: &str, family: Family) -> Self {
        Self {
            family,
            restore: find_program(&format!("{prefix}-restore")),
            save: find_program(&format!("{prefix}-save")),
        }
    }

    fn tool(program: &Path) -> Tool<'_> {
        Tool {
            program,
            spawn_fix: SPAWN_FIX,
            failure_fix: FAILURE_FIX,
        }
    }

    /// The nat table of `netns`, parsed.
    fn list(&self, netns: &NetNs) -> Result<Listing, RulesError> {
        let out =
            Self::tool(&self.save).run(netns, "list the capture rules", &["-t", "nat"], "")?;
        Ok(Listing::parse(&out))
    }

    fn restore(&self, netns: &NetNs, action: &'static str, script: &str) -> Result<(), RulesError> {
        Self::tool(&self.restore)
            .run(netns, action, &["--noflush", LOCK_WAIT], script)
            .map(drop)
    }
}

/// The iptables backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iptables {
    v4: Programs,
    /// `None` when the host has no IPv6 (then pods have none either and
    /// there is nothing to capture, and ip6tables would fail).
    v6: Option<Programs>,
}

impl Default for Iptables {
    /// Whatever `iptables` is on the node (the distribution's alternative:
    /// legacy or nft flavour).
    fn default() -> Self {
        Self::variant("iptables")
    }
}

impl Iptables {
    /// A specific flavour by its v4 name: `iptables`, `iptables-legacy` or
    /// `iptables-nft` (the v6 twin is derived: `ip6tables-legacy`, …).
    /// IPv6 is handled when the host kernel has it.
    pub fn variant(name: &str) -> Self {
        let v6_name = name.replacen("iptables", "ip6tables", 1);
        let has_ipv6 = Path::new("/proc/sys/net/ipv6").exists();
        Self {
            v4: Programs::find(name, Family::V4),
            v6: has_ipv6.then(|| Programs::find(&v6_name, Family::V6)),
        }
    }

    /// Only IPv4 (for hosts where ip6tables is missing or broken and pods
    /// are IPv4-only).
    pub fn ipv4_only(mut self) -> Self {
        self.v6 = None;
        self
    }

    /// The `iptables-restore` in use for IPv4.
    pub fn program(&self) -> &Path {
        &self.v4.restore
    }

    fn families(&self) -> impl Iterator<Item = &Programs> {
        std::iter::once(&self.v4).chain(self.v6.as_ref())
    }

    /// Whether iptables works here: an empty `--test` restore of the nat
    /// table in the caller's namespace (the host's, when the CNI plugin
    /// asks). Changes nothing and, unlike `iptables-save`, does not print a
    /// host table that kube-proxy may have filled with thousands of rules.
    pub fn probe(&self) -> Result<(), RulesError> {
        let host = NetNs::current()?;
        Programs::tool(&self.v4.restore)
            .run(
                &host,
                "load the nat table",
                &["--noflush", "--test", LOCK_WAIT],
                "*nat\nCOMMIT\n",
            )
            .map(drop)
    }
}

impl RulesBackend for Iptables {
    fn apply(&self, netns: &NetNs, opts: &RuleOptions) -> Result<(), RulesError> {
        for programs in self.families() {
            let existing = programs.list(netns)?;
            let script = render(programs.family, opts, &existing);
            programs.restore(netns, "install the capture rules", &script)?;
        }
        tracing::debug!(netns = %netns.id(), ?opts, "capture rules applied (iptables)");
        Ok(())
    }

    fn remove(&self, netns: &NetNs) -> Result<(), RulesError> {
        for programs in self.families() {
            let existing = programs.list(netns)?;
            if let Some(script) = render_remove(&existing) {
                programs.restore(netns, "remove the capture rules", &script)?;
            }
        }
        tracing::debug!(netns = %netns.id(), "capture rules removed (iptables)");
        Ok(())
    }

    fn check(&self, netns: &NetNs) -> Result<(), CheckError> {
        let mut missing = Vec::new();
        let mut anything = false;
        for programs in self.families() {
            let listing = programs.list(netns)?;
            anything |= listing.has_any_of_ours();
            missing.extend(check_listing(programs.family, &listing));
        }
        if missing.is_empty() {
            return Ok(());
        }
        Err(MissingRules {
            netns: netns.id(),
            table_missing: !anything,
            missing: if anything {
                missing
            } else {
                vec![format!("nat chains {OUTPUT_CHAIN} and {PREROUTING_CHAIN}")]
            },
        }
        .into())
    }
}

/// The restore script for one family: (re)declare Ambit's chains, which
/// empties them, move the jumps to the top of the built-in chains (so no
/// other nat rule in the pod can skip capture), then fill the chains.
pub fn render(family: Family, opts: &RuleOptions, existing: &Listing) -> String {
    let mut out = String::from("*nat\n");
    for (_, chain, _) in HOOKS {
        out.push_str(&format!(":{chain} - [0:0]\n"));
    }
    for jump in existing.jumps() {
        out.push_str(&format!("-D {} {}\n", jump.chain, jump.rest));
    }
    for (builtin, chain, _) in HOOKS {
        out.push_str(&format!("-I {builtin} 1 -j {chain}\n"));
    }

    let rule = |out: &mut String, chain: &str, matches: &str, tag: &str, target: &str| {
        out.push_str(&format!(
            "-A {chain} {matches}-m comment --comment \"{tag}\" -j {target}\n"
        ));
    };
    let redirect = |port: u16| format!("REDIRECT --to-ports {port}");
    let mark = format!("-m mark --mark {ZTUNNEL_MARK:#x} ");
    rule(
        &mut out,
        OUTPUT_CHAIN,
        &mark,
        "ambit:out-skip-ztunnel",
        "RETURN",
    );
    // Loopback covers 127/8 and ::1 and also the pod's own addresses
    // (routed via lo): pod-local traffic is not mesh traffic.
    rule(
        &mut out,
        OUTPUT_CHAIN,
        "-o lo ",
        "ambit:out-skip-loopback",
        "RETURN",
    );
    if opts.capture_dns {
        let dns = redirect(ports::DNS);
        rule(
            &mut out,
            OUTPUT_CHAIN,
            "-p udp --dport 53 ",
            "ambit:out-dns-udp",
            &dns,
        );
        rule(
            &mut out,
            OUTPUT_CHAIN,
            "-p tcp --dport 53 ",
            "ambit:out-dns-tcp",
            &dns,
        );
    }
    let outbound = redirect(ports::OUTBOUND);
    rule(
        &mut out,
        OUTPUT_CHAIN,
        "-p tcp ",
        "ambit:out-redirect",
        &outbound,
    );

    rule(
        &mut out,
        PREROUTING_CHAIN,
        "-i lo ",
        "ambit:in-skip-loopback",
        "RETURN",
    );
    let probe_tag = match family {
        Family::V4 => "ambit:in-skip-probes-v4",
        Family::V6 => "ambit:in-skip-probes-v6",
    };
    for ip in opts.probe_sources.iter().filter(|ip| family.contains(ip)) {
        let source = format!("-s {ip}/{} ", family.host_prefix());
        rule(&mut out, PREROUTING_CHAIN, &source, probe_tag, "RETURN");
    }
    let hbone = format!("-p tcp --dport {} ", ports::HBONE);
    rule(
        &mut out,
        PREROUTING_CHAIN,
        &hbone,
        "ambit:in-skip-hbone",
        "RETURN",
    );
    let inbound = redirect(ports::INBOUND);
    rule(
        &mut out,
        PREROUTING_CHAIN,
        "-p tcp ",
        "ambit:in-redirect",
        &inbound,
    );
    out.push_str("COMMIT\n");
    out
}

/// The restore script that removes everything of Ambit's from one family,
/// or `None` when there is nothing (deleting what does not exist fails).
pub fn render_remove(existing: &Listing) -> Option<String> {
    if !existing.has_any_of_ours() {
        return None;
    }
    let mut out = String::from("*nat\n");
    for jump in existing.jumps() {
        out.push_str(&format!("-D {} {}\n", jump.chain, jump.rest));
    }
    // Empty all chains before deleting any: -X fails on a chain that is
    // still referenced.
    let ours: Vec<&str> = HOOKS
        .iter()
        .map(|(_, chain, _)| *chain)
        .filter(|chain| existing.chains.contains(*chain))
        .collect();
    for chain in &ours {
        out.push_str(&format!("-F {chain}\n"));
    }
    for chain in &ours {
        out.push_str(&format!("-X {chain}\n"));
    }
    out.push_str("COMMIT\n");
    Some(out)
}

/// What is missing from one family's nat table (empty: complete).
pub(crate) fn check_listing(family: Family, listing: &Listing) -> Vec<String> {
    let suffix = family.suffix();
    let mut missing = Vec::new();
    for (builtin, chain, _) in HOOKS {
        if !listing.chains.contains(chain) {
            missing.push(format!("nat chain {chain}{suffix}"));
        }
        let jumped = listing
            .rules
            .iter()
            .any(|r| r.chain == builtin && r.target() == Some(chain));
        if !jumped {
            missing.push(format!("jump from {builtin} to {chain}{suffix}"));
        }
    }
    for req in &REQUIRED {
        let Some(chain) = HOOKS
            .iter()
            .find(|(_, _, hook)| *hook == req.chain)
            .map(|(_, chain, _)| *chain)
        else {
            continue;
        };
        let rule = listing
            .rules
            .iter()
            .find(|r| r.chain == chain && r.comment() == Some(req.tag));
        let ok = match (rule, req.redirect_to) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(rule), Some(port)) => {
                rule.target() == Some("REDIRECT")
                    && rule.option("--to-ports") == Some(port.to_string().as_str())
            }
        };
        if !ok {
            missing.push(format!("{}{suffix}", describe(req, chain)));
        }
    }
    missing
}

/// One `-A CHAIN …` line of `iptables-save`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedRule {
    pub chain: String,
    /// Everything after `-A CHAIN `, verbatim (quoting kept), so that a
    /// `-D CHAIN <rest>` deletes exactly this rule.
    pub rest: String,
    /// `rest` split into words, quotes removed.
    pub words: Vec<String>,
}

impl SavedRule {
    /// The word after `flag`.
    fn option(&self, flag: &str) -> Option<&str> {
        let at = self.words.iter().position(|w| w == flag)?;
        self.words.get(at + 1).map(String::as_str)
    }

    fn target(&self) -> Option<&str> {
        self.option("-j")
    }

    fn comment(&self) -> Option<&str> {
        self.option("--comment")
    }
}

/// The nat table as `iptables-save -t nat` prints it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Declared chains (built-in and user-defined).
    pub chains: BTreeSet<String>,
    pub rules: Vec<SavedRule>,
}

impl Listing {
    /// Parses the `*nat` section; other tables and comments are skipped.
    pub fn parse(save: &str) -> Self {
        let mut listing = Self::default();
        let mut in_nat = false;
        for line in save.lines().map(str::trim) {
            if let Some(table) = line.strip_prefix('*') {
                in_nat = table == "nat";
            } else if line == "COMMIT" {
                in_nat = false;
            } else if !in_nat {
                continue;
            } else if let Some(decl) = line.strip_prefix(':') {
                if let Some(name) = decl.split_whitespace().next() {
                    listing.chains.insert(name.to_owned());
                }
            } else if let Some(rule) = line.strip_prefix("-A ") {
                let (chain, rest) = rule.split_once(' ').unwrap_or((rule, ""));
                listing.rules.push(SavedRule {
                    chain: chain.to_owned(),
                    rest: rest.to_owned(),
                    words: split_words(rest),
                });
            }
        }
        listing
    }

    /// Rules outside Ambit's chains that jump into them.
    fn jumps(&self) -> impl Iterator<Item = &SavedRule> {
        self.rules
            .iter()
            .filter(|r| !is_ours(&r.chain) && r.target().is_some_and(is_ours))
    }

    fn has_any_of_ours(&self) -> bool {
        self.chains.iter().any(|c| is_ours(c)) || self.jumps().next().is_some()
    }
}

fn is_ours(chain: &str) -> bool {
    HOOKS.iter().any(|(_, ours, _)| *ours == chain)
}

/// Shell-like words: whitespace-separated, `"…"` grouped, `\"` and `\\`
/// escaped (how iptables-save quotes comments).
fn split_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
            }
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}
