//! Delivering the notifications of one destination. Each destination has
//! its own durable consumer, so a destination that is down only holds up
//! its own messages. Each notification is a stream (`notification-<id>`,
//! the id derived from the event and the destination): `NotificationAttempted`
//! — appended with the stream's version as expected version, so only one
//! replica sends — then `NotificationSent` or `NotificationFailed`. Chats
//! have no idempotency key, so an attempt whose outcome is unknown is not
//! repeated: at most once.

use std::time::Duration;

use serde_json::{Value, json};

use kit::consumer::{HandleError, Handler, Input, Output};
use kit::events::{Payload, derive_event_id, new_event};
use kit::proto::events::v1::{
    Event, NotificationAttemptFailed, NotificationAttempted, NotificationFailed, NotificationSent,
};
use kit::proto::eventstore::v1::ReadStreamRequest;
use kit::rate_limit::TokenBucket;
use kit::store_client::{AppendError, EventStoreClient, Expected};

use crate::channels::{self, SendError};
use crate::rules::{Rules, Target};
use crate::templates;

/// A destination's limit: `per_minute` messages a minute, bursts of up to a tenth
/// of that (at least one).
pub struct RateLimit(TokenBucket);

impl RateLimit {
    pub fn new(per_minute: u32) -> Self {
        let per_minute = f64::from(per_minute.max(1));
        // A tenth of a minute's allowance may go out at once.
        Self(TokenBucket::new(per_minute / 60.0, per_minute / 10.0))
    }

    /// Takes a token, or says how long until one is available.
    pub fn take(&self) -> Result<(), Duration> {
        self.0.take()
    }
}

/// Most delivery attempts of one notification.
pub const MAX_ATTEMPTS: u32 = 8;

/// The handler for one destination.
pub struct Notifier {
    pub target: Target,
    pub rules: std::sync::Arc<Rules>,
    pub store: EventStoreClient,
    pub http: reqwest::Client,
    pub limit: RateLimit,
}

fn retry(e: impl std::fmt::Display) -> HandleError {
    HandleError::Retry(e.to_string())
}

impl Notifier {
    async fn append<P: Payload>(
        &self,
        stream: &str,
        version: &mut u64,
        id_seed: &str,
        kind: &str,
        cause: &Event,
        payload: &P,
    ) -> Result<(), AppendError> {
        let mut event = new_event(derive_event_id(id_seed, kind), None, payload);
        event.causation_id = cause.event_id.clone();
        event.correlation_id = if cause.correlation_id.is_empty() {
            cause.event_id.clone()
        } else {
            cause.correlation_id.clone()
        };
        event.trace = Some(kit::telemetry::current_trace_context());
        let expected = if *version == 0 {
            Expected::NoStream
        } else {
            Expected::Exact(*version)
        };
        *version = self
            .store
            .append(stream, expected, vec![event])
            .await?
            .stream_version;
        Ok(())
    }
}

