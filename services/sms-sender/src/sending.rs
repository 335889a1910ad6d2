//! Sending one SMS, for a due reminder or an order (`SmsOrdered`, from the
//! lead call-back), exactly once.
//!
//! The SMS's stream (`sms-<id>`, the id derived from the `ReminderDue`, or
//! the order's own) is both its record and its lock. Every handling reads it and continues from
//! where it stands:
//!
//! 1. sent or finally failed: nothing to do (a redelivery);
//! 2. the recipient opted out (checked now, not when scheduled): `SmsFailed`;
//! 3. quiet hours in the recipient's zone: come back when the window opens
//!    (checked before the first attempt and before every retry), unless the
//!    order says the SMS answers the client's own request just made;
//! 4. `SmsRequested` with the rendered text and its parts, once;
//! 5. an attempt without an outcome (the sender crashed, or the provider
//!    took the request and never answered): look the SMS up in the
//!    provider's list before anything is sent again;
//! 6. `SmsAttempted`, appended with the stream's version as expected
//!    version — a second replica handling the same message loses that race
//!    and backs off — then the provider is called, and `SmsSent`,
//!    `SmsAttemptFailed` (retried after a capped exponential backoff with
//!    full jitter, or the provider's Retry-After) or `SmsFailed` records what
//!    happened.

use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use rand::Rng;

use kit::clock::SharedClock;
use kit::consumer::{HandleError, Handler, Input, Output};
use kit::events::{
    Payload, decode, derive_event_id, from_proto_time, new_event, to_proto_duration, to_system_time,
};
use kit::exolve::{ExolveClient, ExolveError, SmsQuery};
use kit::local_time::SendWindow;
use kit::phone::{DefaultRegion, PhoneNumber};
use kit::proto::events::v1::{
    Event, MessageKind, ReminderDue, SmsAttemptFailed, SmsAttempted, SmsFailed, SmsOrdered,
    SmsRequested, SmsSent,
};
use kit::proto::eventstore::v1::ReadStreamRequest;
use kit::store_client::{AppendError, EventStoreClient, Expected};

use crate::segments;

/// Provider name in the events.
pub const PROVIDER: &str = "exolve";

/// The sender's settings that shape each SMS.
#[derive(Debug, Clone)]
pub struct Rules {
    pub sender: String,
    pub window: SendWindow,
    pub default_zone: TimeZone,
    pub max_attempts: u32,
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// How long an attempt without an outcome waits for the provider's list
    /// to show the SMS before it counts as not sent.
    pub reconcile_after: Duration,
    /// Longest wait before looking again at a recipient in quiet hours.
    pub quiet_recheck: Duration,
}

/// What is to be sent, from either kind of request.
struct Order {
    sms_id: String,
    phone: String,
    /// The text, or a template with `{name}`.
    text: String,
    kind: MessageKind,
    /// The recipient's zone when the request names it.
    time_zone: Option<TimeZone>,
    respect_quiet_hours: bool,
    reminder_id: String,
}

impl Order {
    fn of(event: &Event) -> Result<Order, HandleError> {
        let reject = |e: kit::events::EventError| HandleError::Reject(e.to_string());
        match event.r#type.as_str() {
            "SmsOrdered" => {
                let order: SmsOrdered = decode(event).map_err(reject)?;
                if uuid::Uuid::parse_str(&order.sms_id).is_err() {
                    return Err(HandleError::Reject(format!(
                        "SmsOrdered has no usable sms_id `{}`",
                        order.sms_id
                    )));
                }
                Ok(Order {
                    sms_id: order.sms_id,
                    phone: order.phone,
                    text: order.text,
                    kind: MessageKind::try_from(order.kind).unwrap_or(MessageKind::Service),
                    time_zone: TimeZone::get(&order.time_zone).ok(),
                    respect_quiet_hours: order.respect_quiet_hours,
                    reminder_id: String::new(),
                })
            }
            _ => {
                let due: ReminderDue = decode(event).map_err(reject)?;
                Ok(Order {
                    sms_id: derive_event_id(&event.event_id, "sms").to_string(),
                    phone: due.phone,
                    text: due.text,
                    kind: MessageKind::Service,
                    time_zone: None,
                    respect_quiet_hours: true,
                    reminder_id: due.reminder_id,
                })
            }
        }
    }
}

