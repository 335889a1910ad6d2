//! The NATS JetStream side of the log: the connection, the `CALLFLOW` stream
//! that holds every published event, and subject names.
//!
//! Subjects are `<prefix>.<category>.<Type>` (prefix `callflow.evt` by
//! default): a team that wants every call event subscribes to
//! `callflow.evt.call.>`, one that wants consent decisions to
//! `callflow.evt.call.ConsentAnalyzed`.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::config::Common;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("cannot create or open JetStream stream {stream}: {reason}")]
    Stream { stream: String, reason: String },
}

/// How long JetStream remembers a `Nats-Msg-Id` to drop a re-publication.
/// The relay also resumes from the stream's last message, so duplicates
/// older than this are prevented there.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// A connection to NATS with the names of the event stream and subjects.
#[derive(Clone)]
pub struct Bus {
    pub client: async_nats::Client,
    pub jetstream: jetstream::Context,
    pub stream_name: String,
    pub subject_prefix: String,
    pub replicas: usize,
}

impl Bus {
    /// Connects to NATS. Retries in the background when the server is not up
    /// yet, so services can start in any order.
    pub async fn connect(config: &Common, client_name: &str) -> Result<Self, BusError> {
        let client = async_nats::ConnectOptions::new()
            .name(client_name)
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .event_callback(|event| async move {
                tracing::info!(%event, "nats connection event");
            })
            .connect(&config.nats_url)
            .await
            .map_err(|e| BusError::Connect {
                url: config.nats_url.clone(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            jetstream: jetstream::new(client.clone()),
            client,
            stream_name: config.jetstream_stream.clone(),
            subject_prefix: config.subject_prefix.clone(),
            replicas: config.jetstream_replicas.max(1),
        })
    }

    /// Whether the connection to NATS is up.
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// The stream configuration: file storage, every subject under the
    /// prefix, the duplicate window for `Nats-Msg-Id`.
    pub fn stream_config(&self) -> stream::Config {
        stream::Config {
            name: self.stream_name.clone(),
            description: Some("callflow event log, relayed in log order".into()),
            subjects: vec![format!("{}.>", self.subject_prefix)],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            duplicate_window: DUPLICATE_WINDOW,
            num_replicas: self.replicas,
            ..Default::default()
        }
    }

    /// Opens the event stream, creating it when missing.
    pub async fn ensure_stream(&self) -> Result<stream::Stream, BusError> {
        self.jetstream
            .get_or_create_stream(self.stream_config())
            .await
            .map_err(|e| BusError::Stream {
                stream: self.stream_name.clone(),
                reason: e.to_string(),
            })
    }

    /// The subject an event of `category` and `event_type` is published on.
    pub fn subject(&self, category: &str, event_type: &str) -> String {
        format!("{}.{category}.{event_type}", self.subject_prefix)
    }
}
