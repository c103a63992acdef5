//! Running short-lived commands (`ip`, CNI plugins, clients) with captured output, optional
//! stdin and a timeout, turning failures into errors that carry the command line and stderr.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::error::{HarnessError, Result};

/// Default bound for helper commands: generous, but a hung plugin must not hang the test run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// What a finished command printed.
#[derive(Debug, Clone)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
    pub success: bool,
    pub status: String,
}

/// `program arg1 arg2 …` for error messages.
pub fn describe(cmd: &Command) -> String {
    let mut text = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Run to completion; a non-zero exit is an error naming the command and its stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = run_unchecked(cmd, None, DEFAULT_TIMEOUT)?;
    if out.success {
        Ok(out.stdout)
    } else {
        Err(HarnessError::Command {
            command: describe(cmd),
            stderr: failure_text(&out),
            status: out.status,
        })
    }
}

/// Run with optional stdin and a timeout; the caller judges the exit status. The child is
/// killed when the timeout passes, so nothing outlives the call.
pub fn run_unchecked(cmd: &mut Command, stdin: Option<&[u8]>, timeout: Duration) -> Result<Output> {
    let command = describe(cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| HarnessError::Spawn {
        command: command.clone(),
        source,
    })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // Inputs here are small JSON documents: they fit the pipe buffer, and a child that exits
        // without reading them reports its own error through stderr.
        let _ = pipe.write_all(input);
    }
    let pid = Pid::from_raw(child.id() as i32);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(timeout) {
        Ok(result) => result.map_err(|source| HarnessError::Spawn {
            command: command.clone(),
            source,
        })?,
        Err(_) => {
            let _ = kill(pid, Signal::SIGKILL);
            return Err(HarnessError::CommandTimeout { command, timeout });
        }
    };
    Ok(Output {
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        success: output.status.success(),
        status: output.status.to_string(),
    })
}

/// Stderr, or stdout when stderr is empty (CNI plugins report errors as JSON on stdout).
pub(crate) fn failure_text(out: &Output) -> String {
    let text = if out.stderr.trim().is_empty() {
        &out.stdout
    } else {
        &out.stderr
    };
    text.trim().to_string()
}

/// `ip ARGS…` in the root namespace.
pub fn ip(args: &[&str]) -> Result<String> {
    run(Command::new("ip").args(args))
}

/// `ip -n NETNS ARGS…`: manipulates links/addresses inside a namespace without entering it.
pub fn ip_in(netns: &str, args: &[&str]) -> Result<String> {
    run(Command::new("ip").arg("-n").arg(netns).args(args))
}
