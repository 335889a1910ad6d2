//! An operator marks a lead of the manual queue as handled
//! (`LeadDashboard.MarkHandled`, `POST /dashboard/manual-queue/{lead_id}/handled`).
//!
//! The decision is taken on the lead's stream, the source of truth, not on
//! the read model: the stream is read and folded ([`crate::lead`]), and a
//! lead that waits for a person gets a `LeadManuallyHandled`
//!
//! - whose id is derived from the `LeadNeedsManualProcessing` it answers
//!   (the newest one), so that need is marked handled at most once, by
//!   whoever comes first;
//! - appended with the version the decision was taken on as the expected
//!   version, so a change of the stream meanwhile (a call result, a
//!   confirmation, another operator) is noticed and the request decided
//!   again on the new stream.
//!
//! A request that repeats the one recorded for the newest need (same
//! operator, same note) is answered as the first was, with `repeated` set
//! and nothing appended: a console that lost an answer can simply ask again.
//! Another operator, or another note, gets FAILED_PRECONDITION naming who
//! handled it.
//!
//! The answer comes once the dashboard's projection has applied the event
//! (its checkpoint reached the event's position), so the console's next
//! ManualQueue no longer lists the lead.

use std::time::Duration;

use jiff::Timestamp;
use uuid::Uuid;

use kit::events::{derive_event_id, new_event, to_proto_time};
use kit::proto::events::v1::LeadManuallyHandled;
use kit::proto::leads::v1::{MarkHandledRequest, MarkHandledResponse};
use kit::store_client::{AppendError, EventStoreClient, Expected};

use crate::lead::{Answer, Ending, Lead};

/// Longest `handled_by`, in characters.
pub const MAX_HANDLED_BY: usize = 100;
/// Longest `note`, in characters.
pub const MAX_NOTE: usize = 1000;
/// How long an answer waits for the dashboard to show the event.
pub const SETTLE_WITHIN: Duration = Duration::from_secs(10);
/// Decisions taken again when the stream keeps moving under them.
const DECISIONS: usize = 5;
/// The kind of output the event id is derived with, from the id of the
/// `LeadNeedsManualProcessing` handled ([`kit::events::derive_event_id`]).
pub const EVENT_KIND: &str = "manually-handled";

/// Why a lead was not marked handled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MarkError {
    /// The request is malformed; `field` names what is wrong.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// No such lead was received.
    #[error("{0}")]
    NotFound(String),
    /// The lead does not wait for a person (the message says why).
    #[error("{0}")]
    NotQueued(String),
    /// The stream kept changing while the request was decided.
    #[error("{0}")]
    Conflict(String),
    /// The event store or the database cannot be reached, or the dashboard
    /// did not show the event in time; asking again is safe.
    #[error("{0}")]
    Unavailable(String),
    /// A fault of the service itself (the store refused its event).
    #[error("{0}")]
    Internal(String),
}

fn invalid(field: &str, message: impl Into<String>) -> MarkError {
    MarkError::Invalid {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// A request that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub lead_id: Uuid,
    pub handled_by: String,
    pub note: String,
}

/// Checks a request: `lead_id` a UUID, `handled_by` 1–100 characters
/// without control characters, `note` at most 1000 characters (both
/// without surrounding blanks).
pub fn validate(request: &MarkHandledRequest) -> Result<Mark, MarkError> {
    let lead_text = request.lead_id.trim();
    if lead_text.is_empty() {
        return Err(invalid("lead_id", "is required"));
    }
    let lead_id = Uuid::parse_str(lead_text)
        .map_err(|_| invalid("lead_id", format!("`{lead_text}` is not a UUID")))?;
    let handled_by = request.handled_by.trim();
    if handled_by.is_empty() {
        return Err(invalid(
            "handled_by",
            "is required: who handled the lead (the operator)",
        ));
    }
    let length = handled_by.chars().count();
    if length > MAX_HANDLED_BY {
        return Err(invalid(
            "handled_by",
            format!("is {length} characters; at most {MAX_HANDLED_BY}"),
        ));
    }
    if handled_by.chars().any(char::is_control) {
        return Err(invalid("handled_by", "must not hold control characters"));
    }
    let note = request.note.trim();
    let length = note.chars().count();
    if length > MAX_NOTE {
        return Err(invalid(
            "note",
            format!("is {length} characters; at most {MAX_NOTE}"),
        ));
    }
    Ok(Mark {
        lead_id,
        handled_by: handled_by.to_owned(),
        note: note.to_owned(),
    })
}

/// What to do with a valid request for a lead.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Append `LeadManuallyHandled` answering this need (its event id) on
    /// the stream at `version`.
    Append { need_event_id: String, version: u64 },
    /// The request was recorded before: answer from it.
    Repeated,
}

