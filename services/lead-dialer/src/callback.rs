//! The call-back: carries out the next step of a lead ([`crate::lead`]).
//!
//! Each handling reads the lead's stream, folds it, decides the next step
//! and does it: appends its events (ids derived from the lead and the step,
//! the stream's version as expected version, so two handlings never decide
//! twice), sets the timer it needs, or places the call. A handling is
//! triggered by the events that move a lead — `LeadReceived`,
//! `CallAttemptFinished` — and by the dialer's timers coming due; every
//! other event of the stream is ignored without reading it.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use uuid::Uuid;

use kit::clock::SharedClock;
use kit::consumer::{HandleError, Handler, Input, Output};
use kit::events::{Payload, decode, derive_event_id, new_event, to_proto_time};
use kit::proto::events::v1::{
    CallAttemptFinished, CallAttemptScheduled, CallAttemptStarted, CallOutcome, Event, LeadClosed,
    LeadConfirmed, LeadNeedsManualProcessing, LeadReceived, MessageKind, NightSmsSent, SmsOrdered,
    TimerFired,
};
use kit::proto::eventstore::v1::NewEvent;
use kit::store_client::{AppendError, EventStoreClient, Expected};

use crate::dialer::{CallRequest, DialError, Dialer};
use crate::dials::{self, Claim};
use crate::lead::{Lead, Rules, Step, next_step};
use crate::timers::{Purpose, Timers};

/// The SMS texts of the flow: `{name}`, `{order_id}`, `{site}` and (night
/// SMS) `{call_at}` are filled in.
#[derive(Debug, Clone)]
pub struct Texts {
    pub night_sms: String,
    pub confirmed_sms: String,
    pub machine_sms: String,
}

/// Transient dial failures retried at short intervals before the attempt
/// counts as failed (and is retried as an unanswered call would be).
const TRANSIENT_DIAL_TRIES: u64 = 8;

/// The handler of lead events.
pub struct Callback {
    pub store: EventStoreClient,
    pub pool: deadpool_postgres::Pool,
    pub clock: SharedClock,
    pub dialer: Arc<dyn Dialer>,
    pub timers: Timers,
    pub rules: Rules,
    pub texts: Texts,
}

/// The handler of `TimerFired`: the dialer's own timers advance their lead.
pub struct OnTimer(pub Arc<Callback>);

/// Why a step did not complete.
enum StepError {
    /// The stream moved meanwhile: decide again.
    Conflict,
    Handle(HandleError),
}

impl From<HandleError> for StepError {
    fn from(error: HandleError) -> Self {
        StepError::Handle(error)
    }
}

fn retry(error: impl std::fmt::Display) -> StepError {
    StepError::Handle(HandleError::Retry(error.to_string()))
}

/// The lead id of a stream `lead-<uuid>`.
pub fn lead_of(stream: &str) -> Option<Uuid> {
    stream
        .strip_prefix("lead-")
        .and_then(|id| Uuid::parse_str(id).ok())
}

/// Fills the placeholders of an SMS text.
pub fn render(template: &str, received: &LeadReceived, call_at: Option<&str>) -> String {
    crate::dialer::fill(
        template,
        &received.name,
        &received.order_id,
        &received.site,
        call_at.unwrap_or(""),
    )
}

/// A time as the client reads it: `25.11 09:00`.
fn local(at: Timestamp, zone: &TimeZone) -> String {
    zone.to_datetime(at).strftime("%d.%m %H:%M").to_string()
}

impl Handler for Callback {
    async fn handle(&self, input: &Input) -> Result<Vec<Output>, HandleError> {
        if !matches!(
            input.event.r#type.as_str(),
            "LeadReceived" | "CallAttemptFinished"
        ) {
            return Ok(Vec::new());
        }
        let Some(lead_id) = lead_of(&input.event.stream) else {
            return Err(HandleError::Reject(format!(
                "`{}` is not a lead stream",
                input.event.stream
            )));
        };
        self.advance(lead_id, &input.event, input.delivered).await?;
        Ok(Vec::new())
    }
}

impl Handler for OnTimer {
    async fn handle(&self, input: &Input) -> Result<Vec<Output>, HandleError> {
        let fired: TimerFired =
            decode(&input.event).map_err(|e| HandleError::Reject(e.to_string()))?;
        if fired.owner != crate::NAME {
            return Ok(Vec::new());
        }
        let Some(lead_id) = lead_of(&fired.subject) else {
            return Err(HandleError::Reject(format!(
                "timer {} is about `{}`, not a lead",
                fired.timer_id, fired.subject
            )));
        };
        self.0
            .advance(lead_id, &input.event, input.delivered)
            .await?;
        Ok(Vec::new())
    }
}

