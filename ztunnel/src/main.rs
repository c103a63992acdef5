//! `ztunnel`: the Ambit node agent. Flags are parsed here; everything else is the library's
//! [`ztunnel::app`].

use anyhow::Context;
use clap::Parser;
use ztunnel::config::Config;

/// jemalloc, tuned to give memory back after a load (`runtime::allocator` says why).
#[global_allocator]
static ALLOCATOR: runtime::allocator::Jemalloc = runtime::allocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    runtime::logging::init();
    runtime::allocator::tune();
    let runtime =
        runtime::allocator::multi_thread_runtime().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let app = ztunnel::app::build(config).await?;
        app.run_until(async {
            let signal = runtime::signal::termination_requested().await;
            tracing::info!(%signal, "ztunnel asked to stop");
        })
        .await;
        Ok(())
    })
}
