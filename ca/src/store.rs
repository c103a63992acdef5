//! The CA's directory, laid out like a Kubernetes TLS Secret so cert-manager output can be used
//! as is: `tls.crt` (signing certificate, then its parents), `tls.key`, optional `ca.crt` (roots).
//! Keys are written 0600 in a 0700 directory and never read by anything but this process.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use certs::{CaError, CertificateAuthority};

pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";
pub const ROOTS_FILE: &str = "ca.crt";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path} already exists; `init` never overwrites a CA (remove the directory to start over, which invalidates every issued certificate)")]
    AlreadyInitialised { path: PathBuf },
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the CA in {dir} is unusable: {source}")]
    Invalid { dir: PathBuf, source: CaError },
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_owned();
    move |source| StoreError::Io {
        action,
        path,
        source,
    }
}

/// Creates a new root in `dir` (created 0700 if missing). Refuses to touch an existing CA.
pub fn init(
    dir: &Path,
    trust_domain: &str,
    lifetime: Duration,
) -> Result<CertificateAuthority, StoreError> {
    for name in [CERT_FILE, KEY_FILE, ROOTS_FILE] {
        let path = dir.join(name);
        if path.exists() {
            return Err(StoreError::AlreadyInitialised { path });
        }
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_error("create directory", dir))?;
    let root = CertificateAuthority::generate_root(trust_domain, lifetime).map_err(|source| {
        StoreError::Invalid {
            dir: dir.to_owned(),
            source,
        }
    })?;
    // The key first: if anything later fails, a half-written CA is refused by `load`, never
    // silently replaced.
    write_new(&dir.join(KEY_FILE), &root.key_pem)?;
    write_new(&dir.join(CERT_FILE), &root.cert_pem)?;
    write_new(&dir.join(ROOTS_FILE), &root.cert_pem)?;
    load(dir, trust_domain)
}

/// Loads the CA kept in `dir`.
pub fn load(dir: &Path, trust_domain: &str) -> Result<CertificateAuthority, StoreError> {
    let read = |name: &str| {
        let path = dir.join(name);
        fs::read_to_string(&path).map_err(|source| StoreError::Io {
            action: "read",
            path: path.clone(),
            source,
        })
    };
    let cert = read(CERT_FILE)?;
    let key = read(KEY_FILE)?;
    let roots_path = dir.join(ROOTS_FILE);
    let roots = if roots_path.exists() {
        Some(read(ROOTS_FILE)?)
    } else {
        None
    };
    CertificateAuthority::from_pem(trust_domain, &cert, &key, roots.as_deref()).map_err(|source| {
        StoreError::Invalid {
            dir: dir.to_owned(),
            source,
        }
    })
}

/// Writes a file that must not exist yet, readable by the owner only.
pub fn write_new(path: &Path, contents: &str) -> Result<(), StoreError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => StoreError::AlreadyInitialised {
                path: path.to_owned(),
            },
            _ => StoreError::Io {
                action: "create",
                path: path.to_owned(),
                source,
            },
        })?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_error("write", path))
}
