//! `ztunnel`: the Ambit node agent. Flags are parsed here; everything else is the library's
//! [`ztunnel::app`].

use anyhow::Context;
use clap::Parser;
use ztunnel::config::Config;

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    runtime::logging::init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
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
