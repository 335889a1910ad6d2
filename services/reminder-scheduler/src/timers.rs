//! The timers loop: whatever has come due is fired exactly once, by however
//! many replicas. A due reminder gets `ReminderDue` appended to its stream;
//! a due timer of another service (callflow.timers.v1) gets `TimerFired`.
//!
//! Each round claims a batch of due rows of each table with `FOR UPDATE SKIP
//! LOCKED`, so replicas never claim the same row at once, and appends the
//! events with the row's version as the expected stream version, so a
//! reminder or timer cancelled or moved meanwhile is not fired. The event id
//! is derived from the reminder and its attempt (from the timer): a replica
//! that crashed after appending but before committing its claim leaves the
//! row pending, and whoever claims it next appends the same event again,
//! which the store answers as a duplicate.
//!
//! Lateness differs. A reminder due longer ago than the lateness limit (the
//! service was down) expires instead of firing: a month-old "as agreed" SMS
//! would do more harm than good. A timer never expires: its owner is waiting
//! for it (to dial a lead, to stop waiting for a call result), and only the
//! owner can tell what a late wake-up means, so it fires late.

use std::time::{Duration, SystemTime};

use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use kit::clock::SharedClock;
use kit::events::{derive_event_id, new_event, to_proto_time, to_system_time};
use kit::proto::events::v1::{ReminderDue, ReminderExpired, TimerFired};
use kit::proto::eventstore::v1::NewEvent;
use kit::store_client::{AppendError, EventStoreClient, Expected};

use crate::projection::{self, Kind, StateChange};

