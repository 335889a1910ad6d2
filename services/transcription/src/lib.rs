//! transcription: on `CallCompleted` for a business number with
//! transcription switched on, fetches the call's transcript from MTS Exolve
//! ([`fetch`]) and records `TranscriptReady`, or `TranscriptionFailed` once
//! the deadline has passed. [`numbers`] holds the switch: a command turns
//! transcription on or off at Exolve and records it in the number's stream.

pub mod fetch;
pub mod numbers;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use kit::bus::Bus;
use kit::clock::SharedClock;
use kit::config::{Common, parse_duration};
use kit::consumer::{self, ConsumerConfig};
use kit::exolve::ExolveConfig;
use kit::proto::events::v1::CallCompleted;

/// Name of the service (consumer, producer).
pub const NAME: &str = "transcription";

/// Settings of the service (besides [`Common`] and [`ExolveConfig`]).
#[derive(clap::Args, Debug, Clone)]
#[group(id = "transcription")]
#[command(next_help_heading = "transcription")]
pub struct Config {
    /// Address of /healthz, /readyz and /metrics.
    #[arg(
        id = "transcription_http_addr",
        long = "transcription-http-addr",
        env = "TRANSCRIPTION_HTTP_ADDR",
        default_value = "127.0.0.1:9109"
    )]
    pub http_addr: std::net::SocketAddr,

    /// How long after a call ends to keep asking for its transcript.
    #[arg(id = "transcription_deadline", long = "transcription-deadline", env = "TRANSCRIPTION_DEADLINE", default_value = "30m", value_parser = parse_duration)]
    pub deadline: Duration,

    /// First wait before asking again for a transcript that is not ready;
    /// doubles each time, with jitter.
    #[arg(id = "transcription_poll_first", long = "transcription-poll-first", env = "TRANSCRIPTION_POLL_FIRST", default_value = "5s", value_parser = parse_duration)]
    pub poll_first: Duration,

    /// Longest wait between two polls.
    #[arg(id = "transcription_poll_max", long = "transcription-poll-max", env = "TRANSCRIPTION_POLL_MAX", default_value = "2m", value_parser = parse_duration)]
    pub poll_max: Duration,

    /// Exolve's channel tag of the calling party (the other tag is the
    /// called party).
    #[arg(
        id = "transcription_caller_channel",
        long = "transcription-caller-channel",
        env = "TRANSCRIPTION_CALLER_CHANNEL",
        default_value = "1"
    )]
    pub caller_channel: String,

    /// Transcripts fetched at once.
    #[arg(
        id = "transcription_concurrency",
        long = "transcription-concurrency",
        env = "TRANSCRIPTION_CONCURRENCY",
        default_value_t = 16
    )]
    pub concurrency: usize,
}

/// Errors that stop the service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Bus(#[from] kit::bus::BusError),
    #[error("EVENT_STORE_URL: {0}")]
    Store(#[from] tonic::transport::Error),
    #[error(transparent)]
    Consumer(#[from] consumer::ConsumerError),
    #[error(transparent)]
    Listen(#[from] kit::health::BindError),
    #[error("HTTP server: {0}")]
    Http(std::io::Error),
}

/// Runs the service until `shutdown`.
pub async fn run(
    common: Common,
    exolve: ExolveConfig,
    config: Config,
    clock: SharedClock,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let health = kit::health::bind_health(
        config.http_addr,
        kit::health::Health::new(),
        shutdown.clone(),
    )
    .await?;
    let bus = Bus::connect(&common, NAME).await?;
    let store = common.event_store(NAME)?;
    let consumer = ConsumerConfig {
        concurrency: config.concurrency,
        ..ConsumerConfig::new(
            NAME,
            bus.subject("call", kit::events::type_of::<CallCompleted>()),
        )
    };
    let handler = fetch::Transcriber {
        exolve: exolve.client(),
        store: store.clone(),
        clock,
        config,
    };
    let (consumed, served) = tokio::join!(
        consumer::run(bus, store, consumer, Arc::new(handler), shutdown),
        health
    );
    consumed?;
    served.map_err(Error::Http)?;
    Ok(())
}
