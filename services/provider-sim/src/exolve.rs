//! MTS Exolve: SMS (`SendSMS`, `GetList`), call transcriptions
//! (`GetTranscribation`, `SetCallTranscribationState`), voice messages
//! (`MakeVoiceMessage`) and answering-machine detection (`SetAmdState`).
//! A voice message is a call: it is played from its destination's script
//! and its outcome reported by [`crate::calls`].
//!
//! Every call is `POST` with a JSON body and `Authorization: Bearer <key>`;
//! every refusal is `{"error": {"message": "..."}}` with a 4xx/5xx status.
//! Exolve's API is gRPC-gateway style, which reads 64-bit numbers given as
//! JSON numbers or as strings, so the simulator accepts both for numeric
//! fields (`number_code`, `uid`, `message_id`).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde_json::{Map, Value, json};

use crate::Shared;
use crate::calls::Placement;
use crate::pipeline::{Incoming, flexible_u64, json as json_response};
use crate::state::{SmsRecord, SmsStatus, VoiceMessage, digits};

/// The `application_uuid` the simulated application reports.
pub const APPLICATION_UUID: &str = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9";

/// The numeric codes `GetList` reports. The field names and their being
/// numbers come from Exolve's documentation and from third-party clients;
/// the values themselves are not published where we could read them, so
/// these are the simulator's assumption (see the crate docs). An adapter
/// should map them in one place.
pub mod codes {
    use crate::state::SmsStatus;

    pub const DIRECTION_INCOMING: u64 = 1;
    pub const DIRECTION_OUTGOING: u64 = 2;

    /// Handed to the operator; no delivery report yet.
    pub const DELIVERY_SENT: u64 = 1;
    pub const DELIVERY_DELIVERED: u64 = 2;
    pub const DELIVERY_UNDELIVERED: u64 = 3;

    pub const BILLING_PAID: u64 = 1;

    /// The overall `status` (delivery and billing together) uses the
    /// delivery codes.
    pub const STATUS_SENT: u64 = DELIVERY_SENT;
    pub const STATUS_DELIVERED: u64 = DELIVERY_DELIVERED;
    pub const STATUS_UNDELIVERED: u64 = DELIVERY_UNDELIVERED;

    pub const CHANNEL_SMS: u64 = 1;

    /// The `delivery_status` (and `status`) code of `status`.
    pub fn delivery_status(status: SmsStatus) -> u64 {
        match status {
            SmsStatus::Sent => DELIVERY_SENT,
            SmsStatus::Delivered => DELIVERY_DELIVERED,
            SmsStatus::Undelivered => DELIVERY_UNDELIVERED,
        }
    }
}

/// `limit` of `GetList` when none is given, and the most it allows.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 2000;

/// A refusal, answered in Exolve's error shape.
struct Refusal(StatusCode, String);

impl Refusal {
    fn bad_request(message: impl Into<String>) -> Self {
        Refusal(StatusCode::BAD_REQUEST, message.into())
    }

    fn not_found() -> Self {
        Refusal(StatusCode::NOT_FOUND, "not found".into())
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error(self.0, &self.1)
    }
}

fn reply(answer: impl FnOnce() -> Result<Response, Refusal>) -> Response {
    answer().unwrap_or_else(IntoResponse::into_response)
}

fn error(status: StatusCode, message: &str) -> Response {
    json_response(status, json!({ "error": { "message": message } }))
}

pub(crate) fn server_error(status: StatusCode) -> Response {
    let reason = status
        .canonical_reason()
        .unwrap_or("internal error")
        .to_lowercase();
    error(status, &reason)
}

pub(crate) fn rate_limited(retry_after_secs: u32) -> Response {
    let mut response = error(StatusCode::TOO_MANY_REQUESTS, "too many requests");
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    response
}

fn authorize(sim: &Shared, incoming: &Incoming) -> Result<(), Refusal> {
    match incoming.bearer() {
        Some(key) if key == sim.config.exolve_api_key => Ok(()),
        Some(_) => Err(Refusal(StatusCode::UNAUTHORIZED, "invalid API key".into())),
        None => Err(Refusal(
            StatusCode::UNAUTHORIZED,
            "missing Authorization: Bearer <API key>".into(),
        )),
    }
}

