//! console: the web pages managers and operators open instead of reading
//! event logs.
//!
//! Server-rendered HTML with a little JavaScript, so nothing needs building
//! to run it. Pages read the read models (the analysts' funnel, the lead
//! dashboard, the routing statistics, the scheduler's reminders) and the
//! event-store API; changes go through the owning service's API or, for
//! dead letters, as request events in the log — every one naming the
//! operator who made it. People sign in ([`auth`]); viewers see personal
//! data masked ([`personal`]) and cannot change anything.
//!
//! Pages: [`overview`], [`timeline`] (search and one flow's events),
//! [`reminders`], [`manual`] (the leads' manual queue), [`dead_letters`],
//! [`live`] (a tail of the log). [`index`] is the console's own projection
//! behind search and the dead-letter list.

pub mod auth;
pub mod charts;
pub mod dead_letters;
pub mod index;
pub mod live;
pub mod manual;
pub mod overview;
pub mod page;
pub mod personal;
pub mod reminders;
pub mod timeline;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

use kit::clock::SharedClock;
use kit::config::{Common, parse_duration};
use kit::db::Migration;
use kit::health::Health;
use kit::proto::leads::v1::lead_dashboard_client::LeadDashboardClient;
use kit::proto::reminders::v1::reminder_service_client::ReminderServiceClient;
use kit::proto::routing::v1::routing_stats_client::RoutingStatsClient;
use kit::store_client::EventStoreClient;

pub const NAME: &str = "console";
pub const SCHEMA: &str = "console";

pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "console",
    sql: include_str!("../migrations/0001_console.sql"),
}];

/// Settings of the console (besides [`Common`]).
#[derive(clap::Args, Debug, Clone)]
#[group(id = "console")]
#[command(next_help_heading = "console")]
pub struct Config {
    /// Address of the pages, /healthz, /readyz and /metrics.
    #[arg(
        id = "console_http_addr",
        long = "console-http-addr",
        env = "CONSOLE_HTTP_ADDR",
        default_value = "127.0.0.1:9110"
    )]
    pub http_addr: SocketAddr,

    /// Who may sign in: a TOML file of users with their role and password
    /// hash (`console hash-password` makes one; see infra/console/users.toml).
    #[arg(
        id = "console_users",
        long = "console-users",
        env = "CONSOLE_USERS",
        default_value = "infra/console/users.toml"
    )]
    pub users: PathBuf,

    /// How long a sign-in lasts.
    #[arg(id = "console_session_ttl", long = "console-session-ttl", env = "CONSOLE_SESSION_TTL", default_value = "12h", value_parser = parse_duration)]
    pub session_ttl: Duration,

    /// Mark the session cookie `Secure` (sent over HTTPS only; browsers
    /// also send it to http://localhost). Turn off only behind a proxy that
    /// is itself reached over plain HTTP on another host name.
    #[arg(id = "console_cookie_secure", long = "console-cookie-secure", env = "CONSOLE_COOKIE_SECURE", default_value_t = true, action = clap::ArgAction::Set)]
    pub cookie_secure: bool,

    /// gRPC URL of the reminder scheduler (ReminderService).
    #[arg(
        id = "console_reminders_url",
        long = "console-reminders-url",
        env = "CONSOLE_REMINDERS_URL",
        default_value = "http://127.0.0.1:50061"
    )]
    pub reminders_url: String,

    /// gRPC URL of the lead dialer (LeadDashboard).
    #[arg(
        id = "console_leads_url",
        long = "console-leads-url",
        env = "CONSOLE_LEADS_URL",
        default_value = "http://127.0.0.1:50071"
    )]
    pub leads_url: String,

    /// gRPC URL of the call router (RoutingStats).
    #[arg(
        id = "console_routing_url",
        long = "console-routing-url",
        env = "CONSOLE_ROUTING_URL",
        default_value = "http://127.0.0.1:50081"
    )]
    pub routing_url: String,

    /// Link from a timeline event to its trace: `{trace_id}` is replaced
    /// (for example `http://jaeger:16686/trace/{trace_id}`); empty shows the
    /// trace id without a link.
    #[arg(
        id = "console_trace_url",
        long = "console-trace-url",
        env = "CONSOLE_TRACE_URL",
        default_value = "http://127.0.0.1:16686/trace/{trace_id}"
    )]
    pub trace_url: String,
}

