//! reminder-scheduler: durable reminders, kept exactly once at a decent
//! local hour, and durable timers for other services.
//!
//! An agreed consent schedules a reminder ([`intake`]) at the call time plus
//! the agreed period in the client's time zone ([`zones`]), moved out of
//! quiet hours with jitter ([`placement`]). An opt-out cancels every pending
//! reminder of the contact. Other services (the lead dialer) set timers over
//! gRPC ([`timer_api`], `callflow.timers.v1.TimerService`) and hear
//! `TimerFired` on JetStream when they come due.
//!
//! Reminders and timers are event streams (`reminder-<id>`, `timer-<id>`);
//! this service's Postgres schema `scheduler` holds their projection
//! ([`projection`]: `scheduler.reminders`, `scheduler.timers`), which one
//! loop claims and fires ([`timers`]) and the gRPC APIs read and change
//! ([`api`], [`timer_api`]; both served on the same address).

pub mod api;
pub mod intake;
pub mod placement;
pub mod projection;
pub mod timer_api;
pub mod timers;
pub mod zones;

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
use kit::health::Health;
use kit::local_time::SendWindow;
use kit::proto::events::v1::{ConsentAnalyzed, ContactOptedOut};
use kit::proto::reminders::v1::reminder_service_server::ReminderServiceServer;
use kit::proto::timers::v1::timer_service_server::TimerServiceServer;

/// Name of the service (consumers, producer).
pub const NAME: &str = "reminder-scheduler";

/// The service's Postgres schema.
pub const SCHEMA: &str = "scheduler";

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "reminders",
        sql: include_str!("../migrations/0001_reminders.sql"),
    },
    Migration {
        version: 2,
        name: "contact_stream",
        sql: include_str!("../migrations/0002_contact_stream.sql"),
    },
    Migration {
        version: 3,
        name: "timers",
        sql: include_str!("../migrations/0003_timers.sql"),
    },
];

/// Settings of the scheduler (besides [`Common`]).
#[derive(clap::Args, Debug, Clone)]
#[group(id = "reminder_scheduler")]
#[command(next_help_heading = "reminder-scheduler")]
pub struct Config {
    /// Address of the gRPC API (ReminderService and TimerService).
    #[arg(
        id = "reminder_grpc_addr",
        long = "reminder-grpc-addr",
        env = "REMINDER_GRPC_ADDR",
        default_value = "127.0.0.1:50061"
    )]
    pub grpc_addr: SocketAddr,

    /// Address of /healthz, /readyz and /metrics.
    #[arg(
        id = "reminder_http_addr",
        long = "reminder-http-addr",
        env = "REMINDER_HTTP_ADDR",
        default_value = "127.0.0.1:9102"
    )]
    pub http_addr: SocketAddr,

    /// Local hours in which a client may be reminded (quiet hours outside).
    #[arg(
        id = "reminder_send_window",
        long = "reminder-send-window",
        env = "REMINDER_SEND_WINDOW",
        default_value = "09:00-21:00"
    )]
    pub send_window: SendWindow,

    /// Time zone of clients whose zone is unknown.
    #[arg(
        id = "reminder_default_time_zone",
        long = "reminder-default-time-zone",
        env = "REMINDER_DEFAULT_TIME_ZONE",
        default_value = "Europe/Moscow"
    )]
    pub default_time_zone: String,

    /// Reminders moved to the window's opening are spread over this long.
    #[arg(id = "reminder_jitter", long = "reminder-jitter", env = "REMINDER_JITTER", default_value = "30m", value_parser = parse_duration)]
    pub jitter: Duration,

    /// A reminder due longer ago than this (the service was down) expires
    /// instead of firing.
    #[arg(id = "reminder_max_lateness", long = "reminder-max-lateness", env = "REMINDER_MAX_LATENESS", default_value = "72h", value_parser = parse_duration)]
    pub max_lateness: Duration,

    /// Text of reminders scheduled from consents made in English.
    #[arg(
        id = "reminder_text_en",
        long = "reminder-text-en",
        env = "REMINDER_TEXT_EN",
        default_value = "Hello! As agreed, this is a reminder about our conversation. Reply to this message or call us whenever it suits you."
    )]
    pub text_en: String,

    /// Text of reminders scheduled from consents (any other language).
    #[arg(
        id = "reminder_text",
        long = "reminder-text",
        env = "REMINDER_TEXT",
        default_value = "Здравствуйте! Как договаривались, напоминаем о нашем разговоре. Если удобно, ответьте на это сообщение или позвоните нам."
    )]
    pub text: String,

    /// Due reminders (and as many due timers) claimed per timer round.
    #[arg(
        id = "reminder_timer_batch",
        long = "reminder-timer-batch",
        env = "REMINDER_TIMER_BATCH",
        default_value_t = 500
    )]
    pub timer_batch: i64,

    /// Reminders and timers fired at once within a round.
    #[arg(
        id = "reminder_fire_concurrency",
        long = "reminder-fire-concurrency",
        env = "REMINDER_FIRE_CONCURRENCY",
        default_value_t = 64
    )]
    pub fire_concurrency: usize,

    /// How often the timers look for due reminders and timers when none was
    /// due.
    #[arg(id = "reminder_poll", long = "reminder-poll", env = "REMINDER_POLL", default_value = "200ms", value_parser = parse_duration)]
    pub poll: Duration,
}

/// Errors that stop the scheduler.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Db(#[from] kit::db::DbError),
    #[error(transparent)]
    Bus(#[from] kit::bus::BusError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("HTTP server: {0}")]
    Http(std::io::Error),
    #[error("rebuild: {0}")]
    Rebuild(Box<dyn std::error::Error + Send + Sync>),
}

