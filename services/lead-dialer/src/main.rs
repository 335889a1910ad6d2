//! Starts the lead dialer: configuration, telemetry, run until SIGTERM; or
//! `rebuild` the partner dashboard from the log.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "lead-dialer", about = "callflow's web-lead call-back")]
struct Cli {
    #[command(flatten)]
    common: kit::config::Common,
    #[command(flatten)]
    exolve: kit::exolve::ExolveConfig,
    #[command(flatten)]
    config: lead_dialer::Config,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Call leads back and serve the dashboard (the default).
    Serve,
    /// Drop the dashboard's read model and replay it from the event log,
    /// then exit. Safe while the service runs.
    Rebuild,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry = kit::telemetry::init(lead_dialer::NAME);
    if let Some(Command::Rebuild) = cli.command {
        let rebuilt = lead_dialer::rebuild(&cli.common, &cli.config).await?;
        println!(
            "rebuilt the lead dashboard from {} events, up to position {}",
            rebuilt.events, rebuilt.position
        );
        return Ok(());
    }
    let shutdown = kit::shutdown::on_signal();
    let drain = cli.common.drain_timeout;
    let service = lead_dialer::run(
        cli.common,
        cli.exolve,
        cli.config,
        kit::clock::system(),
        shutdown.clone(),
    );
    if let Some(result) = kit::shutdown::drain_within(service, &shutdown, drain).await {
        result?;
    }
    Ok(())
}
