//! call-router: tells PBXs what to do with inbound calls.
//!
//! A PBX that can ask an HTTP server for the next step of a call posts each
//! step to [`pbx`]; the [`engine`] answers from the deployment's
//! [`scenario`]s (identify the caller in the [`directory`], menus, dial
//! chains with timeouts and business hours, the [`masking`] line) and
//! records each step as events on the call's stream `inbound-<call_id>`.
//! The call's progress travels with the PBX as a signed token ([`state`]),
//! so any replica takes any step. Events are made durable in the router's
//! [`outbox`] before the answer leaves and reach the log behind it, so a
//! slow event store never delays a call; when a decision cannot be made in
//! time the PBX gets the configured fallback. [`stats`] is the routing
//! read model.

pub mod directory;
pub mod engine;
pub mod masking;
pub mod outbox;
pub mod pbx;
pub mod protocol;
pub mod scenario;
pub mod state;
pub mod stats;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use kit::clock::SharedClock;
use kit::config::{Common, parse_duration};
use kit::db::Migration;
use kit::health::Health;
use kit::proto::routing::v1::directory_server::DirectoryServer;
use kit::proto::routing::v1::masking_server::MaskingServer;
use kit::proto::routing::v1::routing_stats_server::RoutingStatsServer;

pub const NAME: &str = "call-router";
pub const SCHEMA: &str = "call_router";

pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "router",
    sql: include_str!("../migrations/0001_router.sql"),
}];

/// Settings of the router (besides [`Common`]).
#[derive(clap::Args, Debug, Clone)]
#[group(id = "call_router")]
#[command(next_help_heading = "call-router")]
pub struct Config {
    /// Address of the PBX endpoints (`/pbx/v1/calls`, `/pbx/exolve/{line}`),
    /// the statistics' JSON (`/stats/...`), /healthz, /readyz, /metrics.
    #[arg(
        id = "router_http_addr",
        long = "router-http-addr",
        env = "CALL_ROUTER_HTTP_ADDR",
        default_value = "127.0.0.1:9108"
    )]
    pub http_addr: SocketAddr,

    /// Address of the gRPC APIs (Directory, Masking, RoutingStats).
    #[arg(
        id = "router_grpc_addr",
        long = "router-grpc-addr",
        env = "CALL_ROUTER_GRPC_ADDR",
        default_value = "127.0.0.1:50081"
    )]
    pub grpc_addr: SocketAddr,

    /// The scenarios file (TOML; see infra/call-router/scenarios.toml).
    #[arg(
        id = "router_scenarios",
        long = "router-scenarios",
        env = "CALL_ROUTER_SCENARIOS",
        default_value = "infra/call-router/scenarios.toml"
    )]
    pub scenarios: PathBuf,

    /// The PBX's deadline for an answer; the router decides within it or
    /// answers the fallback.
    #[arg(id = "router_deadline", long = "router-deadline", env = "CALL_ROUTER_DEADLINE", default_value = "1500ms", value_parser = parse_duration)]
    pub deadline: Duration,

    /// Secret the call state tokens are signed with (the same on every
    /// replica; changing it sends calls in progress to the fallback).
    #[arg(
        id = "router_state_secret",
        long = "router-state-secret",
        env = "CALL_ROUTER_STATE_SECRET",
        default_value = "dev-call-router-state-secret",
        hide_env_values = true
    )]
    pub state_secret: String,

    /// Bearer token PBXs must present (empty: none asked).
    #[arg(
        id = "router_pbx_token",
        long = "router-pbx-token",
        env = "CALL_ROUTER_PBX_TOKEN",
        default_value = "",
        hide_env_values = true
    )]
    pub pbx_token: String,

    /// The URL PBXs report results to (`report_url` in answers); empty: the
    /// HTTP address's `/pbx/v1/calls`.
    #[arg(
        id = "router_public_url",
        long = "router-public-url",
        env = "CALL_ROUTER_PUBLIC_URL",
        default_value = ""
    )]
    pub public_url: String,

    /// Postgres connections (decisions, outbox, APIs).
    #[arg(
        id = "router_pool",
        long = "router-pool",
        env = "CALL_ROUTER_POOL",
        default_value_t = 16
    )]
    pub pool: usize,
}

/// Errors that stop the router.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Scenarios(#[from] scenario::ScenarioError),
    #[error(transparent)]
    Db(#[from] kit::db::DbError),
    #[error(transparent)]
    Listen(#[from] kit::health::BindError),
    #[error("HTTP server: {0}")]
    Http(std::io::Error),
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("rebuild: {0}")]
    Rebuild(Box<dyn std::error::Error + Send + Sync>),
}

/// The router, configured, migrated and listening, not yet running.
pub struct CallRouter {
    common: Common,
    config: Config,
    scenarios: Arc<scenario::Scenarios>,
    clock: SharedClock,
    http: TcpListener,
    grpc: TcpListener,
}

