//! The text of a notification: a template with `{field}` placeholders,
//! filled from the event (its envelope and its payload's fields). Every
//! event type the rules are likely to name has a default template.

use std::collections::BTreeMap;

use kit::events::decode;
use kit::proto::events::v1::{
    CallCompleted, CallerIdentified, CallerKind, ConsentAnalyzed, ConsentDecision, ContactOptedOut,
    DeadLettered, DialFinished, Escalated, Event, FallbackUsed, InboundCallEnded, LeadClosed,
    LeadConfirmed, LeadManuallyHandled, LeadNeedsManualProcessing, LeadReceived, LeadRejected,
    ReminderDue, ReminderScheduled, SmsDelivered, SmsFailed, SmsSent, SmsUndelivered, TargetRole,
    TranscriptionFailed,
};

/// The fields of `event` a template may name.
pub fn fields(event: &Event) -> BTreeMap<&'static str, String> {
    let mut f = BTreeMap::new();
    f.insert("event_id", event.event_id.clone());
    f.insert("type", event.r#type.clone());
    f.insert("stream", event.stream.clone());
    f.insert("position", event.position.to_string());
    if let Some(at) = event
        .occurred_at
        .as_ref()
        .and_then(kit::events::from_proto_time)
    {
        f.insert("occurred_at", at.to_string());
    }
    let time = |ts: &Option<prost_types::Timestamp>| {
        ts.as_ref()
            .and_then(kit::events::from_proto_time)
            .map(|t| t.to_string())
            .unwrap_or_default()
    };
    match event.r#type.as_str() {
        "ConsentAnalyzed" => {
            if let Ok(e) = decode::<ConsentAnalyzed>(event) {
                let decision = match ConsentDecision::try_from(e.decision) {
                    Ok(ConsentDecision::Agreed) => "agreed",
                    Ok(ConsentDecision::Declined) => "declined",
                    _ => "unclear",
                };
                f.insert("decision", decision.into());
                f.insert("remind_after", e.remind_after);
                f.insert("opt_out", e.opt_out.to_string());
                f.insert("confidence", format!("{:.2}", e.confidence));
                f.insert("evidence", e.evidence.join(" / "));
                f.insert("reason", e.reason);
                f.insert("phone", e.client_phone);
                f.insert("call_id", e.call_id);
                f.insert("provider", e.provider);
            }
        }
        "ContactOptedOut" => {
            if let Ok(e) = decode::<ContactOptedOut>(event) {
                f.insert("phone", e.phone);
                f.insert("channel", e.channel);
                f.insert("evidence", e.evidence.join(" / "));
                f.insert("call_id", e.call_id);
            }
        }
        "ReminderScheduled" => {
            if let Ok(e) = decode::<ReminderScheduled>(event) {
                f.insert("reminder_id", e.reminder_id);
                f.insert("phone", e.phone);
                f.insert("due_at", time(&e.due_at));
                f.insert("time_zone", e.time_zone);
                f.insert("text", e.text);
                f.insert("call_id", e.call_id);
            }
        }
        "ReminderDue" => {
            if let Ok(e) = decode::<ReminderDue>(event) {
                f.insert("reminder_id", e.reminder_id);
                f.insert("phone", e.phone);
                f.insert("due_at", time(&e.due_at));
                f.insert("text", e.text);
            }
        }
        "SmsSent" => {
            if let Ok(e) = decode::<SmsSent>(event) {
                f.insert("sms_id", e.sms_id);
                f.insert("phone", e.phone);
                f.insert("text", e.text);
                f.insert("parts", e.parts.to_string());
                f.insert("attempt", e.attempt.to_string());
            }
        }
        "SmsFailed" => {
            if let Ok(e) = decode::<SmsFailed>(event) {
                f.insert("sms_id", e.sms_id);
                f.insert("phone", e.phone);
                f.insert("reason", e.reason);
                f.insert("attempt", e.attempt.to_string());
            }
        }
        "SmsDelivered" => {
            if let Ok(e) = decode::<SmsDelivered>(event) {
                f.insert("sms_id", e.sms_id);
            }
        }
        "SmsUndelivered" => {
            if let Ok(e) = decode::<SmsUndelivered>(event) {
                f.insert("sms_id", e.sms_id);
                f.insert("status", e.status);
            }
        }
        "DeadLettered" => {
            if let Ok(e) = decode::<DeadLettered>(event) {
                f.insert("consumer", e.consumer);
                f.insert("parked_event_id", e.event_id);
                f.insert("parked_type", e.event_type);
                f.insert("parked_stream", e.event_stream);
                f.insert("deliveries", e.deliveries.to_string());
                f.insert("reason", e.reason);
            }
        }
        "TranscriptionFailed" => {
            if let Ok(e) = decode::<TranscriptionFailed>(event) {
                f.insert("call_id", e.call_id);
                f.insert("reason", e.reason);
            }
        }
        "LeadRejected" => {
            if let Ok(e) = decode::<LeadRejected>(event) {
                f.insert("lead_id", e.lead_id);
                f.insert("reason", e.reason);
                f.insert("detail", e.detail);
                f.insert("site", e.site);
                f.insert("partner_id", e.partner_id);
                f.insert("ref", e.r#ref);
            }
        }
        "LeadReceived" => {
            if let Ok(e) = decode::<LeadReceived>(event) {
                f.insert("lead_id", e.lead_id);
                f.insert("name", e.name);
                f.insert("phone", e.phone);
                f.insert("city", e.city);
                f.insert("site", e.site);
                f.insert("partner_id", e.partner_id);
                f.insert("order_id", e.order_id);
                f.insert("amount", money(e.amount_minor, &e.currency));
                f.insert("ref", e.r#ref);
            }
        }
        "LeadConfirmed" => {
            if let Ok(e) = decode::<LeadConfirmed>(event) {
                f.insert("lead_id", e.lead_id);
                f.insert("attempt", e.attempt.to_string());
                f.insert("site", e.site);
                f.insert("partner_id", e.partner_id);
                f.insert("order_id", e.order_id);
                f.insert("amount", money(e.amount_minor, &e.currency));
            }
        }
        "LeadNeedsManualProcessing" => {
            if let Ok(e) = decode::<LeadNeedsManualProcessing>(event) {
                f.insert("lead_id", e.lead_id);
                f.insert("reason", e.reason);
                f.insert("detail", e.detail);
                f.insert("site", e.site);
                f.insert("partner_id", e.partner_id);
            }
        }
        "LeadManuallyHandled" => {
            if let Ok(e) = decode::<LeadManuallyHandled>(event) {
                f.insert("lead_id", e.lead_id);
                f.insert("handled_by", e.handled_by);
                f.insert(
                    "note",
                    if e.note.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", e.note)
                    },
                );
                f.insert("reason", e.reason);
                f.insert("site", e.site);
                f.insert("partner_id", e.partner_id);
            }
        }
        "LeadClosed" => {
            if let Ok(e) = decode::<LeadClosed>(event) {
                f.insert("lead_id", e.lead_id);
                f.insert("reason", e.reason);
                f.insert("detail", e.detail);
                f.insert("attempts", e.attempts.to_string());
                f.insert("site", e.site);
                f.insert("partner_id", e.partner_id);
            }
        }
        "CallerIdentified" => {
            if let Ok(e) = decode::<CallerIdentified>(event) {
                let who = match CallerKind::try_from(e.kind) {
                    Ok(CallerKind::ClientWithOrder) => format!("client {}", e.client_name),
                    Ok(CallerKind::Shop) => "a partner shop".to_owned(),
                    Ok(CallerKind::Courier) => format!("courier {}", e.courier_id),
                    _ => "a caller without an order".to_owned(),
                };
                f.insert("call_id", e.call_id);
                f.insert("who", who);
                f.insert(
                    "about",
                    if e.order_id.is_empty() {
                        String::new()
                    } else {
                        format!(" about order {} ({})", e.order_id, e.shop_name)
                    },
                );
            }
        }
        "DialFinished" => {
            if let Ok(e) = decode::<DialFinished>(event) {
                let outcome = match kit::proto::events::v1::DialOutcome::try_from(e.outcome) {
                    Ok(kit::proto::events::v1::DialOutcome::Answered) => "answered",
                    Ok(kit::proto::events::v1::DialOutcome::Busy) => "was busy",
                    Ok(kit::proto::events::v1::DialOutcome::Failed) => "could not be reached",
                    _ => "did not answer",
                };
                f.insert("call_id", e.call_id);
                f.insert("target", e.target);
                f.insert("number", e.number);
                f.insert("outcome", outcome.into());
            }
        }
        "Escalated" => {
            if let Ok(e) = decode::<Escalated>(event) {
                f.insert("call_id", e.call_id);
                f.insert("from_target", e.from_target);
                f.insert("to_target", e.to_target);
                f.insert("reason", e.reason.replace('_', " "));
            }
        }
        "FallbackUsed" => {
            if let Ok(e) = decode::<FallbackUsed>(event) {
                f.insert("call_id", e.call_id);
                f.insert("reason", e.reason);
                f.insert("detail", e.detail);
            }
        }
        "InboundCallEnded" => {
            if let Ok(e) = decode::<InboundCallEnded>(event) {
                let role = TargetRole::try_from(e.answered_by).unwrap_or_default();
                let seconds = |d: Option<prost_types::Duration>| d.map(|d| d.seconds).unwrap_or(0);
                f.insert("call_id", e.call_id);
                f.insert(
                    "answered",
                    match role {
                        TargetRole::Unspecified => "nobody answered".to_owned(),
                        role => format!(
                            "answered by the {} after {} s",
                            match role {
                                TargetRole::Shop => "shop",
                                TargetRole::Office => "office",
                                TargetRole::CallCentre => "call centre",
                                TargetRole::Counterpart => "other party",
                                TargetRole::Store => "store",
                                TargetRole::Operator => "operator",
                                _ => "fallback number",
                            },
                            seconds(e.time_to_answer)
                        ),
                    },
                );
                f.insert("duration", seconds(e.duration).to_string());
            }
        }
        "CallCompleted" => {
            if let Ok(e) = decode::<CallCompleted>(event) {
                f.insert("call_id", e.call_id);
                f.insert("provider", e.provider);
                f.insert("phone", e.client_phone);
                f.insert("manager_id", e.manager_id);
            }
        }
        _ => {}
    }
    f
}

