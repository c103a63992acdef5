//! Handing out a distinct 10.X.0.0/16 address plan and a unique name prefix to every cluster,
//! across threads and across processes.
//!
//! A cluster owns `/run/ambit-tests/net-X.lock` (created with O_EXCL, so exactly one owner),
//! recording its pid, the pid's start time and its name prefix. The lease file is removed when
//! the cluster is torn down; a file whose owner is gone marks a crashed run that
//! the `sweep` module cleans up.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use rand::Rng;

use crate::error::{HarnessError, Result};

/// Where leases live. /run is a tmpfs: a reboot forgets leases along with namespaces.
pub const LEASE_DIR: &str = "/run/ambit-tests";

/// Names of namespaces and links start with this, then 5 hex digits: `ab1f2e3`.
/// (Linux link names have at most 15 characters: 7 for the prefix leaves 8 for the role.)
pub const NAME_PREFIX: &str = "ab";

/// Second octets handed out: 10.X.0.0/16. Small X are avoided because real networks like them.
const FIRST_OCTET: u8 = 20;
const LAST_OCTET: u8 = 250;

/// A held address plan: `10.{octet}.0.0/16` and names starting with `{prefix}`.
#[derive(Debug)]
pub struct Lease {
    pub octet: u8,
    pub prefix: String,
    path: PathBuf,
}

/// What a lease file says about its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseOwner {
    pub pid: i32,
    pub start_time: u64,
    pub prefix: String,
}

impl Lease {
    /// Take a free plan, starting at a random octet so parallel runs rarely race for the same
    /// file. Octets the machine already uses for its own 10.X addresses are skipped.
    pub fn acquire() -> Result<Lease> {
        let dir = Path::new(LEASE_DIR);
        std::fs::create_dir_all(dir).map_err(|e| HarnessError::file("creating", dir, e))?;
        let host_octets = host_ten_octets();
        let pid = std::process::id() as i32;
        let start_time = process_start_time(pid).unwrap_or(0);
        let span = u32::from(LAST_OCTET - FIRST_OCTET) + 1;
        let mut rng = rand::rng();
        let first = rng.random_range(0..span);
        for step in 0..span {
            let octet = FIRST_OCTET + ((first + step) % span) as u8;
            if host_octets.contains(&octet) {
                continue;
            }
            let prefix = unique_prefix(octet, &mut rng);
            let path = dir.join(format!("net-{octet}.lock"));
            let mut file = match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(HarnessError::file("creating", &path, e)),
            };
            let owner = LeaseOwner {
                pid,
                start_time,
                prefix: prefix.clone(),
            };
            file.write_all(owner.render().as_bytes())
                .map_err(|e| HarnessError::file("writing", &path, e))?;
            return Ok(Lease {
                octet,
                prefix,
                path,
            });
        }
        Err(HarnessError::NoFreeSubnet(dir.to_path_buf()))
    }

    /// Give the plan back. Called after everything under the prefix is gone; a lease left
    /// behind (teardown failed) keeps the octet out of use until a sweep succeeds.
    pub fn release(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl LeaseOwner {
    fn render(&self) -> String {
        format!(
            "pid={} start={} prefix={}\n",
            self.pid, self.start_time, self.prefix
        )
    }

    pub fn parse(text: &str) -> Option<LeaseOwner> {
        let mut pid = None;
        let mut start_time = None;
        let mut prefix = None;
        for field in text.split_whitespace() {
            match field.split_once('=') {
                Some(("pid", v)) => pid = v.parse().ok(),
                Some(("start", v)) => start_time = v.parse().ok(),
                Some(("prefix", v)) => prefix = Some(v.to_string()),
                _ => {}
            }
        }
        Some(LeaseOwner {
            pid: pid?,
            start_time: start_time?,
            prefix: prefix?,
        })
    }

    /// Whether the process that took the lease still runs (same pid *and* start time, so a
    /// recycled pid does not keep a dead run's lease alive).
    pub fn is_alive(&self) -> bool {
        process_start_time(self.pid) == Some(self.start_time)
    }
}

/// `ab` + the octet in 2 hex digits + 3 random ones: two live clusters never share a prefix
/// (their octets differ), and the random part tells successive runs on one octet apart.
fn unique_prefix(octet: u8, rng: &mut impl Rng) -> String {
    let existing = crate::netns::list().unwrap_or_default();
    let mut prefix = String::new();
    // Leftovers of a dead run on this octet are swept before its lease frees the octet, so
    // the first pick is nearly always free; the bound only guards against a flooded /run/netns.
    for _ in 0..64 {
        prefix = format!(
            "{NAME_PREFIX}{octet:02x}{:03x}",
            rng.random_range(0..0x1000u32)
        );
        if !existing.iter().any(|name| name.starts_with(&prefix)) {
            break;
        }
    }
    prefix
}

/// Start time (clock ticks since boot) of a process, from /proc/PID/stat field 22.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: count after the last ')'.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// Second octets of 10.X addresses configured in the root namespace (the machine's own).
fn host_ten_octets() -> Vec<u8> {
    let out = crate::cmd::ip(&["-4", "-o", "addr", "show"]).unwrap_or_default();
    out.split_whitespace()
        .filter_map(|word| word.strip_prefix("10."))
        .filter_map(|rest| rest.split('.').next()?.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_owner_round_trips() {
        let owner = LeaseOwner {
            pid: 42,
            start_time: 7,
            prefix: "ab01234".into(),
        };
        assert_eq!(LeaseOwner::parse(&owner.render()), Some(owner));
        assert_eq!(LeaseOwner::parse("garbage"), None);
    }

    #[test]
    fn own_process_is_alive() {
        let pid = std::process::id() as i32;
        let start_time = process_start_time(pid);
        assert!(start_time.is_some());
        let owner = LeaseOwner {
            pid,
            start_time: start_time.unwrap_or_default(),
            prefix: "ab00000".into(),
        };
        assert!(owner.is_alive());
        let stale = LeaseOwner {
            start_time: owner.start_time + 1,
            ..owner
        };
        assert!(!stale.is_alive());
    }
}
