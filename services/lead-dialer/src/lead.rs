//! Where a lead stands, folded from its stream, and what the call-back
//! should do next. Pure but for [`read`]: every branch of the flow (working
//! hours, retries, deadlines, outcomes) is unit-tested here, and the
//! service around it ([`crate::callback`]) only carries steps out.

use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use kit::events::{decode, from_proto_time};
use kit::local_time::{SendWindow, zone_for_phone};
use kit::phone::{DefaultRegion, PhoneNumber};
use kit::proto::events::v1::{
    CallAttemptFinished, CallAttemptScheduled, CallAttemptStarted, CallOutcome, Event,
    LeadCreatedInCrm, LeadManuallyHandled, LeadNeedsManualProcessing, LeadReceived,
};

/// One call of a lead.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub number: u32,
    /// When it is planned (the latest plan, if it was moved).
    pub due_at: Timestamp,
    /// When the provider was asked, and its call id ("" when unknown).
    pub started: Option<(Timestamp, String)>,
    pub finished: Option<CallAttemptFinished>,
}

/// How a lead ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Rejected,
    Confirmed,
    Closed,
}

/// A lead as its stream tells it.
#[derive(Debug, Clone, Default)]
pub struct Lead {
    /// Version of the stream folded.
    pub version: u64,
    pub received: Option<LeadReceived>,
    pub attempts: Vec<Attempt>,
    pub night_sms: bool,
    pub crm_lead_id: Option<String>,
    /// The CRM could not take the lead (it is a seller's now).
    pub crm_failed: bool,
    /// No more automatic calls (every attempt failed, or no result came).
    pub calls_stopped: bool,
    pub ending: Option<Ending>,
    /// The lead's place in the manual queue.
    pub manual: Manual,
}

/// A `LeadNeedsManualProcessing` of the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Need {
    pub event_id: String,
    pub correlation_id: String,
    pub reason: String,
    pub detail: String,
    pub at: Timestamp,
}

/// A `LeadManuallyHandled` of the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Handled {
    pub event_id: String,
    /// Its global position (what the dashboard must have applied to show
    /// it).
    pub position: u64,
    pub handled_by: String,
    pub note: String,
    pub at: Timestamp,
}

/// What answered the newest need.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// A person marked it handled.
    Handled(Handled),
    /// The lead was confirmed or closed.
    Ended(Ending),
}

/// The lead and the manual queue, as the dashboard shows it (see
/// [`crate::dashboard`]): a lead waits for a person from a
/// `LeadNeedsManualProcessing` until it is marked handled
/// (`LeadManuallyHandled`), confirmed or closed; a later need makes it wait
/// again.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Manual {
    /// The newest need, if there was one.
    pub need: Option<Need>,
    /// What answered it, if anything did; the lead waits while this is
    /// `None`.
    pub answer: Option<Answer>,
}

impl Manual {
    /// The need the lead waits with, if it waits for a person.
    pub fn waiting(&self) -> Option<&Need> {
        self.need.as_ref().filter(|_| self.answer.is_none())
    }

    fn answer(&mut self, answer: Answer) {
        if self.need.is_some() && self.answer.is_none() {
            self.answer = Some(answer);
        }
    }
}

