//! The transcription service and its commands.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "transcription",
    about = "callflow's transcription service and number switch"
)]
struct Cli {
    #[command(flatten)]
    common: kit::config::Common,
    #[command(flatten)]
    exolve: kit::exolve::ExolveConfig,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fetch transcripts of completed calls (the service).
    Serve(transcription::Config),
    /// Switch transcription on for a business number, at Exolve and in the log.
    Enable(Switch),
    /// Switch transcription off for a business number.
    Disable(Switch),
}

#[derive(clap::Args)]
struct Switch {
    /// The business number (E.164 or a Russian national form).
    #[arg(long)]
    number: String,
    /// Who asks (recorded in the event).
    #[arg(long, default_value = "operator")]
    requested_by: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry = kit::telemetry::init(transcription::NAME);
    match cli.command {
        Command::Serve(config) => {
            let shutdown = kit::shutdown::on_signal();
            let drain = cli.common.drain_timeout;
            let service = transcription::run(
                cli.common,
                cli.exolve,
                config,
                kit::clock::system(),
                shutdown.clone(),
            );
            if let Some(result) = kit::shutdown::drain_within(service, &shutdown, drain).await {
                result?;
            }
        }
        Command::Enable(switch) => switch_number(&cli.common, &cli.exolve, &switch, true).await?,
        Command::Disable(switch) => switch_number(&cli.common, &cli.exolve, &switch, false).await?,
    }
    Ok(())
}

async fn switch_number(
    common: &kit::config::Common,
    exolve: &kit::exolve::ExolveConfig,
    switch: &Switch,
    enable: bool,
) -> anyhow::Result<()> {
    let number = kit::phone::PhoneNumber::parse(&switch.number, Default::default())
        .map_err(|e| anyhow::anyhow!("--number `{}` {e}", switch.number))?;
    let store = common.event_store(transcription::NAME)?;
    transcription::numbers::switch(
        &exolve.client(),
        &store,
        &number,
        enable,
        &switch.requested_by,
    )
    .await?;
    println!(
        "transcription {} for {number}",
        if enable { "on" } else { "off" }
    );
    Ok(())
}