/// Authorises the request and reads its body as a JSON object.
fn object(sim: &Shared, incoming: &Incoming) -> Result<Map<String, Value>, Refusal> {
    authorize(sim, incoming)?;
    match incoming.json_or_empty() {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Refusal::bad_request("request body must be a JSON object")),
        Err(e) => Err(Refusal::bad_request(format!("invalid JSON: {e}"))),
    }
}

fn string<'a>(body: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, Refusal> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Refusal::bad_request(format!("{name} must be a string"))),
    }
}

fn boolean(body: &Map<String, Value>, name: &str) -> Result<bool, Refusal> {
    body.get(name)
        .and_then(Value::as_bool)
        .ok_or_else(|| Refusal::bad_request(format!("{name} must be true or false")))
}

/// A time as Exolve writes them: RFC 3339 in UTC, whole seconds.
fn rfc3339(at: Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A phone number as Exolve wants destinations: 11 to 15 digits, no `+`.
fn is_phone(text: &str) -> bool {
    (11..=15).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit())
}

/// `/messaging/v1/SendSMS`.
pub(crate) fn send_sms(sim: &Shared, incoming: &Incoming) -> Response {
    reply(|| {
        let body = object(sim, incoming)?;
        let number = string(&body, "number")?.map(str::trim).unwrap_or_default();
        if number.is_empty() {
            return Err(Refusal::bad_request("invalid number"));
        }
        let destination = string(&body, "destination")?.unwrap_or_default();
        if !is_phone(destination) {
            return Err(Refusal::bad_request("invalid destination"));
        }
        let text = string(&body, "text")?.unwrap_or_default();
        if text.is_empty() {
            return Err(Refusal::bad_request("text is empty"));
        }
        let now = sim.now();
        let mut records = sim.records();
        let message_id = records.ids.sms();
        records.sms.push(SmsRecord {
            message_id: message_id.clone(),
            number: number.to_owned(),
            destination: destination.to_owned(),
            text: text.to_owned(),
            segments: segments(text),
            accepted_at: now,
            status: SmsStatus::Sent,
            final_at: None,
        });
        tracing::info!(%message_id, destination, "SMS accepted");
        Ok(json_response(
            StatusCode::OK,
            json!({ "message_id": message_id }),
        ))
    })
}

/// The filters of a `GetList` request. Unknown fields are ignored.
struct ListFilter {
    message_id: Option<String>,
    number: Option<String>,
    sender: Option<String>,
    receiver: Option<String>,
    direction: Option<Vec<u64>>,
    delivery_status: Option<Vec<u64>>,
    billing_status: Option<Vec<u64>>,
    status: Option<Vec<u64>>,
    date_from: Option<Timestamp>,
    date_to: Option<Timestamp>,
    offset: usize,
    limit: usize,
}

