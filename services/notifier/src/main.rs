//! Starts the notifier: configuration, telemetry, run until SIGTERM.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "notifier",
    about = "callflow's notifications to chats and webhooks"
)]
struct Cli {
    #[command(flatten)]
    common: kit::config::Common,
    #[command(flatten)]
    config: notifier::Config,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry = kit::telemetry::init(notifier::NAME);
    let shutdown = kit::shutdown::on_signal();
    let drain = cli.common.drain_timeout;
    let service = notifier::run(cli.common, cli.config, shutdown.clone());
    if let Some(result) = kit::shutdown::drain_within(service, &shutdown, drain).await {
        result?;
    }
    Ok(())
}
