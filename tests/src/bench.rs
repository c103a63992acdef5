//! What every benchmark's `main` does before it measures.

use crate::NEEDS_ROOT;

/// Whether bench `name` should measure now. `cargo test --all-targets` runs benches once without
/// `--bench`: then it prints how to run it and answers false. Not root: it says why and exits 1.
pub fn entered(name: &str) -> bool {
    if !std::env::args().any(|a| a == "--bench") {
        println!("{name}: a benchmark; run it with `cargo bench -p ambit-tests --bench {name}` (as root)");
        return false;
    }
    if crate::require_root().is_err() {
        eprintln!("{name} bench: {NEEDS_ROOT} (sudo -E cargo bench -p ambit-tests --bench {name})");
        std::process::exit(1);
    }
    true
}

/// The environment variable `name` parsed as `T`, or `default` when it is unset; an error names
/// the variable and the text.
pub fn env<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(text) => text
            .parse()
            .map_err(|_| format!("{name}: cannot parse {text:?}")),
    }
}

/// Lifts RLIMIT_NOFILE (soft and, as root, hard) to at least `want` before anything is spawned:
/// ztunnel and the load generators inherit it. Returns the limit now in force (soft, hard).
pub fn raise_nofile(want: u64) -> Result<(u64, u64), String> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| e.to_string())?;
    let target = want.max(soft).max(hard);
    if setrlimit(Resource::RLIMIT_NOFILE, target, target).is_err() {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(|e| e.to_string())?;
    }
    getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| e.to_string())
}
