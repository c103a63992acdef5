//! Logging set-up shared by the binaries: `RUST_LOG` filters (default `info`), text by default
//! and JSON with `LOG_FORMAT=json`. Colour only when the output is a terminal and `NO_COLOR` is
//! unset: what `kubectl logs` shows, or a file, must hold no escape codes.
//!
//! Logs go to stderr or to a file, never to stdout: the CNI plugin's stdout is its result to
//! the container runtime, and a server's stdout is kept for what a user asked it to print.

use std::fs::File;
use std::io::IsTerminal;
use std::sync::Mutex;

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::EnvFilter;

/// Whether log lines may carry ANSI colour: a terminal, and no `NO_COLOR` (no-color.org: any
/// non-empty value).
pub fn use_colour(is_terminal: bool, no_color: Option<&str>) -> bool {
    is_terminal && no_color.is_none_or(str::is_empty)
}

/// Where log lines go.
#[derive(Debug)]
pub enum LogOutput {
    Stderr,
    /// Appended to; never coloured.
    File(File),
}

/// One process's logging: what is logged, where, and how each line looks.
#[derive(Debug)]
pub struct LogSetup {
    filter: EnvFilter,
    output: LogOutput,
    targets: bool,
}

impl LogSetup {
    /// What the servers use: `RUST_LOG` (default `info`), on stderr, with each line's target.
    pub fn from_env() -> LogSetup {
        LogSetup {
            filter: EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
            output: LogOutput::Stderr,
            targets: true,
        }
    }

    /// Everything at `level` and above, whatever `RUST_LOG` says (a level from a config file).
    pub fn at_level(level: tracing::Level) -> LogSetup {
        LogSetup {
            filter: EnvFilter::default().add_directive(LevelFilter::from_level(level).into()),
            ..LogSetup::from_env()
        }
    }

    pub fn output(self, output: LogOutput) -> LogSetup {
        LogSetup { output, ..self }
    }

    /// Lines without the module path: for a small binary whose user never filters by module.
    pub fn without_targets(self) -> LogSetup {
        LogSetup {
            targets: false,
            ..self
        }
    }

    /// Installs the global subscriber. Once per process; a later call changes nothing.
    pub fn init(self) {
        let json = std::env::var("LOG_FORMAT").is_ok_and(|format| format == "json");
        let no_color = std::env::var("NO_COLOR").ok();
        let builder = tracing_subscriber::fmt()
            .with_env_filter(self.filter)
            .with_target(self.targets);
        let installed = match self.output {
            LogOutput::Stderr => {
                let colour = use_colour(std::io::stderr().is_terminal(), no_color.as_deref());
                let builder = builder.with_writer(std::io::stderr).with_ansi(colour);
                if json {
                    builder.json().try_init()
                } else {
                    builder.try_init()
                }
            }
            LogOutput::File(file) => {
                let builder = builder.with_writer(Mutex::new(file)).with_ansi(false);
                if json {
                    builder.json().try_init()
                } else {
                    builder.try_init()
                }
            }
        };
        // Err: a subscriber is already installed (a test harness, or a second call).
        drop(installed);
    }
}

/// [`LogSetup::from_env`], installed.
pub fn init() {
    LogSetup::from_env().init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_colour(true, None));
        assert!(
            use_colour(true, Some("")),
            "an empty NO_COLOR does not count"
        );
        assert!(!use_colour(true, Some("1")));
        assert!(!use_colour(false, None), "a pipe or a file gets plain text");
    }
}
