//! Parked messages, retried when an operator asks.
//!
//! A consumer parks a message it gave up on with a `DeadLettered` event on
//! the stream `deadletter-<consumer>` ([`crate::consumer`]). An operator
//! (through the operations console) answers with a `DeadLetterRetryRequested`
//! or a `DeadLetterDiscarded` on the same stream. The console only writes to
//! the log; only the consumer's own service has the handler, so every
//! consumer run by [`crate::consumer::run`] also follows the retry requests,
//! through a second durable pull consumer ([`retry_consumer_name`], subject
//! [`retry_subject`]):
//!
//! - A request for another consumer is acknowledged and ignored; a
//!   `DeadLetterDiscarded` is only a record, nothing acts on it.
//! - The parked event is found through its `DeadLettered` record and read
//!   back from the log at its position.
//! - The handler runs on it as on a first delivery (`delivered = 1`, the
//!   subject it was parked from), and its outputs get the ids a normal
//!   delivery gives them: a retry of something whose outputs are in fact
//!   already in the log appends nothing new.
//! - The outcome is a `DeadLetterRetried` whose id is derived from the
//!   request's ([`retried_event_id`]). It is looked for before the handler
//!   runs, so a redelivered request neither runs the handler again nor
//!   records twice. A failure is recorded, not parked again: the operator
//!   may ask again, which is a new request with a new id.
//! - A handler that answers [`HandleError::Later`] gets the request back
//!   after that delay, as a delivery would; when the store cannot be read
//!   or written, the request comes back after a backoff.
//!
//! Requests are handled one at a time: retries are rare, and one at a time
//! no two retries of one message overlap inside a service.

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::{AckKind, Message};
use futures::StreamExt;
use prost::Message as _;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::bus::Bus;
use crate::consumer::{ConsumerConfig, HandleError, Handler, Input, append_outputs};
use crate::events::{decode, derive_event_id, new_event, type_of};
use crate::proto::events::v1::{DeadLetterRetried, DeadLetterRetryRequested, DeadLettered, Event};
use crate::proto::eventstore::v1::{ReadAllRequest, ReadStreamRequest};
use crate::store_client::{AppendError, EventStoreClient, Expected};

/// The stream category of parked messages and what operators do with them.
pub const CATEGORY: &str = "deadletter";

/// The stream of the messages `consumer` parked: `deadletter-<consumer>`.
pub fn stream_of(consumer: &str) -> String {
    format!("{CATEGORY}-{consumer}")
}

/// The durable JetStream consumer that follows retry requests for
/// `consumer`: `<consumer>-retries`.
pub fn retry_consumer_name(consumer: &str) -> String {
    format!("{consumer}-retries")
}

/// The subject retry requests are published on:
/// `<prefix>.deadletter.DeadLetterRetryRequested`.
pub fn retry_subject(bus: &Bus) -> String {
    bus.subject(CATEGORY, type_of::<DeadLetterRetryRequested>())
}

/// The id of the `DeadLetterRetried` that answers the request with id
/// `request_event_id` to `consumer`.
pub fn retried_event_id(consumer: &str, request_event_id: &str) -> Uuid {
    derive_event_id(request_event_id, &format!("{consumer}/retried"))
}

/// Follows the retry requests for `config.name` until `shutdown`; an error
/// means the connection to NATS was lost (the caller reconnects).
pub(crate) async fn follow_retry_requests<H: Handler>(
    bus: &Bus,
    store: &EventStoreClient,
    config: &ConsumerConfig,
    handler: &H,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let name = retry_consumer_name(&config.name);
    let subject = retry_subject(bus);
    let stream = bus.ensure_stream().await.map_err(|e| e.to_string())?;
    let consumer = stream
        .get_or_create_consumer(
            &name,
            pull::Config {
                durable_name: Some(name.clone()),
                description: Some(format!("callflow retry requests for {}", config.name)),
                filter_subject: subject.clone(),
                ack_policy: AckPolicy::Explicit,
                ack_wait: config.ack_wait,
                deliver_policy: DeliverPolicy::All,
                max_deliver: -1,
                max_ack_pending: 4,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(1)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(consumer = %name, filter = %subject, "following retry requests");
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            message = messages.next() => message,
        };
        match message {
            Some(Ok(message)) => on_request(store, config, handler, message).await,
            Some(Err(error)) => return Err(error.to_string()),
            None if shutdown.is_cancelled() => return Ok(()),
            None => return Err("message stream ended".into()),
        }
    }
}

