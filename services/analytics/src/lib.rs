//! analytics: the read model for analysts, in its own Postgres schema
//! `analytics` — one row per call, reminder and SMS, and the funnel "calls →
//! transcribed → agreed → reminded → SMS delivered" as the view
//! `analytics.funnel` — so psql or any BI tool can answer questions without
//! decoding events. The projector ([`projection`]) follows the log;
//! `analytics rebuild` replays it from scratch. The schema holds no
//! personal data.

pub mod projection;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use kit::config::Common;
use kit::db::Migration;
use kit::health::Health;

/// Name of the service (event-store identity).
pub const NAME: &str = "analytics";
/// The service's Postgres schema.
pub const SCHEMA: &str = "analytics";

pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "read_model",
    sql: include_str!("../migrations/0001_read_model.sql"),
}];

/// Settings of the projector (besides [`Common`]).
#[derive(clap::Args, Debug, Clone)]
#[group(id = "analytics")]
#[command(next_help_heading = "analytics")]
pub struct Config {
    /// Address of /healthz, /readyz and /metrics.
    #[arg(
        id = "analytics_http_addr",
        long = "analytics-http-addr",
        env = "ANALYTICS_HTTP_ADDR",
        default_value = "127.0.0.1:9106"
    )]
    pub http_addr: SocketAddr,
}

/// Errors that stop the projector.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Db(#[from] kit::db::DbError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP server: {0}")]
    Http(std::io::Error),
    #[error("rebuild: {0}")]
    Rebuild(Box<dyn std::error::Error + Send + Sync>),
}

/// Creates or updates the `analytics` schema (run also does it first).
pub async fn migrate(common: &Common) -> Result<(), Error> {
    let mut client = kit::db::connect(&common.database_url).await?;
    kit::db::migrate(&mut client, SCHEMA, MIGRATIONS).await?;
    Ok(())
}

fn store(common: &Common) -> Result<kit::store_client::EventStoreClient, Error> {
    common
        .event_store(NAME)
        .map_err(|e| Error::Config(format!("EVENT_STORE_URL: {e}")))
}

/// Follows the log into the read model until `shutdown`; `/readyz` is up
/// once it has caught up.
pub async fn run(common: Common, config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    migrate(&common).await?;
    let http = TcpListener::bind(config.http_addr)
        .await
        .map_err(|source| Error::Listen {
            addr: config.http_addr,
            source,
        })?;
    let pool = kit::db::pool(&common.database_url, 2)?;
    let store = store(&common)?;
    let health = Health::expecting(&["projection"]);
    let follow = kit::projection::follow(
        pool,
        store,
        Arc::new(projection::ReadModel),
        health.clone(),
        shutdown.clone(),
    );
    let http = kit::health::serve_http(http, kit::health::routes(health), shutdown.clone());
    tracing::info!(http = %config.http_addr, "analytics projector following the log");
    let ((), http) = tokio::join!(follow, http);
    http.map_err(Error::Http)
}

/// Drops the read model and replays it from the log (see
/// [`kit::projection::rebuild`]); safe while the projector runs.
pub async fn rebuild(common: &Common) -> Result<kit::projection::Rebuilt, Error> {
    migrate(common).await?;
    let pool = kit::db::pool(&common.database_url, 1)?;
    kit::projection::rebuild(&pool, &store(common)?, &projection::ReadModel)
        .await
        .map_err(Error::Rebuild)
}