impl Callback {
    /// Reads, decides and carries out the lead's next step; decides again
    /// when the stream moved meanwhile (the CRM sync appends to it too).
    pub async fn advance(
        &self,
        lead_id: Uuid,
        cause: &Event,
        delivered: u64,
    ) -> Result<(), HandleError> {
        for round in 0..5 {
            // After a conflict only a read of the stream will do.
            let lead = if round == 0 {
                crate::lead::read_for(&self.store, lead_id, cause, delivered).await
            } else {
                crate::lead::read(&self.store, lead_id).await
            }
            .map_err(|s| HandleError::Retry(s.message().to_owned()))?;
            let now = self.clock.now();
            let step = next_step(&lead, now, &self.rules);
            let doing = Doing {
                callback: self,
                lead_id,
                lead: &lead,
                cause,
                now,
            };
            match doing.carry_out(step, delivered).await {
                Ok(()) => return Ok(()),
                Err(StepError::Conflict) => continue,
                Err(StepError::Handle(error)) => return Err(error),
            }
        }
        Err(HandleError::Later(Duration::from_secs(1)))
    }
}

/// One step being carried out for one lead.
struct Doing<'a> {
    callback: &'a Callback,
    lead_id: Uuid,
    lead: &'a Lead,
    cause: &'a Event,
    now: Timestamp,
}