impl CallRouter {
    pub async fn bind(common: Common, config: Config, clock: SharedClock) -> Result<Self, Error> {
        let scenarios = Arc::new(scenario::Scenarios::load(&config.scenarios)?);
        if config.deadline < Duration::from_millis(100) {
            return Err(Error::Config(
                "CALL_ROUTER_DEADLINE must be at least 100ms".into(),
            ));
        }
        if config.state_secret.len() < 16 {
            return Err(Error::Config(
                "CALL_ROUTER_STATE_SECRET must be at least 16 characters".into(),
            ));
        }
        migrate(&common).await?;
        let http = kit::health::bind(config.http_addr).await?;
        let grpc = kit::health::bind(config.grpc_addr).await?;
        Ok(Self {
            common,
            config,
            scenarios,
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

    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let config = self.config;
        let http_addr = self.http.local_addr().expect("bound listener");
        let report_url = if config.public_url.is_empty() {
            format!("http://{http_addr}/pbx/v1/calls")
        } else {
            config.public_url.clone()
        };
        let health = Health::expecting(&["projection"]);
        let pool = kit::db::pool(&self.common.database_url, config.pool.max(2))?;
        let store = self
            .common
            .event_store(NAME)
            .map_err(|e| Error::Config(format!("EVENT_STORE_URL: {e}")))?;
        let salt = self.common.contact_salt.clone();
        let directory = Arc::new(directory::DirectoryProjector {
            contact_salt: salt.clone(),
        });
        let masking = Arc::new(masking::MaskingProjector { contact_salt: salt });
        let tasks = TaskTracker::new();
        tasks.spawn(kit::projection::follow(
            pool.clone(),
            store.clone(),
            directory.clone(),
            health.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(kit::projection::follow(
            pool.clone(),
            store.clone(),
            masking.clone(),
            health.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(kit::projection::follow(
            pool.clone(),
            store.clone(),
            Arc::new(stats::StatsProjector),
            health.clone(),
            shutdown.clone(),
        ));
        let outbox = outbox::Outbox::start(pool.clone());
        tasks.spawn(outbox::forward(
            pool.clone(),
            store.clone(),
            outbox.notifier(),
            shutdown.clone(),
        ));

        let lookups = directory::PgLookups { pool: pool.clone() };
        let engine = Arc::new(engine::Engine {
            scenarios: self.scenarios.clone(),
            sealer: state::Sealer::new(&config.state_secret),
            clock: self.clock.clone(),
            report_url,
        });
        let stats = stats::Stats {
            pool: pool.clone(),
            zone: self.scenarios.default_zone.clone(),
            clock: self.clock.clone(),
        };
        let pbx = pbx::Pbx {
            engine,
            lookups: lookups.clone(),
            outbox,
            budget: pbx::budget(config.deadline),
            token: (!config.pbx_token.is_empty()).then(|| config.pbx_token.clone()),
        };
        let app = kit::health::routes(health)
            .merge(pbx::routes(pbx))
            .merge(stats::routes(stats.clone()));
        let http = kit::health::serve_http(self.http, app, shutdown.clone());
        let grpc = tonic::transport::Server::builder()
            .add_service(DirectoryServer::new(directory::DirectoryApi {
                store: store.clone(),
                pool: pool.clone(),
                lookups,
                projector: directory,
            }))
            .add_service(MaskingServer::new(masking::MaskingApi {
                store: store.clone(),
                pool: pool.clone(),
                clock: self.clock.clone(),
                projector: masking,
            }))
            .add_service(RoutingStatsServer::new(stats))
            .serve_with_incoming_shutdown(
                TcpListenerStream::new(self.grpc),
                shutdown.clone().cancelled_owned(),
            );
        tracing::info!(http = %http_addr, grpc = %config.grpc_addr, lines = self.scenarios.lines.len(), "call router serving");
        let (http, grpc) = tokio::join!(http, grpc);
        tasks.close();
        tasks.wait().await;
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

/// Builds and runs the router until `shutdown`.
pub async fn run(
    common: Common,
    config: Config,
    clock: SharedClock,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    CallRouter::bind(common, config, clock)
        .await?
        .run(shutdown)
        .await
}

/// Drops the read models (directory, sessions, statistics) and replays
/// them from the log; safe while the router runs.
pub async fn rebuild(
    common: &Common,
) -> Result<Vec<(&'static str, kit::projection::Rebuilt)>, Error> {
    migrate(common).await?;
    let pool = kit::db::pool(&common.database_url, 1)?;
    let store = common
        .event_store(NAME)
        .map_err(|e| Error::Config(format!("EVENT_STORE_URL: {e}")))?;
    let salt = common.contact_salt.clone();
    let mut done = Vec::new();
    let rebuilt = kit::projection::rebuild(
        &pool,
        &store,
        &directory::DirectoryProjector {
            contact_salt: salt.clone(),
        },
    )
    .await
    .map_err(Error::Rebuild)?;
    done.push(("directory", rebuilt));
    let rebuilt = kit::projection::rebuild(
        &pool,
        &store,
        &masking::MaskingProjector { contact_salt: salt },
    )
    .await
    .map_err(Error::Rebuild)?;
    done.push(("masking", rebuilt));
    let rebuilt = kit::projection::rebuild(&pool, &store, &stats::StatsProjector)
        .await
        .map_err(Error::Rebuild)?;
    done.push(("stats", rebuilt));
    Ok(done)
}
