//! Choosing the rules backend: nftables when it works on the node, else
//! iptables (DESIGN §3: "nftables preferred, iptables fallback").

use std::fmt;
use std::str::FromStr;

use super::{CheckError, Iptables, Nftables, RuleOptions, RulesBackend, RulesError};
use crate::netns::NetNs;

/// What the operator asked for (`rulesBackend` in the CNI config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// nftables if `nft` works on the node, else iptables.
    #[default]
    Auto,
    Nftables,
    Iptables,
}

impl FromStr for BackendChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "nftables" | "nft" => Ok(Self::Nftables),
            "iptables" => Ok(Self::Iptables),
            other => Err(format!(
                "rules backend {other:?} is not one of \"auto\", \"nftables\", \"iptables\""
            )),
        }
    }
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Nftables => "nftables",
            Self::Iptables => "iptables",
        })
    }
}

/// One of the two backends, chosen at run time.
#[derive(Debug, Clone)]
pub enum Backend {
    Nftables(Nftables),
    Iptables(Iptables),
}

impl Backend {
    /// "nftables" or "iptables", for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Nftables(_) => "nftables",
            Self::Iptables(_) => "iptables",
        }
    }

    /// Replaces the node's probe SNAT rules (in `node`, the host's namespace) with `targets`:
    /// ambient pods' addresses with their probe ports (see `rules::probes`).
    pub fn apply_probe_snat(
        &self,
        node: &crate::netns::NetNs,
        targets: &[std::net::SocketAddr],
    ) -> Result<(), super::RulesError> {
        match self {
            Self::Nftables(nft) => nft.apply_probe_snat(node, targets),
            Self::Iptables(ipt) => ipt.apply_probe_snat(node, targets),
        }
    }

    fn inner(&self) -> &dyn RulesBackend {
        match self {
            Self::Nftables(nft) => nft,
            Self::Iptables(ipt) => ipt,
        }
    }
}

impl RulesBackend for Backend {
    fn apply(&self, netns: &NetNs, opts: &RuleOptions) -> Result<(), RulesError> {
        self.inner().apply(netns, opts)
    }

    fn remove(&self, netns: &NetNs) -> Result<(), RulesError> {
        self.inner().remove(netns)
    }

    fn check(&self, netns: &NetNs) -> Result<(), CheckError> {
        self.inner().check(netns)
    }
}

/// The chosen backend and why, for the log line that reports the choice.
#[derive(Debug, Clone)]
pub struct Detected {
    pub backend: Backend,
    pub reason: String,
}

/// nftables if `nft list tables` succeeds in the caller's (host) network
/// namespace, else iptables if an empty test restore of its nat table
/// succeeds, else an error naming both failures. Uses the tools from `PATH`.
pub fn detect_backend() -> Result<Detected, RulesError> {
    choose_backend(
        BackendChoice::Auto,
        Nftables::default(),
        Iptables::default(),
    )
}

/// `choice` resolved with the given tools. An explicit choice is taken as
/// is, without probing: if that tool does not work, applying the rules says
/// so with the tool's own error.
pub fn choose_backend(
    choice: BackendChoice,
    nft: Nftables,
    iptables: Iptables,
) -> Result<Detected, RulesError> {
    match choice {
        BackendChoice::Nftables => Ok(Detected {
            backend: Backend::Nftables(nft),
            reason: "configured (rulesBackend: nftables)".to_owned(),
        }),
        BackendChoice::Iptables => Ok(Detected {
            backend: Backend::Iptables(iptables),
            reason: "configured (rulesBackend: iptables)".to_owned(),
        }),
        BackendChoice::Auto => {
            let nft_error = match nft.probe() {
                Ok(()) => {
                    return Ok(Detected {
                        reason: format!("`{} list tables` works", nft.program().display()),
                        backend: Backend::Nftables(nft),
                    })
                }
                Err(error) => error,
            };
            match iptables.probe() {
                Ok(()) => Ok(Detected {
                    reason: format!("nftables does not work here ({nft_error}); using iptables"),
                    backend: Backend::Iptables(iptables),
                }),
                Err(ipt_error) => Err(RulesError::NoBackend {
                    nft: nft_error.to_string(),
                    iptables: ipt_error.to_string(),
                }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn choice_parses_and_displays() {
        for (text, choice) in [
            ("auto", BackendChoice::Auto),
            ("nftables", BackendChoice::Nftables),
            ("nft", BackendChoice::Nftables),
            ("iptables", BackendChoice::Iptables),
        ] {
            assert_eq!(text.parse::<BackendChoice>().unwrap(), choice);
        }
        let err = "ipchains".parse::<BackendChoice>().unwrap_err();
        assert!(
            err.contains("\"ipchains\"") && err.contains("nftables"),
            "{err}"
        );
        assert_eq!(BackendChoice::default().to_string(), "auto");
    }

    #[test]
    fn explicit_choice_does_not_probe() {
        let missing_nft = Nftables::new("/nonexistent/nft");
        let missing_ipt = Iptables::variant("/nonexistent/iptables");
        let got = choose_backend(
            BackendChoice::Nftables,
            missing_nft.clone(),
            missing_ipt.clone(),
        )
        .unwrap();
        assert_eq!(got.backend.name(), "nftables");
        let got = choose_backend(BackendChoice::Iptables, missing_nft, missing_ipt).unwrap();
        assert_eq!(got.backend.name(), "iptables");
        assert!(got.reason.contains("configured"), "{}", got.reason);
    }

    #[test]
    fn auto_with_no_working_tool_names_both() {
        let err = choose_backend(
            BackendChoice::Auto,
            Nftables::new("/nonexistent/nft"),
            Iptables::variant("/nonexistent/iptables"),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, RulesError::NoBackend { .. }), "{msg}");
        assert!(msg.contains("/nonexistent/nft"), "{msg}");
        assert!(msg.contains("/nonexistent/iptables-restore"), "{msg}");
        assert!(msg.contains("install nftables"), "{msg}");
    }
}
