//! Starts the call router: configuration, telemetry, run until SIGTERM; or
//! `rebuild` its read models from the log; or `check` a scenarios file.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "call-router", about = "callflow's inbound call routing")]
struct Cli {
    #[command(flatten)]
    common: kit::config::Common,
    #[command(flatten)]
    config: call_router::Config,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Answer PBXs and serve the APIs (the default).
    Serve,
    /// Drop the directory, sessions and statistics and replay them from the
    /// log, then exit. Safe while the router runs.
    Rebuild,
    /// Read and check the scenarios file, then exit.
    Check,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check) => {
            let s = call_router::scenario::Scenarios::load(&cli.config.scenarios)?;
            println!(
                "{}: {} lines, {} scenarios, {} targets: valid",
                cli.config.scenarios.display(),
                s.lines.len(),
                s.scenarios.len(),
                s.targets.len()
            );
            return Ok(());
        }
        Some(Command::Rebuild) => {
            let _telemetry = kit::telemetry::init(call_router::NAME);
            for (name, rebuilt) in call_router::rebuild(&cli.common).await? {
                println!(
                    "rebuilt {name} from {} events, up to position {}",
                    rebuilt.events, rebuilt.position
                );
            }
            return Ok(());
        }
        Some(Command::Serve) | None => {}
    }
    let _telemetry = kit::telemetry::init(call_router::NAME);
    let shutdown = kit::shutdown::on_signal();
    let drain = cli.common.drain_timeout;
    let service = call_router::run(
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
