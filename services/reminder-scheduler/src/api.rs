//! The gRPC API (`callflow.reminders.v1.ReminderService`): manual reminders
//! and a view of every reminder. Each change is an event appended to the
//! reminder's stream, then applied to the projection before answering, so
//! a client reads its own writes (`record`, which the timer API shares
//! with the helpers that validate requests and map errors).

use std::sync::Arc;
use std::time::SystemTime;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use kit::clock::SharedClock;
use kit::events::{derive_event_id, from_proto_time, new_event, to_proto_time, to_system_time};
use kit::phone::{DefaultRegion, PhoneNumber};
use kit::proto::events::v1::{Event, ReminderCancelled, ReminderRescheduled, ReminderScheduled};
use kit::proto::eventstore::v1::{NewEvent, ReadStreamRequest};
use kit::proto::reminders::v1::reminder_service_server::ReminderService;
use kit::proto::reminders::v1::{
    CancelRequest, GetRequest, ListRequest, ListResponse, Reminder, ReminderState,
    RescheduleRequest, ScheduleRequest, schedule_request::When,
};
use kit::store_client::{AppendError, EventStoreClient, Expected};

use crate::placement::{Placement, parse_period};
use crate::{projection, zones};

/// The service behind the API.
pub struct Api {
    pub pool: deadpool_postgres::Pool,
    pub store: EventStoreClient,
    pub contacts: kit::contacts::Contacts,
    /// Salt of contact stream names (see kit::contacts).
    pub contact_salt: String,
    pub clock: SharedClock,
    pub placement: Placement,
    pub default_zone: TimeZone,
    pub text: Arc<str>,
}

const COLUMNS: &str = "reminder_id, phone, due_at, time_zone, text, state, source, provider, call_id, scheduled_by, version";

fn reminder_from_row(row: &Row) -> Reminder {
    let state = match row.get::<_, &str>(5) {
        "pending" => ReminderState::Pending,
        "due" => ReminderState::Due,
        "cancelled" => ReminderState::Cancelled,
        "expired" => ReminderState::Expired,
        _ => ReminderState::Unspecified,
    };
    Reminder {
        reminder_id: row.get::<_, Uuid>(0).to_string(),
        phone: row.get(1),
        due_at: Some(prost_types::Timestamp::from(row.get::<_, SystemTime>(2))),
        time_zone: row.get(3),
        text: row.get(4),
        state: state as i32,
        source: row.get(6),
        provider: row.get(7),
        call_id: row.get(8),
        scheduled_by: row.get(9),
        version: row.get::<_, i64>(10) as u64,
    }
}

/// The status for a store or database that cannot be reached (retrying is
/// safe: every request is idempotent).
pub(crate) fn unavailable(e: impl std::fmt::Display) -> Status {
    Status::unavailable(e.to_string())
}

/// The UUID in request field `field`.
pub(crate) fn parse_id(field: &str, text: &str) -> Result<Uuid, Status> {
    Uuid::parse_str(text)
        .map_err(|_| Status::invalid_argument(format!("{field}: `{text}` is not a UUID")))
}

/// Who asks, as a request's `requested_by` says: required, at most 100
/// characters.
pub(crate) fn requested_by(text: &str) -> Result<String, Status> {
    match text.trim() {
        "" => Err(Status::invalid_argument(
            "requested_by: say who asks (an operator or a system)",
        )),
        who if who.len() > 100 => Err(Status::invalid_argument(
            "requested_by: at most 100 characters",
        )),
        who => Ok(who.to_owned()),
    }
}

impl Api {
    async fn load(&self, id: Uuid) -> Result<Option<Reminder>, Status> {
        let client = self.pool.get().await.map_err(unavailable)?;
        let row = client
            .query_opt(
                &format!("SELECT {COLUMNS} FROM scheduler.reminders WHERE reminder_id = $1"),
                &[&id],
            )
            .await
            .map_err(unavailable)?;
        Ok(row.as_ref().map(reminder_from_row))
    }

