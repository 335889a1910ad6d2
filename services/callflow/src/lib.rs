//! The development binary's one command, `callflow up`: every service of the
//! workspace in one process, on the same code and wire protocols as in
//! Kubernetes, where each runs alone.
//!
//! Services start in dependency order (the event store first, since the
//! others append to it), run side by side, and stop together: on SIGTERM or
//! Ctrl-C, or as soon as one of them fails.

pub mod demo;
pub mod events;

use std::future::Future;
use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use kit::clock::SharedClock;
use kit::config::Common;
use kit::exolve::ExolveConfig;
use provider_sim::{ProviderSim, SimHandle};

/// Settings of every service.
#[derive(clap::Args, Debug, Clone)]
pub struct UpConfig {
    #[command(flatten)]
    pub common: Common,
    /// Run the provider simulator in this process and point the provider
    /// adapters (Exolve, Telegram) at it.
    #[arg(long = "simulator", env = "CALLFLOW_SIMULATOR", default_value_t = true, action = clap::ArgAction::Set)]
    pub simulator: bool,
    #[command(flatten)]
    pub provider_sim: provider_sim::Config,
    #[command(flatten)]
    pub exolve: ExolveConfig,
    #[command(flatten)]
    pub event_store: event_store::Config,
    #[command(flatten)]
    pub call_ingest: call_ingest::Config,
    #[command(flatten)]
    pub transcription: transcription::Config,
    #[command(flatten)]
    pub consent_analyzer: consent_analyzer::service::Config,
    #[command(flatten)]
    pub reminder_scheduler: reminder_scheduler::Config,
    #[command(flatten)]
    pub sms_sender: sms_sender::Config,
    #[command(flatten)]
    pub notifier: notifier::Config,
    #[command(flatten)]
    pub analytics: analytics::Config,
    #[command(flatten)]
    pub lead_dialer: lead_dialer::Config,
    #[command(flatten)]
    pub call_router: call_router::Config,
    #[command(flatten)]
    pub console: console::Config,
}

impl UpConfig {
    /// Points the settings that name files of the repository (the
    /// call-router's scenarios, the console's users) at this checkout's
    /// copies when they are relative paths that do not resolve here:
    /// `cargo bench` and `cargo test` run in the package's directory.
    pub fn with_repository_files(mut self) -> Self {
        let repository = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        for path in [&mut self.call_router.scenarios, &mut self.console.users] {
            if path.is_relative() && !path.exists() {
                *path = repository.join(&*path);
            }
        }
        self
    }
}

/// Where a running system serves.
#[derive(Debug, Clone)]
pub struct Addresses {
    pub event_store_grpc: SocketAddr,
    pub event_store_http: SocketAddr,
    pub call_ingest_http: SocketAddr,
    pub reminder_grpc: SocketAddr,
    pub reminder_http: SocketAddr,
    pub lead_http: SocketAddr,
    pub lead_grpc: SocketAddr,
    pub router_http: SocketAddr,
    pub router_grpc: SocketAddr,
    pub console_http: SocketAddr,
    /// The provider simulator, when it runs here.
    pub simulator: Option<SocketAddr>,
}

/// Every service, started.
pub struct System {
    pub addresses: Addresses,
    /// The provider simulator's handle, when it runs here.
    pub simulator: Option<SimHandle>,
    tasks: TaskTracker,
    failed: CancellationToken,
}

