//! The timers: reminders whose time has come are fired — `ReminderDue` is
//! appended to their stream — exactly once, by however many replicas.
//!
//! Each round claims a batch of due rows with `FOR UPDATE SKIP LOCKED`, so
//! replicas never claim the same reminder at once, and appends the events
//! with the row's version as the expected stream version, so a reminder
//! cancelled or moved meanwhile is not fired. The event id is derived from
//! the reminder and its attempt: a replica that crashed after appending but
//! before committing its claim leaves the row pending, and whoever claims it
//! next appends the same event again, which the store answers as a
//! duplicate. A reminder due longer ago than the lateness limit (the service
//! was down) expires instead of firing.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use kit::clock::SharedClock;
use kit::events::{derive_event_id, new_event, to_proto_time, to_system_time};
use kit::proto::events::v1::{ReminderDue, ReminderExpired};
use kit::store_client::{AppendError, EventStoreClient, Expected};

use crate::projection;

/// How the timers run.
#[derive(Debug, Clone, Copy)]
pub struct TimerConfig {
    /// Rows claimed per round.
    pub batch: i64,
    /// Appends in flight at once within a round.
    pub concurrency: usize,
    /// How often to look for due reminders when none is due.
    pub poll: Duration,
    /// A reminder due longer ago than this expires instead of firing.
    pub max_lateness: Duration,
}

struct Claimed {
    id: Uuid,
    correlation: Uuid,
    phone: String,
    text: String,
    due_at: Timestamp,
    attempt: i32,
    version: i64,
}

/// Fires due reminders until `shutdown`.
pub async fn run(
    pool: deadpool_postgres::Pool,
    store: EventStoreClient,
    clock: SharedClock,
    config: TimerConfig,
    shutdown: CancellationToken,
) {
    while !shutdown.is_cancelled() {
        match round(&pool, &store, &clock, &config).await {
            Ok(fired) if fired > 0 => continue,
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "timer round failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(config.poll) => {}
        }
    }
}

/// One round: claims what is due now and fires it. Returns how many
/// reminders changed state.
pub async fn round(
    pool: &deadpool_postgres::Pool,
    store: &EventStoreClient,
    clock: &SharedClock,
    config: &TimerConfig,
) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
    let now = clock.now();
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let rows = tx
        .query(
            "SELECT reminder_id, phone, text, due_at, attempt, version, correlation_id FROM scheduler.reminders
             WHERE state = 'pending' AND due_at <= $1
             ORDER BY due_at LIMIT $2
             FOR UPDATE SKIP LOCKED",
            &[&to_system_time(now), &config.batch],
        )
        .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let claimed: Vec<Claimed> = rows
        .iter()
        .map(|row| Claimed {
            id: row.get(0),
            phone: row.get(1),
            text: row.get(2),
            due_at: Timestamp::try_from(row.get::<_, SystemTime>(3)).unwrap_or(now),
            attempt: row.get(4),
            version: row.get(5),
            correlation: row.get(6),
        })
        .collect();
    let max_lateness = SignedDuration::try_from(config.max_lateness).unwrap_or(SignedDuration::MAX);
    let store = Arc::new(store.clone());
    let fired: Vec<projection::StateChange> = futures::stream::iter(claimed)
        .map(|reminder| {
            let store = store.clone();
            async move { fire(&store, reminder, now, max_lateness).await }
        })
        .buffer_unordered(config.concurrency)
        .filter_map(|change| async move { change })
        .collect()
        .await;
    // One statement for the whole round: a round trip per reminder would
    // cost more than firing it.
    projection::set_states(&*tx, &fired).await?;
    tx.commit().await?;
    Ok(fired.len())
}

/// Appends `ReminderDue` (or `ReminderExpired`) for one claimed reminder;
/// returns the state change it makes to the projection, or `None` when the
/// reminder changed meanwhile or the store is unreachable (a later round
/// retries).
async fn fire(
    store: &EventStoreClient,
    reminder: Claimed,
    now: Timestamp,
    max_lateness: SignedDuration,
) -> Option<projection::StateChange> {
    let stream = format!("reminder-{}", reminder.id);
    let lateness = now.duration_since(reminder.due_at);
    let cause = reminder.id.to_string();
    let (event, state, attempt) = if lateness > max_lateness {
        let payload = ReminderExpired {
            reminder_id: cause.clone(),
            due_at: Some(to_proto_time(reminder.due_at)),
        };
        (
            new_event(derive_event_id(&cause, "expired"), Some(now), &payload),
            "expired",
            None,
        )
    } else {
        let attempt = reminder.attempt as u32 + 1;
        let payload = ReminderDue {
            reminder_id: cause.clone(),
            phone: reminder.phone,
            text: reminder.text,
            due_at: Some(to_proto_time(reminder.due_at)),
            attempt,
        };
        (
            new_event(
                derive_event_id(&cause, &format!("due/{attempt}")),
                Some(now),
                &payload,
            ),
            "due",
            Some(attempt as i32),
        )
    };
    let mut event = event;
    event.correlation_id = reminder.correlation.to_string();
    event.trace = Some(kit::telemetry::current_trace_context());
    let appended = store
        .append(
            &stream,
            Expected::Exact(reminder.version as u64),
            vec![event],
        )
        .await;
    match appended {
        Ok(response) => {
            if state == "due" {
                metrics::counter!("callflow_reminders_fired_total").increment(1);
                metrics::histogram!("callflow_reminder_lateness_seconds")
                    .record(lateness.as_secs_f64().max(0.0));
            } else {
                metrics::counter!("callflow_reminders_expired_total").increment(1);
            }
            Some(projection::StateChange {
                id: reminder.id,
                state,
                attempt,
                version: response.stream_version as i64,
            })
        }
        Err(AppendError::WrongExpectedVersion { .. }) => {
            // Cancelled, moved or fired meanwhile; the projector will catch up.
            None
        }
        Err(error) => {
            tracing::warn!(reminder = %reminder.id, %error, "cannot fire reminder yet");
            None
        }
    }
}