/// Decides a request on the lead's stream as folded.
pub fn decide(lead: &Lead, mark: &Mark) -> Result<Decision, MarkError> {
    let id = mark.lead_id;
    if lead.received.is_none() {
        return Err(MarkError::NotFound(format!("no lead {id} was received")));
    }
    if let Some(need) = lead.manual.waiting() {
        return Ok(Decision::Append {
            need_event_id: need.event_id.clone(),
            version: lead.version,
        });
    }
    let not_queued = |why: String| {
        Err(MarkError::NotQueued(format!(
            "lead {id} is not in the manual queue: {why}"
        )))
    };
    match &lead.manual.answer {
        None => not_queued("it never needed a person".into()),
        Some(Answer::Handled(h)) if h.handled_by == mark.handled_by && h.note == mark.note => {
            Ok(Decision::Repeated)
        }
        Some(Answer::Handled(h)) if h.handled_by == mark.handled_by => not_queued(format!(
            "{} already marked it handled at {} with another note",
            h.handled_by, h.at
        )),
        Some(Answer::Handled(h)) => not_queued(format!(
            "{} already marked it handled at {}",
            h.handled_by, h.at
        )),
        Some(Answer::Ended(Ending::Confirmed)) => {
            not_queued("the client confirmed the order since".into())
        }
        Some(Answer::Ended(_)) => not_queued("it was closed since".into()),
    }
}

/// The answer for `lead` whose newest need was marked handled.
fn answer(lead: &Lead, lead_id: Uuid) -> Option<(MarkHandledResponse, u64)> {
    let need = lead.manual.need.as_ref()?;
    let Some(Answer::Handled(h)) = &lead.manual.answer else {
        return None;
    };
    let response = MarkHandledResponse {
        lead_id: lead_id.to_string(),
        handled_by: h.handled_by.clone(),
        note: h.note.clone(),
        handled_at: Some(to_proto_time(h.at)),
        event_id: h.event_id.clone(),
        repeated: true,
        reason: need.reason.clone(),
        detail: need.detail.clone(),
    };
    Some((response, h.position))
}

/// Marks the lead handled (see the module's notes); returns the answer and
/// the log position the dashboard must have applied for it to show.
pub async fn mark(
    store: &EventStoreClient,
    mark: &Mark,
    now: Timestamp,
) -> Result<(MarkHandledResponse, u64), MarkError> {
    let unavailable = |e: &dyn std::fmt::Display| MarkError::Unavailable(e.to_string());
    let stream = format!("lead-{}", mark.lead_id);
    for _ in 0..DECISIONS {
        let lead = crate::lead::read(store, mark.lead_id)
            .await
            .map_err(|s| unavailable(&s.message()))?;
        let version = match decide(&lead, mark)? {
            Decision::Repeated => {
                return answer(&lead, mark.lead_id).ok_or_else(|| {
                    MarkError::Unavailable(format!("{stream} cannot be read back"))
                });
            }
            Decision::Append { version, .. } => version,
        };
        let need = lead.manual.waiting().expect("a lead that waits");
        let received = lead.received.as_ref().expect("a received lead");
        let payload = LeadManuallyHandled {
            lead_id: mark.lead_id.to_string(),
            handled_by: mark.handled_by.clone(),
            note: mark.note.clone(),
            reason: need.reason.clone(),
            site: received.site.clone(),
            partner_id: received.partner_id.clone(),
        };
        let event_id = derive_event_id(&need.event_id, EVENT_KIND);
        let mut event = new_event(event_id, Some(now), &payload);
        event.correlation_id = if need.correlation_id.is_empty() {
            mark.lead_id.to_string()
        } else {
            need.correlation_id.clone()
        };
        event.causation_id = need.event_id.clone();
        event.trace = Some(kit::telemetry::current_trace_context());
        match store
            .append(&stream, Expected::Exact(version), vec![event])
            .await
        {
            Ok(appended) if !appended.duplicate => {
                let response = MarkHandledResponse {
                    lead_id: mark.lead_id.to_string(),
                    handled_by: mark.handled_by.clone(),
                    note: mark.note.clone(),
                    handled_at: Some(to_proto_time(now)),
                    event_id: event_id.to_string(),
                    repeated: false,
                    reason: need.reason.clone(),
                    detail: need.detail.clone(),
                };
                let position = appended.positions.into_iter().max().unwrap_or(0);
                return Ok((response, position));
            }
            // Another request for the same need was first (it may be
            // another operator's), or the stream moved: decide again on
            // the stream as it is now.
            Ok(_) | Err(AppendError::WrongExpectedVersion { .. }) => {}
            Err(AppendError::Invalid(message)) => {
                tracing::error!(%stream, %message, "the event store refused LeadManuallyHandled");
                return Err(MarkError::Internal(format!(
                    "the event store refused the event: {message}"
                )));
            }
            Err(error) => return Err(unavailable(&error)),
        }
    }
    Err(MarkError::Conflict(format!(
        "{stream} kept changing while the request was decided; ask again"
    )))
}

