//! Logging of one plugin invocation: to `logFile` (appended) or stderr, which the container
//! runtime records. Never stdout: that carries the CNI result (runtime's log set-up has no
//! stdout output at all).

use std::fs::OpenOptions;

use runtime::logging::{LogOutput, LogSetup};

use crate::cni::NetConf;

/// Installs the subscriber for this invocation. Logging problems never fail the CNI call: an
/// unwritable `logFile` falls back to stderr, with a note.
pub fn init(config: &NetConf) {
    let setup = LogSetup::at_level(config.log_level).without_targets();
    let Some(path) = &config.log_file else {
        setup.init();
        return;
    };
    match OpenOptions::new().create(true).append(true).open(path) {
        Ok(file) => setup.output(LogOutput::File(file)).init(),
        Err(error) => {
            setup.init();
            tracing::warn!(path = %path.display(), %error, "cannot open logFile; logging to stderr");
        }
    }
}