    async fn pending(&self, id: Uuid) -> Result<Reminder, Status> {
        let reminder = self
            .load(id)
            .await?
            .ok_or_else(|| Status::not_found(format!("no reminder {id}")))?;
        if reminder.state != ReminderState::Pending as i32 {
            return Err(Status::failed_precondition(format!(
                "reminder {id} is {}, it can no longer change",
                ReminderState::try_from(reminder.state)
                    .map_or("in an unknown state", |s| s.as_str_name())
            )));
        }
        Ok(reminder)
    }

    /// Appends `event` to the reminder's stream and applies it to the view.
    async fn record(
        &self,
        id: Uuid,
        expected: Expected,
        event: NewEvent,
    ) -> Result<Reminder, Status> {
        let stream = format!("reminder-{id}");
        record(
            &self.pool,
            &self.store,
            &self.contact_salt,
            &stream,
            expected,
            event,
        )
        .await
        .map_err(|e| {
            e.into_status(|| Status::aborted("the reminder changed meanwhile; read it again"))
        })?;
        self.load(id)
            .await?
            .ok_or_else(|| Status::internal("reminder vanished from the view"))
    }
}

/// Why [`record`] recorded nothing.
#[derive(Debug)]
pub(crate) enum RecordError {
    /// The stream is not at the expected version: it changed meanwhile.
    Conflict,
    /// Anything else, as the status to answer.
    Failed(Status),
}

impl From<Status> for RecordError {
    fn from(status: Status) -> Self {
        RecordError::Failed(status)
    }
}

impl RecordError {
    /// The status to answer, with `conflict` for a conflict.
    pub(crate) fn into_status(self, conflict: impl FnOnce() -> Status) -> Status {
        match self {
            RecordError::Conflict => conflict(),
            RecordError::Failed(status) => status,
        }
    }
}

/// How both gRPC APIs change anything: append `event` to `stream`, then
/// apply it to the projection before answering, so that the client reads its
/// own write (the projector applies it again later, harmlessly).
///
/// When the store answers that the event is already in the log (a retried
/// request), the stream as the log holds it is applied instead of `event`:
/// the retry may differ from the original (a timer set again with another
/// due time), and only the original counts.
pub(crate) async fn record(
    pool: &deadpool_postgres::Pool,
    store: &EventStoreClient,
    contact_salt: &str,
    stream: &str,
    expected: Expected,
    mut event: NewEvent,
) -> Result<(), RecordError> {
    event.trace = Some(kit::telemetry::current_trace_context());
    let appended = store
        .append(stream, expected, vec![event.clone()])
        .await
        .map_err(|e| match e {
            AppendError::WrongExpectedVersion { .. } => RecordError::Conflict,
            AppendError::Invalid(message) => RecordError::Failed(Status::invalid_argument(message)),
            AppendError::Unavailable(status) => RecordError::Failed(unavailable(status.message())),
        })?;
    if appended.duplicate {
        catch_up(pool, store, contact_salt, stream).await?;
        return Ok(());
    }
    let applied = Event {
        event_id: event.event_id,
        stream: stream.to_owned(),
        version: appended.stream_version,
        r#type: event.r#type,
        correlation_id: event.correlation_id,
        payload: event.payload,
        ..Default::default()
    };
    let client = pool.get().await.map_err(unavailable)?;
    projection::apply(&client, &applied, contact_salt)
        .await
        .map_err(unavailable)?;
    Ok(())
}

/// Applies `stream`, as the log holds it, to the projection: the view of one
/// reminder or timer brought up to date after a conflict or a duplicate,
/// without waiting for the projector. Harmless when the view is current
/// (applying is idempotent).
pub(crate) async fn catch_up(
    pool: &deadpool_postgres::Pool,
    store: &EventStoreClient,
    contact_salt: &str,
    stream: &str,
) -> Result<(), Status> {
    let events = store
        .grpc()
        .read_stream(ReadStreamRequest {
            stream: stream.to_owned(),
            from_version: 1,
            max_count: 0,
        })
        .await
        .map_err(|status| unavailable(status.message()))?
        .into_inner()
        .events;
    let client = pool.get().await.map_err(unavailable)?;
    for event in &events {
        projection::apply(&client, event, contact_salt)
            .await
            .map_err(unavailable)?;
    }
    Ok(())
}