/// Waits until the dashboard's projection has applied `position`, so the
/// next query shows what was written; at most `within`.
pub async fn settle(
    pool: &deadpool_postgres::Pool,
    position: u64,
    within: Duration,
) -> Result<(), MarkError> {
    if kit::projection::settle(
        pool,
        crate::SCHEMA,
        crate::dashboard::NAME,
        position,
        within,
    )
    .await
    {
        return Ok(());
    }
    Err(MarkError::Unavailable(format!(
        "recorded, but the dashboard has not shown it within {within:?}; \
         asking again is safe"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kit::proto::events::v1::{
        Event, LeadClosed, LeadConfirmed, LeadNeedsManualProcessing, LeadReceived,
    };

    const LEAD: &str = "0b6f3f0e-6d1e-4c3a-9c1e-1ead00000001";

    fn request(lead_id: &str, handled_by: &str, note: &str) -> MarkHandledRequest {
        MarkHandledRequest {
            lead_id: lead_id.into(),
            handled_by: handled_by.into(),
            note: note.into(),
        }
    }

    fn field_of(error: MarkError) -> String {
        match error {
            MarkError::Invalid { field, .. } => field,
            other => panic!("not invalid input: {other:?}"),
        }
    }

    #[test]
    fn requests_are_checked_field_by_field() {
        let ok = validate(&request(&LEAD.to_uppercase(), "  anna ", " called back ")).unwrap();
        assert_eq!(ok.lead_id.to_string(), LEAD);
        assert_eq!(
            (ok.handled_by.as_str(), ok.note.as_str()),
            ("anna", "called back")
        );
        assert!(validate(&request(LEAD, &"я".repeat(100), &"ё".repeat(1000))).is_ok());
        for (bad, field) in [
            (request("", "anna", ""), "lead_id"),
            (request("lead-1", "anna", ""), "lead_id"),
            (request(LEAD, "", ""), "handled_by"),
            (request(LEAD, "   ", ""), "handled_by"),
            (request(LEAD, &"я".repeat(101), ""), "handled_by"),
            (request(LEAD, "anna\nboss", ""), "handled_by"),
            (request(LEAD, "anna", &"ё".repeat(1001)), "note"),
        ] {
            let error = validate(&bad).unwrap_err();
            assert!(
                error.to_string().starts_with(&format!("{field}: ")),
                "{error}"
            );
            assert_eq!(field_of(error), field, "{bad:?}");
        }
    }

    /// A lead's stream, built event by event.
    #[derive(Default)]
    struct Stream(Vec<Event>);

    impl Stream {
        fn push<P: kit::events::Payload>(&mut self, id: &str, payload: &P) -> &mut Self {
            let new = new_event(
                Uuid::new_v5(&Uuid::NAMESPACE_OID, id.as_bytes()),
                Some("2026-11-24T09:00:00Z".parse().unwrap()),
                payload,
            );
            self.0.push(Event {
                event_id: new.event_id,
                stream: format!("lead-{LEAD}"),
                version: self.0.len() as u64 + 1,
                position: 100 + self.0.len() as u64,
                r#type: new.r#type,
                occurred_at: new.occurred_at,
                payload: new.payload,
                ..Default::default()
            });
            self
        }

        fn received(&mut self) -> &mut Self {
            let payload = LeadReceived {
                lead_id: LEAD.into(),
                ..Default::default()
            };
            self.push("received", &payload)
        }

        fn needs(&mut self, id: &str, reason: &str) -> &mut Self {
            let payload = LeadNeedsManualProcessing {
                lead_id: LEAD.into(),
                reason: reason.into(),
                ..Default::default()
            };
            self.push(id, &payload)
        }

        fn handled(&mut self, by: &str, note: &str) -> &mut Self {
            let payload = LeadManuallyHandled {
                lead_id: LEAD.into(),
                handled_by: by.into(),
                note: note.into(),
                ..Default::default()
            };
            self.push(&format!("handled-{}", self.0.len()), &payload)
        }

        fn decide(&self, by: &str, note: &str) -> Result<Decision, MarkError> {
            let mark = validate(&request(LEAD, by, note)).unwrap();
            decide(&Lead::fold(&self.0), &mark)
        }
    }

    fn need_id(id: &str) -> String {
        Uuid::new_v5(&Uuid::NAMESPACE_OID, id.as_bytes()).to_string()
    }

    fn not_queued(result: Result<Decision, MarkError>) -> String {
        match result {
            Err(MarkError::NotQueued(message)) => message,
            other => panic!("not FAILED_PRECONDITION: {other:?}"),
        }
    }

    #[test]
    fn only_a_waiting_lead_is_marked_and_a_repeat_is_recognised() {
        assert!(matches!(
            Stream::default().decide("anna", ""),
            Err(MarkError::NotFound(_))
        ));
        let mut s = Stream::default();
        s.received();
        assert!(not_queued(s.decide("anna", "")).contains("never needed a person"));

        // Two needs in a row: the newest is the one answered.
        s.needs("crm", "crm_failed")
            .needs("silent", "no_call_result");
        assert_eq!(
            s.decide("anna", "called"),
            Ok(Decision::Append {
                need_event_id: need_id("silent"),
                version: 3
            })
        );
        s.handled("anna", "called");
        assert_eq!(s.decide("anna", "called"), Ok(Decision::Repeated));
        let lead = Lead::fold(&s.0);
        let (answer, position) = answer(&lead, LEAD.parse().unwrap()).unwrap();
        assert_eq!(
            (answer.handled_by.as_str(), answer.reason.as_str()),
            ("anna", "no_call_result")
        );
        assert!(answer.repeated);
        assert_eq!(position, 103);
        assert!(not_queued(s.decide("boris", "called")).contains("anna already marked it handled"));
        assert!(not_queued(s.decide("anna", "other")).contains("with another note"));

        // Confirmed since: still a repeat of what was recorded.
        s.push("confirmed", &LeadConfirmed::default());
        assert_eq!(s.decide("anna", "called"), Ok(Decision::Repeated));

        // A new need puts it back: it waits again, for another handling.
        s.needs("crm-again", "crm_failed");
        assert_eq!(
            s.decide("anna", "called"),
            Ok(Decision::Append {
                need_event_id: need_id("crm-again"),
                version: 6
            })
        );
    }

    #[test]
    fn an_ended_lead_no_longer_waits() {
        let mut s = Stream::default();
        s.received().needs("silent", "no_call_result");
        s.push("closed", &LeadClosed::default());
        assert!(not_queued(s.decide("anna", "")).contains("closed"));
        let mut s = Stream::default();
        s.received().needs("crm", "crm_failed");
        s.push("confirmed", &LeadConfirmed::default());
        assert!(not_queued(s.decide("anna", "")).contains("confirmed"));
    }

    #[test]
    fn handling_neither_stops_nor_restarts_the_calls() {
        let mut s = Stream::default();
        s.received().needs("crm", "crm_failed");
        let before = Lead::fold(&s.0);
        s.handled("anna", "");
        let after = Lead::fold(&s.0);
        assert_eq!(
            (before.calls_stopped, before.crm_failed, before.ending),
            (after.calls_stopped, after.crm_failed, after.ending)
        );
        assert!(after.manual.waiting().is_none());
    }
}