/// Handles one request message and acknowledges it.
async fn on_request<H: Handler>(
    store: &EventStoreClient,
    config: &ConsumerConfig,
    handler: &H,
    message: Message,
) {
    let delivered = crate::consumer::deliveries(&message);
    let span = tracing::info_span!("dead_letter_retry", consumer = %config.name, delivered);
    crate::telemetry::set_parent_from_nats(&span, message.headers.as_ref());
    let ack = answer(store, config, handler, &message.payload, delivered)
        .instrument(span.clone())
        .await;
    if let Err(error) = message.ack_with(ack).await {
        // The request comes again; its recorded outcome is found then.
        tracing::warn!(parent: &span, %error, "ack not sent");
    }
}

/// Answers the request in `payload`: how to acknowledge it.
async fn answer<H: Handler>(
    store: &EventStoreClient,
    config: &ConsumerConfig,
    handler: &H,
    payload: &[u8],
    delivered: u64,
) -> AckKind {
    let decoded = Event::decode(payload)
        .map_err(|e| e.to_string())
        .and_then(|event| {
            let request = decode::<DeadLetterRetryRequested>(&event).map_err(|e| e.to_string())?;
            Ok((event, request))
        });
    let (request_event, request) = match decoded {
        Ok(decoded) => decoded,
        Err(reason) => {
            tracing::warn!(%reason, "not a retry request; dropped");
            return AckKind::Term;
        }
    };
    if request.consumer != config.name {
        return AckKind::Ack;
    }
    let again = || AckKind::Nak(Some(config.backoff(delivered)));
    let records = match read_stream(store, &stream_of(&config.name)).await {
        Ok(records) => records,
        Err(reason) => {
            tracing::warn!(%reason, "cannot read the dead letters; the request comes again");
            return again();
        }
    };
    let outcome_id = retried_event_id(&config.name, &request_event.event_id).to_string();
    if records.iter().any(|e| e.event_id == outcome_id) {
        return AckKind::Ack;
    }
    let (succeeded, detail) = match retry(store, config, handler, &records, &request.event_id).await
    {
        Ok(()) => (true, String::new()),
        Err(Failure::Failed(detail)) => (false, detail),
        Err(Failure::Later(delay)) => return AckKind::Nak(Some(delay)),
        Err(Failure::Unavailable(reason)) => {
            tracing::warn!(%reason, "cannot retry now; the request comes again");
            return again();
        }
    };
    let outcome = DeadLetterRetried {
        consumer: config.name.clone(),
        event_id: request.event_id,
        succeeded,
        detail,
        requested_by: request.requested_by,
    };
    match record(store, &request_event, outcome_id, &outcome).await {
        Ok(()) => AckKind::Ack,
        Err(AppendError::Invalid(reason)) => {
            tracing::error!(%reason, "the outcome of a retry was refused; request dropped");
            AckKind::Term
        }
        Err(error) => {
            tracing::warn!(%error, "cannot record the outcome of a retry; the request comes again");
            again()
        }
    }
}

/// Why a retry did not succeed.
enum Failure {
    /// It did not work; recorded as such.
    Failed(String),
    /// The handler asks for the message again after this long.
    Later(Duration),
    /// The store could not be read; not recorded, the request comes again.
    Unavailable(String),
}

impl From<HandleError> for Failure {
    fn from(error: HandleError) -> Self {
        match error {
            HandleError::Later(delay) => Failure::Later(delay),
            other => Failure::Failed(other.to_string()),
        }
    }
}

/// Hands the parked event `event_id` (found in `records`) to the handler
/// once more and appends its outputs.
async fn retry<H: Handler>(
    store: &EventStoreClient,
    config: &ConsumerConfig,
    handler: &H,
    records: &[Event],
    event_id: &str,
) -> Result<(), Failure> {
    let parked = find_parked(records, event_id).ok_or_else(|| {
        Failure::Failed(format!(
            "no message {event_id} is parked by {}",
            config.name
        ))
    })?;
    if parked.event_position == 0 {
        return Err(Failure::Failed(format!(
            "the parked message {event_id} was not an event envelope; there is nothing to retry"
        )));
    }
    let event = read_at(store, parked.event_position)
        .await
        .map_err(Failure::Unavailable)?
        .filter(|event| event.event_id == event_id)
        .ok_or_else(|| {
            Failure::Failed(format!(
                "event {event_id} is not in the log at position {}",
                parked.event_position
            ))
        })?;
    tracing::info!(event_id, "retrying a parked message");
    let input = Input {
        event,
        subject: parked.subject,
        delivered: 1,
    };
    let outputs = handler.handle(&input).await?;
    append_outputs(store, config, &input.event, outputs).await?;
    Ok(())
}

