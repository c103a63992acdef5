//! Running the rule tools (`nft`, `iptables-restore`, …) inside a namespace.
//!
//! The tool runs as a child process started from a thread inside the pod's
//! namespace ([`NetNs::run_in`]), so it works with a namespace fd received
//! from the CNI plugin and never depends on `ip netns` names or `nsenter`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::RulesError;
use crate::netns::NetNs;

/// One rule tool and what to tell the operator when it cannot do its job.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tool<'a> {
    pub program: &'a Path,
    /// Appended to a spawn error ("install the … package").
    pub spawn_fix: &'static str,
    /// Appended to a failure ("check that the kernel has …").
    pub failure_fix: &'static str,
}

impl Tool<'_> {
    /// Runs the tool with `args` inside `netns`, feeding it `stdin`; returns
    /// stdout on success.
    pub fn run(
        &self,
        netns: &NetNs,
        action: &'static str,
        args: &[&str],
        stdin: &str,
    ) -> Result<String, RulesError> {
        let program = self.program.display().to_string();
        let output = netns.run_in(|| {
            let mut child = Command::new(self.program)
                .args(args)
                // Callers match English messages ("No such file",
                // "does not exist").
                .env("LC_ALL", "C")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()?;
            // The tools read the whole script before they write anything, so
            // writing first and then collecting output cannot deadlock.
            let written = match child.stdin.take() {
                Some(mut pipe) => pipe.write_all(stdin.as_bytes()),
                None => Ok(()),
            };
            let output = child.wait_with_output()?;
            // A write error matters only if the tool did not fail by itself
            // (then its stderr is the better explanation).
            if output.status.success() {
                written?;
            }
            Ok(output)
        })?;
        let output = output.map_err(|source| RulesError::Spawn {
            program: program.clone(),
            source,
            fix: self.spawn_fix,
        })?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(RulesError::Failed {
                program,
                action,
                netns: netns.id(),
                status: output.status.to_string(),
                stderr: match String::from_utf8_lossy(&output.stderr).trim() {
                    "" => "(no error output)".to_owned(),
                    text => text.to_owned(),
                },
                fix: self.failure_fix,
            })
        }
    }
}

/// `name` from `PATH`, else the usual sbin locations (CNI plugins often run
/// with a minimal `PATH`), else the bare name (the spawn error then says
/// what is missing).
pub(crate) fn find_program(name: &str) -> PathBuf {
    let from_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join(name));
    let fallbacks = ["/usr/sbin", "/sbin", "/usr/bin"].map(|dir| Path::new(dir).join(name));
    from_path
        .chain(fallbacks)
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}
