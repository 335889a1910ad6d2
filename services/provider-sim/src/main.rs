//! Starts the provider simulator: configuration, telemetry, run until SIGTERM.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "provider-sim",
    about = "Simulates Exolve, Telegram, Slack, Bitrix24 and Voximplant for callflow's tests and demo"
)]
struct Cli {
    #[command(flatten)]
    config: provider_sim::Config,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry = kit::telemetry::init("provider-sim");
    let shutdown = kit::shutdown::on_signal();
    provider_sim::run(cli.config, kit::clock::system(), shutdown).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_setting_has_its_own_name() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
