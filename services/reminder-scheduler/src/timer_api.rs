//! The gRPC API of durable timers (`callflow.timers.v1.TimerService`), for
//! services that must act later (the lead dialer: call when the client's
//! working hours open, stop waiting for a call result at a deadline).
//!
//! A timer is a stream `timer-<id>` (`TimerSet`, then `TimerFired` or
//! `TimerCancelled`), projected into `scheduler.timers` and fired by the same
//! loop as reminders ([`crate::timers`]). Its id is derived from the owner
//! and the owner's key, so setting it again (a retry, a redelivered message
//! on the owner's side) finds the same timer and never moves it. Changes go
//! through `api::record`, like the reminders API's: appended, then
//! applied before answering.

use std::time::SystemTime;

use jiff::Timestamp;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use kit::clock::SharedClock;
use kit::events::{derive_event_id, from_proto_time, new_event, to_proto_time};
use kit::proto::events::v1::{TimerCancelled, TimerSet};
use kit::proto::timers::v1::timer_service_server::TimerService;
use kit::proto::timers::v1::{
    CancelTimerRequest, GetTimerRequest, SetTimerRequest, Timer, TimerState,
};
use kit::store_client::{EventStoreClient, Expected};

use crate::api::{RecordError, catch_up, parse_id, record, requested_by, unavailable};

/// Longest owner (a service name).
const MAX_OWNER: usize = 50;
/// Longest key of the owner.
const MAX_KEY: usize = 200;
/// Longest purpose.
const MAX_PURPOSE: usize = 50;
/// Longest subject (a stream name).
const MAX_SUBJECT: usize = kit::events::MAX_STREAM_LEN;
/// Most bytes of the owner's data.
const MAX_DATA_BYTES: usize = 1000;

/// The service behind the API.
pub struct TimerApi {
    pub pool: deadpool_postgres::Pool,
    pub store: EventStoreClient,
    /// Salt of contact stream names (see kit::contacts), for the projection.
    pub contact_salt: String,
    pub clock: SharedClock,
}

/// The id of `owner`'s timer `key`: the same owner and key always name the
/// same timer. Owners hold no `:`, so the pair cannot be read two ways.
pub fn timer_id(owner: &str, key: &str) -> Uuid {
    derive_event_id(&format!("{owner}:{key}"), "timer")
}

fn stream(id: Uuid) -> String {
    format!("timer-{id}")
}

/// A timer as the projection holds it, with what the API does not show.
struct Stored {
    timer: Timer,
    /// The flow it belongs to, carried to what it causes.
    correlation: Uuid,
}

impl Stored {
    fn state(&self) -> TimerState {
        TimerState::try_from(self.timer.state).unwrap_or(TimerState::Unspecified)
    }
}

const COLUMNS: &str =
    "timer_id, owner, key, purpose, subject, due_at, data, state, version, correlation_id";

fn stored_from_row(row: &tokio_postgres::Row) -> Stored {
    let state = match row.get::<_, &str>(7) {
        "pending" => TimerState::Pending,
        "fired" => TimerState::Fired,
        "cancelled" => TimerState::Cancelled,
        _ => TimerState::Unspecified,
    };
    Stored {
        timer: Timer {
            timer_id: row.get::<_, Uuid>(0).to_string(),
            owner: row.get(1),
            key: row.get(2),
            purpose: row.get(3),
            subject: row.get(4),
            due_at: Some(prost_types::Timestamp::from(row.get::<_, SystemTime>(5))),
            data: row.get(6),
            state: state as i32,
            version: row.get::<_, i64>(8) as u64,
        },
        correlation: row.get(9),
    }
}

/// A text field of at most `max` characters, required unless `optional`.
fn text<'a>(field: &str, value: &'a str, max: usize, optional: bool) -> Result<&'a str, Status> {
    if !optional && value.trim().is_empty() {
        return Err(Status::invalid_argument(format!("{field}: required")));
    }
    if value.chars().count() > max {
        return Err(Status::invalid_argument(format!(
            "{field}: at most {max} characters"
        )));
    }
    Ok(value)
}

/// The owner: a service name, which is also what keeps the `owner:key`
/// pair unambiguous.
fn owner(value: &str) -> Result<&str, Status> {
    let value = text("owner", value, MAX_OWNER, false)?;
    if !value
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(Status::invalid_argument(format!(
            "owner: `{value}` may hold only lowercase letters, digits and -"
        )));
    }
    Ok(value)
}

/// Who asks, when `requested_by` says (checked as the reminders API checks
/// it). Optional here: when it is empty, the timer's owner is recorded, who
/// is the one asking in the usual case.
fn asked_by(value: &str) -> Result<Option<String>, Status> {
    match value.trim() {
        "" => Ok(None),
        _ => requested_by(value).map(Some),
    }
}

