//! sms-sender: sends due reminders and ordered SMS (`SmsOrdered`, from the
//! lead call-back) through MTS Exolve, exactly once,
//! never to someone who opted out and never in their quiet hours
//! ([`sending`]), counting parts by encoding ([`segments`]), and follows
//! delivery by polling the provider ([`delivery`]).

pub mod delivery;
pub mod segments;
pub mod sending;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use jiff::tz::TimeZone;
use tokio::net::TcpListener;
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
use kit::proto::events::v1::{ReminderDue, SmsOrdered};

/// Name of the service (consumer, producer).
pub const NAME: &str = "sms-sender";
/// The service's Postgres schema.
pub const SCHEMA: &str = "sms";

pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "awaiting_status",
    sql: include_str!("../migrations/0001_awaiting_status.sql"),
}];

/// Settings of the sender (besides [`Common`] and [`ExolveConfig`]).
#[derive(clap::Args, Debug, Clone)]
#[group(id = "sms_sender")]
#[command(next_help_heading = "sms-sender")]
pub struct Config {
    /// Address of /healthz, /readyz and /metrics.
    #[arg(
        id = "sms_http_addr",
        long = "sms-http-addr",
        env = "SMS_HTTP_ADDR",
        default_value = "127.0.0.1:9103"
    )]
    pub http_addr: SocketAddr,

    /// Sender of the SMS: a number of the application or an alpha name.
    #[arg(
        id = "sms_sender_name",
        long = "sms-sender-name",
        env = "SMS_SENDER_NAME",
        default_value = "callflow"
    )]
    pub sender: String,

    /// Local hours in which SMS may be sent (quiet hours outside).
    #[arg(
        id = "sms_send_window",
        long = "sms-send-window",
        env = "SMS_SEND_WINDOW",
        default_value = "09:00-21:00"
    )]
    pub send_window: SendWindow,

    /// Time zone of recipients whose zone is unknown.
    #[arg(
        id = "sms_default_time_zone",
        long = "sms-default-time-zone",
        env = "SMS_DEFAULT_TIME_ZONE",
        default_value = "Europe/Moscow"
    )]
    pub default_time_zone: String,

    /// Attempts before an SMS is given up.
    #[arg(
        id = "sms_max_attempts",
        long = "sms-max-attempts",
        env = "SMS_MAX_ATTEMPTS",
        default_value_t = 5
    )]
    pub max_attempts: u32,

    /// Cap of the first retry's wait; doubles per attempt (full jitter).
    #[arg(id = "sms_retry_base", long = "sms-retry-base", env = "SMS_RETRY_BASE", default_value = "2s", value_parser = parse_duration)]
    pub retry_base: Duration,

    /// Longest wait between attempts.
    #[arg(id = "sms_retry_max", long = "sms-retry-max", env = "SMS_RETRY_MAX", default_value = "5m", value_parser = parse_duration)]
    pub retry_max: Duration,

    /// How long an attempt without an answer waits for the provider's list
    /// before it counts as not sent.
    #[arg(id = "sms_reconcile_after", long = "sms-reconcile-after", env = "SMS_RECONCILE_AFTER", default_value = "30s", value_parser = parse_duration)]
    pub reconcile_after: Duration,

    /// Longest wait before looking again at a recipient in quiet hours
    /// (the wait runs in real time, so the clock may have moved meanwhile).
    #[arg(id = "sms_quiet_recheck", long = "sms-quiet-recheck", env = "SMS_QUIET_RECHECK", default_value = "5m", value_parser = parse_duration)]
    pub quiet_recheck: Duration,

    /// How often delivery reports are polled.
    #[arg(id = "sms_status_poll", long = "sms-status-poll", env = "SMS_STATUS_POLL", default_value = "10s", value_parser = parse_duration)]
    pub status_poll: Duration,

    /// How long to wait for a delivery report at most.
    #[arg(id = "sms_status_give_up", long = "sms-status-give-up", env = "SMS_STATUS_GIVE_UP", default_value = "72h", value_parser = parse_duration)]
    pub status_give_up: Duration,

    /// SMS handled at once.
    #[arg(
        id = "sms_concurrency",
        long = "sms-concurrency",
        env = "SMS_CONCURRENCY",
        default_value_t = 16
    )]
    pub concurrency: usize,
}

/// Errors that stop the sender.
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
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP server: {0}")]
    Http(std::io::Error),
}

/// Runs the sender until `shutdown`.
pub async fn run(
    common: Common,
    exolve: ExolveConfig,
    config: Config,
    clock: SharedClock,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let default_zone = TimeZone::get(&config.default_time_zone).map_err(|_| {
        Error::Config(format!(
            "SMS_DEFAULT_TIME_ZONE `{}` is not an IANA time zone",
            config.default_time_zone
        ))
    })?;
    if config.max_attempts == 0 {
        return Err(Error::Config("SMS_MAX_ATTEMPTS must be at least 1".into()));
    }
    let mut client = kit::db::connect(&common.database_url).await?;
    kit::db::migrate(&mut client, SCHEMA, MIGRATIONS).await?;
    let http = TcpListener::bind(config.http_addr)
        .await
        .map_err(|source| Error::Listen {
            addr: config.http_addr,
            source,
        })?;
    let pool = kit::db::pool(&common.database_url, 4)?;
    let store = common
        .event_store(NAME)
        .map_err(|e| Error::Config(format!("EVENT_STORE_URL: {e}")))?;
    let bus = Bus::connect(&common, NAME).await?;
    let exolve = exolve.client();
    let tasks = TaskTracker::new();
    tasks.spawn(delivery::run(
        pool.clone(),
        store.clone(),
        exolve.clone(),
        clock.clone(),
        delivery::PollConfig {
            every: config.status_poll,
            give_up_after: config.status_give_up,
            batch: 100,
        },
        shutdown.clone(),
    ));
    tasks.spawn(kit::health::serve_http(
        http,
        kit::health::routes(Health::new()),
        shutdown.clone(),
    ));
    let sender = sending::Sender {
        exolve,
        contacts: kit::contacts::Contacts::new(store.clone(), &common.contact_salt),
        store: store.clone(),
        pool,
        clock,
        rules: sending::Rules {
            sender: config.sender.clone(),
            window: config.send_window,
            default_zone,
            max_attempts: config.max_attempts,
            retry_base: config.retry_base,
            retry_max: config.retry_max,
            reconcile_after: config.reconcile_after,
            quiet_recheck: config.quiet_recheck,
        },
    };
    let reminders = ConsumerConfig {
        concurrency: config.concurrency,
        ..ConsumerConfig::new(
            NAME,
            bus.subject("reminder", kit::events::type_of::<ReminderDue>()),
        )
    };
    // NATS 2.9 gives a consumer one subject filter: orders (from any
    // stream) have their own durable consumer.
    let orders = ConsumerConfig {
        concurrency: config.concurrency,
        ..ConsumerConfig::new(
            format!("{NAME}-orders"),
            bus.subject("*", kit::events::type_of::<SmsOrdered>()),
        )
    };
    let sender = Arc::new(sender);
    let (reminders, orders) = tokio::join!(
        consumer::run(
            bus.clone(),
            store.clone(),
            reminders,
            sender.clone(),
            shutdown.clone()
        ),
        consumer::run(bus, store, orders, sender, shutdown),
    );
    tasks.close();
    tasks.wait().await;
    reminders?;
    orders?;
    Ok(())
}
