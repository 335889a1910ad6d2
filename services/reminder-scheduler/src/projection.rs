//! The projection of reminder events into `scheduler.reminders`: the timers
//! and the read model of the gRPC API.
//!
//! [`apply`] is the only code that changes a row, and it changes it only when
//! the event is newer than what the row reflects (its stream version), so the
//! same event may be applied any number of times, in any of three places:
//! right after the scheduler appended it (read-your-writes for the API and
//! the timers), by the projector following the log, and by a rebuild.

use std::time::SystemTime;

use deadpool_postgres::Transaction;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use kit::events::{EventError, decode, from_proto_time, to_system_time};
use kit::projection::{ApplyError, Projector};
use kit::proto::events::v1::{
    Event, ReminderCancelled, ReminderDue, ReminderExpired, ReminderRescheduled, ReminderScheduled,
};
use kit::proto::eventstore::v1::Filter;

/// The category of reminder streams.
pub const CATEGORY: &str = "reminder";
/// Checkpoint name of the projector.
const CHECKPOINT: &str = "reminders";

/// Errors of applying events.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Event(#[from] EventError),
    #[error("event {0} has no reminder id the projection can use")]
    BadId(String),
}

fn time(ts: &Option<prost_types::Timestamp>) -> Option<SystemTime> {
    ts.as_ref().and_then(from_proto_time).map(to_system_time)
}

fn reminder_id(text: &str, event: &Event) -> Result<Uuid, ProjectionError> {
    Uuid::parse_str(text).map_err(|_| ProjectionError::BadId(event.event_id.clone()))
}

/// Applies one event of a reminder stream, or a `ContactForgotten` (which
/// blanks the contact's rows); events of other types are ignored.
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
                "UPDATE scheduler.reminders SET phone = $2, text = $2, contact_stream = NULL, updated_at = now()
                 WHERE contact_stream = $1",
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
                "INSERT INTO scheduler.reminders (reminder_id, phone, due_at, time_zone, text, state, source, provider,
                                                  call_id, scheduled_by, correlation_id, version, contact_stream)
                 VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $8, $9, $10, $11, $12)
                 ON CONFLICT (reminder_id) DO NOTHING",
                &[
                    &reminder_id(&e.reminder_id, event)?, &e.phone, &time(&e.due_at), &e.time_zone, &e.text, &e.source,
                    &e.provider, &e.call_id, &e.scheduled_by, &kit::events::correlation_of(event), &version, &contact_stream,
                ],
            )
            .await?
        }
        "ReminderRescheduled" => {
            let e: ReminderRescheduled = decode(event)?;
            db.execute(
                "UPDATE scheduler.reminders SET due_at = $2, version = $3, updated_at = now()
                 WHERE reminder_id = $1 AND version < $3",
                &[
                    &reminder_id(&e.reminder_id, event)?,
                    &time(&e.due_at),
                    &version,
                ],
            )
            .await?
        }
        "ReminderCancelled" => {
            let e: ReminderCancelled = decode(event)?;
            let change = StateChange {
                id: reminder_id(&e.reminder_id, event)?,
                state: "cancelled",
                attempt: None,
                version,
            };
            set_states(db, &[change]).await?
        }
        "ReminderDue" => {
            let e: ReminderDue = decode(event)?;
            let change = StateChange {
                id: reminder_id(&e.reminder_id, event)?,
                state: "due",
                attempt: Some(e.attempt as i32),
                version,
            };
            set_states(db, &[change]).await?
        }
        "ReminderExpired" => {
            let e: ReminderExpired = decode(event)?;
            let change = StateChange {
                id: reminder_id(&e.reminder_id, event)?,
                state: "expired",
                attempt: None,
                version,
            };
            set_states(db, &[change]).await?
        }
        _ => 0,
    };
    Ok(changed > 0)
}

/// A reminder's new state: what an event that cancels, fires or expires it
/// makes of its row.
pub struct StateChange {
    pub id: Uuid,
    /// `due`, `cancelled` or `expired`.
    pub state: &'static str,
    /// The attempt, for `due`.
    pub attempt: Option<i32>,
    /// Stream version of the event.
    pub version: i64,
}

/// Applies many state changes in one statement, each only where the row is
/// older than the change (as [`apply`] does one at a time).
pub async fn set_states(
    db: &impl GenericClient,
    changes: &[StateChange],
) -> Result<u64, tokio_postgres::Error> {
    if changes.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = changes.iter().map(|c| c.id).collect();
    let states: Vec<&str> = changes.iter().map(|c| c.state).collect();
    let attempts: Vec<Option<i32>> = changes.iter().map(|c| c.attempt).collect();
    let versions: Vec<i64> = changes.iter().map(|c| c.version).collect();
    db.execute(
        "UPDATE scheduler.reminders r
            SET state = u.state, attempt = coalesce(u.attempt, r.attempt), version = u.version, updated_at = now()
           FROM unnest($1::uuid[], $2::text[], $3::int4[], $4::int8[]) AS u(id, state, attempt, version)
          WHERE r.reminder_id = u.id AND r.version < u.version",
        &[&ids, &states, &attempts, &versions],
    )
    .await
}

/// The scheduler's read model as a [`kit::projection::Projector`]: the
/// projector follows it live, `reminder-scheduler rebuild` replays it.
pub struct Reminders {
    /// Names contact streams (see kit::contacts).
    pub contact_salt: String,
}

impl Projector for Reminders {
    fn schema(&self) -> &'static str {
        crate::SCHEMA
    }

    fn name(&self) -> &'static str {
        CHECKPOINT
    }

    fn filter(&self) -> Filter {
        Filter {
            categories: vec![CATEGORY.into(), kit::contacts::FORGOTTEN_CATEGORY.into()],
            ..Default::default()
        }
    }

    fn tables(&self) -> &'static [&'static str] {
        &["reminders"]
    }

    async fn apply(&self, tx: &Transaction<'_>, event: &Event) -> Result<(), ApplyError> {
        match apply(&**tx, event, &self.contact_salt).await {
            Ok(_) => Ok(()),
            Err(ProjectionError::Postgres(error)) => Err(ApplyError::Postgres(error)),
            Err(other) => Err(ApplyError::Unusable(other.to_string())),
        }
    }
}
