//! `waypoint status --manifests PATH…`: the offline check (DESIGN §6). Loads the manifests the
//! way the proxy does, computes [`super::compute`] and prints it as one YAML list on stdout, so
//! a user (or an outside conformance judge) sees what a controller would write.
//!
//! Exit codes: 0 printed; 2 the arguments or the manifests are wrong (clap's code for usage
//! errors, kept for manifests so that a script has one code for "fix your input"); 1 stdout
//! could not be written. Logs and errors go to stderr only.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use clap::Parser;
use discovery::{LocalSource, LocalSourceConfig, ManifestErrors};

/// The first argument that selects this command (`waypoint status …`).
pub const SUBCOMMAND: &str = "status";

#[derive(Parser, Debug, Clone)]
#[command(
    name = "waypoint status",
    version,
    about = "Prints the Gateway API status the waypoint controller would write (GatewayClasses, waypoint Gateways, routes with Service parents) for a folder of manifests, as a YAML list of {apiVersion, kind, metadata, status}"
)]
pub struct StatusArgs {
    /// A manifest file or folder (multi-document YAML or JSON); repeatable.
    #[arg(long = "manifests", value_name = "PATH", required = true)]
    pub manifests: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// Each error names its file, document and field, and what to change.
    #[error("cannot load the manifests: {0}")]
    Manifests(#[from] ManifestErrors),
    #[error("cannot render the status as YAML: {0} (a bug: please report it)")]
    Render(#[from] serde_yaml::Error),
    #[error("cannot write to stdout: {0}")]
    Write(#[from] std::io::Error),
}

impl StatusError {
    fn exit_code(&self) -> ExitCode {
        match self {
            StatusError::Manifests(_) => ExitCode::from(2),
            StatusError::Render(_) | StatusError::Write(_) => ExitCode::FAILURE,
        }
    }
}

/// Whether `args` (as the process got them, program name first) ask for this command.
pub fn is_requested(args: &[OsString]) -> bool {
    args.get(1).is_some_and(|first| first == SUBCOMMAND)
}

/// Runs the command with the process arguments (`waypoint status --manifests …`).
pub fn main(args: Vec<OsString>) -> ExitCode {
    // Drop "status" so clap sees `waypoint status` as the program name.
    let args = args.into_iter().enumerate().filter(|(i, _)| *i != 1);
    let args = match StatusArgs::try_parse_from(args.map(|(_, a)| a)) {
        Ok(args) => args,
        // Help and version exit 0 on stdout; usage errors exit 2 on stderr.
        Err(error) => error.exit(),
    };
    match run(&args, &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("waypoint status: {error}");
            error.exit_code()
        }
    }
}

/// Loads, computes and prints; what `main` runs, writable to any `out` for tests.
pub fn run(args: &StatusArgs, out: &mut impl Write) -> Result<(), StatusError> {
    let source = LocalSource::load(LocalSourceConfig::new(args.manifests.iter().cloned()))?;
    let statuses = super::compute(&source.current(), SystemTime::now());
    let yaml = serde_yaml::to_string(&statuses)?;
    out.write_all(yaml.as_bytes())?;
    out.flush()?;
    Ok(())
}
