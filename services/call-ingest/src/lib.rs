//! call-ingest: the HTTP edge for telephony webhooks.
//!
//! Every request is authenticated ([`auth`]), read field by field
//! ([`fields`]) as an Exolve call event ([`exolve`]), a generic call
//! completion ([`generic`]), a pushed transcript ([`transcripts`]) or a
//! shop's web lead ([`leads`]), and appended to the event log; the answer is 2xx
//! only once the event is committed, and a webhook delivered again is
//! answered 2xx without writing anything new ([`api`]). Bad input gets a JSON
//! 4xx ([`errors`]) and changes nothing.

pub mod api;
pub mod auth;
pub mod errors;
pub mod exolve;
pub mod fields;
pub mod generic;
pub mod leads;
pub mod transcripts;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use kit::clock::SharedClock;
use kit::config::{Common, parse_duration};
use kit::health::Health;
use kit::phone::{DefaultRegion, PhoneNumber};
use kit::proto::events::v1::CallDirection;
use kit::store_client::EventStoreClient;

use crate::auth::Credentials;
use crate::errors::ApiError;

/// Settings of call-ingest (besides [`Common`]).
#[derive(clap::Args, Debug, Clone)]
#[group(id = "call_ingest")]
#[command(next_help_heading = "call-ingest")]
pub struct Config {
    /// Address of the webhooks and of /healthz, /readyz, /metrics.
    #[arg(
        id = "call_ingest_http_addr",
        long = "call-ingest-http-addr",
        env = "CALL_INGEST_HTTP_ADDR",
        default_value = "127.0.0.1:8080"
    )]
    pub http_addr: SocketAddr,

    /// Region of phone numbers written without a country code (ISO 3166).
    #[arg(
        id = "call_ingest_default_region",
        long = "call-ingest-default-region",
        env = "CALL_INGEST_DEFAULT_REGION",
        default_value = "RU"
    )]
    pub default_region: DefaultRegion,

    /// Time zone of provider times written without an offset.
    #[arg(
        id = "call_ingest_provider_time_zone",
        long = "call-ingest-provider-time-zone",
        env = "CALL_INGEST_PROVIDER_TIME_ZONE",
        default_value = "Europe/Moscow"
    )]
    pub provider_time_zone: String,

    /// The business's own numbers, comma separated: a call to one of them is
    /// inbound, a call from one of them outbound.
    #[arg(
        id = "call_ingest_business_numbers",
        long = "call-ingest-business-numbers",
        env = "CALL_INGEST_BUSINESS_NUMBERS",
        value_delimiter = ',',
        default_value = ""
    )]
    pub business_numbers: Vec<String>,

    /// Bearer token Exolve's webhooks must carry (empty: not accepted).
    #[arg(
        id = "call_ingest_exolve_token",
        long = "call-ingest-exolve-token",
        env = "CALL_INGEST_EXOLVE_TOKEN",
        default_value = "",
        hide_env_values = true
    )]
    pub exolve_token: String,

    /// HMAC-SHA256 secret for signed Exolve webhooks (empty: not accepted).
    #[arg(
        id = "call_ingest_exolve_hmac_secret",
        long = "call-ingest-exolve-hmac-secret",
        env = "CALL_INGEST_EXOLVE_HMAC_SECRET",
        default_value = "",
        hide_env_values = true
    )]
    pub exolve_hmac_secret: String,

    /// Bearer token for the generic call-completed webhook.
    #[arg(
        id = "call_ingest_generic_token",
        long = "call-ingest-generic-token",
        env = "CALL_INGEST_GENERIC_TOKEN",
        default_value = "",
        hide_env_values = true
    )]
    pub generic_token: String,

    /// HMAC-SHA256 secret for the generic call-completed webhook.
    #[arg(
        id = "call_ingest_generic_hmac_secret",
        long = "call-ingest-generic-hmac-secret",
        env = "CALL_INGEST_GENERIC_HMAC_SECRET",
        default_value = "",
        hide_env_values = true
    )]
    pub generic_hmac_secret: String,

    /// Bearer token of the shops' lead webhook (empty: not accepted).
    #[arg(
        id = "call_ingest_leads_token",
        long = "call-ingest-leads-token",
        env = "CALL_INGEST_LEADS_TOKEN",
        default_value = "",
        hide_env_values = true
    )]
    pub leads_token: String,

    /// HMAC-SHA256 secret of the shops' lead webhook.
    #[arg(
        id = "call_ingest_leads_hmac_secret",
        long = "call-ingest-leads-hmac-secret",
        env = "CALL_INGEST_LEADS_HMAC_SECRET",
        default_value = "",
        hide_env_values = true
    )]
    pub leads_hmac_secret: String,

    /// Largest accepted request body, in bytes.
    #[arg(id = "call_ingest_max_body_bytes", long = "call-ingest-max-body", env = "CALL_INGEST_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,

    /// How long a webhook may wait for the event log before getting a 503.
    #[arg(id = "call_ingest_request_timeout", long = "call-ingest-request-timeout", env = "CALL_INGEST_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,
}