fn occurred(event: &Event) -> Timestamp {
    event
        .occurred_at
        .as_ref()
        .or(event.recorded_at.as_ref())
        .and_then(from_proto_time)
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

impl Lead {
    /// Folds a lead's events (in stream order). Unreadable events are
    /// skipped: they cannot be ours to act on.
    pub fn fold(events: &[Event]) -> Lead {
        let mut lead = Lead::default();
        for event in events {
            lead.version = event.version;
            match event.r#type.as_str() {
                "LeadReceived" => lead.received = decode(event).ok(),
                "LeadRejected" => lead.ending = Some(Ending::Rejected),
                "LeadConfirmed" => {
                    lead.ending = Some(Ending::Confirmed);
                    lead.manual.answer(Answer::Ended(Ending::Confirmed));
                }
                "LeadClosed" => {
                    lead.ending = Some(Ending::Closed);
                    lead.manual.answer(Answer::Ended(Ending::Closed));
                }
                // A person's work: nothing the call-back acts on (calls
                // stopped stay stopped, calls going on go on).
                "LeadManuallyHandled" => {
                    if let Ok(e) = decode::<LeadManuallyHandled>(event) {
                        lead.manual.answer(Answer::Handled(Handled {
                            event_id: event.event_id.clone(),
                            position: event.position,
                            handled_by: e.handled_by,
                            note: e.note,
                            at: occurred(event),
                        }));
                    }
                }
                "NightSmsSent" => lead.night_sms = true,
                "LeadCreatedInCrm" => {
                    lead.crm_lead_id = decode::<LeadCreatedInCrm>(event)
                        .ok()
                        .map(|e| e.crm_lead_id)
                }
                "LeadNeedsManualProcessing" => {
                    if let Ok(e) = decode::<LeadNeedsManualProcessing>(event) {
                        lead.crm_failed |= e.reason == "crm_failed";
                        lead.calls_stopped |= e.calls_stopped;
                        lead.manual = Manual {
                            need: Some(Need {
                                event_id: event.event_id.clone(),
                                correlation_id: event.correlation_id.clone(),
                                reason: e.reason,
                                detail: e.detail,
                                at: occurred(event),
                            }),
                            answer: None,
                        };
                    }
                }
                "CallAttemptScheduled" => {
                    if let Ok(e) = decode::<CallAttemptScheduled>(event) {
                        let due_at = e
                            .due_at
                            .as_ref()
                            .and_then(from_proto_time)
                            .unwrap_or_else(|| occurred(event));
                        match lead.attempt_mut(e.attempt) {
                            Some(attempt) => attempt.due_at = due_at,
                            None => lead.attempts.push(Attempt {
                                number: e.attempt,
                                due_at,
                                started: None,
                                finished: None,
                            }),
                        }
                    }
                }
                "CallAttemptStarted" => {
                    if let Ok(e) = decode::<CallAttemptStarted>(event)
                        && let Some(attempt) = lead.attempt_mut(e.attempt)
                    {
                        attempt.started = Some((occurred(event), e.provider_call_id));
                    }
                }
                "CallAttemptFinished" => {
                    if let Ok(e) = decode::<CallAttemptFinished>(event)
                        && let Some(attempt) = lead.attempt_mut(e.attempt)
                    {
                        attempt.finished = Some(e);
                    }
                }
                _ => {}
            }
        }
        lead
    }

    fn attempt_mut(&mut self, number: u32) -> Option<&mut Attempt> {
        self.attempts.iter_mut().find(|a| a.number == number)
    }

    /// The attempt with the highest number.
    pub fn current(&self) -> Option<&Attempt> {
        self.attempts.iter().max_by_key(|a| a.number)
    }

    pub fn attempt(&self, number: u32) -> Option<&Attempt> {
        self.attempts.iter().find(|a| a.number == number)
    }

    /// The client's callable number.
    pub fn phone(&self) -> Option<PhoneNumber> {
        let received = self.received.as_ref()?;
        PhoneNumber::parse(&received.phone, DefaultRegion::default()).ok()
    }

    /// The client's zone: the one the shop sent, else the one of the
    /// number's region, else the deployment's default.
    pub fn zone(&self, default: &TimeZone) -> TimeZone {
        let named = self
            .received
            .as_ref()
            .filter(|r| !r.time_zone.is_empty())
            .and_then(|r| TimeZone::get(&r.time_zone).ok());
        named
            .or_else(|| self.phone().as_ref().and_then(zone_for_phone))
            .unwrap_or_else(|| default.clone())
    }
}

/// Reads and folds the stream `lead-<lead_id>`.
pub async fn read(
    store: &kit::store_client::EventStoreClient,
    lead_id: uuid::Uuid,
) -> Result<Lead, tonic::Status> {
    let events = store
        .grpc()
        .read_stream(kit::proto::eventstore::v1::ReadStreamRequest {
            stream: format!("lead-{lead_id}"),
            from_version: 1,
            max_count: 0,
        })
        .await?
        .into_inner()
        .events;
    Ok(Lead::fold(&events))
}