impl TimerApi {
    async fn load(&self, id: Uuid) -> Result<Option<Stored>, Status> {
        let client = self.pool.get().await.map_err(unavailable)?;
        let select = client
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM scheduler.timers WHERE timer_id = $1"
            ))
            .await
            .map_err(unavailable)?;
        let row = client
            .query_opt(&select, &[&id])
            .await
            .map_err(unavailable)?;
        Ok(row.as_ref().map(stored_from_row))
    }

    async fn existing(&self, id: Uuid) -> Result<Stored, Status> {
        self.load(id)
            .await?
            .ok_or_else(|| Status::not_found(format!("no timer {id}")))
    }

    /// Appends `event` to the timer's stream and applies it; on a conflict
    /// (the timer changed meanwhile), brings the view up to the log instead.
    /// Returns the timer as it then is.
    async fn record(
        &self,
        id: Uuid,
        expected: Expected,
        event: kit::proto::eventstore::v1::NewEvent,
    ) -> Result<Stored, Status> {
        let stream = stream(id);
        match record(
            &self.pool,
            &self.store,
            &self.contact_salt,
            &stream,
            expected,
            event,
        )
        .await
        {
            Ok(()) => {}
            Err(RecordError::Conflict) => {
                catch_up(&self.pool, &self.store, &self.contact_salt, &stream).await?
            }
            Err(RecordError::Failed(status)) => return Err(status),
        }
        self.load(id)
            .await?
            .ok_or_else(|| Status::internal(format!("timer {id} is in the log but not the view")))
    }
}

#[tonic::async_trait]
impl TimerService for TimerApi {
    async fn set(&self, request: Request<SetTimerRequest>) -> Result<Response<Timer>, Status> {
        let request = request.into_inner();
        let owner = owner(&request.owner)?;
        let key = text("key", &request.key, MAX_KEY, false)?;
        let purpose = text("purpose", &request.purpose, MAX_PURPOSE, false)?;
        let subject = text("subject", &request.subject, MAX_SUBJECT, true)?;
        let due_at = request
            .due_at
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("due_at: required"))?;
        // Whole microseconds, as Postgres keeps them, so that the log, the
        // view and TimerFired show the same instant.
        let due_at = from_proto_time(due_at)
            .and_then(|t| Timestamp::from_microsecond(t.as_microsecond()).ok())
            .ok_or_else(|| Status::invalid_argument("due_at: out of range"))?;
        if request.data.len() > MAX_DATA_BYTES {
            return Err(Status::invalid_argument(format!(
                "data: at most {MAX_DATA_BYTES} bytes, got {}",
                request.data.len()
            )));
        }
        let id = timer_id(owner, key);
        let correlation = match request.correlation_id.trim() {
            "" => id,
            text => parse_id("correlation_id", text)?,
        };
        let requested_by = asked_by(&request.requested_by)?.unwrap_or_else(|| owner.to_owned());
        // A time in the past is allowed: it fires at once (the owner may
        // have been slow to ask).
        let payload = TimerSet {
            timer_id: id.to_string(),
            key: key.to_owned(),
            owner: owner.to_owned(),
            purpose: purpose.to_owned(),
            subject: subject.to_owned(),
            due_at: Some(to_proto_time(due_at)),
            data: request.data,
            requested_by,
        };
        let mut event = new_event(
            derive_event_id(&id.to_string(), "set"),
            Some(self.clock.now()),
            &payload,
        );
        event.correlation_id = correlation.to_string();
        // The same request again is a duplicate of the first event, and a
        // different one under the same owner and key finds the stream
        // taken: either way the timer as first set is returned.
        let stored = self.record(id, Expected::NoStream, event).await?;
        Ok(Response::new(stored.timer))
    }

    async fn cancel(
        &self,
        request: Request<CancelTimerRequest>,
    ) -> Result<Response<Timer>, Status> {
        let request = request.into_inner();
        let id = parse_id("timer_id", &request.timer_id)?;
        let asked_by = asked_by(&request.requested_by)?;
        let mut stored = self.existing(id).await?;
        if stored.state() == TimerState::Pending {
            let payload = TimerCancelled {
                timer_id: id.to_string(),
                cancelled_by: asked_by.unwrap_or_else(|| stored.timer.owner.clone()),
            };
            let mut event = new_event(
                derive_event_id(&id.to_string(), "cancelled"),
                Some(self.clock.now()),
                &payload,
            );
            event.correlation_id = stored.correlation.to_string();
            // A timer that fired meanwhile is a conflict, and the view then
            // shows it fired.
            stored = self
                .record(id, Expected::Exact(stored.timer.version), event)
                .await?;
        }
        match stored.state() {
            TimerState::Cancelled => Ok(Response::new(stored.timer)),
            TimerState::Fired => Err(Status::failed_precondition(format!(
                "timer {id} has fired; it can no longer be cancelled"
            ))),
            _ => Err(Status::aborted(format!(
                "timer {id} changed meanwhile; read it again"
            ))),
        }
    }

    async fn get(&self, request: Request<GetTimerRequest>) -> Result<Response<Timer>, Status> {
        let id = parse_id("timer_id", &request.into_inner().timer_id)?;
        Ok(Response::new(self.existing(id).await?.timer))
    }
}