/// Errors that stop the console.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Users(#[from] auth::UsersError),
    #[error(transparent)]
    Db(#[from] kit::db::DbError),
    #[error(transparent)]
    Listen(#[from] kit::health::BindError),
    #[error("HTTP server: {0}")]
    Http(std::io::Error),
    #[error("rebuild: {0}")]
    Rebuild(Box<dyn std::error::Error + Send + Sync>),
}

/// What every page handler is given.
pub struct AppState {
    pub pool: deadpool_postgres::Pool,
    pub store: EventStoreClient,
    pub users: auth::Users,
    pub sessions: auth::SessionSettings,
    pub throttle: auth::Throttle,
    pub reminders: ReminderServiceClient<Channel>,
    pub leads: LeadDashboardClient<Channel>,
    pub routing: RoutingStatsClient<Channel>,
    pub clock: SharedClock,
    pub trace_url: String,
    pub contact_salt: String,
    /// Cancelled when the console stops: ends the live streams.
    pub stopping: CancellationToken,
}

pub type State = Arc<AppState>;

/// The console, configured, migrated and listening, not yet running.
pub struct Console {
    state: State,
    health: Health,
    http: TcpListener,
}

fn channel(name: &str, url: &str) -> Result<Channel, Error> {
    Ok(Endpoint::from_shared(url.to_owned())
        .map_err(|e| Error::Config(format!("{name}: {e}")))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .connect_lazy())
}

/// Creates or updates the `console` schema.
pub async fn migrate(common: &Common) -> Result<(), Error> {
    let mut client = kit::db::connect(&common.database_url).await?;
    kit::db::migrate(&mut client, SCHEMA, MIGRATIONS).await?;
    Ok(())
}

fn store(common: &Common) -> Result<EventStoreClient, Error> {
    common
        .event_store(NAME)
        .map_err(|e| Error::Config(format!("EVENT_STORE_URL: {e}")))
}

impl Console {
    pub async fn bind(common: Common, config: Config, clock: SharedClock) -> Result<Self, Error> {
        let users = auth::Users::load(&config.users)?;
        migrate(&common).await?;
        let state = Arc::new(AppState {
            pool: kit::db::pool(&common.database_url, 8)?,
            store: store(&common)?,
            users,
            sessions: auth::SessionSettings {
                ttl: config.session_ttl,
                secure: config.cookie_secure,
            },
            throttle: auth::Throttle::default(),
            reminders: ReminderServiceClient::new(channel(
                "CONSOLE_REMINDERS_URL",
                &config.reminders_url,
            )?),
            leads: LeadDashboardClient::new(channel("CONSOLE_LEADS_URL", &config.leads_url)?),
            routing: RoutingStatsClient::new(channel("CONSOLE_ROUTING_URL", &config.routing_url)?),
            clock,
            trace_url: config.trace_url,
            contact_salt: common.contact_salt.clone(),
            stopping: CancellationToken::new(),
        });
        let http = kit::health::bind(config.http_addr).await?;
        Ok(Self {
            state,
            health: Health::expecting(&["projection"]),
            http,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().expect("bound listener")
    }

    /// Serves the pages and follows the log into the index until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let follow = kit::projection::follow(
            self.state.pool.clone(),
            self.state.store.clone(),
            Arc::new(index::Index {
                contact_salt: self.state.contact_salt.clone(),
            }),
            self.health.clone(),
            shutdown.clone(),
        );
        let app = routes(self.state.clone()).merge(kit::health::routes(self.health.clone()));
        let stopping = self.state.stopping.clone();
        let stopped = shutdown.clone();
        tokio::spawn(async move {
            stopped.cancelled().await;
            stopping.cancel();
        });
        let addr = self.http_addr();
        tracing::info!(http = %addr, "console serving");
        let http = kit::health::serve_http(self.http, app, shutdown.clone());
        let ((), http) = tokio::join!(follow, http);
        http.map_err(Error::Http)
    }
}

/// Every page.
pub fn routes(state: State) -> Router {
    Router::new()
        .route("/", get(overview::page))
        .route("/overview/live", get(overview::live))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/search", get(timeline::search))
        .route("/timeline/{correlation_id}", get(timeline::page))
        .route("/reminders", get(reminders::page))
        .route("/reminders/{id}/cancel", post(reminders::cancel))
        .route("/reminders/{id}/reschedule", post(reminders::reschedule))
        .route("/manual", get(manual::page))
        .route("/manual/{lead_id}/handled", post(manual::handled))
        .route("/dead-letters", get(dead_letters::page))
        .route(
            "/dead-letters/{consumer}/{event_id}/retry",
            post(dead_letters::retry),
        )
        .route(
            "/dead-letters/{consumer}/{event_id}/discard",
            post(dead_letters::discard),
        )
        .route("/live", get(live::page))
        .route("/live/events", get(live::events))
        .route("/static/console.css", get(page::stylesheet))
        .layer(axum::middleware::from_fn(observe))
        .with_state(state)
}

/// Every page request in a span (so one request is one trace with the gRPC
/// and event-store calls it makes) and in the metrics, by route.
async fn observe(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use tracing::Instrument;
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    let span = tracing::info_span!("console", %method, %route);
    let started = std::time::Instant::now();
    let response = next.run(request).instrument(span).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("callflow_console_requests_total", "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("callflow_console_request_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Starts the console and runs it until `shutdown`.
pub async fn run(
    common: Common,
    config: Config,
    clock: SharedClock,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    Console::bind(common, config, clock)
        .await?
        .run(shutdown)
        .await
}

/// Drops the index and replays it from the log.
pub async fn rebuild(common: &Common) -> Result<kit::projection::Rebuilt, Error> {
    migrate(common).await?;
    let pool = kit::db::pool(&common.database_url, 1)?;
    kit::projection::rebuild(
        &pool,
        &store(common)?,
        &index::Index {
            contact_salt: common.contact_salt.clone(),
        },
    )
    .await
    .map_err(Error::Rebuild)
}