impl Handler for Notifier {
    async fn handle(&self, input: &Input) -> Result<Vec<Output>, HandleError> {
        let event = &input.event;
        // Notifications about notifications would loop.
        if event.category == "notification" {
            return Ok(Vec::new());
        }
        for (index, rule) in self.rules.matching(&self.target.name, &event.r#type) {
            let id = derive_event_id(
                &event.event_id,
                &format!("notification/{}/{index}", self.target.name),
            )
            .to_string();
            let stream = format!("notification-{id}");
            let history = self
                .store
                .grpc()
                .read_stream(ReadStreamRequest {
                    stream: stream.clone(),
                    from_version: 1,
                    max_count: 0,
                })
                .await
                .map_err(|s| retry(s.message()))?
                .into_inner()
                .events;
            let mut version = history.last().map_or(0, |e| e.version);
            if history
                .iter()
                .any(|e| e.r#type == "NotificationSent" || e.r#type == "NotificationFailed")
            {
                continue;
            }
            let attempts = history
                .iter()
                .filter(|e| e.r#type == "NotificationAttempted")
                .count() as u32;
            let channel = self.target.destination.channel().to_owned();
            let target = self.target.destination.target(&self.target.name);
            let failed = |reason: String, attempts: u32| NotificationFailed {
                notification_id: id.clone(),
                channel: channel.clone(),
                target: target.clone(),
                reason,
                about_event_id: event.event_id.clone(),
                attempts,
            };
            // An attempt with no outcome recorded may have been delivered.
            if history
                .last()
                .is_some_and(|e| e.r#type == "NotificationAttempted")
            {
                let reason = "the outcome of the last attempt is unknown; not repeated, to avoid a duplicate".to_owned();
                self.append(
                    &stream,
                    &mut version,
                    &id,
                    "failed",
                    event,
                    &failed(reason, attempts),
                )
                .await
                .map_err(retry)?;
                continue;
            }
            if attempts >= MAX_ATTEMPTS {
                let reason = format!("gave up after {attempts} attempts");
                self.append(
                    &stream,
                    &mut version,
                    &id,
                    "failed",
                    event,
                    &failed(reason, attempts),
                )
                .await
                .map_err(retry)?;
                continue;
            }
            if let Err(wait) = self.limit.take() {
                return Err(HandleError::Later(wait));
            }
            let fields = templates::fields(event);
            let template = rule
                .template
                .as_deref()
                .unwrap_or_else(|| templates::default_template(&event.r#type));
            let text = templates::render(template, &fields);
            let attempt = attempts + 1;
            let attempted = NotificationAttempted {
                notification_id: id.clone(),
                channel: channel.clone(),
                target: target.clone(),
                attempt,
                about_event_id: event.event_id.clone(),
            };
            match self
                .append(
                    &stream,
                    &mut version,
                    &id,
                    &format!("attempt/{attempt}"),
                    event,
                    &attempted,
                )
                .await
            {
                Ok(()) => {}
                Err(AppendError::WrongExpectedVersion { .. }) => {
                    return Err(HandleError::Later(Duration::from_secs(2)));
                }
                Err(e) => return Err(retry(e)),
            }
            let body = webhook_body(event, &fields, &text);
            let outcome = channels::send(&self.http, &self.target.destination, &text, &body).await;
            match outcome {
                Ok(()) => {
                    let sent = NotificationSent {
                        notification_id: id.clone(),
                        channel: channel.clone(),
                        target: target.clone(),
                        text,
                        about_event_id: event.event_id.clone(),
                        // The text may hold the client's data: it is theirs.
                        contact_phone: fields.get("phone").cloned().unwrap_or_default(),
                    };
                    self.append(&stream, &mut version, &id, "sent", event, &sent)
                        .await
                        .map_err(retry)?;
                }
                Err(SendError::Refused(reason)) | Err(SendError::Unknown(reason)) => {
                    self.append(
                        &stream,
                        &mut version,
                        &id,
                        "failed",
                        event,
                        &failed(reason, attempt),
                    )
                    .await
                    .map_err(retry)?;
                }
                Err(SendError::RateLimited(wait)) => {
                    self.forget_attempt(&stream, &mut version, &id, attempt, "rate limited", event)
                        .await?;
                    return Err(HandleError::Later(wait));
                }
                Err(SendError::Transient(reason)) => {
                    tracing::warn!(destination = %self.target.name, %reason, "notification not delivered; retrying");
                    self.forget_attempt(&stream, &mut version, &id, attempt, &reason, event)
                        .await?;
                    return Err(HandleError::Later(Duration::from_secs(
                        2u64.pow(attempt.min(8)),
                    )));
                }
            }
        }
        Ok(Vec::new())
    }
}

impl Notifier {
    /// Records that an attempt certainly did not deliver (rate limited,
    /// unreachable, a server error), so the next one may go ahead.
    async fn forget_attempt(
        &self,
        stream: &str,
        version: &mut u64,
        id: &str,
        attempt: u32,
        reason: &str,
        cause: &Event,
    ) -> Result<(), HandleError> {
        let payload = NotificationAttemptFailed {
            notification_id: id.to_owned(),
            attempt,
            reason: reason.to_owned(),
        };
        self.append(
            stream,
            version,
            id,
            &format!("attempt-failed/{attempt}"),
            cause,
            &payload,
        )
        .await
        .map_err(retry)
    }
}

/// The JSON a webhook destination receives.
fn webhook_body(
    event: &Event,
    fields: &std::collections::BTreeMap<&'static str, String>,
    text: &str,
) -> Value {
    json!({
        "event_id": event.event_id,
        "type": event.r#type,
        "stream": event.stream,
        "position": event.position,
        "correlation_id": event.correlation_id,
        "fields": fields,
        "text": text,
    })
}
