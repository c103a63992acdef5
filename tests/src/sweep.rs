//! Best-effort cleanup of what crashed runs left behind (a test process killed with SIGKILL or
//! Ctrl-C never runs its Drop impls): namespaces whose lease owner is gone, the processes still
//! inside them, and their lease files. Live runs, in this process or others, are never touched.
//!
//! Every harness namespace lives under a name `ab` + 5 hex digits + `-role`, and the harness
//! creates no links in the root namespace (veths are created directly inside namespaces), so
//! deleting the namespaces removes every link too.

use std::collections::HashSet;
use std::fs::File;
use std::path::Path;
use std::sync::Once;

use nix::fcntl::{Flock, FlockArg};

use crate::error::{HarnessError, Result};
use crate::lease::{LeaseOwner, LEASE_DIR, NAME_PREFIX};
use crate::netns;

/// What a sweep removed.
#[derive(Debug, Default, Clone)]
pub struct SweepReport {
    pub namespaces: Vec<String>,
    pub leases: Vec<String>,
}

/// Run [`sweep_stale`] once per test process, before the first cluster is built.
pub fn sweep_once() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Err(error) = sweep_stale() {
            eprintln!("ambit-tests: sweeping stale namespaces failed (continuing): {error}");
        }
    });
}

/// Remove namespaces and leases of runs whose process is gone.
pub fn sweep_stale() -> Result<SweepReport> {
    let dir = Path::new(LEASE_DIR);
    std::fs::create_dir_all(dir).map_err(|e| HarnessError::file("creating", dir, e))?;
    // Serialise sweepers so two of them never judge the same lease at once.
    let lock_path = dir.join("sweep.lock");
    let lock_file =
        File::create(&lock_path).map_err(|e| HarnessError::file("creating", &lock_path, e))?;
    let _lock = Flock::lock(lock_file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| HarnessError::file("locking", &lock_path, errno.into()))?;

    // Namespaces first, leases second: a namespace is created after its lease, so any
    // namespace listed here either has its lease visible below or is truly orphaned.
    let namespaces: Vec<String> = netns::list()?
        .into_iter()
        .filter(|name| harness_prefix(name).is_some())
        .collect();

    let mut report = SweepReport::default();
    let mut leased_prefixes = HashSet::new();
    let mut dead = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| HarnessError::file("listing", dir, e))?;
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("net-") && name.ends_with(".lock")) {
            continue;
        }
        let path = entry.path();
        // Unreadable or half-written: the owner may be writing it right now; leave it.
        let Some(owner) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| LeaseOwner::parse(&text))
        else {
            continue;
        };
        leased_prefixes.insert(owner.prefix.clone());
        if !owner.is_alive() {
            dead.push((owner.prefix, path, name));
        }
    }

    let mut failed_prefixes = HashSet::new();
    for name in &namespaces {
        let Some(prefix) = harness_prefix(name) else {
            continue;
        };
        let orphan = !leased_prefixes.contains(prefix);
        let of_dead_run = dead.iter().any(|(p, _, _)| p == prefix);
        if orphan || of_dead_run {
            netns::kill_all_in(name);
            match netns::delete(name) {
                Ok(()) => report.namespaces.push(name.clone()),
                Err(_) => {
                    failed_prefixes.insert(prefix.to_string());
                }
            }
        }
    }
    for (prefix, path, name) in dead {
        if !failed_prefixes.contains(&prefix) && std::fs::remove_file(&path).is_ok() {
            report.leases.push(name);
        }
    }
    Ok(report)
}

/// `Some("ab1f2e3")` for a name like `ab1f2e3-n0`, `None` for names that are not ours.
pub fn harness_prefix(name: &str) -> Option<&str> {
    let prefix = name.get(..NAME_PREFIX.len() + 5)?;
    let hex = prefix.strip_prefix(NAME_PREFIX)?;
    let is_ours = hex
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && name[prefix.len()..].starts_with('-');
    is_ours.then_some(prefix)
}

#[cfg(test)]
mod tests {
    use super::harness_prefix;

    #[test]
    fn recognises_only_harness_names() {
        assert_eq!(harness_prefix("ab1f2e3-n0"), Some("ab1f2e3"));
        assert_eq!(harness_prefix("ab1f2e3-fab"), Some("ab1f2e3"));
        assert_eq!(harness_prefix("ab1f2e3"), None);
        assert_eq!(harness_prefix("abz12345-n0"), None);
        assert_eq!(harness_prefix("ab1F2e3-n0"), None);
        assert_eq!(harness_prefix("cni-1234"), None);
        assert_eq!(harness_prefix("ab"), None);
    }
}
