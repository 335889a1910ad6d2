//! event-store: the only writer of callflow's event log.
//!
//! It keeps the log in Postgres (schema `eventlog`, insert-only), serves the
//! gRPC API `callflow.eventstore.v1.EventStore` (append, read, subscribe) and
//! relays every event to NATS JetStream in log order. Modules:
//! [`schema`] (migrations), [`append`] (group commit), [`read`] (pages),
//! [`notify`] (commit wake-ups), [`api`] (gRPC), [`relay`] (JetStream).

pub mod api;
pub mod append;
pub mod notify;
pub mod privacy;
pub mod read;
pub mod relay;
pub mod schema;
#[cfg(feature = "testing")]
pub mod testing;

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use kit::bus::Bus;
use kit::config::Common;
use kit::health::Health;
use kit::proto::eventstore::v1::event_store_server::EventStoreServer;

/// Settings of the event store (besides [`Common`]).
#[derive(clap::Args, Debug, Clone)]
#[group(id = "event_store")]
#[command(next_help_heading = "Event store")]
pub struct Config {
    /// Address of the gRPC API.
    #[arg(
        id = "event_store_grpc_addr",
        long = "event-store-grpc-addr",
        env = "EVENT_STORE_GRPC_ADDR",
        default_value = "127.0.0.1:50051"
    )]
    pub grpc_addr: SocketAddr,

    /// Address of /healthz, /readyz and /metrics.
    #[arg(
        id = "event_store_http_addr",
        long = "event-store-http-addr",
        env = "EVENT_STORE_HTTP_ADDR",
        default_value = "127.0.0.1:9101"
    )]
    pub http_addr: SocketAddr,

    /// Whether this replica runs a relay to JetStream (only one publishes at
    /// a time; the others stand by).
    #[arg(id = "event_store_relay", long = "event-store-relay", env = "EVENT_STORE_RELAY", default_value_t = true, action = clap::ArgAction::Set)]
    pub relay: bool,

    /// Connections for reads and subscriptions.
    #[arg(
        id = "event_store_read_pool",
        long = "event-store-read-pool",
        env = "EVENT_STORE_READ_POOL",
        default_value_t = 8
    )]
    pub read_pool: usize,

    /// Most events committed in one group transaction.
    #[arg(
        id = "event_store_max_group_events",
        long = "event-store-max-group",
        env = "EVENT_STORE_MAX_GROUP_EVENTS",
        default_value_t = 5000
    )]
    pub max_group_events: usize,

    /// Master key (64 hex digits) wrapping the data keys personal fields are
    /// encrypted with. The default is for development only; losing the key
    /// makes every personal field unreadable.
    #[arg(
        id = "event_store_master_key",
        long = "event-store-master-key",
        env = "EVENT_STORE_MASTER_KEY",
        default_value = "6465762d6f6e6c792d6d61737465722d6b65792d6368616e67652d6d65212121",
        hide_env_values = true
    )]
    pub master_key: String,

    /// Events published per relay round.
    #[arg(
        id = "event_store_relay_batch",
        long = "event-store-relay-batch",
        env = "EVENT_STORE_RELAY_BATCH",
        default_value_t = 500
    )]
    pub relay_batch: u32,
}

/// Errors that stop the event store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
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
    #[error("configuration: {0}")]
    Config(String),
}

/// Applies the log's schema migrations (idempotent; concurrent runs wait
/// for each other).
pub async fn migrate(common: &Common) -> Result<(), Error> {
    let mut client = kit::db::connect(&common.database_url).await?;
    kit::db::migrate(&mut client, schema::SCHEMA, schema::MIGRATIONS).await?;
    Ok(())
}

/// An event store with its listeners bound and its schema migrated, ready to
/// [`run`](EventStore::run).
pub struct EventStore {
    common: Common,
    config: Config,
    grpc: TcpListener,
    http: TcpListener,
}

impl EventStore {
    /// Binds the listeners and migrates the schema.
    pub async fn build(common: Common, config: Config) -> Result<Self, Error> {
        let grpc = bind(config.grpc_addr).await?;
        let http = bind(config.http_addr).await?;
        migrate(&common).await?;
        Ok(Self {
            common,
            config,
            grpc,
            http,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.local_addr().expect("bound listener")
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().expect("bound listener")
    }

    /// Serves until `shutdown`, then drains: stops accepting requests, ends
    /// subscriptions, commits what was already accepted, stops the relay.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let health = if self.config.relay {
            Health::expecting(&["postgres", "relay"])
        } else {
            Health::expecting(&["postgres"])
        };
        let tasks = TaskTracker::new();
        let (committed, committed_rx) = notify::channel();
        let master = privacy::parse_master_key(&self.config.master_key).map_err(Error::Config)?;
        // Every append about a contact whose key is not cached looks it up
        // (a reminder firing a month after it was scheduled, say): as many
        // connections as the appends that commonly run at once.
        let privacy = std::sync::Arc::new(privacy::Privacy::new(
            &master,
            kit::db::pool(&self.common.database_url, 16)?,
        ));
        let reader = read::Reader::new(
            kit::db::pool(&self.common.database_url, self.config.read_pool)?,
            privacy.clone(),
        );

        let writer_stop = CancellationToken::new();
        let (appender, writer) = append::start(
            self.common.database_url.clone(),
            append::GroupLimits {
                max_events: self.config.max_group_events,
            },
            committed.clone(),
            health.clone(),
            writer_stop.clone(),
        );
        tasks.spawn(notify::watch_head(
            reader.clone(),
            committed.clone(),
            shutdown.clone(),
        ));

        if self.config.relay {
            let bus = Bus::connect(&self.common, "event-store-relay").await?;
            tasks.spawn(relay::run(
                self.common.database_url.clone(),
                relay::RelayConfig {
                    name: self.common.jetstream_stream.clone(),
                    batch: self.config.relay_batch,
                },
                bus,
                reader.clone(),
                committed_rx.clone(),
                health.clone(),
                shutdown.clone(),
            ));
        }

        let http = kit::health::serve_http(
            self.http,
            kit::health::routes(health.clone()),
            shutdown.clone(),
        );
        let api = api::Api {
            privacy,
            auth_secret: self.common.event_store_auth_secret.clone(),
            appender,
            reader,
            committed: committed_rx,
            shutdown: shutdown.clone(),
        };
        let grpc = tonic::transport::Server::builder()
            .add_service(
                EventStoreServer::new(api)
                    .max_decoding_message_size(64 * 1024 * 1024)
                    .max_encoding_message_size(64 * 1024 * 1024),
            )
            .serve_with_incoming_shutdown(incoming(self.grpc), shutdown.clone().cancelled_owned());
        tracing::info!(grpc = %self.config.grpc_addr, "event store serving");
        let (grpc, http) = tokio::join!(grpc, http);

        // Requests are drained; let the writer finish what it accepted.
        writer_stop.cancel();
        let _ = writer.await;
        tasks.close();
        tasks.wait().await;
        grpc?;
        http.map_err(Error::Http)?;
        tracing::info!("event store stopped");
        Ok(())
    }
}

/// Accepted connections with Nagle's algorithm off: appends are small
/// request/response exchanges, and delaying the last segment of an answer
/// until the peer's delayed ACK costs tens of milliseconds per call.
fn incoming(
    listener: TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures::StreamExt;
    TcpListenerStream::new(listener).map(|stream| {
        let stream = stream?;
        stream.set_nodelay(true)?;
        Ok(stream)
    })
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen { addr, source })
}

/// Builds and runs an event store until `shutdown`.
pub async fn run(common: Common, config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    EventStore::build(common, config).await?.run(shutdown).await
}