impl System {
    /// Binds every service's listeners (the simulator and the event store
    /// first, since the others talk to them) and starts them, all on
    /// `clock`. They stop when `shutdown` is cancelled, or all together as
    /// soon as one fails.
    pub async fn start(
        mut config: UpConfig,
        clock: SharedClock,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let tasks = TaskTracker::new();
        let failed = CancellationToken::new();
        let (simulator, sim_addr) = if config.simulator {
            let sim = ProviderSim::bind(
                config.provider_sim.addr,
                config.provider_sim.sim_config(clock.clone()),
            )
            .await?;
            let handle = sim.handle();
            let addr = sim.addr();
            config.exolve.url = sim.base_url();
            config.exolve.key = config.provider_sim.exolve_api_key.clone();
            config.notifier.telegram_url = sim.base_url();
            config.notifier.telegram_token = config.provider_sim.telegram_token.clone();
            if config.notifier.support_slack_url.is_empty() {
                config.notifier.support_slack_url =
                    format!("{}/services/T0SIM/B0SUPPORT/sim-support", sim.base_url());
            }
            config.lead_dialer.voximplant_url = sim.base_url();
            config.lead_dialer.bitrix_url = format!(
                "{}/rest/1/{}",
                sim.base_url(),
                config.provider_sim.bitrix_secret
            );
            supervise(
                &tasks,
                "provider-sim",
                sim.run(shutdown.clone()),
                &shutdown,
                &failed,
            );
            (Some(handle), Some(addr))
        } else {
            (None, None)
        };
        let store =
            event_store::EventStore::build(config.common.clone(), config.event_store.clone())
                .await?;
        config.common.event_store_url = format!("http://{}", store.grpc_addr());
        let ingest =
            call_ingest::CallIngest::build(&config.common, &config.call_ingest, clock.clone())
                .await?;
        let scheduler = reminder_scheduler::Scheduler::build(
            config.common.clone(),
            config.reminder_scheduler.clone(),
            clock.clone(),
        )
        .await?;
        config.lead_dialer.timers_url = format!("http://{}", scheduler.grpc_addr());
        let dialer = lead_dialer::LeadDialer::bind(
            config.common.clone(),
            config.exolve.clone(),
            config.lead_dialer.clone(),
            clock.clone(),
        )
        .await?;
        if let Some(sim) = &simulator {
            // The simulated calls report their results to the dialer.
            let webhooks = format!("http://{}/webhooks/calls", dialer.http_addr());
            let token = &config.lead_dialer.webhook_token;
            sim.set_call_events(
                Some(format!("{webhooks}/voximplant")),
                Some(format!("{webhooks}/exolve")),
                (!token.is_empty()).then(|| token.clone()),
            );
        }
        let router = call_router::CallRouter::bind(
            config.common.clone(),
            config.call_router.clone(),
            clock.clone(),
        )
        .await?;
        // The console reads the other services' APIs where they were bound.
        config.console.reminders_url = format!("http://{}", scheduler.grpc_addr());
        config.console.leads_url = format!("http://{}", dialer.grpc_addr());
        config.console.routing_url = format!("http://{}", router.grpc_addr());
        let console =
            console::Console::bind(config.common.clone(), config.console.clone(), clock.clone())
                .await?;
        let addresses = Addresses {
            event_store_grpc: store.grpc_addr(),
            event_store_http: store.http_addr(),
            call_ingest_http: ingest.http_addr(),
            reminder_grpc: scheduler.grpc_addr(),
            reminder_http: scheduler.http_addr(),
            lead_http: dialer.http_addr(),
            lead_grpc: dialer.grpc_addr(),
            router_http: router.http_addr(),
            router_grpc: router.grpc_addr(),
            console_http: console.http_addr(),
            simulator: sim_addr,
        };
        let common = config.common.clone();
        supervise(
            &tasks,
            "event-store",
            store.run(shutdown.clone()),
            &shutdown,
            &failed,
        );
        supervise(
            &tasks,
            "call-ingest",
            ingest.run(shutdown.clone()),
            &shutdown,
            &failed,
        );
        supervise(
            &tasks,
            "transcription",
            transcription::run(
                common.clone(),
                config.exolve.clone(),
                config.transcription.clone(),
                clock.clone(),
                shutdown.clone(),
            ),
            &shutdown,
            &failed,
        );
        supervise(
            &tasks,
            "consent-analyzer",
            consent_analyzer::service::run(
                common.clone(),
                config.consent_analyzer.clone(),
                shutdown.clone(),
            ),
            &shutdown,
            &failed,
        );
        supervise(
            &tasks,
            "reminder-scheduler",
            scheduler.run(shutdown.clone()),
            &shutdown,
            &failed,
        );
        supervise(
            &tasks,
            "sms-sender",
            sms_sender::run(
                common.clone(),
                config.exolve.clone(),
                config.sms_sender.clone(),
                clock.clone(),
                shutdown.clone(),
            ),
            &shutdown,
            &failed,
        );
        supervise(
            &tasks,
            "notifier",
            notifier::run(common.clone(), config.notifier.clone(), shutdown.clone()),
            &shutdown,
            &failed,
        );
        supervise(
            &tasks,
            "lead-dialer",
            dialer.run(shutdown.clone()),
            &shutdown,
            &failed,
        );
        supervise(
            &tasks,
            "call-router",
            router.run(shutdown.clone()),
            &shutdown,
            &failed,
        );
        supervise(
            &tasks,
            "console",
            console.run(shutdown.clone()),
            &shutdown,
            &failed,
        );
        supervise(
            &tasks,
            "analytics",
            analytics::run(common, config.analytics.clone(), shutdown.clone()),
            &shutdown,
            &failed,
        );
        tasks.close();
        Ok(Self {
            addresses,
            simulator,
            tasks,
            failed,
        })
    }

