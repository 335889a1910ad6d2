//! `callflow`: the development binary.

use clap::Parser;

#[derive(Parser)]
#[command(name = "callflow", about = "callflow development binary")]
enum Cli {
    /// Run every callflow service in one process and print their URLs.
    Up(Box<callflow::UpConfig>),
    /// Play a realistic day through the whole system (its own database and
    /// stream, the provider simulator, a clock moved a month ahead) and
    /// check what happened.
    Demo(Box<callflow::demo::DemoArgs>),
    /// Read, export, count and verify the event log.
    Events(Box<callflow::events::EventsArgs>),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = match Cli::parse() {
        Cli::Up(config) => config,
        Cli::Events(args) => {
            if std::env::var("RUST_LOG").is_err() {
                // SAFETY: before any other thread runs.
                unsafe { std::env::set_var("RUST_LOG", "warn") };
            }
            let _telemetry = kit::telemetry::init("callflow-cli");
            return callflow::events::run(*args).await;
        }
        Cli::Demo(config) => {
            if std::env::var("RUST_LOG").is_err() {
                // SAFETY: before any other thread runs.
                unsafe { std::env::set_var("RUST_LOG", "warn") };
            }
            let _telemetry = kit::telemetry::init("callflow-demo");
            return callflow::demo::run_cli(*config).await;
        }
    };
    let _telemetry = kit::telemetry::init("callflow");
    let shutdown = kit::shutdown::on_signal();
    let drain = config.common.drain_timeout;
    kit::shutdown::drain_within(callflow::up(*config, shutdown.clone()), &shutdown, drain)
        .await
        .unwrap_or(Ok(()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_setting_has_its_own_name() {
        // Catches two services declaring the same argument id or variable.
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