#[tonic::async_trait]
impl ReminderService for Api {
    async fn schedule(
        &self,
        request: Request<ScheduleRequest>,
    ) -> Result<Response<Reminder>, Status> {
        let request = request.into_inner();
        let request_id = request.request_id.trim();
        if request_id.is_empty() || request_id.len() > 100 {
            return Err(Status::invalid_argument(
                "request_id: 1 to 100 characters, chosen by the caller",
            ));
        }
        let scheduled_by = requested_by(&request.requested_by)?;
        let phone = PhoneNumber::parse(&request.phone, DefaultRegion::default())
            .map_err(|e| Status::invalid_argument(format!("phone: `{}` {e}", request.phone)))?;
        let text = match request.text.trim() {
            "" => self.text.to_string(),
            t if t.chars().count() > 1000 => {
                return Err(Status::invalid_argument("text: at most 1000 characters"));
            }
            t => t.to_owned(),
        };
        let zone = zones::resolve(
            &self.contacts,
            &phone,
            Some(&request.time_zone),
            &self.default_zone,
        )
        .await?;
        let id = derive_event_id(&format!("manual:{request_id}"), "reminder");
        let now = self.clock.now();
        let due_at = match request.when {
            Some(When::DueAt(at)) => {
                let at = from_proto_time(&at)
                    .ok_or_else(|| Status::invalid_argument("due_at: out of range"))?;
                if at <= now {
                    return Err(Status::invalid_argument("due_at: must be in the future"));
                }
                self.placement.place(at, &zone, id)
            }
            Some(When::RemindAfter(period)) => {
                let span = parse_period(&period)
                    .map_err(|e| Status::invalid_argument(format!("remind_after: {e}")))?;
                self.placement
                    .due_at(now, span, &zone, id)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?
            }
            None => {
                return Err(Status::invalid_argument(
                    "due_at or remind_after is required",
                ));
            }
        };
        let payload = ReminderScheduled {
            reminder_id: id.to_string(),
            phone: phone.to_string(),
            due_at: Some(to_proto_time(due_at)),
            time_zone: zone.iana_name().unwrap_or("UTC").to_owned(),
            text,
            source: "manual".into(),
            scheduled_by,
            ..Default::default()
        };
        let event = new_event(
            derive_event_id(&id.to_string(), "scheduled"),
            Some(now),
            &payload,
        );
        // The same request again is a duplicate of the first event: the
        // original reminder is returned.
        self.record(id, Expected::NoStream, event)
            .await
            .map(Response::new)
    }

    async fn cancel(&self, request: Request<CancelRequest>) -> Result<Response<Reminder>, Status> {
        let request = request.into_inner();
        let id = parse_id("reminder_id", &request.reminder_id)?;
        let by = requested_by(&request.requested_by)?;
        let reminder = self.pending(id).await?;
        let payload = ReminderCancelled {
            reminder_id: id.to_string(),
            cancelled_by: by,
            reason: request.reason,
        };
        let event = new_event(
            derive_event_id(&id.to_string(), "cancelled"),
            Some(self.clock.now()),
            &payload,
        );
        self.record(id, Expected::Exact(reminder.version), event)
            .await
            .map(Response::new)
    }

