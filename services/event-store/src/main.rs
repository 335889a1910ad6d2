//! Starts the event store: configuration, telemetry, run until SIGTERM.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "event-store",
    about = "callflow's event log: Postgres, gRPC API, JetStream relay"
)]
struct Cli {
    #[command(flatten)]
    common: kit::config::Common,
    #[command(flatten)]
    config: event_store::Config,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry = kit::telemetry::init("event-store");
    let shutdown = kit::shutdown::on_signal();
    let drain = cli.common.drain_timeout;
    let service = event_store::run(cli.common, cli.config, shutdown.clone());
    if let Some(result) = kit::shutdown::drain_within(service, &shutdown, drain).await {
        result?;
    }
    Ok(())
}
