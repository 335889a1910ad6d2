//! The JetStream consumer helper: a service says "for this input event,
//! append these output events", and this module does the rest.
//!
//! - A durable pull consumer with explicit ack, so a restart resumes where
//!   the service left off and an unacknowledged message is delivered again.
//! - At most `concurrency` messages are handled at once.
//! - Output event ids are derived from the input's id and the output's kind
//!   (UUIDv5), and the store is idempotent on ids: handling a message twice
//!   appends nothing new. Acks happen only after the outputs are committed.
//! - A handler that fails with [`HandleError::Retry`] gets the message again
//!   after an exponential backoff with jitter; after `max_deliveries` failed
//!   deliveries, or at once for [`HandleError::Reject`], the message is parked:
//!   a `DeadLettered` event records why, and the message is not redelivered.
//!   [`HandleError::Later`] asks for the message again after a given delay
//!   and is never parked (waiting is not failing).
//! - The handler runs in a span whose parent is the trace context of the
//!   message, so one call is one trace across services.
//! - On shutdown it stops pulling, lets in-flight handlers finish, and
//!   returns; anything unacknowledged is redelivered to the next instance.
//! - Beside it, a second durable consumer follows the operators' requests
//!   to retry a parked message of this consumer ([`crate::dead_letters`]).

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::{AckKind, Message};
use futures::StreamExt;
use prost::Message as _;
use rand::Rng;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::bus::Bus;
use crate::events::{Payload, derive_event_id, new_event, to_proto_time};
use crate::proto::events::v1::{DeadLettered, Event};
use crate::proto::eventstore::v1::NewEvent;
use crate::store_client::{AppendError, EventStoreClient, Expected};

/// How a consumer pulls, retries and parks.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Durable consumer name; also names the dead-letter stream and enters
    /// every derived output id, so two consumers of one event never collide.
    pub name: String,
    /// NATS subject filter, for example `callflow.evt.call.TranscriptReady`
    /// or `callflow.evt.call.>` (NATS 2.9 allows one filter per consumer).
    pub filter_subject: String,
    /// Messages handled at once.
    pub concurrency: usize,
    /// Deliveries after which a failing message is parked.
    pub max_deliveries: u64,
    /// How long the server waits for an ack before redelivering.
    pub ack_wait: Duration,
    /// Delay before the first redelivery; doubles each time, with jitter.
    pub backoff_base: Duration,
    /// Longest delay between redeliveries.
    pub backoff_max: Duration,
}

impl ConsumerConfig {
    /// Defaults for a consumer named `name` reading `filter_subject`.
    pub fn new(name: impl Into<String>, filter_subject: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            filter_subject: filter_subject.into(),
            concurrency: 16,
            max_deliveries: 5,
            ack_wait: Duration::from_secs(30),
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
        }
    }

    /// The redelivery delay after `delivered` deliveries: exponential, capped,
    /// with up to 20% jitter so failing messages do not come back in step.
    pub fn backoff(&self, delivered: u64) -> Duration {
        let exponent = delivered.saturating_sub(1).min(20) as u32;
        let delay = self
            .backoff_base
            .saturating_mul(2u32.saturating_pow(exponent))
            .min(self.backoff_max);
        let jitter = rand::rng().random_range(0.0..0.2);
        delay.mul_f64(1.0 + jitter)
    }
}

/// An event delivered to a handler.
#[derive(Debug, Clone)]
pub struct Input {
    pub event: Event,
    /// The subject it arrived on.
    pub subject: String,
    /// How many times it has been delivered, 1 the first time.
    pub delivered: u64,
}

/// An event a handler wants appended.
#[derive(Debug, Clone)]
pub struct Output {
    stream: String,
    expected: Expected,
    kind: String,
    event: NewEvent,
}

impl Output {
    /// Appends `payload` to `stream`. `kind` names this output among the
    /// handler's outputs for one input (`consent`, `opt-out`…); it derives
    /// the event id, so it must be stable and distinct per input.
    pub fn new<P: Payload>(
        stream: impl Into<String>,
        kind: impl Into<String>,
        payload: &P,
    ) -> Self {
        Self {
            stream: stream.into(),
            expected: Expected::Any,
            kind: kind.into(),
            event: new_event(uuid::Uuid::nil(), None, payload),
        }
    }

    /// Requires the stream to be at this version.
    pub fn expect(mut self, expected: Expected) -> Self {
        self.expected = expected;
        self
    }

    /// When the fact happened (default: when the store records it).
    pub fn occurred_at(mut self, at: jiff::Timestamp) -> Self {
        self.event.occurred_at = Some(to_proto_time(at));
        self
    }
}

/// Why a handler could not handle an input.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// Might work later (a provider is down): redeliver after a backoff.
    #[error("{0}")]
    Retry(String),
    /// Will never work (the input is wrong): park it now.
    #[error("{0}")]
    Reject(String),
    /// Not yet (a transcript still being made, a quiet hour): deliver it
    /// again after this long. Never parked: the handler decides when to
    /// give up.
    #[error("not yet; again in {0:?}")]
    Later(Duration),
}

