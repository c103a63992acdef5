//! Redirect rules inside a pod's network namespace (DESIGN §3 "In-pod capture").
//!
//! What the rules do, for an enrolled pod:
//! - packets of ztunnel's own sockets (`SO_MARK` 0x539) are never touched;
//! - outbound TCP from the pod, except to loopback / the pod itself, is
//!   REDIRECTed to 15001 (ztunnel reads the original destination with
//!   `SO_ORIGINAL_DST`);
//! - inbound TCP to the pod, except to 15008 (HBONE) and except from loopback
//!   and from the node's probe source addresses (kubelet health checks), is
//!   REDIRECTed to 15006;
//! - optionally, DNS (UDP and TCP port 53) from the pod goes to 15053.
//!
//! Why no connmark / policy routing (yet): DESIGN §3 mentions steering replies
//! to *spoofed-source* connections back to ztunnel. With REDIRECT, ztunnel
//! terminates every captured connection on a local socket in the pod netns and
//! dials the upstream from that same netns with the pod's own IP as source
//! (inbound: towards the app over the pod IP or loopback). No packet carries a
//! foreign source address, so replies route back by ordinary local delivery
//! and conntrack un-NATs them. The connmark rules and the local route table
//! become necessary only when ztunnel starts binding the *client's* address
//! (IP_TRANSPARENT) towards the app; add them to the backend together with
//! that feature, and extend [`check`] to verify them.
//!
//! Backends: [`nft::Nftables`] (preferred) and [`iptables::Iptables`] (the
//! fallback for hosts without nftables); [`detect_backend`] picks one. Each
//! backend owns its state completely (nft: one table `inet ambit`; iptables:
//! the chains `AMBIT_OUTPUT` and `AMBIT_PREROUTING` of the nat table and the
//! jumps to them) and replaces it atomically, so applying twice is
//! idempotent and other rules in the pod (the main CNI's, the app's) are
//! untouched. Both tag every rule with the same `ambit:…` comments, so
//! [`MissingRules`] names the same things whichever backend is in use.

use std::fmt;
use std::net::IpAddr;

use crate::netns::{NetNs, NetNsError, NetNsId};

mod backend;
mod exec;
pub mod iptables;
pub mod nft;
pub mod probes;

pub use backend::{choose_backend, detect_backend, Backend, BackendChoice, Detected};
pub use iptables::Iptables;
pub use nft::Nftables;

/// Capture ports (DESIGN §3 "Ports").
pub mod ports {
    pub const OUTBOUND: u16 = 15001;
    pub const INBOUND: u16 = 15006;
    pub const HBONE: u16 = 15008;
    pub const DNS: u16 = 15053;
}

/// What to install besides the fixed rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleOptions {
    /// Source addresses whose connections *into* the pod are not captured:
    /// the node's address towards the pod, from which kubelet sends health
    /// probes (typically the pod's default gateway).
    pub probe_sources: Vec<IpAddr>,
    /// Redirect DNS (port 53, UDP and TCP) to 15053. Only when ztunnel
    /// serves DNS there; otherwise the pod loses name resolution.
    pub capture_dns: bool,
}

/// Why rules could not be installed, removed or read.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error(transparent)]
    NetNs(#[from] NetNsError),
    #[error("cannot run {program}: {source}; {fix}")]
    Spawn {
        program: String,
        source: std::io::Error,
        /// What to do about it, for the operator.
        fix: &'static str,
    },
    #[error(
        "{program} failed to {action} in network namespace {netns} ({status}): {stderr}; {fix}"
    )]
    Failed {
        program: String,
        action: &'static str,
        netns: NetNsId,
        status: String,
        stderr: String,
        fix: &'static str,
    },
    #[error("cannot understand the rules listed in network namespace {netns}: {reason}")]
    BadListing { netns: NetNsId, reason: String },
    #[error(
        "no way to install capture rules on this node: nftables does not work ({nft}) and \
         iptables does not work either ({iptables}); install nftables (preferred) or iptables \
         on the node"
    )]
    NoBackend { nft: String, iptables: String },
}

/// The capture rules of a namespace are absent or incomplete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingRules {
    pub netns: NetNsId,
    /// Nothing of Ambit's is installed (the pod was never captured, or
    /// someone flushed the ruleset).
    pub table_missing: bool,
    /// Human-readable names of what is missing.
    pub missing: Vec<String>,
}

impl fmt::Display for MissingRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "network namespace {} lacks Ambit capture rules: {}; something removed them (a \
             `nft flush ruleset` or `iptables -t nat -F` in the pod?) — recreate the pod so the CNI ADD installs them again",
            self.netns,
            self.missing.join(", ")
        )
    }
}

impl std::error::Error for MissingRules {}

/// Result of [`check`].
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Missing(#[from] MissingRules),
    #[error(transparent)]
    Rules(#[from] RulesError),
}

/// A rule every captured pod must have, found by its comment tag (the same
/// tags in both backends). `chain` is the hook: "output" or "prerouting".
pub(crate) struct Required {
    pub chain: &'static str,
    pub tag: &'static str,
    pub redirect_to: Option<u16>,
}

pub(crate) const REQUIRED: [Required; 6] = [
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

/// How [`MissingRules`] names a required rule.
pub(crate) fn describe(req: &Required, chain: &str) -> String {
    match req.redirect_to {
        Some(port) => format!("rule {} (redirect to :{port}) in {chain}", req.tag),
        None => format!("rule {} in {chain}", req.tag),
    }
}

/// A way of installing the capture rules (nftables or iptables).
pub trait RulesBackend {
    /// Installs (or replaces) the rules in `netns`, atomically.
    fn apply(&self, netns: &NetNs, opts: &RuleOptions) -> Result<(), RulesError>;
    /// Removes the rules; succeeds when there are none.
    fn remove(&self, netns: &NetNs) -> Result<(), RulesError>;
    /// Verifies the rules that every captured pod needs are in place.
    fn check(&self, netns: &NetNs) -> Result<(), CheckError>;
}

/// [`RulesBackend::apply`] with nftables (nft from `PATH`). Callers that
/// must work on hosts without nftables use [`detect_backend`] instead.
pub fn apply(netns: &NetNs, opts: &RuleOptions) -> Result<(), RulesError> {
    Nftables::default().apply(netns, opts)
}

/// [`RulesBackend::remove`] with the default backend.
pub fn remove(netns: &NetNs) -> Result<(), RulesError> {
    Nftables::default().remove(netns)
}

/// [`RulesBackend::check`] with the default backend.
pub fn check(netns: &NetNs) -> Result<(), CheckError> {
    Nftables::default().check(netns)
}