/// The lead as a handler of `input` needs it: on the first delivery of a
/// lead's first event (`LeadReceived`, version 1) that event is all the
/// handler can act on, and reading the stream back would only add what the
/// CRM sync recorded meanwhile, which changes no decision of either (and a
/// decision appended onto the version read would then conflict and be made
/// again from a full read). Otherwise the stream is read.
///
/// Every flow step reads its lead; the lead's first step is the one on the
/// way to the first call, so skipping its read is worth this much care.
pub async fn read_for(
    store: &kit::store_client::EventStoreClient,
    lead_id: uuid::Uuid,
    input: &Event,
    delivered: u64,
) -> Result<Lead, tonic::Status> {
    if is_fresh(input, delivered) {
        return Ok(Lead::fold(std::slice::from_ref(input)));
    }
    read(store, lead_id).await
}

/// Whether `input` is the lead's first event, delivered for the first time.
fn is_fresh(input: &Event, delivered: u64) -> bool {
    delivered == 1 && input.version == 1 && input.r#type == "LeadReceived"
}

/// The call-back's rules.
#[derive(Debug, Clone)]
pub struct Rules {
    pub window: SendWindow,
    pub default_zone: TimeZone,
    pub retry_after: Duration,
    pub max_attempts: u32,
    pub result_deadline: Duration,
}

/// What the call-back does next with a lead.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Nothing: it ended, waits for a person, or waits for its timer or
    /// result with nothing to catch up on.
    Nothing,
    /// The first call, outside working hours: plan it for when they open,
    /// and send the night SMS (unless it was sent).
    PlanFirst { at: Timestamp, night_sms: bool },
    /// Call now. `record_plan` when no `CallAttemptScheduled` records this
    /// attempt yet (a first call inside working hours is planned and placed
    /// in one go).
    Dial { attempt: u32, record_plan: bool },
    /// A planned call, not due yet: its timer must be set.
    AwaitDial { attempt: u32, at: Timestamp },
    /// A planned call came due outside working hours (its timer was late,
    /// or the hours changed): move it to when they open.
    MoveIntoWindow { attempt: u32, at: Timestamp },
    /// A placed call without a result: the deadline timer must be set.
    AwaitResult { attempt: u32, deadline: Timestamp },
    /// No result by the deadline: a person takes over.
    NoResult { attempt: u32 },
    /// A person answered.
    Confirm { attempt: u32 },
    /// A machine answered: SMS, no more calls.
    Machine { attempt: u32 },
    /// The number does not exist.
    WrongNumber { attempt: u32 },
    /// Unanswered: plan the next call.
    Retry { attempt: u32, at: Timestamp },
    /// Unanswered and no attempts left: a person takes over.
    NotReached { attempts: u32 },
}

