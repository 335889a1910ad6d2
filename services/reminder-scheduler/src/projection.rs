//! The projection of reminder events into `scheduler.reminders` and of
//! other services' timer events into `scheduler.timers`: what the timers
//! loop claims and the gRPC APIs read.
//!
//! [`apply`] is the only code that changes a row, and it changes it only when
//! the event is newer than what the row reflects (its stream version), so the
//! same event may be applied any number of times, in any of three places:
//! right after the scheduler appended it (read-your-writes for the APIs and
//! the timers loop), by the projector following the log, and by a rebuild.

use std::time::SystemTime;

use deadpool_postgres::Transaction;
// deadpool's GenericClient: its `prepare_cached` spares every apply a
// parse and a round trip.
use deadpool_postgres::GenericClient;
use uuid::Uuid;

use kit::events::{EventError, decode, from_proto_time, to_system_time};
use kit::projection::{ApplyError, Projector};
use kit::proto::events::v1::{
    Event, ReminderCancelled, ReminderDue, ReminderExpired, ReminderRescheduled, ReminderScheduled,
    TimerCancelled, TimerFired, TimerSet,
};
use kit::proto::eventstore::v1::Filter;

/// The category of reminder streams.
pub const CATEGORY: &str = "reminder";
/// The category of timer streams (callflow.timers.v1).
pub const TIMER_CATEGORY: &str = "timer";
/// Checkpoint name of the projector. It predates timers and keeps its name:
/// no timer event can be older than the feature, so widening the filter
/// does not call for a replay.
const CHECKPOINT: &str = "reminders";

/// Errors of applying events.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Event(#[from] EventError),
    #[error("event {0} has no reminder or timer id the projection can use")]
    BadId(String),
}

fn time(ts: &Option<prost_types::Timestamp>) -> Option<SystemTime> {
    ts.as_ref().and_then(from_proto_time).map(to_system_time)
}

/// The id of the reminder or timer an event is about, from its payload.
fn id_of(text: &str, event: &Event) -> Result<Uuid, ProjectionError> {
    Uuid::parse_str(text).map_err(|_| ProjectionError::BadId(event.event_id.clone()))
}

/// Applies one event of a reminder or timer stream, or a `ContactForgotten`
/// (which blanks the contact's reminders); events of other types are
/// ignored.
/// `contact_salt` names contact streams (see kit::contacts). Returns whether
/// a row changed.
pub async fn apply(
    db: &impl GenericClient,
    event: &Event,
    contact_salt: &str,
) -> Result<bool, ProjectionError> {
    let version = event.version as i64;
    let changed = match event.r#type.as_str() {
        "ContactForgotten" => {
            let e: kit::proto::events::v1::ContactForgotten = decode(event)?;
            db.execute(
                // The stream name goes too: it is a pseudonym of the number, and
                // a rebuild (which reads the number redacted) cannot derive it.
                &db.prepare_cached("UPDATE scheduler.reminders SET phone = $2, text = $2, contact_stream = NULL, updated_at = now()
                 WHERE contact_stream = $1").await?,
                &[&e.contact_stream, &kit::contacts::FORGOTTEN],
            )
            .await?
        }
        "ReminderScheduled" => {
            let e: ReminderScheduled = decode(event)?;
            let contact_stream = kit::phone::PhoneNumber::parse(&e.phone, Default::default())
                .ok()
                .map(|phone| kit::contacts::contact_stream(contact_salt, &phone));
            db.execute(
                &db.prepare_cached("INSERT INTO scheduler.reminders (reminder_id, phone, due_at, time_zone, text, state, source, provider,
                                                  call_id, scheduled_by, correlation_id, version, contact_stream)
                 VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $8, $9, $10, $11, $12)
                 ON CONFLICT (reminder_id) DO NOTHING").await?,
                &[
                    &id_of(&e.reminder_id, event)?, &e.phone, &time(&e.due_at), &e.time_zone, &e.text, &e.source,
                    &e.provider, &e.call_id, &e.scheduled_by, &kit::events::correlation_of(event), &version, &contact_stream,
                ],
            )
            .await?
        }
        "ReminderRescheduled" => {
            let e: ReminderRescheduled = decode(event)?;
            db.execute(
                &db.prepare_cached(
                    "UPDATE scheduler.reminders SET due_at = $2, version = $3, updated_at = now()
                 WHERE reminder_id = $1 AND version < $3",
                )
                .await?,
                &[&id_of(&e.reminder_id, event)?, &time(&e.due_at), &version],
            )
            .await?
        }
        "ReminderCancelled" => {
            let e: ReminderCancelled = decode(event)?;
            let change = StateChange {
                kind: Kind::Reminder,
                id: id_of(&e.reminder_id, event)?,
                state: "cancelled",
                attempt: None,
                version,
            };
            set_states(db, &[change]).await?
        }
        "ReminderDue" => {
            let e: ReminderDue = decode(event)?;
            let change = StateChange {
                kind: Kind::Reminder,
                id: id_of(&e.reminder_id, event)?,
                state: "due",
                attempt: Some(e.attempt as i32),
                version,
            };
            set_states(db, &[change]).await?
        }
        "ReminderExpired" => {
            let e: ReminderExpired = decode(event)?;
            let change = StateChange {
                kind: Kind::Reminder,
                id: id_of(&e.reminder_id, event)?,
                state: "expired",
                attempt: None,
                version,
            };
            set_states(db, &[change]).await?
        }
        "TimerSet" => {
            let e: TimerSet = decode(event)?;
            db.execute(
                &db.prepare_cached("INSERT INTO scheduler.timers (timer_id, owner, key, purpose, subject, due_at, data, state,
                                               correlation_id, version)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $9)
                 ON CONFLICT (timer_id) DO NOTHING").await?,
                &[
                    &id_of(&e.timer_id, event)?, &e.owner, &e.key, &e.purpose, &e.subject, &time(&e.due_at),
                    &e.data, &kit::events::correlation_of(event), &version,
                ],
            )
            .await?
        }
        "TimerFired" => {
            let e: TimerFired = decode(event)?;
            set_states(
                db,
                &[StateChange::timer(
                    id_of(&e.timer_id, event)?,
                    "fired",
                    version,
                )],
            )
            .await?
        }
        "TimerCancelled" => {
            let e: TimerCancelled = decode(event)?;
            set_states(
                db,
                &[StateChange::timer(
                    id_of(&e.timer_id, event)?,
                    "cancelled",
                    version,
                )],
            )
            .await?
        }
        _ => 0,
    };
    Ok(changed > 0)
}

