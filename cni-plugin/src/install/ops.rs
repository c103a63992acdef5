//! The installer's file operations: find the primary config, put the
//! `ambit-cni` entry in it or take it out, copy the plugin binary. Every
//! write is atomic (a hidden temp file in the same directory, fsync, rename,
//! fsync of the directory), so a container runtime reading the directory at
//! any moment sees either the old file or the new one, never a torn one.
//! Nothing is written when nothing changes (idempotent, mtime kept).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::conflist::{Config, Kind};
use crate::cni::SUPPORTED_VERSIONS;

/// Name of the plugin binary in the CNI bin dir (the `type` in the entry).
pub const BINARY_NAME: &str = "ambit-cni";

/// Extensions the runtimes (libcni, containerd, CRI-O) read.
const EXTENSIONS: [&str; 3] = ["conf", "conflist", "json"];

/// Why installing or uninstalling failed. Each names the file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(
        "CNI config directory {dir} does not exist; pass the directory where the node's primary \
         CNI writes its config with --cni-conf-dir (in the DaemonSet: a hostPath mount of \
         /etc/cni/net.d)"
    )]
    NoConfDir { dir: PathBuf },
    #[error(
        "CNI binary directory {dir} does not exist; pass the directory the container runtime \
         runs plugins from with --cni-bin-dir (in the DaemonSet: a hostPath mount of /opt/cni/bin)"
    )]
    NoBinDir { dir: PathBuf },
    #[error(
        "cannot list {dir}: {source}; the installer must run as root with the directory mounted"
    )]
    ReadDir { dir: PathBuf, source: io::Error },
    #[error(
        "no CNI network config (*.conflist, *.conf, *.json) in {dir}; ambit-cni chains after \
         the node's primary CNI (bridge, Calico, flannel, …), which has not written its config \
         yet — install it first (with --watch, ambit-cni waits for it)"
    )]
    NoConfig { dir: PathBuf },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "{path} is not a usable CNI config: {reason}; ambit-cni left it untouched — fix or \
         remove the file (the container runtime cannot use it either)"
    )]
    Malformed { path: PathBuf, reason: String },
    #[error(
        "{path} has cniVersion {version:?}, which ambit-cni does not speak (it speaks \
         {SUPPORTED_VERSIONS:?}); ambit-cni left it untouched — configure the primary CNI with \
         cniVersion 0.3.0 or later"
    )]
    UnsupportedVersion { path: PathBuf, version: String },
    #[error(
        "cannot turn {conf} into a plugin list: {conflist} exists and is not one ambit-cni \
         wrote; remove or rename one of the two files"
    )]
    ConversionConflict { conf: PathBuf, conflist: PathBuf },
    #[error(
        "cannot write {path}: {source}; the installer must run as root with the host's CNI \
         directories mounted read-write"
    )]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot find this program's own executable, to install it as the plugin: {0}")]
    CurrentExe(io::Error),
}

/// What [`Installer::install_config`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigChange {
    /// The primary config already had exactly our entry; nothing written.
    Unchanged { path: PathBuf },
    /// The entry was added or updated in place.
    Written { path: PathBuf, plugins: Vec<String> },
    /// A single-plugin `.conf` was turned into `.conflist` with our entry.
    Converted {
        from: PathBuf,
        to: PathBuf,
        plugins: Vec<String>,
    },
    /// The file changed between our read and our write (the primary CNI
    /// rewrote it); nothing written, try again.
    Raced { path: PathBuf },
}

/// What [`Installer::uninstall`] did.
#[derive(Debug, Default)]
pub struct Uninstalled {
    /// Configs the entry was removed from.
    pub cleaned: Vec<PathBuf>,
    /// Configs that could not be read or parsed (left untouched).
    pub skipped: Vec<InstallError>,
    pub binary_removed: bool,
}

/// Where to install and what.
#[derive(Debug, Clone)]
pub struct Installer {
    pub bin_dir: PathBuf,
    pub conf_dir: PathBuf,
    /// Our plugin entry, `{"type": "ambit-cni", …}`.
    pub entry: Map<String, Value>,
}

