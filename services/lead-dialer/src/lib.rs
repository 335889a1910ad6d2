//! lead-dialer: calls web leads back before the competition does.
//!
//! A lead (`LeadReceived`, recorded by call-ingest) is a stream
//! `lead-<id>`; everything this service does to it is an event on that
//! stream. Two things happen side by side:
//!
//! - [`crm`]: the lead is created in Bitrix24 with its partner, within the
//!   portal's rate limit, reconciled when an add goes unanswered, and
//!   updated with every call's result; a CRM that cannot take it puts the
//!   lead in the manual queue (and the call-back goes on).
//! - [`callback`]: the client is called in their working hours in their own
//!   time zone ([`lead`] folds the stream into where the lead stands and
//!   decides the next step). Outside the hours they get one SMS and the call
//!   waits for a durable timer of the reminder-scheduler ([`timers`]). Calls
//!   go through the [`dialer`] port (Voximplant or Exolve, answering-machine
//!   detection on); results come back by webhook ([`results`]). A human
//!   confirms the order, a machine gets an SMS, no answer is retried up to N
//!   times, a wrong number closes the lead, and a call with no result in
//!   time goes to the manual queue.
//!
//! [`dashboard`] is the partners' read model (a projection of the lead
//! streams) and [`api`] serves it over gRPC and JSON, with the one command
//! of the dashboard: an operator marks a lead of the manual queue handled
//! ([`handled`]).

pub mod api;
pub mod callback;
pub mod crm;
pub mod dashboard;
pub mod dialer;
pub mod dials;
pub mod handled;
pub mod lead;
pub mod results;
pub mod timers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use jiff::tz::TimeZone;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use kit::bus::Bus;
use kit::clock::SharedClock;
use kit::config::{Common, parse_duration};
use kit::consumer::{self, ConsumerConfig};
use kit::db::Migration;
use kit::exolve::ExolveConfig;
use kit::health::Health;
use kit::local_time::SendWindow;
use kit::proto::events::v1::{CallAttemptFinished, LeadReceived, TimerFired};
use kit::proto::leads::v1::lead_dashboard_server::LeadDashboardServer;

/// Name of the service (consumers, producer, timer owner).
pub const NAME: &str = "lead-dialer";
/// The service's Postgres schema.
pub const SCHEMA: &str = "lead_dialer";

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "dials",
        sql: include_str!("../migrations/0001_leads.sql"),
    },
    Migration {
        version: 2,
        name: "dashboard",
        sql: include_str!("../migrations/0002_dashboard.sql"),
    },
    Migration {
        version: 3,
        name: "manual_handled",
        sql: include_str!("../migrations/0003_manual_handled.sql"),
    },
];

/// Which provider places the calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DialerKind {
    Voximplant,
    Exolve,
}

