//! Starts call-ingest: configuration, telemetry, run until SIGTERM.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "call-ingest",
    about = "callflow's HTTP edge for telephony webhooks"
)]
struct Cli {
    #[command(flatten)]
    common: kit::config::Common,
    #[command(flatten)]
    config: call_ingest::Config,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry = kit::telemetry::init("call-ingest");
    let shutdown = kit::shutdown::on_signal();
    let drain = cli.common.drain_timeout;
    let service = call_ingest::run(
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