/// Which table a state change lands in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `scheduler.reminders`.
    Reminder,
    /// `scheduler.timers` (other services' timers).
    Timer,
}

/// A reminder's or timer's new state: what an event that cancels, fires or
/// expires it makes of its row.
pub struct StateChange {
    pub kind: Kind,
    pub id: Uuid,
    /// Reminders: `due`, `cancelled` or `expired`; timers: `fired` or
    /// `cancelled`.
    pub state: &'static str,
    /// The attempt, for a reminder's `due` (timers have none).
    pub attempt: Option<i32>,
    /// Stream version of the event.
    pub version: i64,
}

impl StateChange {
    /// A timer's new state.
    pub fn timer(id: Uuid, state: &'static str, version: i64) -> Self {
        Self {
            kind: Kind::Timer,
            id,
            state,
            attempt: None,
            version,
        }
    }
}

/// Applies many state changes in one statement per table, each only where
/// the row is older than the change (as [`apply`] does one at a time).
/// Returns how many rows changed.
pub async fn set_states(
    db: &impl GenericClient,
    changes: &[StateChange],
) -> Result<u64, tokio_postgres::Error> {
    let mut changed = 0;
    for kind in [Kind::Reminder, Kind::Timer] {
        let of_kind: Vec<&StateChange> = changes.iter().filter(|c| c.kind == kind).collect();
        if of_kind.is_empty() {
            continue;
        }
        let ids: Vec<Uuid> = of_kind.iter().map(|c| c.id).collect();
        let states: Vec<&str> = of_kind.iter().map(|c| c.state).collect();
        let versions: Vec<i64> = of_kind.iter().map(|c| c.version).collect();
        changed += match kind {
            Kind::Reminder => {
                let attempts: Vec<Option<i32>> = of_kind.iter().map(|c| c.attempt).collect();
                db.execute(
                    &db.prepare_cached("UPDATE scheduler.reminders r
                        SET state = u.state, attempt = coalesce(u.attempt, r.attempt), version = u.version, updated_at = now()
                       FROM unnest($1::uuid[], $2::text[], $3::int8[], $4::int4[]) AS u(id, state, version, attempt)
                      WHERE r.reminder_id = u.id AND r.version < u.version").await?,
                    &[&ids, &states, &versions, &attempts],
                )
                .await?
            }
            Kind::Timer => {
                db.execute(
                    &db.prepare_cached(
                        "UPDATE scheduler.timers t
                        SET state = u.state, version = u.version, updated_at = now()
                       FROM unnest($1::uuid[], $2::text[], $3::int8[]) AS u(id, state, version)
                      WHERE t.timer_id = u.id AND t.version < u.version",
                    )
                    .await?,
                    &[&ids, &states, &versions],
                )
                .await?
            }
        };
    }
    Ok(changed)
}

/// The scheduler's read model (reminders and timers) as a
/// [`kit::projection::Projector`]: the projector follows it live,
/// `reminder-scheduler rebuild` replays it.
pub struct ReadModel {
    /// Names contact streams (see kit::contacts).
    pub contact_salt: String,
}

impl Projector for ReadModel {
    fn schema(&self) -> &'static str {
        crate::SCHEMA
    }

    fn name(&self) -> &'static str {
        CHECKPOINT
    }

    fn filter(&self) -> Filter {
        Filter {
            categories: vec![
                CATEGORY.into(),
                TIMER_CATEGORY.into(),
                kit::contacts::FORGOTTEN_CATEGORY.into(),
            ],
            ..Default::default()
        }
    }

    fn tables(&self) -> &'static [&'static str] {
        &["reminders", "timers"]
    }

    async fn apply(&self, tx: &Transaction<'_>, event: &Event) -> Result<(), ApplyError> {
        match apply(tx, event, &self.contact_salt).await {
            Ok(_) => Ok(()),
            Err(ProjectionError::Postgres(error)) => Err(ApplyError::Postgres(error)),
            Err(other) => Err(ApplyError::Unusable(other.to_string())),
        }
    }
}