impl ListFilter {
    fn read(body: &Map<String, Value>) -> Result<Self, Refusal> {
        let message_id = match body.get("message_id") {
            None | Some(Value::Null) => None,
            Some(value) => Some(
                flexible_u64(value)
                    .map(|id| id.to_string())
                    .ok_or_else(|| Refusal::bad_request("invalid message_id"))?,
            ),
        };
        let codes = |name: &str| -> Result<Option<Vec<u64>>, Refusal> {
            let invalid = || Refusal::bad_request(format!("invalid {name}"));
            match body.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|item| flexible_u64(item).ok_or_else(invalid))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Some),
                Some(item) => flexible_u64(item)
                    .map(|c| Some(vec![c]))
                    .ok_or_else(invalid),
            }
        };
        // Exolve documents `date_gte`/`date_lte`; third-party clients also
        // send `date_from`/`date_to`.
        let date = |names: [&str; 2]| -> Result<Option<Timestamp>, Refusal> {
            for name in names {
                if let Some(text) = string(body, name)? {
                    return text.parse::<Timestamp>().map(Some).map_err(|_| {
                        Refusal::bad_request(format!("invalid {name}: want RFC 3339"))
                    });
                }
            }
            Ok(None)
        };
        let count = |name: &str, default: usize| -> Result<usize, Refusal> {
            match body.get(name) {
                None | Some(Value::Null) => Ok(default),
                Some(value) => flexible_u64(value)
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| Refusal::bad_request(format!("invalid {name}"))),
            }
        };
        let limit = match count("limit", DEFAULT_LIMIT)? {
            0 => DEFAULT_LIMIT,
            n => n.min(MAX_LIMIT),
        };
        Ok(Self {
            message_id,
            number: string(body, "number")?.map(str::to_owned),
            sender: string(body, "sender")?.map(str::to_owned),
            receiver: match string(body, "receiver")? {
                Some(r) => Some(r.to_owned()),
                None => string(body, "destination")?.map(str::to_owned),
            },
            direction: codes("direction")?,
            delivery_status: codes("delivery_status")?,
            billing_status: codes("billing_status")?,
            status: codes("status")?,
            date_from: date(["date_gte", "date_from"])?,
            date_to: date(["date_lte", "date_to"])?,
            offset: count("offset", 0)?,
            limit,
        })
    }

    fn matches(&self, sms: &SmsRecord) -> bool {
        let same_number = |wanted: &str, have: &str| {
            wanted == have || (!digits(wanted).is_empty() && digits(wanted) == digits(have))
        };
        let code_in = |wanted: &Option<Vec<u64>>, code: u64| {
            wanted.as_ref().is_none_or(|w| w.contains(&code))
        };
        let delivery = codes::delivery_status(sms.status);
        self.message_id
            .as_ref()
            .is_none_or(|id| *id == sms.message_id)
            && self
                .number
                .as_ref()
                .is_none_or(|n| same_number(n, &sms.number) || same_number(n, &sms.destination))
            && self
                .sender
                .as_ref()
                .is_none_or(|n| same_number(n, &sms.number))
            && self
                .receiver
                .as_ref()
                .is_none_or(|n| same_number(n, &sms.destination))
            && code_in(&self.direction, codes::DIRECTION_OUTGOING)
            && code_in(&self.delivery_status, delivery)
            && code_in(&self.billing_status, codes::BILLING_PAID)
            && code_in(&self.status, delivery)
            && self.date_from.is_none_or(|from| sms.accepted_at >= from)
            && self.date_to.is_none_or(|to| sms.accepted_at <= to)
    }
}

/// One SMS as `GetList` lists it.
fn listed(sms: &SmsRecord) -> Value {
    let status = codes::delivery_status(sms.status);
    json!({
        "message_id": sms.message_id,
        "application_uuid": APPLICATION_UUID,
        "date": rfc3339(sms.accepted_at),
        "number": sms.number,
        "sender": sms.number,
        "receiver": sms.destination,
        "text": sms.text,
        "direction": codes::DIRECTION_OUTGOING,
        "segments_count": sms.segments,
        "billing_status": codes::BILLING_PAID,
        "delivery_status": status,
        "channel": codes::CHANNEL_SMS,
        "status": status,
    })
}

/// `/messaging/v1/GetList`: the SMS of the application, oldest first, with
/// their current statuses.
pub(crate) fn get_list(sim: &Shared, incoming: &Incoming) -> Response {
    reply(|| {
        let body = object(sim, incoming)?;
        let filter = ListFilter::read(&body)?;
        let now = sim.now();
        let mut records = sim.records();
        records.settle_sms(now, sim.config.sms_delivery_delay);
        let messages: Vec<Value> = records
            .sms
            .iter()
            .filter(|sms| filter.matches(sms))
            .skip(filter.offset)
            .take(filter.limit)
            .map(listed)
            .collect();
        Ok(json_response(
            StatusCode::OK,
            json!({ "messages": messages }),
        ))
    })
}

/// A transcript `uid` as the key scripts are kept under: the digits of a
/// number, or the string as given.
pub(crate) fn uid_key(value: &Value) -> Option<String> {
    match value {
        Value::Number(n) => n.as_u64().map(|n| n.to_string()),
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        _ => None,
    }
}

