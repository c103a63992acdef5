//! Logs go to `logFile` (appended) or stderr, which the container runtime
//! records. Never stdout: that carries the CNI result.

use std::fs::OpenOptions;
use std::sync::Mutex;

use crate::cni::NetConf;

/// Installs the subscriber for this invocation. Logging problems never fail
/// the CNI call: an unwritable `logFile` falls back to stderr, with a note.
pub fn init(config: &NetConf) {
    let builder = tracing_subscriber::fmt()
        .with_max_level(config.log_level)
        .with_ansi(false)
        .with_target(false);
    let Some(path) = &config.log_file else {
        let _ = builder.with_writer(std::io::stderr).try_init();
        return;
    };
    match OpenOptions::new().create(true).append(true).open(path) {
        Ok(file) => {
            let _ = builder.with_writer(Mutex::new(file)).try_init();
        }
        Err(error) => {
            let _ = builder.with_writer(std::io::stderr).try_init();
            tracing::warn!(path = %path.display(), %error, "cannot open logFile; logging to stderr");
        }
    }
}