/// [`Config`], checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub default_region: DefaultRegion,
    pub provider_time_zone: TimeZone,
    pub business_numbers: Vec<PhoneNumber>,
    pub exolve: Credentials,
    pub generic: Credentials,
    pub leads: Credentials,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
}

impl Settings {
    pub fn from_config(config: &Config) -> Result<Self, Error> {
        let provider_time_zone = TimeZone::get(&config.provider_time_zone).map_err(|_| {
            Error::Config(format!(
                "CALL_INGEST_PROVIDER_TIME_ZONE `{}` is not an IANA time zone",
                config.provider_time_zone
            ))
        })?;
        let business_numbers = config
            .business_numbers
            .iter()
            .filter(|n| !n.trim().is_empty())
            .map(|n| {
                PhoneNumber::parse(n, config.default_region)
                    .map_err(|e| Error::Config(format!("CALL_INGEST_BUSINESS_NUMBERS: `{n}` {e}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            default_region: config.default_region,
            provider_time_zone,
            business_numbers,
            exolve: Credentials::new(
                Some(config.exolve_token.clone()),
                Some(config.exolve_hmac_secret.clone()),
            ),
            generic: Credentials::new(
                Some(config.generic_token.clone()),
                Some(config.generic_hmac_secret.clone()),
            ),
            leads: Credentials::new(
                Some(config.leads_token.clone()),
                Some(config.leads_hmac_secret.clone()),
            ),
            max_body_bytes: config.max_body_bytes,
            request_timeout: config.request_timeout,
        })
    }

    /// Direction of a call from the business's numbers.
    pub fn direction(&self, from: Option<&PhoneNumber>, to: Option<&PhoneNumber>) -> CallDirection {
        let ours = |n: Option<&PhoneNumber>| n.is_some_and(|n| self.business_numbers.contains(n));
        match (ours(from), ours(to)) {
            (false, true) => CallDirection::Inbound,
            (true, false) => CallDirection::Outbound,
            _ => CallDirection::Unspecified,
        }
    }
}

/// What identifies a webhook: the call and the kind of webhook.
#[derive(Debug, Clone)]
pub struct Call {
    pub provider: String,
    pub call_id: String,
    pub occurred_at: Option<Timestamp>,
    /// Webhook kind (Exolve `type`, or `completed`): with the call, it makes
    /// the event id, so a redelivered webhook is recognised.
    pub kind: &'static str,
}

/// Shared state of the handlers.
pub struct Ingest {
    pub settings: Settings,
    pub store: EventStoreClient,
    pub clock: SharedClock,
}

/// Errors that stop call-ingest.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP server: {0}")]
    Http(std::io::Error),
}

/// call-ingest with its listener bound, ready to [`run`](CallIngest::run).
pub struct CallIngest {
    listener: TcpListener,
    ingest: Arc<Ingest>,
}

impl CallIngest {
    pub async fn build(
        common: &Common,
        config: &Config,
        clock: SharedClock,
    ) -> Result<Self, Error> {
        let settings = Settings::from_config(config)?;
        let store = common
            .event_store("call-ingest")
            .map_err(|e| Error::Config(format!("EVENT_STORE_URL: {e}")))?;
        let listener = TcpListener::bind(config.http_addr)
            .await
            .map_err(|source| Error::Listen {
                addr: config.http_addr,
                source,
            })?;
        Ok(Self {
            listener,
            ingest: Arc::new(Ingest {
                settings,
                store,
                clock,
            }),
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    /// Serves until `shutdown`, then finishes the requests in flight.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        // Readiness: the event store must answer for a webhook to be recorded.
        let health = Health::expecting(&["event-store"]);
        tokio::spawn(watch_store(
            self.ingest.store.clone(),
            health.clone(),
            shutdown.clone(),
        ));
        let app = api::routes(self.ingest.clone())
            .merge(kit::health::routes(health))
            .fallback(|| async {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint; webhooks are POST /webhooks/exolve/call-events, /webhooks/generic/call-completed, /webhooks/transcripts and /webhooks/leads")
            });
        tracing::info!(addr = %self.http_addr(), "call-ingest serving");
        kit::health::serve_http(self.listener, app, shutdown)
            .await
            .map_err(Error::Http)
    }
}

/// Marks the event store ready when a cheap read answers.
async fn watch_store(store: EventStoreClient, health: Health, shutdown: CancellationToken) {
    use kit::proto::eventstore::v1::ReadStreamRequest;
    while !shutdown.is_cancelled() {
        let mut grpc = store.grpc();
        let probe = grpc.read_stream(ReadStreamRequest {
            stream: "health-probe".into(),
            from_version: 1,
            max_count: 1,
        });
        let ready = matches!(
            tokio::time::timeout(Duration::from_secs(2), probe).await,
            Ok(Ok(_))
        );
        health.set("event-store", ready);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(if ready { 5 } else { 1 })) => {}
        }
    }
}

/// Builds and runs call-ingest until `shutdown`.
pub async fn run(
    common: Common,
    config: Config,
    clock: SharedClock,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    CallIngest::build(&common, &config, clock)
        .await?
        .run(shutdown)
        .await
}