    /// Waits until every service has stopped; an error if one failed.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.tasks.wait().await;
        if self.failed.is_cancelled() {
            anyhow::bail!("a service failed; see the log above");
        }
        Ok(())
    }
}

/// `callflow up`: starts everything, prints where it serves, runs until
/// `shutdown`.
pub async fn up(config: UpConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let common = config.common.clone();
    let (sms_http, notifier_http, analytics_http) = (
        config.sms_sender.http_addr,
        config.notifier.http_addr,
        config.analytics.http_addr,
    );
    let system = System::start(config, kit::clock::system(), shutdown).await?;
    let a = &system.addresses;
    println!("callflow is up:");
    println!("  event store gRPC        http://{}", a.event_store_grpc);
    println!(
        "  event store ops         http://{}/readyz  /metrics",
        a.event_store_http
    );
    println!(
        "  call-ingest webhooks    http://{}/webhooks/exolve/call-events",
        a.call_ingest_http
    );
    println!(
        "                          http://{}/webhooks/generic/call-completed",
        a.call_ingest_http
    );
    println!(
        "                          http://{}/webhooks/transcripts",
        a.call_ingest_http
    );
    println!(
        "                          http://{}/webhooks/leads",
        a.call_ingest_http
    );
    println!(
        "  call-ingest ops         http://{}/readyz  /metrics",
        a.call_ingest_http
    );
    println!(
        "  transcription           consuming {}.call.CallCompleted",
        common.subject_prefix
    );
    println!(
        "  consent-analyzer        consuming {}.call.TranscriptReady",
        common.subject_prefix
    );
    println!(
        "  reminder-scheduler      gRPC http://{}  ops http://{}/readyz",
        a.reminder_grpc, a.reminder_http
    );
    println!(
        "  sms-sender              consuming {}.reminder.ReminderDue  ops http://{sms_http}/readyz",
        common.subject_prefix
    );
    println!("  notifier                ops http://{notifier_http}/readyz");
    println!(
        "  lead-dialer             call results http://{}/webhooks/calls/{{voximplant,exolve}}",
        a.lead_http
    );
    println!(
        "                          dashboard http://{}/dashboard/summary  /dashboard/manual-queue  gRPC http://{}",
        a.lead_http, a.lead_grpc
    );
    println!(
        "  call-router             PBX http://{}/pbx/v1/calls  /pbx/exolve/{{line}}  stats /stats/daily",
        a.router_http
    );
    println!(
        "                          gRPC http://{} (Directory, Masking, RoutingStats)",
        a.router_grpc
    );
    println!(
        "  console                 http://{}  (sign in: see README, \"Operations console\")",
        a.console_http
    );
    println!(
        "  analytics               schema analytics (view analytics.funnel)  ops http://{analytics_http}/readyz"
    );
    match a.simulator {
        Some(sim) => println!(
            "  provider simulator      http://{sim}  (Exolve, Telegram, Slack, Bitrix24, Voximplant; /_sim/... to script it)"
        ),
        None => println!(
            "  provider simulator      off: providers are reached at their configured URLs"
        ),
    }
    println!("  Postgres                {}", redact(&common.database_url));
    println!(
        "  NATS                    {} (stream {}, subjects {}.>)",
        common.nats_url, common.jetstream_stream, common.subject_prefix
    );
    println!("Ctrl-C stops everything.");
    system.wait().await
}

/// Runs one service; if it fails, everything stops.
fn supervise<E: std::fmt::Display + Send + 'static>(
    tasks: &TaskTracker,
    name: &'static str,
    service: impl Future<Output = Result<(), E>> + Send + 'static,
    shutdown: &CancellationToken,
    failed: &CancellationToken,
) {
    let (shutdown, failed) = (shutdown.clone(), failed.clone());
    tasks.spawn(async move {
        if let Err(error) = service.await {
            tracing::error!(service = name, %error, "service failed; stopping the others");
            failed.cancel();
            shutdown.cancel();
        }
    });
}

/// A database URL without its password, for printing.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_not_printed() {
        assert_eq!(
            super::redact("postgres://app:s3cret@db:5432/callflow"),
            "postgres://app:***@db:5432/callflow"
        );
        assert_eq!(
            super::redact("postgres://postgres@127.0.0.1/callflow"),
            "postgres://postgres@127.0.0.1/callflow"
        );
    }
}