/// Settings of the dialer (besides [`Common`] and [`ExolveConfig`]).
#[derive(clap::Args, Debug, Clone)]
#[group(id = "lead_dialer")]
#[command(next_help_heading = "lead-dialer")]
pub struct Config {
    /// Address of /healthz, /readyz, /metrics, the call-result webhooks
    /// (`/webhooks/calls/voximplant`, `/webhooks/calls/exolve`) and the
    /// dashboard's JSON (`/dashboard/...`).
    #[arg(
        id = "lead_http_addr",
        long = "lead-http-addr",
        env = "LEAD_HTTP_ADDR",
        default_value = "127.0.0.1:9107"
    )]
    pub http_addr: SocketAddr,

    /// Address of the gRPC dashboard (LeadDashboard).
    #[arg(
        id = "lead_grpc_addr",
        long = "lead-grpc-addr",
        env = "LEAD_GRPC_ADDR",
        default_value = "127.0.0.1:50071"
    )]
    pub grpc_addr: SocketAddr,

    /// The reminder-scheduler's gRPC address (its TimerService keeps the
    /// dialer's timers).
    #[arg(
        id = "lead_timers_url",
        long = "lead-timers-url",
        env = "LEAD_TIMERS_URL",
        default_value = "http://127.0.0.1:50061"
    )]
    pub timers_url: String,

    /// The client's local hours in which they may be called.
    #[arg(
        id = "lead_call_window",
        long = "lead-call-window",
        env = "LEAD_CALL_WINDOW",
        default_value = "09:00-21:00"
    )]
    pub call_window: SendWindow,

    /// Time zone of clients whose lead names none and whose number does not
    /// tell.
    #[arg(
        id = "lead_default_time_zone",
        long = "lead-default-time-zone",
        env = "LEAD_DEFAULT_TIME_ZONE",
        default_value = "Europe/Moscow"
    )]
    pub default_time_zone: String,

    /// Time zone of the dashboard's days.
    #[arg(
        id = "lead_dashboard_time_zone",
        long = "lead-dashboard-time-zone",
        env = "LEAD_DASHBOARD_TIME_ZONE",
        default_value = "Europe/Moscow"
    )]
    pub dashboard_time_zone: String,

    /// Wait after an unanswered call before the next one.
    #[arg(id = "lead_retry_after", long = "lead-retry-after", env = "LEAD_RETRY_AFTER", default_value = "30m", value_parser = parse_duration)]
    pub retry_after: Duration,

    /// Calls at most per lead.
    #[arg(
        id = "lead_max_attempts",
        long = "lead-max-attempts",
        env = "LEAD_MAX_ATTEMPTS",
        default_value_t = 5
    )]
    pub max_attempts: u32,

    /// How long a placed call may go without a result before the lead goes
    /// to the manual queue.
    #[arg(id = "lead_result_deadline", long = "lead-result-deadline", env = "LEAD_RESULT_DEADLINE", default_value = "15m", value_parser = parse_duration)]
    pub result_deadline: Duration,

    /// The provider that places calls.
    #[arg(
        id = "lead_dialer_provider",
        long = "lead-dialer",
        env = "LEAD_DIALER",
        value_enum,
        default_value = "voximplant"
    )]
    pub dialer: DialerKind,

    /// Voximplant Management API base URL.
    #[arg(
        id = "voximplant_url",
        long = "voximplant-url",
        env = "VOXIMPLANT_API_URL",
        default_value = "http://127.0.0.1:9900"
    )]
    pub voximplant_url: String,

    /// Voximplant service-account JWT (Authorization: Bearer).
    #[arg(
        id = "voximplant_token",
        long = "voximplant-token",
        env = "VOXIMPLANT_TOKEN",
        default_value = "sim-voximplant-jwt",
        hide_env_values = true
    )]
    pub voximplant_token: String,

    /// Name of the Voximplant rule whose scenario makes the call.
    #[arg(
        id = "voximplant_rule",
        long = "voximplant-rule",
        env = "VOXIMPLANT_RULE",
        default_value = "lead-callback"
    )]
    pub voximplant_rule: String,

    /// The Exolve number calls are made from (digits).
    #[arg(
        id = "lead_exolve_source",
        long = "lead-exolve-source",
        env = "LEAD_EXOLVE_SOURCE",
        default_value = "74951234567"
    )]
    pub exolve_source: String,

    /// What the robot says (Exolve's text-to-speech; Voximplant's scenario
    /// has its own): `{name}`, `{order_id}`, `{site}` are filled in.
    #[arg(
        id = "lead_call_text",
        long = "lead-call-text",
        env = "LEAD_CALL_TEXT",
        default_value = "Здравствуйте, {name}! Ваш заказ {order_id} на сайте {site} принят. Оставайтесь на линии, чтобы подтвердить его."
    )]
    pub call_text: String,

    /// Text-to-speech voice.
    #[arg(
        id = "lead_tts_voice",
        long = "lead-tts-voice",
        env = "LEAD_TTS_VOICE",
        default_value = "alena"
    )]
    pub voice: String,

    /// SMS to a lead outside working hours; `{call_at}` is the planned call,
    /// in the client's time.
    #[arg(
        id = "lead_night_sms",
        long = "lead-night-sms",
        env = "LEAD_NIGHT_SMS",
        default_value = "Заказ {order_id} принят. Мы позвоним вам в рабочее время: {call_at}."
    )]
    pub night_sms: String,

    /// SMS after the client confirmed on the call.
    #[arg(
        id = "lead_confirmed_sms",
        long = "lead-confirmed-sms",
        env = "LEAD_CONFIRMED_SMS",
        default_value = "Заказ {order_id} подтверждён. Спасибо!"
    )]
    pub confirmed_sms: String,

    /// SMS after an answering machine took the call.
    #[arg(
        id = "lead_machine_sms",
        long = "lead-machine-sms",
        env = "LEAD_MACHINE_SMS",
        default_value = "Заказ {order_id} принят. Мы не дозвонились до вас; ответьте на это SMS или позвоните нам."
    )]
    pub machine_sms: String,

    /// Bearer token the call-result webhooks must carry; empty: none.
    #[arg(
        id = "lead_webhook_token",
        long = "lead-webhook-token",
        env = "LEAD_WEBHOOK_TOKEN",
        default_value = "",
        hide_env_values = true
    )]
    pub webhook_token: String,

    /// Bitrix24 inbound-webhook URL: `https://<portal>/rest/<user>/<secret>`.
    #[arg(
        id = "bitrix_webhook_url",
        long = "bitrix-webhook-url",
        env = "BITRIX_WEBHOOK_URL",
        default_value = "http://127.0.0.1:9900/rest/1/sim-bitrix-secret",
        hide_env_values = true
    )]
    pub bitrix_url: String,

    /// Bitrix24 requests per second (the portal's refill rate).
    #[arg(
        id = "bitrix_rate",
        long = "bitrix-rate",
        env = "BITRIX_RATE",
        default_value_t = 2.0
    )]
    pub bitrix_rate: f64,

    /// Bitrix24 burst (the portal's bucket).
    #[arg(
        id = "bitrix_burst",
        long = "bitrix-burst",
        env = "BITRIX_BURST",
        default_value_t = 50
    )]
    pub bitrix_burst: u32,

    /// Time limit of one Bitrix24 request.
    #[arg(id = "bitrix_timeout", long = "bitrix-timeout", env = "BITRIX_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub bitrix_timeout: Duration,

    /// The company field holding a partner's `utm_source`.
    #[arg(
        id = "bitrix_partner_field",
        long = "bitrix-partner-field",
        env = "BITRIX_PARTNER_FIELD",
        default_value = "UF_CRM_PARTNER_CODE"
    )]
    pub bitrix_partner_field: String,

    /// Tries of a CRM request that fails before the lead goes to the
    /// manual queue.
    #[arg(
        id = "bitrix_attempts",
        long = "bitrix-attempts",
        env = "BITRIX_ATTEMPTS",
        default_value_t = 3
    )]
    pub bitrix_attempts: u32,

    /// Leads handled at once (per consumer).
    #[arg(
        id = "lead_concurrency",
        long = "lead-concurrency",
        env = "LEAD_CONCURRENCY",
        default_value_t = 32
    )]
    pub concurrency: usize,
}