    async fn reschedule(
        &self,
        request: Request<RescheduleRequest>,
    ) -> Result<Response<Reminder>, Status> {
        let request = request.into_inner();
        let id = parse_id("reminder_id", &request.reminder_id)?;
        let by = requested_by(&request.requested_by)?;
        let at = request
            .due_at
            .as_ref()
            .and_then(from_proto_time)
            .ok_or_else(|| Status::invalid_argument("due_at: required"))?;
        let now = self.clock.now();
        if at <= now {
            return Err(Status::invalid_argument("due_at: must be in the future"));
        }
        let reminder = self.pending(id).await?;
        let zone = TimeZone::get(&reminder.time_zone).unwrap_or_else(|_| self.default_zone.clone());
        let due_at = self.placement.place(at, &zone, id);
        let payload = ReminderRescheduled {
            reminder_id: id.to_string(),
            due_at: Some(to_proto_time(due_at)),
            rescheduled_by: by,
            reason: request.reason,
        };
        let event = new_event(Uuid::new_v4(), Some(now), &payload);
        self.record(id, Expected::Exact(reminder.version), event)
            .await
            .map(Response::new)
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<Reminder>, Status> {
        let id = parse_id("reminder_id", &request.into_inner().reminder_id)?;
        self.load(id)
            .await?
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("no reminder {id}")))
    }

    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let request = request.into_inner();
        let page_size = match request.page_size {
            0 => 50,
            n => n.min(500),
        } as i64;
        let phone = match request.phone.trim() {
            "" => None,
            p => Some(
                PhoneNumber::parse(p, DefaultRegion::default())
                    .map_err(|e| Status::invalid_argument(format!("phone: `{p}` {e}")))?
                    .to_string(),
            ),
        };
        let mut states = Vec::new();
        for state in &request.states {
            states.push(match ReminderState::try_from(*state) {
                Ok(ReminderState::Pending) => "pending",
                Ok(ReminderState::Due) => "due",
                Ok(ReminderState::Cancelled) => "cancelled",
                Ok(ReminderState::Expired) => "expired",
                _ => {
                    return Err(Status::invalid_argument(format!(
                        "states: {state} is not a reminder state"
                    )));
                }
            });
        }
        let time = |ts: &Option<prost_types::Timestamp>,
                    field: &str|
         -> Result<Option<SystemTime>, Status> {
            match ts {
                None => Ok(None),
                Some(ts) => from_proto_time(ts)
                    .map(|t| Some(to_system_time(t)))
                    .ok_or_else(|| Status::invalid_argument(format!("{field}: out of range"))),
            }
        };
        let due_from = time(&request.due_from, "due_from")?;
        let due_until = time(&request.due_until, "due_until")?;
        // The page token is the last row's (due_at, reminder_id): keyset
        // paging stays correct while reminders are added.
        let after: Option<(SystemTime, Uuid)> = match request.page_token.as_str() {
            "" => None,
            token => Some(
                parse_token(token)
                    .ok_or_else(|| Status::invalid_argument("page_token: not a token from List"))?,
            ),
        };
        let after_due = after.map(|a| a.0);
        let after_id = after.map(|a| a.1);
        let params: [&(dyn ToSql + Sync); 7] = [
            &phone,
            &states,
            &due_from,
            &due_until,
            &after_due,
            &after_id,
            &(page_size + 1),
        ];
        let client = self.pool.get().await.map_err(unavailable)?;
        let rows = client
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM scheduler.reminders
                     WHERE ($1::text IS NULL OR phone = $1)
                       AND (cardinality($2::text[]) = 0 OR state = ANY($2))
                       AND ($3::timestamptz IS NULL OR due_at >= $3)
                       AND ($4::timestamptz IS NULL OR due_at < $4)
                       AND ($5::timestamptz IS NULL OR (due_at, reminder_id) > ($5, $6::uuid))
                     ORDER BY due_at, reminder_id
                     LIMIT $7"
                ),
                &params,
            )
            .await
            .map_err(unavailable)?;
        let more = rows.len() as i64 > page_size;
        let reminders: Vec<Reminder> = rows
            .iter()
            .take(page_size as usize)
            .map(reminder_from_row)
            .collect();
        let next_page_token = if more {
            reminders.last().map(token).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListResponse {
            reminders,
            next_page_token,
        }))
    }
}

fn token(reminder: &Reminder) -> String {
    let due = reminder
        .due_at
        .as_ref()
        .and_then(from_proto_time)
        .unwrap_or(Timestamp::UNIX_EPOCH);
    format!("{}_{}", due.as_microsecond(), reminder.reminder_id)
}

fn parse_token(token: &str) -> Option<(SystemTime, Uuid)> {
    let (micros, id) = token.split_once('_')?;
    let due = Timestamp::from_microsecond(micros.parse().ok()?).ok()?;
    Some((to_system_time(due), Uuid::parse_str(id).ok()?))
}