impl Doing<'_> {
    fn id(&self) -> String {
        self.lead_id.to_string()
    }

    fn received(&self) -> &LeadReceived {
        self.lead
            .received
            .as_ref()
            .expect("a lead with steps was received")
    }

    fn zone(&self) -> TimeZone {
        self.lead.zone(&self.callback.rules.default_zone)
    }

    fn event<P: Payload>(&self, kind: &str, payload: &P) -> NewEvent {
        let mut event = new_event(derive_event_id(&self.id(), kind), Some(self.now), payload);
        event.correlation_id = self.id();
        event.causation_id = self.cause.event_id.clone();
        event.trace = Some(kit::telemetry::current_trace_context());
        event
    }

    /// Appends a decision: only onto the version it was decided from.
    async fn decide(&self, events: Vec<NewEvent>) -> Result<(), StepError> {
        self.append(Expected::Exact(self.lead.version), events)
            .await
    }

    async fn append(&self, expected: Expected, events: Vec<NewEvent>) -> Result<(), StepError> {
        match self
            .callback
            .store
            .append(&format!("lead-{}", self.lead_id), expected, events)
            .await
        {
            Ok(_) => Ok(()),
            Err(AppendError::WrongExpectedVersion { .. }) => Err(StepError::Conflict),
            Err(error) => Err(retry(error)),
        }
    }

    async fn set_timer(
        &self,
        attempt: u32,
        purpose: Purpose,
        at: Timestamp,
    ) -> Result<(), StepError> {
        self.callback
            .timers
            .set(&self.id(), attempt, purpose, at)
            .await
            .map_err(|status| retry(format!("cannot set a timer: {}", status.message())))
    }

    fn plan(&self, attempt: u32, at: Timestamp, reason: &str) -> NewEvent {
        let kind = match reason {
            // A plan can move into the working hours more than once.
            "window" => format!("scheduled/{attempt}/window/{}", at.as_second()),
            _ => format!("scheduled/{attempt}"),
        };
        self.event(
            &kind,
            &CallAttemptScheduled {
                lead_id: self.id(),
                attempt,
                due_at: Some(to_proto_time(at)),
                time_zone: self.zone().iana_name().unwrap_or_default().to_owned(),
                reason: reason.into(),
            },
        )
    }

    fn sms(&self, purpose: &str, text: String, respect_quiet_hours: bool) -> (String, NewEvent) {
        let sms_id = derive_event_id(&self.id(), &format!("sms/{purpose}")).to_string();
        let order = SmsOrdered {
            sms_id: sms_id.clone(),
            phone: self.received().phone.clone(),
            text,
            kind: MessageKind::Service as i32,
            time_zone: self.zone().iana_name().unwrap_or_default().to_owned(),
            respect_quiet_hours,
            purpose: purpose.into(),
            lead_id: self.id(),
        };
        (
            sms_id,
            self.event(&format!("sms-ordered/{purpose}"), &order),
        )
    }

    fn manual(&self, kind: &str, reason: &str, detail: String) -> NewEvent {
        let received = self.received();
        self.event(
            kind,
            &LeadNeedsManualProcessing {
                lead_id: self.id(),
                reason: reason.into(),
                detail,
                calls_stopped: true,
                site: received.site.clone(),
                partner_id: received.partner_id.clone(),
            },
        )
    }

    fn closed(&self, reason: &str, detail: &str, attempts: u32) -> NewEvent {
        let received = self.received();
        self.event(
            "closed",
            &LeadClosed {
                lead_id: self.id(),
                reason: reason.into(),
                detail: detail.into(),
                attempts,
                site: received.site.clone(),
                partner_id: received.partner_id.clone(),
            },
        )
    }

    async fn carry_out(&self, step: Step, delivered: u64) -> Result<(), StepError> {
        let texts = &self.callback.texts;
        let rules = &self.callback.rules;
        match step {
            Step::Nothing => Ok(()),
            Step::PlanFirst { at, night_sms } => {
                let mut events = vec![self.plan(1, at, "window")];
                if night_sms {
                    let call_at = local(at, &self.zone());
                    let text = render(&texts.night_sms, self.received(), Some(&call_at));
                    // A direct answer to the form the client just sent: it
                    // goes out at once, night or not.
                    let (sms_id, order) = self.sms("lead_night", text, false);
                    events.push(order);
                    events.push(self.event(
                        "night-sms",
                        &NightSmsSent {
                            lead_id: self.id(),
                            sms_id,
                            call_at: Some(to_proto_time(at)),
                            time_zone: self.zone().iana_name().unwrap_or_default().to_owned(),
                        },
                    ));
                }
                self.decide(events).await?;
                self.set_timer(1, Purpose::Dial, at).await
            }
            Step::AwaitDial { attempt, at } => self.set_timer(attempt, Purpose::Dial, at).await,
            Step::MoveIntoWindow { attempt, at } => {
                self.decide(vec![self.plan(attempt, at, "window")]).await?;
                self.set_timer(attempt, Purpose::Dial, at).await
            }
            Step::Retry { attempt, at } => {
                self.decide(vec![self.plan(attempt, at, "retry")]).await?;
                self.set_timer(attempt, Purpose::Dial, at).await
            }
            Step::Dial {
                attempt,
                record_plan,
            } => self.dial(attempt, record_plan, delivered).await,
            Step::AwaitResult { attempt, deadline } => {
                self.set_timer(attempt, Purpose::ResultDeadline, deadline)
                    .await
            }
            Step::NoResult { attempt } => {
                let detail = format!(
                    "call {attempt} gave no result within {:?}",
                    rules.result_deadline
                );
                self.decide(vec![self.manual(
                    "manual/no-result",
                    "no_call_result",
                    detail,
                )])
                .await
            }
            Step::NotReached { attempts } => {
                let detail = format!("{attempts} calls, none answered");
                self.decide(vec![self.manual(
                    "manual/not-reached",
                    "not_reached",
                    detail,
                )])
                .await
            }
            Step::Confirm { attempt } => {
                let received = self.received();
                let text = render(&texts.confirmed_sms, received, None);
                let (_, sms) = self.sms("lead_confirmed", text, true);
                let confirmed = self.event(
                    "confirmed",
                    &LeadConfirmed {
                        lead_id: self.id(),
                        attempt,
                        site: received.site.clone(),
                        partner_id: received.partner_id.clone(),
                        order_id: received.order_id.clone(),
                        amount_minor: received.amount_minor,
                        currency: received.currency.clone(),
                    },
                );
                self.decide(vec![sms, confirmed]).await
            }
            Step::Machine { attempt } => {
                let text = render(&texts.machine_sms, self.received(), None);
                let (_, sms) = self.sms("lead_machine", text, true);
                let closed = self.closed(
                    "answering_machine",
                    "an answering machine took the call; the client got an SMS",
                    attempt,
                );
                self.decide(vec![sms, closed]).await
            }
            Step::WrongNumber { attempt } => {
                let closed = self.closed("wrong_number", "the number does not exist", attempt);
                self.decide(vec![closed]).await
            }
        }
    }

    /// Places attempt `attempt`, at most once whatever happens around it.
    async fn dial(&self, attempt: u32, record_plan: bool, delivered: u64) -> Result<(), StepError> {
        let callback = self.callback;
        let dialer = callback.dialer.name();
        let claim = dials::claim(&callback.pool, self.lead_id, attempt, dialer)
            .await
            .map_err(retry)?;
        let call_id = match claim {
            Claim::Placed(call_id) => call_id,
            Claim::Abandoned => String::new(),
            Claim::Dialing => {
                return Err(HandleError::Later(Duration::from_secs(5)).into());
            }
            Claim::Won => {
                let received = self.received();
                let request = CallRequest {
                    lead_id: self.id(),
                    attempt,
                    phone: self.lead.phone().expect("a dialled lead has a number"),
                    name: received.name.clone(),
                    order_id: received.order_id.clone(),
                    site: received.site.clone(),
                };
                match callback.dialer.dial(&request).await {
                    Ok(call_id) => {
                        dials::placed(&callback.pool, self.lead_id, attempt, &call_id)
                            .await
                            .map_err(retry)?;
                        metrics::counter!("callflow_lead_calls_total", "outcome" => "placed")
                            .increment(1);
                        call_id
                    }
                    // The phone may be ringing: never dial this attempt
                    // again; the result deadline decides.
                    Err(DialError::Unknown(reason)) => {
                        tracing::warn!(lead = %self.lead_id, attempt, %reason, "call outcome unknown");
                        String::new()
                    }
                    Err(DialError::Transient(reason, after))
                        if delivered < TRANSIENT_DIAL_TRIES =>
                    {
                        dials::release(&callback.pool, self.lead_id, attempt)
                            .await
                            .map_err(retry)?;
                        let backoff = Duration::from_secs(1 << delivered.min(6));
                        tracing::warn!(lead = %self.lead_id, attempt, %reason, "dialer unavailable; trying again");
                        return Err(HandleError::Later(after.unwrap_or(backoff)).into());
                    }
                    Err(DialError::Transient(reason, _)) | Err(DialError::Refused(reason)) => {
                        metrics::counter!("callflow_lead_calls_total", "outcome" => "refused")
                            .increment(1);
                        let mut events = Vec::new();
                        if record_plan {
                            events.push(self.plan(attempt, self.now, "first"));
                        }
                        events.push(self.event(
                            &format!("finished/{attempt}"),
                            &CallAttemptFinished {
                                lead_id: self.id(),
                                attempt,
                                outcome: CallOutcome::Failed as i32,
                                dialer: dialer.into(),
                                detail: reason,
                                ..Default::default()
                            },
                        ));
                        return self.append(Expected::Any, events).await;
                    }
                }
            }
        };
        // The claim guards the call, and the ids are derived: recording it
        // again is harmless, whatever else the stream got meanwhile.
        let mut events = Vec::new();
        if record_plan {
            events.push(self.plan(attempt, self.now, "first"));
        }
        events.push(self.event(
            &format!("started/{attempt}"),
            &CallAttemptStarted {
                lead_id: self.id(),
                attempt,
                dialer: dialer.into(),
                provider_call_id: call_id,
            },
        ));
        self.append(Expected::Any, events).await?;
        let deadline = crate::lead::after(self.now, self.callback.rules.result_deadline);
        self.set_timer(attempt, Purpose::ResultDeadline, deadline)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sms_texts_fill_the_lead_in() {
        let received = LeadReceived {
            name: "Анна".into(),
            order_id: "100234".into(),
            site: "shop.example".into(),
            ..Default::default()
        };
        assert_eq!(
            render(
                "{name}, заказ {order_id}: {call_at}",
                &received,
                Some("25.11 09:00")
            ),
            "Анна, заказ 100234: 25.11 09:00"
        );
        let zone = TimeZone::get("Asia/Vladivostok").unwrap();
        assert_eq!(
            local("2026-11-24T23:00:00Z".parse().unwrap(), &zone),
            "25.11 09:00"
        );
        assert_eq!(
            lead_of("lead-0b6f3a3e-8c1f-4f57-9d8e-1a2b3c4d5e6f")
                .map(|u| u.to_string())
                .as_deref(),
            Some("0b6f3a3e-8c1f-4f57-9d8e-1a2b3c4d5e6f")
        );
        assert_eq!(lead_of("call-1"), None);
    }
}
