//! One error type for the harness: every variant names what was attempted, so a failing test
//! says which command or file broke and why, not just "No such file or directory".

use std::path::PathBuf;
use std::time::Duration;

/// Message shown whenever something needs root; CI runs as root, so this must fail loudly.
pub const NEEDS_ROOT: &str =
    "this test needs root (network namespaces): run as root, e.g. sudo -E cargo test";

/// `Debug` prints the same text as `Display`: a test returning `Result` or calling `unwrap`
/// then shows "this test needs root …" rather than `NotRoot`.
#[derive(thiserror::Error)]
pub enum HarnessError {
    #[error("{NEEDS_ROOT}")]
    NotRoot,

    #[error("could not start `{command}`: {source} (is the package installed? see tests/REQUIREMENTS.txt)")]
    Spawn {
        command: String,
        source: std::io::Error,
    },

    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },

    #[error("`{command}` did not finish within {timeout:?}")]
    CommandTimeout { command: String, timeout: Duration },

    #[error("{action} {path}: {source}")]
    File {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("CNI plugin `{plugin}` {command} for container {container_id} failed: {message}")]
    Cni {
        plugin: String,
        command: &'static str,
        container_id: String,
        message: String,
    },

    #[error("CNI plugin `{plugin}` not found in CNI path {searched:?}; install containernetworking-plugins or set AMBIT_CNI_PATH")]
    CniPluginNotFound {
        plugin: String,
        searched: Vec<PathBuf>,
    },

    #[error("no free 10.X.0.0/16 address plan: all lock files under {0} are taken; run ambit-netns-sweep")]
    NoFreeSubnet(PathBuf),

    #[error("timed out after {timeout:?} waiting for {what}; log so far:\n{log_tail}")]
    WaitTimeout {
        what: String,
        timeout: Duration,
        log_tail: String,
    },

    #[error("process `{name}` exited ({status}) while waiting for {what}; log:\n{log_tail}")]
    ProcessExited {
        name: String,
        status: String,
        what: String,
        log_tail: String,
    },

    #[error("encoding {what}: {message}")]
    Encode { what: String, message: String },

    #[error("{0}")]
    Invalid(String),
}

impl std::fmt::Debug for HarnessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

pub type Result<T> = std::result::Result<T, HarnessError>;

impl HarnessError {
    pub(crate) fn file(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        HarnessError::File {
            action,
            path: path.into(),
            source,
        }
    }
}