/// An amount in minor units as people read it: `1990.50 RUB`.
fn money(minor: i64, currency: &str) -> String {
    format!("{}.{:02} {currency}", minor / 100, minor.abs() % 100)
}

/// The template used when a rule gives none.
pub fn default_template(event_type: &str) -> &'static str {
    match event_type {
        "ConsentAnalyzed" => {
            "Call {call_id} ({phone}): the client {decision}. Remind after: {remind_after}. Opt-out: {opt_out}. Their words: «{evidence}»"
        }
        "ContactOptedOut" => "{phone} asked not to be contacted again ({channel}): «{evidence}»",
        "ReminderScheduled" => "Reminder for {phone} scheduled at {due_at} ({time_zone})",
        "ReminderDue" => "Reminder for {phone} is due",
        "SmsSent" => "SMS to {phone} sent ({parts} part(s), attempt {attempt})",
        "SmsFailed" => "SMS to {phone} failed after {attempt} attempt(s): {reason}",
        "SmsDelivered" => "SMS {sms_id} delivered",
        "SmsUndelivered" => "SMS {sms_id} not delivered: {status}",
        "DeadLettered" => {
            "Parked by {consumer} after {deliveries} deliveries: {parked_type} {parked_event_id} — {reason}"
        }
        "TranscriptionFailed" => "No transcript for call {call_id}: {reason}",
        "LeadRejected" => {
            "Lead {ref} from {site} (partner {partner_id}) will not be called: {detail}. Please handle it by hand."
        }
        "LeadReceived" => {
            "New lead from {site}: order {order_id}, {amount}, {name} {phone} ({city}), partner {partner_id}"
        }
        "LeadConfirmed" => {
            "Order {order_id} on {site} confirmed by the client on call {attempt} ({amount})"
        }
        "LeadNeedsManualProcessing" => "Lead {lead_id} from {site} needs a person: {detail}",
        "LeadManuallyHandled" => "Lead {lead_id} from {site} was handled by {handled_by}{note}",
        "LeadClosed" => "Lead {lead_id} from {site} closed after {attempts} call(s): {detail}",
        "CallerIdentified" => "Call {call_id}: {who} is calling{about}",
        "DialFinished" => "Call {call_id}: {target} ({number}) {outcome}",
        "Escalated" => "Call {call_id}: {from_target} — {reason}, trying {to_target}",
        "FallbackUsed" => "Call {call_id} got the fallback route ({reason}): {detail}",
        "InboundCallEnded" => "Call {call_id} ended after {duration} s: {answered}",
        _ => "{type} in {stream} at {occurred_at}",
    }
}

