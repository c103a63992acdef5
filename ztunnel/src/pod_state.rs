//! What survives a ztunnel restart about each enrolled pod: the inode of the network namespace
//! the CNI plugin handed over. After a restart ztunnel must find running pods' namespaces by
//! their IP, and an IP alone proves nothing — a pod with NET_ADMIN can put a victim's address on
//! its own interface. A namespace is taken for a pod only if it is the one recorded for its uid.
//!
//! One small file per pod uid under the state directory (next to the enrollment socket, on the
//! node's tmpfs: it lives as long as the node's namespaces do).

use std::path::{Path, PathBuf};

fn file(dir: &Path, uid: &str) -> PathBuf {
    // Kubernetes uids are UUIDs; manifests without one get "<ns>/<name>", and names never
    // contain '_'.
    dir.join(uid.replace('/', "_"))
}

/// Records the pod's namespace inode; a failure is logged, not fatal (the pod is served, only
/// a later restart has less to go on).
pub fn record(dir: &Path, uid: &str, inode: u64) {
    let write = std::fs::create_dir_all(dir).and_then(|()| {
        let path = file(dir, uid);
        let temporary = path.with_extension("tmp");
        std::fs::write(&temporary, inode.to_string())?;
        std::fs::rename(&temporary, &path)
    });
    if let Err(error) = write {
        tracing::warn!(%error, dir = %dir.display(), uid, "cannot record the pod's network namespace; after a restart it can only be found by IP");
    }
}

/// The namespace inode recorded for the pod, if any.
pub fn recorded(dir: &Path, uid: &str) -> Option<u64> {
    std::fs::read_to_string(file(dir, uid))
        .ok()
        .and_then(|text| text.trim().parse().ok())
}

pub fn forget(dir: &Path, uid: &str) {
    match std::fs::remove_file(file(dir, uid)) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => tracing::warn!(%error, uid, "cannot remove the pod's recorded namespace"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn records_survive_and_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("pods");
        assert_eq!(recorded(&state, "shop/web-0"), None);
        record(&state, "shop/web-0", 4026532398);
        assert_eq!(recorded(&state, "shop/web-0"), Some(4026532398));
        record(&state, "shop/web-0", 4026532399);
        assert_eq!(recorded(&state, "shop/web-0"), Some(4026532399));
        forget(&state, "shop/web-0");
        forget(&state, "shop/web-0");
        assert_eq!(recorded(&state, "shop/web-0"), None);
    }
}