/// Errors that stop the dialer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Db(#[from] kit::db::DbError),
    #[error(transparent)]
    Bus(#[from] kit::bus::BusError),
    #[error(transparent)]
    Consumer(#[from] consumer::ConsumerError),
    #[error(transparent)]
    Listen(#[from] kit::health::BindError),
    #[error("HTTP server: {0}")]
    Http(std::io::Error),
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("rebuild: {0}")]
    Rebuild(Box<dyn std::error::Error + Send + Sync>),
}

fn zone(name: &str, setting: &str) -> Result<TimeZone, Error> {
    TimeZone::get(name)
        .map_err(|_| Error::Config(format!("{setting} `{name}` is not an IANA time zone")))
}

/// The dialer, migrated and listening, not yet running (tests bind port 0
/// and ask for the addresses).
pub struct LeadDialer {
    common: Common,
    exolve: ExolveConfig,
    config: Config,
    clock: SharedClock,
    http: TcpListener,
    grpc: TcpListener,
}

impl LeadDialer {
    pub async fn bind(
        common: Common,
        exolve: ExolveConfig,
        config: Config,
        clock: SharedClock,
    ) -> Result<Self, Error> {
        zone(&config.default_time_zone, "LEAD_DEFAULT_TIME_ZONE")?;
        zone(&config.dashboard_time_zone, "LEAD_DASHBOARD_TIME_ZONE")?;
        if config.max_attempts == 0 {
            return Err(Error::Config("LEAD_MAX_ATTEMPTS must be at least 1".into()));
        }
        if config.bitrix_rate.is_nan() || config.bitrix_rate <= 0.0 || config.bitrix_burst == 0 {
            return Err(Error::Config(
                "BITRIX_RATE and BITRIX_BURST must be positive".into(),
            ));
        }
        migrate(&common).await?;
        let http = kit::health::bind(config.http_addr).await?;
        let grpc = kit::health::bind(config.grpc_addr).await?;
        Ok(Self {
            common,
            exolve,
            config,
            clock,
            http,
            grpc,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().expect("bound listener")
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.local_addr().expect("bound listener")
    }

    /// Runs the consumers, the dashboard projector, the webhooks and the
    /// APIs until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let config = self.config;
        let default_zone = zone(&config.default_time_zone, "LEAD_DEFAULT_TIME_ZONE")?;
        let dashboard_zone = zone(&config.dashboard_time_zone, "LEAD_DASHBOARD_TIME_ZONE")?;
        let health = Health::expecting(&["projection"]);
        let pool = kit::db::pool(&self.common.database_url, 8)?;
        let store = self
            .common
            .event_store(NAME)
            .map_err(|e| Error::Config(format!("EVENT_STORE_URL: {e}")))?;
        let bus = Bus::connect(&self.common, NAME).await?;
        let timers = timers::Timers::connect_lazy(&config.timers_url)
            .map_err(|e| Error::Config(format!("LEAD_TIMERS_URL: {e}")))?;
        let exolve = self.exolve.client();
        let dialer: Arc<dyn dialer::Dialer> = match config.dialer {
            DialerKind::Voximplant => Arc::new(dialer::Voximplant::new(
                &config.voximplant_url,
                &config.voximplant_token,
                &config.voximplant_rule,
                self.exolve.timeout,
            )),
            DialerKind::Exolve => Arc::new(dialer::Exolve {
                client: exolve.clone(),
                source: config.exolve_source.clone(),
                voice: config.voice.clone(),
                text: config.call_text.clone(),
            }),
        };
        // Answering-machine detection is a setting of the calling number on
        // Exolve; Voximplant's scenario runs it on every call.
        if config.dialer == DialerKind::Exolve
            && let Err(error) = exolve.set_amd(&config.exolve_source, true).await
        {
            tracing::warn!(%error, "cannot switch on answering-machine detection; calls go on without it");
        }
        let callback = Arc::new(callback::Callback {
            store: store.clone(),
            pool: pool.clone(),
            clock: self.clock.clone(),
            dialer,
            timers,
            rules: lead::Rules {
                window: config.call_window,
                default_zone,
                retry_after: config.retry_after,
                max_attempts: config.max_attempts,
                result_deadline: config.result_deadline,
            },
            texts: callback::Texts {
                night_sms: config.night_sms.clone(),
                confirmed_sms: config.confirmed_sms.clone(),
                machine_sms: config.machine_sms.clone(),
            },
        });
        let crm = Arc::new(crm::CrmSync {
            bitrix: crm::Bitrix::new(
                &config.bitrix_url,
                config.bitrix_timeout,
                kit::rate_limit::TokenBucket::new(config.bitrix_rate, config.bitrix_burst as f64),
            ),
            store: store.clone(),
            pool: pool.clone(),
            partner_field: config.bitrix_partner_field.clone(),
            attempts: config.bitrix_attempts,
            partners: Default::default(),
        });

        let tasks = TaskTracker::new();
        tasks.spawn(kit::projection::follow(
            pool.clone(),
            store.clone(),
            Arc::new(dashboard::Dashboard::new(
                dashboard_zone.clone(),
                self.common.contact_salt.clone(),
            )),
            health.clone(),
            shutdown.clone(),
        ));
        let results = results::Results {
            store: store.clone(),
            pool: pool.clone(),
            clock: self.clock.clone(),
            token: (!config.webhook_token.is_empty()).then(|| config.webhook_token.clone()),
        };
        let queries = api::Queries {
            pool: pool.clone(),
            store: store.clone(),
            zone: dashboard_zone,
            clock: self.clock.clone(),
        };
        let app = kit::health::routes(health)
            .merge(results::routes(results))
            .merge(api::routes(queries.clone()));
        let http = kit::health::serve_http(self.http, app, shutdown.clone());
        let grpc = tonic::transport::Server::builder()
            .add_service(LeadDashboardServer::new(queries))
            .serve_with_incoming_shutdown(
                TcpListenerStream::new(self.grpc),
                shutdown.clone().cancelled_owned(),
            );

        let lead_events = bus.subject("lead", ">");
        let consumer = |name: String, subject: String| ConsumerConfig {
            concurrency: config.concurrency,
            ..ConsumerConfig::new(name, subject)
        };
        // The call-back moves on two event types only; a consumer each
        // (NATS 2.9: one filter per consumer) spares it every other event.
        let consumers = async {
            tokio::try_join!(
                consumer::run(
                    bus.clone(),
                    store.clone(),
                    consumer(
                        NAME.into(),
                        bus.subject("lead", kit::events::type_of::<LeadReceived>()),
                    ),
                    callback.clone(),
                    shutdown.clone(),
                ),
                consumer::run(
                    bus.clone(),
                    store.clone(),
                    consumer(
                        format!("{NAME}-results"),
                        bus.subject("lead", kit::events::type_of::<CallAttemptFinished>()),
                    ),
                    callback.clone(),
                    shutdown.clone(),
                ),
                consumer::run(
                    bus.clone(),
                    store.clone(),
                    consumer(
                        format!("{NAME}-timers"),
                        bus.subject("timer", kit::events::type_of::<TimerFired>()),
                    ),
                    Arc::new(callback::OnTimer(callback.clone())),
                    shutdown.clone(),
                ),
                consumer::run(
                    bus.clone(),
                    store.clone(),
                    consumer(format!("{NAME}-crm"), lead_events.clone()),
                    crm,
                    shutdown.clone(),
                ),
            )
        };
        tracing::info!(http = %config.http_addr, grpc = %config.grpc_addr, dialer = ?config.dialer, "lead dialer serving");
        let (consumers, http, grpc) = tokio::join!(consumers, http, grpc);
        tasks.close();
        tasks.wait().await;
        consumers?;
        http.map_err(Error::Http)?;
        grpc?;
        Ok(())
    }
}

async fn migrate(common: &Common) -> Result<(), Error> {
    let mut client = kit::db::connect(&common.database_url).await?;
    kit::db::migrate(&mut client, SCHEMA, MIGRATIONS).await?;
    Ok(())
}

/// Builds and runs the dialer until `shutdown`.
pub async fn run(
    common: Common,
    exolve: ExolveConfig,
    config: Config,
    clock: SharedClock,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    LeadDialer::bind(common, exolve, config, clock)
        .await?
        .run(shutdown)
        .await
}

/// Drops the dashboard's read model and replays it from the log (see
/// [`kit::projection::rebuild`]); safe while the service runs.
pub async fn rebuild(common: &Common, config: &Config) -> Result<kit::projection::Rebuilt, Error> {
    migrate(common).await?;
    let pool = kit::db::pool(&common.database_url, 1)?;
    let store = common
        .event_store(NAME)
        .map_err(|e| Error::Config(format!("EVENT_STORE_URL: {e}")))?;
    let dashboard = dashboard::Dashboard::new(
        zone(&config.dashboard_time_zone, "LEAD_DASHBOARD_TIME_ZONE")?,
        common.contact_salt.clone(),
    );
    kit::projection::rebuild(&pool, &store, &dashboard)
        .await
        .map_err(Error::Rebuild)
}