/// The handler of `ReminderDue` and `SmsOrdered`.
pub struct Sender {
    pub exolve: ExolveClient,
    pub store: EventStoreClient,
    pub contacts: kit::contacts::Contacts,
    pub pool: deadpool_postgres::Pool,
    pub clock: SharedClock,
    pub rules: Rules,
}

/// What the SMS's stream says so far.
#[derive(Debug, Default)]
struct History {
    version: u64,
    requested: Option<SmsRequested>,
    attempts: u32,
    /// The last attempt, when nothing recorded its outcome.
    open_attempt: Option<(u32, Timestamp)>,
    finished: bool,
}

fn history(events: &[Event]) -> History {
    let mut h = History::default();
    for event in events {
        h.version = event.version;
        match event.r#type.as_str() {
            "SmsRequested" => h.requested = decode(event).ok(),
            "SmsAttempted" => {
                if let Ok(a) = decode::<SmsAttempted>(event) {
                    h.attempts = a.attempt;
                    let at = event
                        .occurred_at
                        .as_ref()
                        .and_then(from_proto_time)
                        .unwrap_or(Timestamp::UNIX_EPOCH);
                    h.open_attempt = Some((a.attempt, at));
                }
            }
            "SmsAttemptFailed" => h.open_attempt = None,
            "SmsSent" | "SmsFailed" => {
                h.open_attempt = None;
                h.finished = true;
            }
            _ => {}
        }
    }
    h
}

fn retry(e: impl std::fmt::Display) -> HandleError {
    HandleError::Retry(e.to_string())
}

/// What one handling appends, with ids derived from the SMS.
struct Recorder<'a> {
    store: &'a EventStoreClient,
    stream: String,
    sms_id: String,
    cause: &'a Event,
    version: u64,
    now: Timestamp,
}

impl Recorder<'_> {
    /// Appends `payload` as the next event of the SMS's stream.
    async fn append<P: Payload>(&mut self, kind: &str, payload: &P) -> Result<(), AppendError> {
        let mut event = new_event(derive_event_id(&self.sms_id, kind), Some(self.now), payload);
        event.causation_id = self.cause.event_id.clone();
        event.correlation_id = if self.cause.correlation_id.is_empty() {
            self.cause.event_id.clone()
        } else {
            self.cause.correlation_id.clone()
        };
        event.trace = Some(kit::telemetry::current_trace_context());
        let expected = if self.version == 0 {
            Expected::NoStream
        } else {
            Expected::Exact(self.version)
        };
        let appended = self
            .store
            .append(&self.stream, expected, vec![event])
            .await?;
        self.version = appended.stream_version;
        Ok(())
    }
}

impl Sender {
    fn backoff(&self, attempt: u32) -> Duration {
        let cap = self
            .rules
            .retry_base
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(20)))
            .min(self.rules.retry_max);
        // Full jitter: anywhere between nothing and the cap.
        cap.mul_f64(rand::rng().random_range(0.0..1.0))
            .max(Duration::from_millis(100))
    }

    fn until(&self, now: Timestamp, then: Timestamp) -> Duration {
        Duration::try_from(then.duration_since(now))
            .unwrap_or_default()
            .max(Duration::from_millis(100))
    }
}

