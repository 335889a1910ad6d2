//! Starts the reminder scheduler: configuration, telemetry, run until
//! SIGTERM; or `rebuild` its projection from the log.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "reminder-scheduler", about = "callflow's durable reminders")]
struct Cli {
    #[command(flatten)]
    common: kit::config::Common,
    #[command(flatten)]
    config: reminder_scheduler::Config,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (the default).
    Serve,
    /// Drop the reminders and timers projection and replay it from the event
    /// log, then exit. Safe while the service runs: it waits for the rebuild.
    Rebuild,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry = kit::telemetry::init(reminder_scheduler::NAME);
    if let Some(Command::Rebuild) = cli.command {
        let rebuilt = reminder_scheduler::rebuild(&cli.common).await?;
        println!(
            "rebuilt the reminders and timers projection from {} events, up to position {}",
            rebuilt.events, rebuilt.position
        );
        return Ok(());
    }
    let shutdown = kit::shutdown::on_signal();
    let drain = cli.common.drain_timeout;
    let service = reminder_scheduler::run(
        cli.common,
        cli.config,
        kit::clock::system(),
        shutdown.clone(),
    );
    if let Some(result) = kit::shutdown::drain_within(service, &shutdown, drain).await {
        result?;
    }
    Ok(())
}