impl Installer {
    pub fn binary_path(&self) -> PathBuf {
        self.bin_dir.join(BINARY_NAME)
    }

    /// Copies `source` (this executable) to `<bin-dir>/ambit-cni`, mode
    /// 0755, unless an identical file is there. Returns whether it wrote.
    /// Atomic rename also means a plugin run in progress keeps its old
    /// inode instead of failing with "text file busy".
    pub fn install_binary(&self, source: &Path) -> Result<bool, InstallError> {
        if !self.bin_dir.is_dir() {
            return Err(InstallError::NoBinDir {
                dir: self.bin_dir.clone(),
            });
        }
        let target = self.binary_path();
        if same_file(source, &target) {
            return Ok(false);
        }
        let new = read(source)?;
        let current_mode = fs::metadata(&target).map(|m| m.permissions().mode() & 0o777);
        if current_mode.ok() == Some(0o755) && fs::read(&target).ok().as_deref() == Some(&new) {
            return Ok(false);
        }
        write_atomic(&target, &new, 0o755)?;
        Ok(true)
    }

    /// A cheap check for the watch loop: the binary is there with the
    /// size of `source` (a full compare reads megabytes every second).
    pub fn binary_looks_installed(&self, source: &Path) -> bool {
        match (fs::metadata(source), fs::metadata(self.binary_path())) {
            (Ok(src), Ok(dst)) => src.len() == dst.len(),
            _ => false,
        }
    }

    /// Puts our entry in the primary config (see [`primary_config`]).
    pub fn install_config(&self) -> Result<ConfigChange, InstallError> {
        let path = primary_config(&self.conf_dir)?;
        let bytes = read(&path)?;
        let config = parse(&path, &bytes)?;
        if let Some(version) = config.cni_version() {
            if !SUPPORTED_VERSIONS.contains(&version) {
                return Err(InstallError::UnsupportedVersion {
                    path,
                    version: version.to_owned(),
                });
            }
        }
        let Some(new) = config.with_entry(&self.entry) else {
            return Ok(ConfigChange::Unchanged { path });
        };
        let plugins = new.plugin_types().into_iter().map(str::to_owned).collect();
        let target = match config.kind {
            Kind::List => path.clone(),
            Kind::Single => {
                let conflist = path.with_extension("conflist");
                if conflist.exists() && !is_our_conflist(&conflist) {
                    return Err(InstallError::ConversionConflict {
                        conf: path,
                        conflist,
                    });
                }
                conflist
            }
        };
        // The primary CNI may have rewritten the file since we read it;
        // writing now would undo its change. Let the next round see it.
        if fs::read(&path).ok().as_deref() != Some(&bytes) {
            return Ok(ConfigChange::Raced { path });
        }
        write_atomic(&resolve(&target), &new.render(), mode_of(&path))?;
        if config.kind == Kind::List {
            return Ok(ConfigChange::Written { path, plugins });
        }
        // The list is in place before the .conf goes, so the directory
        // never lacks a config; the .conf sorts first, so it must go.
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(InstallError::Write { path, source }),
        }
        Ok(ConfigChange::Converted {
            from: path,
            to: target,
            plugins,
        })
    }

    /// Removes our entry from every config in the directory (the primary
    /// may have changed since install), then the binary. Files that cannot
    /// be parsed are reported and left alone; a missing directory means
    /// there is nothing to remove.
    pub fn uninstall(&self) -> Result<Uninstalled, InstallError> {
        let mut done = Uninstalled::default();
        let files = match config_files(&self.conf_dir) {
            Err(InstallError::NoConfDir { .. }) => Vec::new(),
            other => other?,
        };
        for path in files {
            match remove_entry(&path) {
                Ok(true) => done.cleaned.push(path),
                Ok(false) => {}
                Err(error @ (InstallError::Malformed { .. } | InstallError::Read { .. })) => {
                    done.skipped.push(error)
                }
                Err(other) => return Err(other),
            }
        }
        let binary = self.binary_path();
        match fs::remove_file(&binary) {
            Ok(()) => done.binary_removed = true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(InstallError::Write {
                    path: binary,
                    source,
                })
            }
        }
        Ok(done)
    }
}

