//! Where the binaries a [`super::KubeApiServer`] runs come from: the cache
//! `scripts/kube-build.sh` fills, and Debian's etcd.

use std::path::PathBuf;

use super::support::{find_in_path, is_executable};
use crate::error::{HarnessError, Result};

pub const KUBE_VERSION: &str = "1.20.2";
/// Overrides where `scripts/kube-build.sh` put the binaries (it reads the same variable).
pub const CACHE_ENV: &str = "AMBIT_KUBE_CACHE";
pub const DEFAULT_CACHE: &str = "/var/cache/ambit/kubernetes-1.20.2";

/// The programs a [`super::KubeApiServer`] runs.
#[derive(Debug, Clone)]
pub struct KubeBinaries {
    pub kube_apiserver: PathBuf,
    pub kube_controller_manager: PathBuf,
    pub kubectl: PathBuf,
    pub etcd: PathBuf,
}

/// `$AMBIT_KUBE_CACHE`, or the default cache `scripts/kube-build.sh` builds into.
pub fn kube_cache_dir() -> PathBuf {
    std::env::var_os(CACHE_ENV)
        .filter(|dir| !dir.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_CACHE), PathBuf::from)
}

/// Finds the cached Kubernetes binaries and etcd, or fails saying how to get them. Tests that
/// need an API server fail (they do not skip) when the build is missing: CI builds it first.
pub fn require_kube() -> Result<KubeBinaries> {
    let bin = kube_cache_dir().join("bin");
    let [kube_apiserver, kube_controller_manager, kubectl] =
        ["kube-apiserver", "kube-controller-manager", "kubectl"].map(|name| bin.join(name));
    let missing: Vec<String> = [&kube_apiserver, &kube_controller_manager, &kubectl]
        .into_iter()
        .filter(|path| !is_executable(path))
        .map(|path| path.display().to_string())
        .collect();
    if !missing.is_empty() {
        return Err(HarnessError::Invalid(format!(
            "Kubernetes {KUBE_VERSION} is not built: missing {}. Build it once with \
             `sudo scripts/kube-build.sh` (10-20 minutes; later runs reuse the cache; \
             {CACHE_ENV} overrides the cache directory {})",
            missing.join(", "),
            kube_cache_dir().display()
        )));
    }
    let etcd = find_in_path("etcd").ok_or_else(|| {
        HarnessError::Invalid(
            "`etcd` is not in PATH: install the Debian package etcd-server \
             (scripts/kube-build.sh installs it)"
                .to_string(),
        )
    })?;
    Ok(KubeBinaries {
        kube_apiserver,
        kube_controller_manager,
        kubectl,
        etcd,
    })
}