/// `/statistics/call-record/v1/GetTranscribation`: the scripted transcript
/// once its not-ready polls are used up; 404 "not found" before, and
/// forever for a uid nobody scripted.
pub(crate) fn get_transcription(sim: &Shared, incoming: &Incoming) -> Response {
    reply(|| {
        let body = object(sim, incoming)?;
        let uid = body
            .get("uid")
            .and_then(uid_key)
            .ok_or_else(|| Refusal::bad_request("uid is required"))?;
        let mut records = sim.records();
        let script = records
            .transcripts
            .get_mut(&uid)
            .ok_or_else(Refusal::not_found)?;
        script.polls += 1;
        if script.polls <= script.not_ready_polls {
            return Err(Refusal::not_found());
        }
        Ok(json_response(StatusCode::OK, script.body.clone()))
    })
}

/// A `GetTranscribation` body for `uid` whose chunks are `(channel_tag,
/// text)` pairs in order, with made-up but consistent times (seconds, as
/// numbers). `uid` is a number in the body when it is all digits.
pub fn transcript_body(uid: &str, chunks: &[(&str, &str)], date_time: Timestamp) -> Value {
    fn millis(seconds: f64) -> f64 {
        (seconds * 1000.0).round() / 1000.0
    }
    let mut at = 0.0_f64;
    let mut out = Vec::with_capacity(chunks.len());
    for (channel_tag, text) in chunks {
        // About 0.4 s a word, so that times grow with what was said.
        let words = text.split_whitespace().count().max(1) as f64;
        let length = 0.6 + 0.4 * words;
        out.push(json!({
            "channel_tag": channel_tag,
            "text": text,
            "start_time": millis(at),
            "end_time": millis(at + length),
        }));
        at += length + 0.3;
    }
    let uid_value = uid
        .parse::<u64>()
        .map(Value::from)
        .unwrap_or_else(|_| Value::from(uid));
    json!({
        "uid": uid_value,
        "application_uuid": APPLICATION_UUID,
        "date_time": rfc3339(date_time),
        "called_number": "74951234567",
        "calling_number": "79991112233",
        "duration": at.ceil() as u64,
        "transcribation": [{ "chunks": out }],
    })
}

fn number_code(body: &Map<String, Value>) -> Result<String, Refusal> {
    body.get("number_code")
        .and_then(flexible_u64)
        .map(|n| n.to_string())
        .ok_or_else(|| Refusal::bad_request("invalid number_code"))
}

/// `/number/v1/SetCallTranscribationState`.
pub(crate) fn set_transcription_state(sim: &Shared, incoming: &Incoming) -> Response {
    reply(|| {
        let body = object(sim, incoming)?;
        let number = number_code(&body)?;
        let enabled = boolean(&body, "call_transcribation")?;
        sim.records().transcription_states.insert(number, enabled);
        Ok(json_response(StatusCode::OK, json!({})))
    })
}

/// `/number/v1/SetAmdState`.
pub(crate) fn set_amd_state(sim: &Shared, incoming: &Incoming) -> Response {
    reply(|| {
        let body = object(sim, incoming)?;
        let number = number_code(&body)?;
        let enabled = boolean(&body, "amd")?;
        sim.records().amd_states.insert(number, enabled);
        Ok(json_response(StatusCode::OK, json!({})))
    })
}