/// Takes our entry out of one file; `Ok(true)` if it was there. Retries a
/// few times if the file's owner rewrites it meanwhile.
fn remove_entry(path: &Path) -> Result<bool, InstallError> {
    for _ in 0..3 {
        let bytes = read(path)?;
        let Some(new) = parse(path, &bytes)?.without_entry() else {
            return Ok(false);
        };
        if fs::read(path).ok().as_deref() == Some(&bytes) {
            write_atomic(&resolve(path), &new.render(), mode_of(path))?;
            return Ok(true);
        }
    }
    Err(InstallError::Write {
        path: path.to_owned(),
        source: io::Error::other("the file keeps changing while ambit-cni edits it"),
    })
}

/// The config files of `dir` in the order runtimes consider them: names
/// ending in .conf, .conflist or .json, sorted bytewise (libcni's
/// `ConfFiles` + sort, as containerd and CRI-O use it). Directories and
/// our own hidden temp files are skipped.
pub fn config_files(dir: &Path) -> Result<Vec<PathBuf>, InstallError> {
    let entries = fs::read_dir(dir).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            InstallError::NoConfDir {
                dir: dir.to_owned(),
            }
        } else {
            InstallError::ReadDir {
                dir: dir.to_owned(),
                source,
            }
        }
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| InstallError::ReadDir {
            dir: dir.to_owned(),
            source,
        })?;
        let path = entry.path();
        let matches = path
            .extension()
            .and_then(|ext| ext.to_str())
            .is_some_and(|ext| EXTENSIONS.contains(&ext));
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if matches && !is_dir {
            files.push(path);
        }
    }
    files.sort_by(|a, b| {
        let name = |p: &PathBuf| p.file_name().map(|n| n.as_bytes().to_vec());
        name(a).cmp(&name(b))
    });
    Ok(files)
}

/// The config the runtime uses: the first of [`config_files`]. Like
/// containerd, a broken first file is not skipped in favour of the next
/// one: the runtime fails on it too, and inserting elsewhere would not
/// capture anything.
pub fn primary_config(dir: &Path) -> Result<PathBuf, InstallError> {
    config_files(dir)?
        .into_iter()
        .next()
        .ok_or_else(|| InstallError::NoConfig {
            dir: dir.to_owned(),
        })
}

fn read(path: &Path) -> Result<Vec<u8>, InstallError> {
    fs::read(path).map_err(|source| InstallError::Read {
        path: path.to_owned(),
        source,
    })
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Config, InstallError> {
    let list_extension = path.extension().is_some_and(|ext| ext == "conflist");
    Config::parse(bytes, list_extension).map_err(|reason| InstallError::Malformed {
        path: path.to_owned(),
        reason,
    })
}

/// A `.conflist` left by an earlier conversion carries our entry.
fn is_our_conflist(path: &Path) -> bool {
    fs::read(path)
        .ok()
        .and_then(|bytes| Config::parse(&bytes, true).ok())
        .is_some_and(|config| config.has_entry())
}

fn same_file(a: &Path, b: &Path) -> bool {
    matches!((fs::canonicalize(a), fs::canonicalize(b)), (Ok(a), Ok(b)) if a == b)
}

/// A symlinked config is edited where it points, so the link (and whoever
/// manages the target) stays intact.
fn resolve(path: &Path) -> PathBuf {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
        }
        _ => path.to_owned(),
    }
}

/// Permission bits to keep (a config may be 0600 on purpose).
fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).map_or(0o644, |m| m.permissions().mode() & 0o777)
}

/// Writes `bytes` to `path` atomically with permission bits `mode`. The
/// temp file is hidden and ends in `.tmp`, so runtimes never read it.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), InstallError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.ambit-{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(bytes)?;
        // The umask may have cut bits from `mode`.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        // Make the rename itself durable (a crash must not bring back the
        // old file after kubelet already saw the new one).
        File::open(dir)?.sync_all()
    })();
    result.map_err(|source| {
        let _ = fs::remove_file(&tmp);
        InstallError::Write {
            path: path.to_owned(),
            source,
        }
    })
}
