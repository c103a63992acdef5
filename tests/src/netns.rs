//! Named network namespaces (`ip netns`), and running things inside them.
//!
//! We enter namespaces with `ip netns exec` rather than `setns` in a pre-exec hook: the crate
//! forbids `unsafe`, and `ip netns exec` also gives the child a private /sys for the namespace,
//! which is what tools like `sysctl` and CNI plugins expect.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cmd::{self, Output};
use crate::error::{HarnessError, Result};
use crate::process::{Process, ProcessSpec};

/// Where `ip netns` keeps its bind mounts; CNI_NETNS paths point here.
pub const NETNS_DIR: &str = "/run/netns";

/// A handle to one named namespace the harness created. Cloning is cheap; the cluster that
/// created it deletes it, so a handle never outlives its namespace by design (only in misuse).
#[derive(Debug, Clone)]
pub struct Netns {
    name: String,
    /// Logs of processes spawned here go to this folder (the cluster's temp dir).
    log_dir: Arc<PathBuf>,
}

impl Netns {
    /// `ip netns add NAME`, with loopback up (a fresh namespace has `lo` down, which breaks
    /// anything binding 127.0.0.1).
    pub(crate) fn create(name: &str, log_dir: Arc<PathBuf>) -> Result<Netns> {
        cmd::ip(&["netns", "add", name])?;
        let netns = Netns::named(name, log_dir);
        if let Err(error) = netns.ip(&["link", "set", "lo", "up"]) {
            let _ = delete(name);
            return Err(error);
        }
        Ok(netns)
    }

    /// A handle for a name without creating it (the cluster creates it later).
    pub(crate) fn named(name: &str, log_dir: Arc<PathBuf>) -> Netns {
        Netns {
            name: name.to_string(),
            log_dir,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/NAME`: what CNI_NETNS and `setns`-based code (ztunnel, ambit-cni) open.
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// A command that runs PROGRAM inside this namespace; add args/env/stdio as usual.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// Run PROGRAM ARGS… inside the namespace and return its stdout; non-zero exit is an error.
    pub fn exec<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        cmd::run(self.command(program).args(args))
    }

    /// Like [`Netns::exec`] but with stdin and a timeout, leaving the exit status to the caller.
    pub fn exec_output<I, S>(
        &self,
        program: impl AsRef<OsStr>,
        args: I,
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        cmd::run_unchecked(self.command(program).args(args), stdin, timeout)
    }

    /// Start a long-running process here; it is stopped when the returned handle drops.
    pub fn spawn(&self, spec: ProcessSpec) -> Result<Process> {
        Process::spawn(
            self.command(spec.program()),
            self.log_dir(),
            self.name(),
            spec,
        )
    }

    /// `ip -n NAME ARGS…`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        cmd::ip_in(&self.name, args)
    }

    /// Set sysctls of this namespace (`net.*` keys are per namespace).
    pub fn sysctl(&self, settings: &[(&str, &str)]) -> Result<()> {
        let assignments: Vec<String> = settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut args = vec!["-q".to_string(), "-w".to_string()];
        args.extend(assignments);
        self.exec("sysctl", &args).map(|_| ())
    }

    /// Processes whose network namespace is this one.
    pub fn pids(&self) -> Result<Vec<i32>> {
        pids_in(&self.name)
    }
}

/// `ip netns pids NAME`.
pub(crate) fn pids_in(name: &str) -> Result<Vec<i32>> {
    let out = cmd::ip(&["netns", "pids", name])?;
    Ok(out.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// SIGKILL everything left in a namespace: a process keeps a namespace's sockets alive, and
/// stray servers from a failed test must not answer the next one.
pub(crate) fn kill_all_in(name: &str) {
    if let Ok(pids) = pids_in(name) {
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// `ip netns del NAME`; deleting the namespace also deletes every link inside it, including
/// the namespace-side ends of veth pairs (which takes the peer end with it).
pub(crate) fn delete(name: &str) -> Result<()> {
    cmd::ip(&["netns", "del", name]).map(|_| ())
}

/// Names of all named namespaces on the machine.
pub fn list() -> Result<Vec<String>> {
    let dir = Path::new(NETNS_DIR);
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let entries = std::fs::read_dir(dir).map_err(|e| HarnessError::file("listing", dir, e))?;
    Ok(entries
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect())
}
