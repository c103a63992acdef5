//! Long-running processes inside a namespace (servers, ztunnel, ambit-ca, tcpdump), with their
//! output in a log file a test can read and wait on, stopped (TERM, then KILL) when dropped.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use crate::cmd::describe;
use crate::error::{HarnessError, Result};

/// How long a process gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);
const POLL: Duration = Duration::from_millis(10);

/// What to run: program, args, extra environment (the test's own environment is inherited, so
/// `RUST_LOG` and friends pass through) and a short name for the log file.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    name: String,
}

impl ProcessSpec {
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        let program = program.as_ref().to_os_string();
        let name = Path::new(&program)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "process".to_string());
        ProcessSpec {
            program,
            args: Vec::new(),
            env: Vec::new(),
            name,
        }
    }

    /// The program to run.
    pub fn program(&self) -> &OsStr {
        &self.program
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_os_string(), value.as_ref().to_os_string()));
        self
    }

    /// Name used in the log file name and in errors (defaults to the program's file name).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

/// A running process. Dropping it stops it and its process group.
#[derive(Debug)]
pub struct Process {
    child: Child,
    name: String,
    command: String,
    log_path: PathBuf,
    exit: Option<ExitStatus>,
}

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

impl Process {
    /// Starts `spec` through `launcher`, a command that already runs `spec.program` where it
    /// should (`ip netns exec NAME PROGRAM`); its output goes to a new log in `log_dir`, named
    /// after `place` and the process.
    pub(crate) fn spawn(
        mut launcher: Command,
        log_dir: &Path,
        place: &str,
        spec: ProcessSpec,
    ) -> Result<Process> {
        let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let log_path = log_dir.join(format!("{place}-{}-{seq}.log", spec.name));
        let log =
            File::create(&log_path).map_err(|e| HarnessError::file("creating", &log_path, e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| HarnessError::file("duplicating", &log_path, e))?;
        let command = &mut launcher;
        command
            .args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // Own process group, so stopping it also stops whatever it forked.
            .process_group(0);
        let described = describe(command);
        let child = command.spawn().map_err(|source| HarnessError::Spawn {
            command: described.clone(),
            source,
        })?;
        Ok(Process {
            child,
            name: spec.name,
            command: described,
            log_path,
            exit: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn log(&self) -> Result<String> {
        let bytes = std::fs::read(&self.log_path)
            .map_err(|e| HarnessError::file("reading", &self.log_path, e))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// `None` while running, the exit status once it has exited.
    pub fn try_exit_status(&mut self) -> Result<Option<ExitStatus>> {
        if self.exit.is_none() {
            self.exit = self
                .child
                .try_wait()
                .map_err(|source| HarnessError::Spawn {
                    command: self.command.clone(),
                    source,
                })?;
        }
        Ok(self.exit)
    }

    /// Length of the log so far; pass it to [`Process::wait_for_line_from`] to wait only for
    /// lines written after this point (e.g. the access log line of the next connection).
    pub fn log_len(&self) -> Result<u64> {
        std::fs::metadata(&self.log_path)
            .map(|m| m.len())
            .map_err(|e| HarnessError::file("reading", &self.log_path, e))
    }

    /// Wait until a line of the log satisfies `matches` and return that line. Fails early, with
    /// the log, if the process exits first: a server that crashed at start-up should say why.
    pub fn wait_for_line(
        &mut self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> Result<String> {
        self.wait_for_line_from(0, what, timeout, matches)
    }

    /// Like [`Process::wait_for_line`], considering only log bytes from `offset` on. Reads
    /// only what is new on each poll, so long logs stay cheap.
    pub fn wait_for_line_from(
        &mut self,
        offset: u64,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        let log_path = self.log_path.clone();
        let mut reader = LogReader::new(&log_path, offset);
        loop {
            // Exit status first: if it has exited, the read below sees everything it wrote.
            let exited = self.try_exit_status()?;
            let lines = reader.complete_lines()?;
            if let Some(line) = lines.into_iter().find(|line| matches(line)) {
                return Ok(line);
            }
            if let Some(status) = exited {
                if let Some(last) = reader.unterminated().filter(|line| matches(line)) {
                    return Ok(last);
                }
                return Err(HarnessError::ProcessExited {
                    name: self.name.clone(),
                    status: status.to_string(),
                    what: what.to_string(),
                    log_tail: tail(&self.log()?),
                });
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::WaitTimeout {
                    what: format!("{what} from `{}`", self.command),
                    timeout,
                    log_tail: tail(&self.log()?),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// Wait for the log to contain `needle`.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        self.wait_for_line(
            &format!("log line containing {needle:?}"),
            timeout,
            |line| line.contains(needle),
        )
    }

    /// Send a signal to the process (not its group), e.g. SIGHUP to reload.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        kill(Pid::from_raw(self.child.id() as i32), signal).map_err(|errno| HarnessError::Spawn {
            command: format!("kill -{signal} {}", self.child.id()),
            source: errno.into(),
        })
    }

    /// Wait up to `timeout` for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit_status()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(POLL);
        }
    }

    /// SIGTERM the process group, then SIGKILL if it is still there after a grace period.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        self.stop_with(Signal::SIGTERM)
    }

    /// Like [`Process::stop`] with another first signal (tcpdump flushes on SIGINT).
    pub fn stop_with(&mut self, first: Signal) -> Result<ExitStatus> {
        let group = Pid::from_raw(self.child.id() as i32);
        if self.try_exit_status()?.is_none() {
            let _ = killpg(group, first);
            if let Some(status) = self.wait_exit(STOP_GRACE)? {
                let _ = killpg(group, Signal::SIGKILL); // leftover children of the group
                return Ok(status);
            }
        }
        let _ = killpg(group, Signal::SIGKILL);
        let status = self.child.wait().map_err(|source| HarnessError::Spawn {
            command: self.command.clone(),
            source,
        })?;
        self.exit = Some(status);
        Ok(status)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Reads a growing log file incrementally, line by line.
struct LogReader<'a> {
    path: &'a Path,
    position: u64,
    partial: Vec<u8>,
}

impl<'a> LogReader<'a> {
    fn new(path: &'a Path, position: u64) -> Self {
        LogReader {
            path,
            position,
            partial: Vec::new(),
        }
    }

    /// Lines completed since the last call.
    fn complete_lines(&mut self) -> Result<Vec<String>> {
        let mut file =
            File::open(self.path).map_err(|e| HarnessError::file("opening", self.path, e))?;
        file.seek(SeekFrom::Start(self.position))
            .map_err(|e| HarnessError::file("seeking in", self.path, e))?;
        let mut fresh = Vec::new();
        file.read_to_end(&mut fresh)
            .map_err(|e| HarnessError::file("reading", self.path, e))?;
        self.position += fresh.len() as u64;
        self.partial.extend_from_slice(&fresh);
        let Some(last_newline) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return Ok(Vec::new());
        };
        let rest = self.partial.split_off(last_newline + 1);
        let complete = std::mem::replace(&mut self.partial, rest);
        Ok(String::from_utf8_lossy(&complete)
            .lines()
            .map(str::to_string)
            .collect())
    }

    /// A last line without a newline (what a process wrote just before exiting).
    fn unterminated(&self) -> Option<String> {
        (!self.partial.is_empty()).then(|| String::from_utf8_lossy(&self.partial).into_owned())
    }
}

/// The last lines of a log, for error messages.
pub(crate) fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let start = lines.len().saturating_sub(40);
    lines[start..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::LogReader;
    use std::io::Write;

    #[test]
    fn log_reader_returns_only_new_complete_lines() -> crate::Result<()> {
        let mut file = tempfile::NamedTempFile::new()
            .map_err(|e| crate::HarnessError::file("creating", "temp file", e))?;
        let path = file.path().to_path_buf();
        let write = |file: &mut tempfile::NamedTempFile, text: &str| {
            file.write_all(text.as_bytes())
                .map_err(|e| crate::HarnessError::file("writing", &path, e))
        };
        write(&mut file, "old line\n")?;
        let mut reader = LogReader::new(&path, 9);
        assert!(reader.complete_lines()?.is_empty());
        write(&mut file, "first\nsec")?;
        assert_eq!(reader.complete_lines()?, ["first"]);
        assert_eq!(reader.unterminated().as_deref(), Some("sec"));
        write(&mut file, "ond\nthird\n")?;
        assert_eq!(reader.complete_lines()?, ["second", "third"]);
        assert_eq!(reader.unterminated(), None);
        Ok(())
    }
}