/// What a service does with its inputs.
pub trait Handler: Send + Sync + 'static {
    fn handle(
        &self,
        input: &Input,
    ) -> impl Future<Output = Result<Vec<Output>, HandleError>> + Send;
}

/// Errors that stop a consumer.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("cannot create consumer {name}: {reason}")]
    Create { name: String, reason: String },
}

/// Runs `handler` over the consumer described by `config` until `shutdown`.
/// Reconnects on its own when NATS goes away.
pub async fn run<H: Handler>(
    bus: Bus,
    store: EventStoreClient,
    config: ConsumerConfig,
    handler: Arc<H>,
    shutdown: CancellationToken,
) -> Result<(), ConsumerError> {
    let config = Arc::new(config);
    let messages = reconnecting(&config.name, &shutdown, || {
        consume(&bus, &store, &config, &handler, &shutdown)
    });
    let retries_name = crate::dead_letters::retry_consumer_name(&config.name);
    let retries = reconnecting(&retries_name, &shutdown, || {
        crate::dead_letters::follow_retry_requests(
            &bus,
            &store,
            &config,
            handler.as_ref(),
            &shutdown,
        )
    });
    tokio::join!(messages, retries);
    Ok(())
}

/// Runs `attempt` again and again, with a growing pause after a failure,
/// until `shutdown`.
async fn reconnecting<F, Fut>(name: &str, shutdown: &CancellationToken, mut attempt: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut backoff = Duration::from_millis(200);
    while !shutdown.is_cancelled() {
        match attempt().await {
            Ok(()) => backoff = Duration::from_millis(200),
            Err(reason) => {
                tracing::warn!(consumer = %name, %reason, "consumer interrupted; reconnecting");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

async fn consume<H: Handler>(
    bus: &Bus,
    store: &EventStoreClient,
    config: &Arc<ConsumerConfig>,
    handler: &Arc<H>,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let stream = bus.ensure_stream().await.map_err(|e| e.to_string())?;
    let consumer = stream
        .get_or_create_consumer(
            &config.name,
            pull::Config {
                durable_name: Some(config.name.clone()),
                description: Some(format!("callflow consumer {}", config.name)),
                filter_subject: config.filter_subject.clone(),
                ack_policy: AckPolicy::Explicit,
                ack_wait: config.ack_wait,
                deliver_policy: DeliverPolicy::All,
                // Parking is ours (with a DeadLettered event), not the server's.
                max_deliver: -1,
                max_ack_pending: (config.concurrency * 4) as i64,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    let messages = consumer
        .stream()
        .max_messages_per_batch(config.concurrency * 2)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(consumer = %config.name, filter = %config.filter_subject, "consuming");

    let stopped = shutdown.clone();
    let failures = messages
        .take_until(async move { stopped.cancelled().await })
        .map(|message| async move {
            match message {
                Ok(message) => {
                    process(bus, store, config, handler.as_ref(), message).await;
                    Ok(())
                }
                Err(error) => Err(error.to_string()),
            }
        })
        .buffer_unordered(config.concurrency)
        .filter_map(|r| async move { r.err() });
    let result = std::pin::pin!(failures).next().await;
    match result {
        // The stream ended: shutdown, or NATS closed it.
        None if shutdown.is_cancelled() => Ok(()),
        None => Err("message stream ended".into()),
        Some(error) => Err(error),
    }
}

/// Handles one message and acknowledges it: ack when done, nak with a delay
/// to retry, term after parking it.
async fn process<H: Handler>(
    bus: &Bus,
    store: &EventStoreClient,
    config: &ConsumerConfig,
    handler: &H,
    message: Message,
) {
    let delivered = deliveries(&message);
    let stream_sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
    let subject = message.subject.to_string();
    let span = tracing::info_span!("consume", consumer = %config.name, %subject, delivered);
    crate::telemetry::set_parent_from_nats(&span, message.headers.as_ref());
    let started = Instant::now();

    let outcome = async {
        let event = match Event::decode(message.payload.as_ref()) {
            Ok(event) => event,
            Err(e) => {
                let event = Event {
                    event_id: format!("nats-{}-{stream_sequence}", bus.stream_name),
                    ..Default::default()
                };
                return park(
                    store,
                    config,
                    &event,
                    &subject,
                    delivered,
                    &format!("not an event envelope: {e}"),
                )
                .await;
            }
        };
        let input = Input {
            event,
            subject: subject.clone(),
            delivered,
        };
        let result = match handler.handle(&input).await {
            Ok(outputs) => append_outputs(store, config, &input.event, outputs).await,
            Err(error) => Err(error),
        };
        match result {
            Ok(()) => Outcome::Done,
            Err(HandleError::Retry(reason)) if delivered < config.max_deliveries => {
                tracing::warn!(%reason, delivered, "handling failed; will retry");
                Outcome::Retry(config.backoff(delivered))
            }
            Err(HandleError::Later(delay)) => Outcome::Retry(delay),
            Err(HandleError::Retry(reason)) | Err(HandleError::Reject(reason)) => {
                park(store, config, &input.event, &subject, delivered, &reason).await
            }
        }
    }
    .instrument(span.clone())
    .await;

    let ack = match outcome {
        Outcome::Done => AckKind::Ack,
        Outcome::Retry(delay) => AckKind::Nak(Some(delay)),
        Outcome::Parked => AckKind::Term,
    };
    let label = match ack {
        AckKind::Ack => "done",
        AckKind::Term => "parked",
        _ => "retry",
    };
    metrics::counter!("callflow_consumer_messages_total", "consumer" => config.name.clone(), "outcome" => label)
        .increment(1);
    metrics::histogram!("callflow_consumer_handle_seconds", "consumer" => config.name.clone())
        .record(started.elapsed().as_secs_f64());
    if let Err(error) = message.ack_with(ack).await {
        // The server will redeliver; handling is idempotent.
        tracing::warn!(parent: &span, %error, "ack not sent");
    }
}

/// How many times `message` has been delivered, 1 the first time.
pub(crate) fn deliveries(message: &Message) -> u64 {
    message
        .info()
        .map(|i| i.delivered.max(1) as u64)
        .unwrap_or(1)
}

enum Outcome {
    Done,
    Retry(Duration),
    Parked,
}

/// Appends a handler's outputs, grouped by stream in the order given, with
/// ids derived from the input.
pub(crate) async fn append_outputs(
    store: &EventStoreClient,
    config: &ConsumerConfig,
    input: &Event,
    outputs: Vec<Output>,
) -> Result<(), HandleError> {
    let mut kinds = HashSet::new();
    for output in &outputs {
        if !kinds.insert(output.kind.as_str()) {
            return Err(HandleError::Reject(format!(
                "handler produced two outputs of kind `{}` for one input",
                output.kind
            )));
        }
    }
    let trace = crate::telemetry::current_trace_context();
    let correlation = if input.correlation_id.is_empty() {
        input.event_id.clone()
    } else {
        input.correlation_id.clone()
    };
    let mut batches: Vec<(String, Expected, Vec<NewEvent>)> = Vec::new();
    for output in outputs {
        let mut event = output.event;
        event.event_id =
            derive_event_id(&input.event_id, &format!("{}/{}", config.name, output.kind))
                .to_string();
        event.correlation_id = correlation.clone();
        event.causation_id = input.event_id.clone();
        event.trace = Some(trace.clone());
        match batches.last_mut() {
            Some((stream, expected, events))
                if *stream == output.stream && *expected == output.expected =>
            {
                events.push(event)
            }
            _ => batches.push((output.stream, output.expected, vec![event])),
        }
    }
    for (stream, expected, events) in batches {
        store
            .append(&stream, expected, events)
            .await
            .map_err(|e| match e {
                AppendError::Unavailable(_) => HandleError::Retry(e.to_string()),
                // A version conflict may resolve once other events land.
                AppendError::WrongExpectedVersion { .. } => HandleError::Retry(e.to_string()),
                AppendError::Invalid(_) => HandleError::Reject(e.to_string()),
            })?;
    }
    Ok(())
}

/// Records a `DeadLettered` event for `event`. When even that fails the
/// message is retried later rather than dropped.
async fn park(
    store: &EventStoreClient,
    config: &ConsumerConfig,
    event: &Event,
    subject: &str,
    delivered: u64,
    reason: &str,
) -> Outcome {
    tracing::error!(consumer = %config.name, event_id = %event.event_id, delivered, %reason, "parking message");
    let payload = DeadLettered {
        consumer: config.name.clone(),
        event_id: event.event_id.clone(),
        event_type: event.r#type.clone(),
        event_stream: event.stream.clone(),
        event_position: event.position,
        subject: subject.to_owned(),
        deliveries: delivered,
        reason: reason.to_owned(),
    };
    let mut dead = new_event(
        derive_event_id(&event.event_id, &format!("{}/dead-letter", config.name)),
        None,
        &payload,
    );
    dead.causation_id = event.event_id.clone();
    dead.correlation_id = event.correlation_id.clone();
    dead.trace = Some(crate::telemetry::current_trace_context());
    let stream = crate::dead_letters::stream_of(&config.name);
    match store.append(&stream, Expected::Any, vec![dead]).await {
        Ok(_) => {
            metrics::counter!("callflow_dead_letters_total", "consumer" => config.name.clone())
                .increment(1);
            Outcome::Parked
        }
        Err(error) => {
            tracing::error!(%error, "cannot record dead letter; retrying the message later");
            Outcome::Retry(config.backoff_max)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let config = ConsumerConfig {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            ..ConsumerConfig::new("t", "x.>")
        };
        let first = config.backoff(1);
        assert!(first >= Duration::from_millis(100) && first <= Duration::from_millis(120));
        let third = config.backoff(3);
        assert!(third >= Duration::from_millis(400) && third <= Duration::from_millis(480));
        let late = config.backoff(50);
        assert!(late >= Duration::from_secs(1) && late <= Duration::from_millis(1200));
    }
}