/// `/call/v1/MakeVoiceMessage`.
pub(crate) fn make_voice_message(sim: &Shared, incoming: &Incoming) -> Response {
    reply(|| {
        let body = object(sim, incoming)?;
        let source = string(&body, "source")?.map(str::trim).unwrap_or_default();
        if source.is_empty() {
            return Err(Refusal::bad_request("invalid source"));
        }
        let destination = string(&body, "destination")?.unwrap_or_default();
        // Unlike SendSMS, callflow's dialer may write the number in E.164
        // with its `+`; only the digits must be a phone.
        if !is_phone(destination.strip_prefix('+').unwrap_or(destination)) {
            return Err(Refusal::bad_request("invalid destination"));
        }
        let tts = match body.get("tts") {
            Some(Value::Object(tts)) => tts,
            _ => return Err(Refusal::bad_request("tts is required")),
        };
        let text = string(tts, "text")?.unwrap_or_default();
        if text.trim().is_empty() {
            return Err(Refusal::bad_request("tts.text is empty"));
        }
        let voice = string(tts, "voice")?.map(str::to_owned);
        let mut records = sim.records();
        let call_id = records.ids.call();
        records.voice_messages.push(VoiceMessage {
            call_id,
            source: source.to_owned(),
            destination: destination.to_owned(),
            text: text.to_owned(),
            voice,
        });
        // Detection is a setting of the calling number, read as the call
        // is placed.
        let amd = records
            .amd_states
            .get(&digits(source))
            .copied()
            .unwrap_or(false);
        drop(records);
        sim.calls.place(
            Placement::Exolve {
                call_id,
                source: source.to_owned(),
                destination: destination.to_owned(),
                amd,
            },
            destination,
            sim.now(),
        );
        Ok(json_response(StatusCode::OK, json!({ "call_id": call_id })))
    })
}

/// GSM 03.38 characters that take one septet.
const GSM_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// GSM 03.38 characters that take two (escape + character).
const GSM_EXTENDED: &str = "^{}\\[~]|€\u{c}";

/// How many parts `text` is sent (and billed) as: GSM-7 160 in one part or
/// 153 per part, UCS-2 (any other character) 70 or 67 per part.
pub fn segments(text: &str) -> u32 {
    let septets: Option<usize> = text
        .chars()
        .map(|c| {
            if GSM_BASIC.contains(c) {
                Some(1)
            } else if GSM_EXTENDED.contains(c) {
                Some(2)
            } else {
                None
            }
        })
        .sum();
    let (units, single, per_part) = match septets {
        Some(septets) => (septets, 160, 153),
        None => (text.encode_utf16().count(), 70, 67),
    };
    let parts = if units <= single {
        1
    } else {
        units.div_ceil(per_part)
    };
    u32::try_from(parts).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_follow_gsm7_and_ucs2_part_sizes() {
        assert_eq!(segments("hello"), 1);
        assert_eq!(segments(&"a".repeat(160)), 1);
        assert_eq!(segments(&"a".repeat(161)), 2);
        assert_eq!(segments(&"a".repeat(306)), 2);
        assert_eq!(segments(&"a".repeat(307)), 3);
        // Extension characters count twice.
        assert_eq!(segments(&"€".repeat(80)), 1);
        assert_eq!(segments(&"€".repeat(81)), 2);
        // One Cyrillic letter makes the whole message UCS-2.
        assert_eq!(segments(&"я".repeat(70)), 1);
        assert_eq!(segments(&format!("я{}", "a".repeat(70))), 2);
        assert_eq!(segments(&"я".repeat(134)), 2);
        assert_eq!(segments(&"я".repeat(135)), 3);
    }

    #[test]
    fn transcript_bodies_carry_chunks_in_order_with_growing_times() {
        let at: Timestamp = "2026-03-01T10:00:00Z".parse().unwrap();
        let body = transcript_body("123", &[("1", "Добрый день"), ("2", "Да, напомните")], at);
        assert_eq!(body["uid"], json!(123));
        assert_eq!(body["date_time"], json!("2026-03-01T10:00:00Z"));
        let chunks = body["transcribation"][0]["chunks"].as_array().unwrap();
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[1]["channel_tag"], json!("2"));
        assert_eq!(chunks[1]["text"], json!("Да, напомните"));
        assert!(
            chunks[1]["start_time"].as_f64().unwrap() > chunks[0]["end_time"].as_f64().unwrap()
        );
        assert_eq!(transcript_body("abc", &[], at)["uid"], json!("abc"));
    }

    #[test]
    fn phones_are_11_to_15_digits() {
        assert!(is_phone("79991112233"));
        assert!(is_phone("123456789012345"));
        assert!(!is_phone("7999111223"));
        assert!(!is_phone("+79991112233"));
        assert!(!is_phone("1234567890123456"));
    }
}
