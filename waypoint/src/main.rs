//! `waypoint`: see the crate docs and `waypoint --help`.
//!
//! Two modes: `waypoint status --manifests DIR` prints Gateway API status and exits
//! ([`waypoint::status::command`]); anything else serves (`waypoint --gateway NS/NAME …`, no
//! subcommand, as the harness and the controller start it).

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;
use waypoint::status::command;

/// jemalloc, tuned to give memory back after a load (`runtime::allocator` says why).
#[global_allocator]
static ALLOCATOR: runtime::allocator::Jemalloc = runtime::allocator::Jemalloc;

fn main() -> ExitCode {
    runtime::logging::init();
    runtime::allocator::tune();
    let args: Vec<OsString> = std::env::args_os().collect();
    if command::is_requested(&args) {
        return command::main(args);
    }
    if waypoint::controller::is_requested(&args) {
        return waypoint::controller::main(args);
    }
    match serve(waypoint::Config::parse_from(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // What `main() -> anyhow::Result<()>` printed: the error with its causes.
            eprintln!("Error: {error:?}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: waypoint::Config) -> anyhow::Result<()> {
    let runtime = runtime::allocator::multi_thread_runtime()
        .map_err(|error| anyhow::anyhow!("cannot start the async runtime: {error}"))?;
    runtime.block_on(async {
        let app = waypoint::app::build(config).await?;
        app.run_until(async {
            let signal = runtime::signal::termination_requested().await;
            tracing::info!(signal, "termination requested");
        })
        .await;
        Ok(())
    })
}
