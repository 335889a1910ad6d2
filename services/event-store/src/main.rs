//! Starts the event store: configuration, telemetry, run until SIGTERM.

use clap::{Parser, Subcommand};

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
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the log (the default).
    Serve,
    /// Apply the log's schema migrations, then exit (a Kubernetes Job runs
    /// it before a rollout; running it again is harmless).
    Migrate,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry = kit::telemetry::init("event-store");
    if let Some(Command::Migrate) = cli.command {
        event_store::migrate(&cli.common).await?;
        println!("the event log's schema is up to date");
        return Ok(());
    }
    let shutdown = kit::shutdown::on_signal();
    let drain = cli.common.drain_timeout;
    let service = event_store::run(cli.common, cli.config, shutdown.clone());
    if let Some(result) = kit::shutdown::drain_within(service, &shutdown, drain).await {
        result?;
    }
    Ok(())
}
