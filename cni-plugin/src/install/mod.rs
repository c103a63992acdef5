//! `ambit-cni install` and `ambit-cni uninstall`: the node-side installer the
//! DaemonSet runs (issue 4, item 1).
//!
//! ```text
//! ambit-cni install --cni-bin-dir /host/opt/cni/bin --cni-conf-dir /host/etc/cni/net.d \
//!     [--enroll-socket PATH] [--rules-backend auto|nftables|iptables] \
//!     [--log-level LEVEL] [--log-file PATH] [--watch [--uninstall-on-exit]]
//! ambit-cni uninstall --cni-bin-dir … --cni-conf-dir …
//! ```
//!
//! `install` copies this executable to `<bin-dir>/ambit-cni` and appends
//! `{"type": "ambit-cni", …}` to the plugin list of the node's *primary*
//! config: the first `*.conf` / `*.conflist` / `*.json` of the config
//! directory in byte order, which is the one containerd and CRI-O use
//! (whatever the primary CNI is). An entry already there is replaced in
//! place; when it is already exactly right nothing is written, so a second
//! install leaves the file byte-identical with its mtime.
//!
//! A single-plugin `.conf` (or `.json`) cannot be chained, so, like Istio's
//! install-cni, the installer writes the equivalent list with our entry as
//! `<same name>.conflist` and deletes the `.conf` (which would otherwise
//! still sort first and win). Uninstall then leaves the `.conflist` holding
//! just the original plugin: runtimes treat it exactly like the old `.conf`,
//! and if the primary CNI writes its `.conf` again, that simply takes over.
//!
//! `--watch` keeps running and re-checks every `--poll-interval-ms` (1 s):
//! when the primary CNI rewrites its file (dropping our entry), a new
//! primary file appears, or the binary disappears, it installs again.
//! Polling is deliberate: it also sees changes on hostPath mounts and
//! overlay filesystems where inotify misses events, and a read of one small
//! file a second costs nothing. SIGTERM or SIGINT end it cleanly (exit 0);
//! with `--uninstall-on-exit` it uninstalls first. Keeping the entry on
//! exit is the default because pods started while the DaemonSet pod
//! restarts must still fail closed rather than run uncaptured.
//!
//! Files that cannot be parsed are never written: the error names the file
//! and the fix (and `--watch` keeps waiting for it to be fixed).

mod ops;
#[cfg(test)]
mod tests;

use ambit_cni::conflist;
use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use capture::rules::BackendChoice;
use clap::{Args, Parser, Subcommand};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use serde_json::{Map, Value};

pub use ops::{ConfigChange, InstallError, Installer};

#[derive(Parser, Debug)]
#[command(
    name = "ambit-cni",
    about = "Ambit's chained CNI plugin. Without arguments it is the plugin itself (run by \
             the container runtime); `install` and `uninstall` set it up on a node."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Install the plugin binary and chain it into the node's CNI config.
    Install(InstallArgs),
    /// Remove the plugin from every CNI config in the directory, and its binary.
    Uninstall(Dirs),
}

#[derive(Args, Debug)]
struct Dirs {
    /// Where the container runtime looks for CNI plugin binaries.
    #[arg(long, env = "AMBIT_CNI_BIN_DIR", default_value = "/opt/cni/bin")]
    cni_bin_dir: PathBuf,
    /// Where the node's CNI network configs are.
    #[arg(long, env = "AMBIT_CNI_CONF_DIR", default_value = "/etc/cni/net.d")]
    cni_conf_dir: PathBuf,
}

#[derive(Args, Debug)]
struct InstallArgs {
    #[command(flatten)]
    dirs: Dirs,
    /// ztunnel's enrollment socket as seen from the host (default: the
    /// plugin's built-in path).
    #[arg(long)]
    enroll_socket: Option<String>,
    /// How the plugin installs capture rules.
    #[arg(long)]
    rules_backend: Option<BackendChoice>,
    /// The plugin's log level.
    #[arg(long, value_parser = ["error", "warn", "info", "debug", "trace"])]
    log_level: Option<String>,
    /// The plugin's log file on the host (default: the runtime's log).
    #[arg(long)]
    log_file: Option<String>,
    /// Keep running and re-install whenever the config or binary changes.
    #[arg(long)]
    watch: bool,
    /// With --watch: how often to look, in milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    poll_interval_ms: u64,
    /// With --watch: uninstall when stopped by SIGTERM or SIGINT.
    #[arg(long, requires = "watch")]
    uninstall_on_exit: bool,
}

impl InstallArgs {
    /// Our conflist entry: only the keys given, so the plugin's defaults
    /// apply to the rest and the entry stays stable across versions.
    fn entry(&self) -> Map<String, Value> {
        let mut entry = Map::new();
        entry.insert("type".into(), ops::BINARY_NAME.into());
        let keys = [
            ("enrollSocket", self.enroll_socket.clone()),
            ("rulesBackend", self.rules_backend.map(|b| b.to_string())),
            ("logLevel", self.log_level.clone()),
            ("logFile", self.log_file.clone()),
        ];
        for (key, value) in keys {
            if let Some(value) = value {
                entry.insert(key.into(), value.into());
            }
        }
        entry
    }
}

/// Runs the installer with the process arguments; logs go to stderr (runtime's set-up).
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    // As the servers log (RUST_LOG, LOG_FORMAT=json, colour only on a terminal), on stderr.
    runtime::logging::LogSetup::from_env()
        .without_targets()
        .init();
    let result = match cli.command {
        Command::Install(args) => install(&args),
        Command::Uninstall(dirs) => uninstall(&installer(&dirs, Map::new())).map(drop),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            ExitCode::FAILURE
        }
    }
}

