//! Logging set-up shared by the binaries: `RUST_LOG` filters (default `info`), logs on stderr,
//! text by default and JSON with `LOG_FORMAT=json`. Colour only when stderr is a terminal and
//! `NO_COLOR` is unset: what `kubectl logs` shows, or a file, must hold no escape codes.

use std::io::IsTerminal;

/// Whether log lines may carry ANSI colour: a terminal, and no `NO_COLOR` (no-color.org: any
/// non-empty value).
pub fn use_colour(is_terminal: bool, no_color: Option<&str>) -> bool {
    is_terminal && no_color.is_none_or(str::is_empty)
}

/// Installs the global subscriber. Safe to call once per process; a second call is ignored.
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let colour = use_colour(
        std::io::stderr().is_terminal(),
        std::env::var("NO_COLOR").ok().as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour);
    let installed = if std::env::var("LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    drop(installed);
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
