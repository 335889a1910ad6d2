//! MTS Exolve's call-event webhook: `type` b (begin), s (answered),
//! d (disconnected, with durations in milliseconds and a cause code),
//! e (end), crr (call recording ready, with its `path`), and `call_sid`,
//! `from`, `to`, `date_time`. Each becomes one event in the call's stream,
//! with an id derived from the call and the type, so a webhook delivered
//! twice is recorded once.

use std::time::Duration;

use jiff::Timestamp;

use kit::events::{decode, to_proto_duration, to_proto_time};
use kit::proto::events::v1::{
    CallAnswered, CallCompleted, CallDirection, CallDisconnected, CallStarted, Event,
    RecordingReady,
};

use crate::errors::ApiError;
use crate::fields::Fields;
use crate::{Call, Settings};

/// Provider name in streams and events.
pub const PROVIDER: &str = "exolve";

/// One parsed Exolve webhook.
#[derive(Debug, Clone, PartialEq)]
pub enum ExolveEvent {
    Started(CallStarted),
    Answered(CallAnswered),
    Disconnected(CallDisconnected),
    /// Completed from what this webhook says; [`complete`] adds what earlier
    /// webhooks of the call said.
    Ended(CallCompleted),
    RecordingReady(RecordingReady),
}

/// Reads an Exolve webhook body.
pub fn parse(fields: &Fields, settings: &Settings) -> Result<(Call, ExolveEvent), ApiError> {
    let kind = fields.required_text("type")?;
    let call_id = match fields.id("call_sid")? {
        Some(id) => id,
        None => fields
            .id("call_id")?
            .ok_or_else(|| ApiError::invalid("call_sid", "`call_sid` is required"))?,
    };
    let at = fields.time("date_time", &settings.provider_time_zone)?;
    let millis = |name| -> Result<Option<Duration>, ApiError> {
        Ok(fields.count(name)?.map(Duration::from_millis))
    };
    let from = fields.phone("from", settings.default_region)?;
    let to = fields.phone("to", settings.default_region)?;
    let direction = settings.direction(from.as_ref(), to.as_ref());
    let phone =
        |p: &Option<kit::phone::PhoneNumber>| p.as_ref().map(|p| p.to_string()).unwrap_or_default();

    let event = match kind.as_str() {
        "b" => ExolveEvent::Started(CallStarted {
            provider: PROVIDER.into(),
            call_id: call_id.clone(),
            client_phone: client_phone(direction, &from, &to),
            from: phone(&from),
            to: phone(&to),
            direction: direction as i32,
            started_at: at.map(to_proto_time),
        }),
        "s" => ExolveEvent::Answered(CallAnswered {
            provider: PROVIDER.into(),
            call_id: call_id.clone(),
            answered_at: at.map(to_proto_time),
        }),
        "d" => ExolveEvent::Disconnected(CallDisconnected {
            provider: PROVIDER.into(),
            call_id: call_id.clone(),
            duration: millis("duration")?.map(to_proto_duration),
            wait_time: millis("wait_time")?.map(to_proto_duration),
            talk_time: millis("talk_time")?.map(to_proto_duration),
            cause_code: match fields.count("cause_code")? {
                Some(code) => i32::try_from(code)
                    .map_err(|_| ApiError::invalid("cause_code", "`cause_code` is too large"))?,
                None => 0,
            },
            disconnected_at: at.map(to_proto_time),
        }),
        "e" => ExolveEvent::Ended(CallCompleted {
            provider: PROVIDER.into(),
            call_id: call_id.clone(),
            direction: direction as i32,
            client_phone: client_phone(direction, &from, &to),
            from: phone(&from),
            to: phone(&to),
            started_at: None,
            duration: millis("duration")?.map(to_proto_duration),
            manager_id: fields.text("manager_id")?.unwrap_or_default(),
            recording_url: fields.text("path")?.unwrap_or_default(),
        }),
        "crr" => ExolveEvent::RecordingReady(RecordingReady {
            provider: PROVIDER.into(),
            call_id: call_id.clone(),
            recording_url: fields.text("path")?.ok_or_else(|| {
                ApiError::invalid("path", "`path` is required for a recording (type crr)")
            })?,
        }),
        other => {
            return Err(ApiError::invalid(
                "type",
                format!("`type` {other} is not an Exolve call event (b, s, d, e or crr)"),
            ));
        }
    };
    Ok((
        Call {
            provider: PROVIDER.into(),
            call_id,
            occurred_at: at,
            kind: kind_name(&event),
        },
        event,
    ))
}

fn kind_name(event: &ExolveEvent) -> &'static str {
    match event {
        ExolveEvent::Started(_) => "b",
        ExolveEvent::Answered(_) => "s",
        ExolveEvent::Disconnected(_) => "d",
        ExolveEvent::Ended(_) => "e",
        ExolveEvent::RecordingReady(_) => "crr",
    }
}

/// The client's number: the caller of an inbound call, the callee of an
/// outbound one.
pub fn client_phone(
    direction: CallDirection,
    from: &Option<kit::phone::PhoneNumber>,
    to: &Option<kit::phone::PhoneNumber>,
) -> String {
    let client = match direction {
        CallDirection::Inbound => from,
        CallDirection::Outbound => to,
        CallDirection::Unspecified => &None,
    };
    client.as_ref().map(|p| p.to_string()).unwrap_or_default()
}

/// Fills what the end webhook does not carry from the call's earlier events:
/// numbers and start time from `b`, duration from `d`, recording from `crr`.
pub fn complete(
    mut ended: CallCompleted,
    earlier: &[Event],
    ended_at: Option<Timestamp>,
) -> CallCompleted {
    for event in earlier {
        if let Ok(started) = decode::<CallStarted>(event) {
            if ended.from.is_empty() {
                ended.from = started.from;
            }
            if ended.to.is_empty() {
                ended.to = started.to;
            }
            if ended.direction == CallDirection::Unspecified as i32 {
                ended.direction = started.direction;
            }
            ended.started_at = ended.started_at.or(started.started_at);
        } else if let Ok(disconnected) = decode::<CallDisconnected>(event) {
            ended.duration = ended.duration.or(disconnected.duration);
        } else if let Ok(recording) = decode::<RecordingReady>(event)
            && ended.recording_url.is_empty()
        {
            ended.recording_url = recording.recording_url;
        }
    }
    if ended.client_phone.is_empty() {
        ended.client_phone = match CallDirection::try_from(ended.direction) {
            Ok(CallDirection::Inbound) => ended.from.clone(),
            Ok(CallDirection::Outbound) => ended.to.clone(),
            _ => String::new(),
        };
    }
    if ended.started_at.is_none() {
        // Without a begin webhook: the end time minus the duration.
        let duration = ended.duration.map_or(0, |d| d.seconds);
        ended.started_at = ended_at
            .and_then(|end| {
                end.checked_sub(jiff::SignedDuration::from_secs(duration))
                    .ok()
            })
            .map(to_proto_time);
    }
    ended
}