/// `at` plus `wait`, saturating.
pub fn after(at: Timestamp, wait: Duration) -> Timestamp {
    at.checked_add(SignedDuration::try_from(wait).unwrap_or(SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX)
}

/// The next step for `lead` at `now`.
pub fn next_step(lead: &Lead, now: Timestamp, rules: &Rules) -> Step {
    if lead.received.is_none()
        || lead.ending.is_some()
        || lead.calls_stopped
        || lead.phone().is_none()
    {
        return Step::Nothing;
    }
    let zone = lead.zone(&rules.default_zone);
    let Some(attempt) = lead.current() else {
        return if rules.window.contains(now, &zone) {
            Step::Dial {
                attempt: 1,
                record_plan: true,
            }
        } else {
            Step::PlanFirst {
                at: rules.window.next_open(now, &zone),
                night_sms: !lead.night_sms,
            }
        };
    };
    let number = attempt.number;
    match (&attempt.started, &attempt.finished) {
        (_, Some(finished)) => match finished.outcome() {
            CallOutcome::Human => Step::Confirm { attempt: number },
            CallOutcome::Machine => Step::Machine { attempt: number },
            CallOutcome::WrongNumber => Step::WrongNumber { attempt: number },
            _ if number >= rules.max_attempts => Step::NotReached { attempts: number },
            _ => {
                let earliest = after(now, rules.retry_after);
                let at = if rules.window.contains(earliest, &zone) {
                    earliest
                } else {
                    rules.window.next_open(earliest, &zone)
                };
                Step::Retry {
                    attempt: number + 1,
                    at,
                }
            }
        },
        (Some((started_at, _)), None) => {
            let deadline = after(*started_at, rules.result_deadline);
            if now >= deadline {
                Step::NoResult { attempt: number }
            } else {
                Step::AwaitResult {
                    attempt: number,
                    deadline,
                }
            }
        }
        (None, None) if attempt.due_at > now => Step::AwaitDial {
            attempt: number,
            at: attempt.due_at,
        },
        (None, None) if rules.window.contains(now, &zone) => Step::Dial {
            attempt: number,
            record_plan: false,
        },
        (None, None) => Step::MoveIntoWindow {
            attempt: number,
            at: rules.window.next_open(now, &zone),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kit::events::{new_event, to_proto_duration, to_proto_time};
    use kit::proto::events::v1::{LeadConfirmed, NightSmsSent};
    use uuid::Uuid;

    fn rules() -> Rules {
        Rules {
            window: "09:00-21:00".parse().unwrap(),
            default_zone: TimeZone::get("Europe/Moscow").unwrap(),
            retry_after: Duration::from_secs(30 * 60),
            max_attempts: 5,
            result_deadline: Duration::from_secs(15 * 60),
        }
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    struct Stream(Vec<Event>);

    impl Stream {
        fn new(zone: &str, phone: &str) -> Self {
            let mut s = Stream(Vec::new());
            s.push(
                &LeadReceived {
                    lead_id: "l".into(),
                    phone: phone.into(),
                    time_zone: zone.into(),
                    ..Default::default()
                },
                at("2026-11-24T00:00:00Z"),
            );
            s
        }

        fn push<P: kit::events::Payload>(&mut self, payload: &P, when: Timestamp) -> &mut Self {
            let new = new_event(Uuid::new_v4(), Some(when), payload);
            let event = Event {
                event_id: new.event_id,
                stream: "lead-l".into(),
                version: self.0.len() as u64 + 1,
                r#type: new.r#type,
                occurred_at: new.occurred_at,
                payload: new.payload,
                ..Default::default()
            };
            self.0.push(event);
            self
        }

        fn scheduled(&mut self, attempt: u32, due: &str) -> &mut Self {
            self.push(
                &CallAttemptScheduled {
                    attempt,
                    due_at: Some(to_proto_time(at(due))),
                    ..Default::default()
                },
                at(due),
            )
        }

        fn started(&mut self, attempt: u32, when: &str) -> &mut Self {
            self.push(
                &CallAttemptStarted {
                    attempt,
                    provider_call_id: "c".into(),
                    ..Default::default()
                },
                at(when),
            )
        }

        fn finished(&mut self, attempt: u32, outcome: CallOutcome, when: &str) -> &mut Self {
            self.push(
                &CallAttemptFinished {
                    attempt,
                    outcome: outcome as i32,
                    duration: Some(to_proto_duration(Duration::from_secs(3))),
                    ..Default::default()
                },
                at(when),
            )
        }

        fn step(&self, now: &str) -> Step {
            next_step(&Lead::fold(&self.0), at(now), &rules())
        }
    }

    /// What the CRM sync may have recorded before a lead's first event is
    /// handled changes no step: the reason a first handling may fold that
    /// event alone (`read_for`).
    #[test]
    fn the_first_event_alone_decides_as_the_stream_would() {
        for now in ["2026-11-24T09:00:00Z", "2026-11-24T20:00:00Z"] {
            let alone = Stream::new("Europe/Moscow", "+79161234567");
            let mut created = Stream::new("Europe/Moscow", "+79161234567");
            created.push(
                &LeadCreatedInCrm {
                    crm_lead_id: "17".into(),
                    ..Default::default()
                },
                at(now),
            );
            let mut failed = Stream::new("Europe/Moscow", "+79161234567");
            failed.push(
                &LeadNeedsManualProcessing {
                    reason: "crm_failed".into(),
                    calls_stopped: false,
                    ..Default::default()
                },
                at(now),
            );
            assert_eq!(alone.step(now), created.step(now), "{now}");
            assert_eq!(alone.step(now), failed.step(now), "{now}");
        }
        let first = &Stream::new("Europe/Moscow", "+79161234567").0[0];
        assert!(is_fresh(first, 1));
        assert!(!is_fresh(first, 2), "a redelivery reads the stream");
        let mut later = first.clone();
        later.version = 2;
        assert!(!is_fresh(&later, 1), "not the stream's first event");
    }

    #[test]
    fn a_daytime_lead_is_called_at_once() {
        // 12:00 in Moscow.
        let s = Stream::new("Europe/Moscow", "+79161234567");
        assert_eq!(
            s.step("2026-11-24T09:00:00Z"),
            Step::Dial {
                attempt: 1,
                record_plan: true
            }
        );
    }

    #[test]
    fn a_night_lead_gets_the_sms_and_a_call_at_nine_local() {
        // 23:30 in Vladivostok (UTC+10) is 13:30 UTC; the call is at 09:00
        // there, 23:00 UTC.
        let mut s = Stream::new("Asia/Vladivostok", "+79241234567");
        assert_eq!(
            s.step("2026-11-24T13:30:00Z"),
            Step::PlanFirst {
                at: at("2026-11-24T23:00:00Z"),
                night_sms: true
            }
        );
        s.scheduled(1, "2026-11-24T23:00:00Z")
            .push(&NightSmsSent::default(), at("2026-11-24T13:30:00Z"));
        assert_eq!(
            s.step("2026-11-24T13:31:00Z"),
            Step::AwaitDial {
                attempt: 1,
                at: at("2026-11-24T23:00:00Z")
            }
        );
        assert_eq!(
            s.step("2026-11-24T23:00:00Z"),
            Step::Dial {
                attempt: 1,
                record_plan: false
            }
        );
    }

    #[test]
    fn kaliningrad_and_the_number_region_decide_the_hours() {
        // 07:30 UTC is 09:30 in Kaliningrad (UTC+2) but 17:30 in Vladivostok.
        let kaliningrad = Stream::new("Europe/Kaliningrad", "+79161234567");
        assert!(matches!(
            kaliningrad.step("2026-11-24T07:30:00Z"),
            Step::Dial { .. }
        ));
        // 06:30 UTC is 08:30 in Kaliningrad: wait for 09:00 there.
        assert_eq!(
            kaliningrad.step("2026-11-24T06:30:00Z"),
            Step::PlanFirst {
                at: at("2026-11-24T07:00:00Z"),
                night_sms: true
            }
        );
        // No zone from the shop: a Moscow-region mobile keeps Moscow's
        // default; the lead's own zone always wins over the default.
        let unknown = Stream::new("", "+79161234567");
        assert!(matches!(
            unknown.step("2026-11-24T19:30:00Z"),
            Step::PlanFirst { .. }
        ));
    }

    #[test]
    fn a_dst_zone_opens_at_nine_local_on_both_sides_of_the_change() {
        // New York: 09:00 EDT is 13:00 UTC on 2026-10-30, 09:00 EST is 14:00
        // UTC on 2026-11-02 (the clocks went back on 1 November).
        let s = Stream::new("America/New_York", "+12125551234");
        assert_eq!(
            s.step("2026-10-30T05:00:00Z"),
            Step::PlanFirst {
                at: at("2026-10-30T13:00:00Z"),
                night_sms: true
            }
        );
        assert_eq!(
            s.step("2026-11-02T05:00:00Z"),
            Step::PlanFirst {
                at: at("2026-11-02T14:00:00Z"),
                night_sms: true
            }
        );
    }

    #[test]
    fn unanswered_calls_are_retried_inside_the_hours_until_the_limit() {
        let mut s = Stream::new("Europe/Moscow", "+79161234567");
        s.scheduled(1, "2026-11-24T09:00:00Z")
            .started(1, "2026-11-24T09:00:01Z")
            .finished(1, CallOutcome::NoAnswer, "2026-11-24T09:00:40Z");
        assert_eq!(
            s.step("2026-11-24T09:00:41Z"),
            Step::Retry {
                attempt: 2,
                at: at("2026-11-24T09:30:41Z")
            }
        );
        // At 20:45 Moscow the retry would fall at 21:15: next morning.
        assert_eq!(
            s.step("2026-11-24T17:45:00Z"),
            Step::Retry {
                attempt: 2,
                at: at("2026-11-25T06:00:00Z")
            }
        );
        for n in 2..=5 {
            s.scheduled(n, "2026-11-24T10:00:00Z")
                .started(n, "2026-11-24T10:00:01Z")
                .finished(n, CallOutcome::Busy, "2026-11-24T10:00:30Z");
        }
        assert_eq!(
            s.step("2026-11-24T10:01:00Z"),
            Step::NotReached { attempts: 5 }
        );
    }

    #[test]
    fn outcomes_decide_the_end() {
        for (outcome, step) in [
            (CallOutcome::Human, Step::Confirm { attempt: 1 }),
            (CallOutcome::Machine, Step::Machine { attempt: 1 }),
            (CallOutcome::WrongNumber, Step::WrongNumber { attempt: 1 }),
        ] {
            let mut s = Stream::new("Europe/Moscow", "+79161234567");
            s.scheduled(1, "2026-11-24T09:00:00Z")
                .started(1, "2026-11-24T09:00:01Z")
                .finished(1, outcome, "2026-11-24T09:00:40Z");
            assert_eq!(s.step("2026-11-24T09:01:00Z"), step);
        }
        let mut s = Stream::new("Europe/Moscow", "+79161234567");
        s.push(&LeadConfirmed::default(), at("2026-11-24T09:02:00Z"));
        assert_eq!(s.step("2026-11-24T09:03:00Z"), Step::Nothing);
    }

    #[test]
    fn a_call_without_a_result_goes_to_a_person_at_the_deadline() {
        let mut s = Stream::new("Europe/Moscow", "+79161234567");
        s.scheduled(1, "2026-11-24T09:00:00Z")
            .started(1, "2026-11-24T09:00:00Z");
        assert_eq!(
            s.step("2026-11-24T09:10:00Z"),
            Step::AwaitResult {
                attempt: 1,
                deadline: at("2026-11-24T09:15:00Z")
            }
        );
        assert_eq!(
            s.step("2026-11-24T09:15:00Z"),
            Step::NoResult { attempt: 1 }
        );
        s.push(
            &LeadNeedsManualProcessing {
                reason: "no_call_result".into(),
                calls_stopped: true,
                ..Default::default()
            },
            at("2026-11-24T09:15:00Z"),
        );
        assert_eq!(s.step("2026-11-24T09:20:00Z"), Step::Nothing);
    }

    #[test]
    fn a_crm_failure_does_not_stop_the_calls() {
        let mut s = Stream::new("Europe/Moscow", "+79161234567");
        s.push(
            &LeadNeedsManualProcessing {
                reason: "crm_failed".into(),
                calls_stopped: false,
                ..Default::default()
            },
            at("2026-11-24T09:00:00Z"),
        );
        let lead = Lead::fold(&s.0);
        assert!(lead.crm_failed);
        assert!(matches!(s.step("2026-11-24T09:00:01Z"), Step::Dial { .. }));
    }

    #[test]
    fn a_planned_call_found_due_at_night_moves_to_the_morning() {
        let mut s = Stream::new("Europe/Moscow", "+79161234567");
        s.scheduled(1, "2026-11-24T17:50:00Z");
        // Its timer fired late, at 21:30 Moscow.
        assert_eq!(
            s.step("2026-11-24T18:30:00Z"),
            Step::MoveIntoWindow {
                attempt: 1,
                at: at("2026-11-25T06:00:00Z")
            }
        );
    }
}