/// How the timers loop runs.
#[derive(Debug, Clone, Copy)]
pub struct TimerConfig {
    /// Rows claimed per round, from each table (reminders, timers), so a
    /// herd of one never starves the other.
    pub batch: i64,
    /// Appends in flight at once within a round.
    pub concurrency: usize,
    /// How often to look for due rows when none is due.
    pub poll: Duration,
    /// A reminder due longer ago than this expires instead of firing
    /// (timers never expire).
    pub max_lateness: Duration,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Fires due reminders and timers until `shutdown`.
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
/// reminders and timers changed state.
pub async fn round(
    pool: &deadpool_postgres::Pool,
    store: &EventStoreClient,
    clock: &SharedClock,
    config: &TimerConfig,
) -> Result<usize, BoxError> {
    let now = clock.now();
    let max_lateness = SignedDuration::try_from(config.max_lateness).unwrap_or(SignedDuration::MAX);
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let until = to_system_time(now);
    let due: [&(dyn ToSql + Sync); 2] = [&until, &config.batch];
    let reminders = tx
        .query(
            "SELECT reminder_id, phone, text, due_at, attempt, version, correlation_id FROM scheduler.reminders
             WHERE state = 'pending' AND due_at <= $1
             ORDER BY due_at LIMIT $2
             FOR UPDATE SKIP LOCKED",
            &due,
        )
        .await?;
    let timers = tx
        .query(
            "SELECT timer_id, owner, purpose, subject, due_at, data, version, correlation_id FROM scheduler.timers
             WHERE state = 'pending' AND due_at <= $1
             ORDER BY due_at LIMIT $2
             FOR UPDATE SKIP LOCKED",
            &due,
        )
        .await?;
    if reminders.is_empty() && timers.is_empty() {
        return Ok(0);
    }
    let firings: Vec<Firing> = reminders
        .iter()
        .map(|row| reminder_firing(row, now, max_lateness))
        .chain(timers.iter().map(|row| timer_firing(row, now)))
        .collect();
    let changes: Vec<StateChange> = futures::stream::iter(firings)
        .map(|firing| fire(store, firing))
        .buffer_unordered(config.concurrency)
        .filter_map(|change| async move { change })
        .collect()
        .await;
    // One statement per table for the whole round: a round trip per row
    // would cost more than firing it.
    projection::set_states(&tx, &changes).await?;
    tx.commit().await?;
    Ok(changes.len())
}

/// What firing one claimed row appends, and what it makes of the row.
struct Firing {
    stream: String,
    /// The row's version: the stream must still be there for the event to
    /// be appended.
    version: i64,
    event: NewEvent,
    /// The row's new state; its version is the store's answer.
    change: StateChange,
    /// What to count once appended.
    outcome: Outcome,
}

/// What a firing counts as in the metrics.
enum Outcome {
    ReminderDue { lateness: SignedDuration },
    ReminderExpired,
    TimerFired,
}

impl Outcome {
    fn record(&self) {
        match self {
            Outcome::ReminderDue { lateness } => {
                metrics::counter!("callflow_reminders_fired_total").increment(1);
                metrics::histogram!("callflow_reminder_lateness_seconds")
                    .record(lateness.as_secs_f64().max(0.0));
            }
            Outcome::ReminderExpired => {
                metrics::counter!("callflow_reminders_expired_total").increment(1)
            }
            Outcome::TimerFired => metrics::counter!("callflow_timers_fired_total").increment(1),
        }
    }
}

fn due_at(row: &Row, column: usize, now: Timestamp) -> Timestamp {
    Timestamp::try_from(row.get::<_, SystemTime>(column)).unwrap_or(now)
}

/// A claimed reminder's `ReminderDue`, or its `ReminderExpired` when it is
/// too late.
fn reminder_firing(row: &Row, now: Timestamp, max_lateness: SignedDuration) -> Firing {
    let id: Uuid = row.get(0);
    let due_at = due_at(row, 3, now);
    let version: i64 = row.get(5);
    let cause = id.to_string();
    let lateness = now.duration_since(due_at);
    let (event, change, outcome) = if lateness > max_lateness {
        let payload = ReminderExpired {
            reminder_id: cause.clone(),
            due_at: Some(to_proto_time(due_at)),
        };
        (
            new_event(derive_event_id(&cause, "expired"), Some(now), &payload),
            reminder_change(id, "expired", None),
            Outcome::ReminderExpired,
        )
    } else {
        let attempt = row.get::<_, i32>(4) as u32 + 1;
        let payload = ReminderDue {
            reminder_id: cause.clone(),
            phone: row.get(1),
            text: row.get(2),
            due_at: Some(to_proto_time(due_at)),
            attempt,
        };
        (
            new_event(
                derive_event_id(&cause, &format!("due/{attempt}")),
                Some(now),
                &payload,
            ),
            reminder_change(id, "due", Some(attempt as i32)),
            Outcome::ReminderDue { lateness },
        )
    };
    let mut event = event;
    event.correlation_id = row.get::<_, Uuid>(6).to_string();
    Firing {
        stream: format!("reminder-{id}"),
        version,
        event,
        change,
        outcome,
    }
}

fn reminder_change(id: Uuid, state: &'static str, attempt: Option<i32>) -> StateChange {
    StateChange {
        kind: Kind::Reminder,
        id,
        state,
        attempt,
        version: 0,
    }
}

/// A claimed timer's `TimerFired`, however late.
fn timer_firing(row: &Row, now: Timestamp) -> Firing {
    let id: Uuid = row.get(0);
    let cause = id.to_string();
    let payload = TimerFired {
        timer_id: cause.clone(),
        owner: row.get(1),
        purpose: row.get(2),
        subject: row.get(3),
        due_at: Some(to_proto_time(due_at(row, 4, now))),
        data: row.get(5),
    };
    let mut event = new_event(derive_event_id(&cause, "fired"), Some(now), &payload);
    event.correlation_id = row.get::<_, Uuid>(7).to_string();
    Firing {
        stream: format!("timer-{id}"),
        version: row.get(6),
        event,
        change: StateChange::timer(id, "fired", 0),
        outcome: Outcome::TimerFired,
    }
}

/// Appends a firing's event; returns the state change it makes to the
/// projection, or `None` when the row changed meanwhile or the store is
/// unreachable (a later round retries).
async fn fire(store: &EventStoreClient, firing: Firing) -> Option<StateChange> {
    let Firing {
        stream,
        version,
        mut event,
        mut change,
        outcome,
    } = firing;
    event.trace = Some(kit::telemetry::current_trace_context());
    match store
        .append(&stream, Expected::Exact(version as u64), vec![event])
        .await
    {
        Ok(response) => {
            outcome.record();
            change.version = response.stream_version as i64;
            Some(change)
        }
        Err(AppendError::WrongExpectedVersion { .. }) => {
            // Cancelled, moved or fired meanwhile; the projector will catch up.
            None
        }
        Err(error) => {
            tracing::warn!(%stream, %error, "cannot fire yet");
            None
        }
    }
}