impl Handler for Sender {
    async fn handle(&self, input: &Input) -> Result<Vec<Output>, HandleError> {
        let order = Order::of(&input.event)?;
        let sms_id = order.sms_id.clone();
        let stream = format!("sms-{sms_id}");
        let events = self
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
        let mut h = history(&events);
        if h.finished {
            return Ok(Vec::new());
        }
        let now = self.clock.now();
        let mut record = Recorder {
            store: &self.store,
            stream,
            sms_id: sms_id.clone(),
            cause: &input.event,
            version: h.version,
            now,
        };
        let phone = PhoneNumber::parse(&order.phone, DefaultRegion::default());
        let Ok(phone) = phone else {
            let failed = SmsFailed {
                sms_id,
                phone: order.phone.clone(),
                provider: PROVIDER.into(),
                reason: "invalid phone number".into(),
                retryable: false,
                attempt: h.attempts,
                kind: order.kind as i32,
            };
            record.append("failed", &failed).await.map_err(retry)?;
            return Ok(Vec::new());
        };
        let contact = self
            .contacts
            .load(&phone)
            .await
            .map_err(|s| retry(s.message()))?;
        let fail = |reason: String, retryable: bool, attempts: u32| SmsFailed {
            sms_id: sms_id.clone(),
            phone: phone.to_string(),
            provider: PROVIDER.into(),
            reason,
            retryable,
            attempt: attempts,
            kind: order.kind as i32,
        };
        if contact.opted_out {
            record
                .append(
                    "failed",
                    &fail("the recipient opted out".into(), false, h.attempts),
                )
                .await
                .map_err(retry)?;
            metrics::counter!("callflow_sms_total", "outcome" => "suppressed").increment(1);
            return Ok(Vec::new());
        }
        let zone = order
            .time_zone
            .clone()
            .unwrap_or_else(|| contact.zone(&phone, &self.rules.default_zone));
        let quiet = |now| order.respect_quiet_hours && !self.rules.window.contains(now, &zone);
        if h.open_attempt.is_none() && quiet(now) {
            let opens = self.rules.window.next_open(now, &zone);
            tracing::info!(%sms_id, %opens, "quiet hours for the recipient; waiting");
            return Err(HandleError::Later(self.until(now, opens)));
        }

        let requested = match h.requested.take() {
            Some(requested) => requested,
            None => {
                let text = render(&order.text, contact.name.as_deref());
                let parts = segments::count(&text);
                let requested = SmsRequested {
                    sms_id: sms_id.clone(),
                    phone: phone.to_string(),
                    text,
                    kind: order.kind as i32,
                    encoding: parts.encoding as i32,
                    parts: parts.parts,
                    reminder_id: order.reminder_id.clone(),
                };
                record
                    .append("requested", &requested)
                    .await
                    .map_err(retry)?;
                requested
            }
        };

        if let Some((attempt, started)) = h.open_attempt {
            // Did the provider take the attempt that never got an answer?
            let query = SmsQuery {
                destination: Some(phone.digits().to_owned()),
                since: started.checked_sub(SignedDuration::from_mins(5)).ok(),
                ..Default::default()
            };
            let listed = self.exolve.list_sms(&query).await.map_err(retry)?;
            if let Some(found) = listed.iter().find(|s| s.text == requested.text) {
                let sent = SmsSent {
                    sms_id: sms_id.clone(),
                    phone: phone.to_string(),
                    text: requested.text.clone(),
                    provider: PROVIDER.into(),
                    provider_message_id: found.message_id.clone(),
                    kind: requested.kind,
                    parts: requested.parts,
                    attempt,
                };
                record.append("sent", &sent).await.map_err(retry)?;
                self.await_status(&sms_id, &found.message_id, &phone, &input.event, now)
                    .await?;
                metrics::counter!("callflow_sms_total", "outcome" => "sent_reconciled")
                    .increment(1);
                return Ok(Vec::new());
            }
            if now.duration_since(started)
                < SignedDuration::try_from(self.rules.reconcile_after).unwrap_or_default()
            {
                return Err(HandleError::Later(self.rules.reconcile_after / 2));
            }
            let failed = SmsAttemptFailed {
                sms_id: sms_id.clone(),
                attempt,
                provider: PROVIDER.into(),
                reason: "no answer, and the provider's list does not show it".into(),
                retry_after: None,
            };
            record
                .append(&format!("attempt-failed/{attempt}"), &failed)
                .await
                .map_err(retry)?;
            if quiet(now) {
                let opens = self.rules.window.next_open(now, &zone);
                return Err(HandleError::Later(self.until(now, opens)));
            }
        }

        let attempt = h.attempts + 1;
        if attempt > self.rules.max_attempts {
            let reason = format!("gave up after {} attempts", h.attempts);
            record
                .append("failed", &fail(reason, true, h.attempts))
                .await
                .map_err(retry)?;
            metrics::counter!("callflow_sms_total", "outcome" => "failed").increment(1);
            return Ok(Vec::new());
        }
        let attempted = SmsAttempted {
            sms_id: sms_id.clone(),
            attempt,
            provider: PROVIDER.into(),
        };
        match record
            .append(&format!("attempt/{attempt}"), &attempted)
            .await
        {
            Ok(()) => {}
            // Another replica is on it; look again later.
            Err(AppendError::WrongExpectedVersion { .. }) => {
                return Err(HandleError::Later(Duration::from_secs(5)));
            }
            Err(e) => return Err(retry(e)),
        }
        match self
            .exolve
            .send_sms(&self.rules.sender, phone.digits(), &requested.text)
            .await
        {
            Ok(message_id) => {
                let sent = SmsSent {
                    sms_id: sms_id.clone(),
                    phone: phone.to_string(),
                    text: requested.text.clone(),
                    provider: PROVIDER.into(),
                    provider_message_id: message_id.clone(),
                    kind: requested.kind,
                    parts: requested.parts,
                    attempt,
                };
                // If this append fails, the attempt stays open and the next
                // handling finds the SMS in the provider's list.
                record.append("sent", &sent).await.map_err(retry)?;
                self.await_status(&sms_id, &message_id, &phone, &input.event, now)
                    .await?;
                metrics::counter!("callflow_sms_total", "outcome" => "sent").increment(1);
                Ok(Vec::new())
            }
            Err(ExolveError::Permanent(reason)) => {
                record
                    .append("failed", &fail(reason, false, attempt))
                    .await
                    .map_err(retry)?;
                metrics::counter!("callflow_sms_total", "outcome" => "refused").increment(1);
                Ok(Vec::new())
            }
            Err(ExolveError::Ambiguous(reason)) => {
                tracing::warn!(%sms_id, attempt, %reason, "SMS outcome unknown; will reconcile before resending");
                Err(HandleError::Later(self.rules.reconcile_after))
            }
            Err(error) => {
                let retry_after = match &error {
                    ExolveError::RateLimited(after) => *after,
                    _ => None,
                };
                let failed = SmsAttemptFailed {
                    sms_id: sms_id.clone(),
                    attempt,
                    provider: PROVIDER.into(),
                    reason: error.to_string(),
                    retry_after: retry_after.map(to_proto_duration),
                };
                record
                    .append(&format!("attempt-failed/{attempt}"), &failed)
                    .await
                    .map_err(retry)?;
                let wait = retry_after.unwrap_or_else(|| self.backoff(attempt));
                Err(HandleError::Later(wait))
            }
        }
    }
}

