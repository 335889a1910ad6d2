//! Starts the console: configuration, telemetry, serve until SIGTERM; or
//! `rebuild` its index from the log; or `hash-password` for the users file.

use std::io::BufRead;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "console", about = "callflow's operations console")]
struct Cli {
    #[command(flatten)]
    common: kit::config::Common,
    #[command(flatten)]
    config: console::Config,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the pages (the default).
    Serve,
    /// Drop the search index and dead-letter list and replay them from the
    /// log, then exit. Safe while the console runs.
    Rebuild,
    /// Read a password from stdin and print its hash for the users file.
    HashPassword,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::HashPassword) => {
            let mut password = String::new();
            std::io::stdin().lock().read_line(&mut password)?;
            let password = password.trim_end_matches(['\r', '\n']);
            if password.len() < 12 {
                anyhow::bail!("a password of at least 12 characters");
            }
            println!(
                "{}",
                console::auth::PasswordHash::new(password, console::auth::ROUNDS)
            );
            return Ok(());
        }
        Some(Command::Rebuild) => {
            let _telemetry = kit::telemetry::init(console::NAME);
            let rebuilt = console::rebuild(&cli.common).await?;
            println!(
                "rebuilt the index from {} events, up to position {}",
                rebuilt.events, rebuilt.position
            );
            return Ok(());
        }
        Some(Command::Serve) | None => {}
    }
    let _telemetry = kit::telemetry::init(console::NAME);
    let shutdown = kit::shutdown::on_signal();
    let drain = cli.common.drain_timeout;
    let service = console::run(
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
