//! `waypoint`: see the crate docs and `waypoint --help`.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    runtime::logging::init();
    let config = waypoint::Config::parse();
    let app = waypoint::app::build(config).await?;
    app.run_until(async {
        let signal = runtime::signal::termination_requested().await;
        tracing::info!(signal, "termination requested");
    })
    .await;
    Ok(())
}