/// The latest `DeadLettered` record of `event_id` among `records`.
fn find_parked(records: &[Event], event_id: &str) -> Option<DeadLettered> {
    records
        .iter()
        .rev()
        .filter_map(|event| decode::<DeadLettered>(event).ok())
        .find(|parked| parked.event_id == event_id)
}

/// Appends `outcome` with id `outcome_id`, caused by the request.
async fn record(
    store: &EventStoreClient,
    request: &Event,
    outcome_id: String,
    outcome: &DeadLetterRetried,
) -> Result<(), AppendError> {
    let mut event = new_event(Uuid::nil(), None, outcome);
    event.event_id = outcome_id;
    event.causation_id = request.event_id.clone();
    event.correlation_id = if request.correlation_id.is_empty() {
        request.event_id.clone()
    } else {
        request.correlation_id.clone()
    };
    event.trace = Some(crate::telemetry::current_trace_context());
    store
        .append(&stream_of(&outcome.consumer), Expected::Any, vec![event])
        .await?;
    let label = if outcome.succeeded {
        "succeeded"
    } else {
        "failed"
    };
    tracing::info!(event_id = %outcome.event_id, outcome = label, detail = %outcome.detail, "retry recorded");
    metrics::counter!("callflow_dead_letter_retries_total", "consumer" => outcome.consumer.clone(), "outcome" => label)
        .increment(1);
    Ok(())
}

/// Every event of `stream`, page by page.
async fn read_stream(store: &EventStoreClient, stream: &str) -> Result<Vec<Event>, String> {
    let mut events: Vec<Event> = Vec::new();
    loop {
        let from_version = events.last().map_or(1, |e| e.version + 1);
        let page = store
            .grpc()
            .read_stream(ReadStreamRequest {
                stream: stream.to_owned(),
                from_version,
                max_count: 0,
            })
            .await
            .map_err(|status| status.message().to_owned())?
            .into_inner();
        let done = page.events.is_empty()
            || page
                .events
                .last()
                .is_some_and(|e| e.version >= page.stream_version);
        events.extend(page.events);
        if done {
            return Ok(events);
        }
    }
}

/// The event at global `position`, if there is one.
async fn read_at(store: &EventStoreClient, position: u64) -> Result<Option<Event>, String> {
    let mut responses = store
        .grpc()
        .read_all(ReadAllRequest {
            after_position: position - 1,
            to_position: position,
            filter: None,
            batch_size: 1,
        })
        .await
        .map_err(|status| status.message().to_owned())?
        .into_inner();
    while let Some(response) = responses
        .message()
        .await
        .map_err(|status| status.message().to_owned())?
    {
        if let Some(event) = response.events.into_iter().find(|e| e.position == position) {
            return Ok(Some(event));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::new_event;

    fn parked(event_id: &str, reason: &str) -> Event {
        let payload = DeadLettered {
            event_id: event_id.into(),
            reason: reason.into(),
            ..Default::default()
        };
        let new = new_event(Uuid::new_v4(), None, &payload);
        Event {
            event_id: new.event_id,
            r#type: new.r#type,
            payload: new.payload,
            ..Default::default()
        }
    }

    #[test]
    fn the_latest_record_of_the_event_is_found() {
        let records = [
            parked("a", "first"),
            parked("b", "other"),
            parked("a", "second"),
        ];
        assert_eq!(find_parked(&records, "a").unwrap().reason, "second");
        assert!(find_parked(&records, "c").is_none());
    }

    #[test]
    fn names_and_ids() {
        assert_eq!(stream_of("notifier"), "deadletter-notifier");
        assert_eq!(
            crate::events::stream_category(&stream_of("consent-analyzer")),
            Ok(CATEGORY)
        );
        assert_eq!(retry_consumer_name("notifier"), "notifier-retries");
        assert_eq!(
            retried_event_id("a", "req"),
            retried_event_id("a", "req"),
            "stable"
        );
        assert_ne!(retried_event_id("a", "req"), retried_event_id("b", "req"));
        assert_ne!(retried_event_id("a", "req"), retried_event_id("a", "req2"));
    }
}