fn installer(dirs: &Dirs, entry: Map<String, Value>) -> Installer {
    Installer {
        bin_dir: dirs.cni_bin_dir.clone(),
        conf_dir: dirs.cni_conf_dir.clone(),
        entry,
    }
}

/// Why the installer stopped.
#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error(transparent)]
    Install(#[from] InstallError),
    #[error("cannot watch for SIGTERM/SIGINT: {0}")]
    Signals(nix::Error),
    #[error(
        "{path} keeps changing while ambit-cni edits it; stop whatever rewrites it in a loop, \
         or run with --watch to keep retrying"
    )]
    KeepsChanging { path: PathBuf },
}

fn install(args: &InstallArgs) -> Result<(), RunError> {
    let installer = installer(&args.dirs, args.entry());
    let source = std::env::current_exe().map_err(InstallError::CurrentExe)?;
    if args.watch {
        return watch(&installer, &source, args);
    }
    if installer.install_binary(&source)? {
        tracing::info!(path = %installer.binary_path().display(), "plugin binary installed");
    }
    for _ in 0..5 {
        match installer.install_config()? {
            ConfigChange::Raced { .. } => std::thread::sleep(Duration::from_millis(100)),
            change => {
                log_change(&change);
                return Ok(());
            }
        }
    }
    Err(RunError::KeepsChanging {
        path: ops::primary_config(&installer.conf_dir)?,
    })
}

fn uninstall(installer: &Installer) -> Result<(), RunError> {
    let done = installer.uninstall()?;
    for path in &done.cleaned {
        tracing::info!(path = %path.display(), "ambit-cni removed from the CNI config");
    }
    for error in &done.skipped {
        tracing::warn!("{error}");
    }
    if done.binary_removed {
        tracing::info!(path = %installer.binary_path().display(), "plugin binary removed");
    }
    if done.cleaned.is_empty() && !done.binary_removed {
        tracing::info!("ambit-cni was not installed; nothing to remove");
    }
    Ok(())
}

fn log_change(change: &ConfigChange) {
    match change {
        ConfigChange::Unchanged { path } => {
            tracing::debug!(path = %path.display(), "CNI config already chains ambit-cni")
        }
        ConfigChange::Written { path, plugins } => {
            tracing::info!(path = %path.display(), ?plugins, "ambit-cni chained into the CNI config")
        }
        ConfigChange::Converted { from, to, plugins } => tracing::info!(
            from = %from.display(), to = %to.display(), ?plugins,
            "single-plugin CNI config turned into a plugin list chaining ambit-cni"
        ),
        ConfigChange::Raced { path } => {
            tracing::debug!(path = %path.display(), "CNI config changed while reading it; retrying")
        }
    }
}

/// The `--watch` loop: reconcile, wait for the interval or a signal.
fn watch(installer: &Installer, source: &Path, args: &InstallArgs) -> Result<(), RunError> {
    let signals = Signals::new().map_err(RunError::Signals)?;
    let interval = Duration::from_millis(args.poll_interval_ms);
    tracing::info!(
        conf_dir = %installer.conf_dir.display(),
        bin_dir = %installer.bin_dir.display(),
        ?interval,
        "watching the CNI config"
    );
    // A full compare once (an upgrade may keep the size); later rounds
    // only check that the binary is still there.
    let mut last_error = None;
    if let Err(error) = installer.install_binary(source) {
        tracing::warn!("{error}; retrying every poll interval");
        last_error = Some(error.to_string());
    }
    let signal = loop {
        reconcile(installer, source, &mut last_error);
        if let Some(signal) = signals.wait(interval).map_err(RunError::Signals)? {
            break signal;
        }
    };
    tracing::info!(%signal, "stopping");
    if args.uninstall_on_exit {
        uninstall(installer)?;
    }
    Ok(())
}

/// One round of `--watch`. Errors are logged once until they change, so a
/// missing or broken config does not flood the log every second.
fn reconcile(installer: &Installer, source: &Path, last_error: &mut Option<String>) {
    let result = (|| {
        if !installer.binary_looks_installed(source) && installer.install_binary(source)? {
            tracing::info!(path = %installer.binary_path().display(), "plugin binary installed");
        }
        installer.install_config()
    })();
    match result {
        Ok(change) => {
            if last_error.take().is_some() {
                tracing::info!("CNI config usable again");
            }
            log_change(&change);
        }
        Err(error) => {
            let message = error.to_string();
            if last_error.as_deref() != Some(message.as_str()) {
                tracing::warn!("{message}; retrying every poll interval");
                *last_error = Some(message);
            }
        }
    }
}

/// SIGTERM and SIGINT, taken through a signalfd so the wait between two
/// polls is one `poll` with a timeout (no handler, no unsafe code).
struct Signals {
    fd: SignalFd,
}

impl Signals {
    /// Blocks the signals for this thread (the installer has no other
    /// threads) so they queue on the fd instead of killing the process.
    fn new() -> nix::Result<Self> {
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGTERM);
        mask.add(Signal::SIGINT);
        mask.thread_block()?;
        let fd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        Ok(Self { fd })
    }

    /// Waits up to `timeout`; the signal if one came.
    fn wait(&self, timeout: Duration) -> nix::Result<Option<Signal>> {
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(error) => return Err(error),
        }
        Ok(self
            .fd
            .read_signal()?
            .and_then(|info| i32::try_from(info.ssi_signo).ok())
            .and_then(|signo| Signal::try_from(signo).ok()))
    }
}
