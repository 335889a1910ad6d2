//! Starts the SMS sender: configuration, telemetry, run until SIGTERM.

use clap::Parser;

#[derive(Parser)]
#[command(name = "sms-sender", about = "callflow's SMS sender")]
struct Cli {
    #[command(flatten)]
    common: kit::config::Common,
    #[command(flatten)]
    exolve: kit::exolve::ExolveConfig,
    #[command(flatten)]
    config: sms_sender::Config,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry = kit::telemetry::init(sms_sender::NAME);
    let shutdown = kit::shutdown::on_signal();
    let drain = cli.common.drain_timeout;
    let service = sms_sender::run(
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