/// The scheduler with its listeners bound and schema migrated.
pub struct Scheduler {
    common: Common,
    config: Config,
    clock: SharedClock,
    grpc: TcpListener,
    http: TcpListener,
    default_zone: TimeZone,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen { addr, source })
}

impl Scheduler {
    pub async fn build(common: Common, config: Config, clock: SharedClock) -> Result<Self, Error> {
        let default_zone = TimeZone::get(&config.default_time_zone).map_err(|_| {
            Error::Config(format!(
                "REMINDER_DEFAULT_TIME_ZONE `{}` is not an IANA time zone",
                config.default_time_zone
            ))
        })?;
        if config.text.trim().is_empty() {
            return Err(Error::Config("REMINDER_TEXT is empty".into()));
        }
        let mut client = kit::db::connect(&common.database_url).await?;
        kit::db::migrate(&mut client, SCHEMA, MIGRATIONS).await?;
        let grpc = bind(config.grpc_addr).await?;
        let http = bind(config.http_addr).await?;
        Ok(Self {
            common,
            config,
            clock,
            grpc,
            http,
            default_zone,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.local_addr().expect("bound listener")
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().expect("bound listener")
    }

    /// Runs the consumers, the projector, the timers and the API until
    /// `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let health = Health::expecting(&["projection"]);
        let pool = kit::db::pool(&self.common.database_url, 8)?;
        let store = self
            .common
            .event_store(NAME)
            .map_err(|e| Error::Config(format!("EVENT_STORE_URL: {e}")))?;
        let bus = Bus::connect(&self.common, NAME).await?;
        let placement = placement::Placement {
            window: self.config.send_window,
            jitter: self.config.jitter,
        };
        let text: Arc<str> = self.config.text.clone().into();
        let tasks = TaskTracker::new();

        tasks.spawn(kit::projection::follow(
            pool.clone(),
            store.clone(),
            Arc::new(projection::ReadModel {
                contact_salt: self.common.contact_salt.clone(),
            }),
            health.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(timers::run(
            pool.clone(),
            store.clone(),
            self.clock.clone(),
            timers::TimerConfig {
                batch: self.config.timer_batch,
                concurrency: self.config.fire_concurrency,
                poll: self.config.poll,
                max_lateness: self.config.max_lateness,
            },
            shutdown.clone(),
        ));
        let contacts = kit::contacts::Contacts::new(store.clone(), &self.common.contact_salt);
        let consents = intake::FromConsents {
            contacts: contacts.clone(),
            placement,
            default_zone: self.default_zone.clone(),
            text: text.clone(),
            text_en: self.config.text_en.clone().into(),
        };
        tasks.spawn(consumer::run(
            bus.clone(),
            store.clone(),
            ConsumerConfig::new(
                format!("{NAME}-consents"),
                bus.subject("call", kit::events::type_of::<ConsentAnalyzed>()),
            ),
            Arc::new(consents),
            shutdown.clone(),
        ));
        tasks.spawn(consumer::run(
            bus.clone(),
            store.clone(),
            ConsumerConfig::new(
                format!("{NAME}-opt-outs"),
                bus.subject("contact", kit::events::type_of::<ContactOptedOut>()),
            ),
            Arc::new(intake::OnOptOut { pool: pool.clone() }),
            shutdown.clone(),
        ));

        let timer_api = timer_api::TimerApi {
            pool: pool.clone(),
            store: store.clone(),
            contact_salt: self.common.contact_salt.clone(),
            clock: self.clock.clone(),
        };
        let api = api::Api {
            pool,
            store,
            contacts,
            contact_salt: self.common.contact_salt.clone(),
            clock: self.clock.clone(),
            placement,
            default_zone: self.default_zone.clone(),
            text,
        };
        let grpc = tonic::transport::Server::builder()
            .add_service(ReminderServiceServer::new(api))
            .add_service(TimerServiceServer::new(timer_api))
            .serve_with_incoming_shutdown(
                TcpListenerStream::new(self.grpc),
                shutdown.clone().cancelled_owned(),
            );
        let http =
            kit::health::serve_http(self.http, kit::health::routes(health), shutdown.clone());
        tracing::info!(grpc = %self.config.grpc_addr, "reminder scheduler serving");
        let (grpc, http) = tokio::join!(grpc, http);
        tasks.close();
        tasks.wait().await;
        grpc?;
        http.map_err(Error::Http)?;
        Ok(())
    }
}

/// Builds and runs the scheduler until `shutdown`.
pub async fn run(
    common: Common,
    config: Config,
    clock: SharedClock,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    Scheduler::build(common, config, clock)
        .await?
        .run(shutdown)
        .await
}

/// Drops the scheduler's projection and replays it from the log (see
/// [`kit::projection::rebuild`]); safe while the service runs.
pub async fn rebuild(common: &Common) -> Result<kit::projection::Rebuilt, Error> {
    let mut client = kit::db::connect(&common.database_url).await?;
    kit::db::migrate(&mut client, SCHEMA, MIGRATIONS).await?;
    let pool = kit::db::pool(&common.database_url, 1)?;
    let store = common
        .event_store(NAME)
        .map_err(|e| Error::Config(format!("EVENT_STORE_URL: {e}")))?;
    let projector = projection::ReadModel {
        contact_salt: common.contact_salt.clone(),
    };
    kit::projection::rebuild(&pool, &store, &projector)
        .await
        .map_err(Error::Rebuild)
}
