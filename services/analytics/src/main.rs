//! Starts the analytics projector: configuration, telemetry, run until
//! SIGTERM; or `rebuild` the read model from the log.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "analytics",
    about = "callflow's read model for analysts (schema analytics)"
)]
struct Cli {
    #[command(flatten)]
    common: kit::config::Common,
    #[command(flatten)]
    config: analytics::Config,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Follow the log into the read model (the default).
    Serve,
    /// Drop the read model and replay it from the event log, then exit.
    /// Safe while the projector runs: it waits for the rebuild.
    Rebuild,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry = kit::telemetry::init(analytics::NAME);
    if let Some(Command::Rebuild) = cli.command {
        let rebuilt = analytics::rebuild(&cli.common).await?;
        println!(
            "rebuilt the analytics read model from {} events, up to position {}",
            rebuilt.events, rebuilt.position
        );
        return Ok(());
    }
    let shutdown = kit::shutdown::on_signal();
    let drain = cli.common.drain_timeout;
    let service = analytics::run(cli.common, cli.config, shutdown.clone());
    if let Some(result) = kit::shutdown::drain_within(service, &shutdown, drain).await {
        result?;
    }
    Ok(())
}