/// Fills `template`'s `{field}` placeholders; unknown ones stay as written.
pub fn render(template: &str, fields: &BTreeMap<&'static str, String>) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) if fields.contains_key(&after[..close]) => {
                out.push_str(&fields[&after[..close]]);
                rest = &after[close + 1..];
            }
            _ => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kit::events::new_event;

    #[test]
    fn a_consent_renders_with_its_evidence() {
        let payload = ConsentAnalyzed {
            call_id: "4412".into(),
            client_phone: "+79161234567".into(),
            decision: ConsentDecision::Agreed as i32,
            remind_after: "P14D".into(),
            evidence: vec!["давайте через две недели".into()],
            ..Default::default()
        };
        let new = new_event(uuid::Uuid::nil(), None, &payload);
        let event = Event {
            r#type: new.r#type,
            payload: new.payload,
            ..Default::default()
        };
        let text = render(default_template("ConsentAnalyzed"), &fields(&event));
        assert!(
            text.contains("agreed") && text.contains("P14D") && text.contains("через две недели"),
            "{text}"
        );
    }

    #[test]
    fn a_handled_lead_names_the_operator() {
        let mut payload = LeadManuallyHandled {
            lead_id: "l-1".into(),
            handled_by: "anna".into(),
            note: "called the client".into(),
            site: "shop.example".into(),
            ..Default::default()
        };
        let render_it = |payload: &LeadManuallyHandled| {
            let new = new_event(uuid::Uuid::nil(), None, payload);
            let event = Event {
                r#type: new.r#type,
                payload: new.payload,
                ..Default::default()
            };
            render(default_template("LeadManuallyHandled"), &fields(&event))
        };
        assert_eq!(
            render_it(&payload),
            "Lead l-1 from shop.example was handled by anna: called the client"
        );
        payload.note.clear();
        assert_eq!(
            render_it(&payload),
            "Lead l-1 from shop.example was handled by anna"
        );
    }

    #[test]
    fn unknown_placeholders_stay_and_braces_survive() {
        let mut f = BTreeMap::new();
        f.insert("a", "1".to_owned());
        assert_eq!(render("{a} {b} {a", &f), "1 {b} {a");
        assert_eq!(render("no fields", &f), "no fields");
    }
}