impl Sender {
    /// Remembers to poll the provider for the SMS's delivery report.
    async fn await_status(
        &self,
        sms_id: &str,
        message_id: &str,
        phone: &PhoneNumber,
        cause: &Event,
        now: Timestamp,
    ) -> Result<(), HandleError> {
        let client = self.pool.get().await.map_err(retry)?;
        let correlation = uuid::Uuid::parse_str(&cause.correlation_id)
            .or_else(|_| uuid::Uuid::parse_str(&cause.event_id))
            .unwrap_or_default();
        let sms_id = uuid::Uuid::parse_str(sms_id).map_err(retry)?;
        let insert = client
            .prepare_cached(
                "INSERT INTO sms.awaiting_status (sms_id, message_id, phone, correlation_id, sent_at)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (sms_id) DO NOTHING",
            )
            .await
            .map_err(retry)?;
        client
            .execute(
                &insert,
                &[
                    &sms_id,
                    &message_id,
                    &phone.to_string(),
                    &correlation,
                    &to_system_time(now),
                ],
            )
            .await
            .map_err(retry)?;
        Ok(())
    }
}

/// The SMS text from a reminder's template: `{name}` becomes the client's
/// name (or nothing, with the space before it).
pub fn render(template: &str, name: Option<&str>) -> String {
    match name {
        Some(name) => template.replace("{name}", name),
        None => template.replace(" {name}", "").replace("{name}", ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fill_the_template_or_vanish() {
        assert_eq!(
            render("Здравствуйте, {name}! Напоминаем.", Some("Анна")),
            "Здравствуйте, Анна! Напоминаем."
        );
        assert_eq!(
            render("Hello {name}, a reminder.", None),
            "Hello, a reminder."
        );
        assert_eq!(render("No placeholder.", Some("Anna")), "No placeholder.");
    }
}
