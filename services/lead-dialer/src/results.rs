//! Call results, as the providers report them by webhook:
//!
//! - `POST /webhooks/calls/voximplant`: our Voximplant scenario's report
//!   (its format is ours to define):
//!   `{"call_session_history_id": 5001, "custom_data": "{\"phone\":…,\"ref\":\"<lead>/<attempt>\"}",
//!     "result": "Connected"|"Failed", "code": 486, "result_class": "HUMAN"|"VOICEMAIL"|"TIMEOUT"|"CALL_ENDED",
//!     "confidence": 92, "duration": 25}`
//! - `POST /webhooks/calls/exolve`: Exolve's call event (not verified
//!   against the real service; the simulator speaks it):
//!   `{"call_id": "…", "event": "call_finished", "status": "answered"|"no_answer"|"busy"|
//!     "unavailable"|"invalid_number"|"failed", "amd_result": "human"|"machine"|"", "duration": 25}`
//!
//! A result becomes `CallAttemptFinished` on the lead's stream before the
//! 200, and only once (a repeated report is answered 200 and appends
//! nothing). A result for a call the dialer has not recorded yet (the
//! provider can be faster than our own bookkeeping) is answered 404, which
//! providers retry. When `LEAD_WEBHOOK_TOKEN` is set, reports must carry it
//! as `Authorization: Bearer`.

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use kit::api_error::ApiError;
use kit::clock::SharedClock;
use kit::events::{derive_event_id, new_event, to_proto_duration};
use kit::proto::events::v1::{CallAttemptFinished, CallOutcome};
use kit::store_client::{EventStoreClient, Expected};

use crate::dials;

/// What the webhooks need.
#[derive(Clone)]
pub struct Results {
    pub store: EventStoreClient,
    pub pool: deadpool_postgres::Pool,
    pub clock: SharedClock,
    /// The bearer token reports must carry, if any.
    pub token: Option<String>,
}

/// The webhook routes.
pub fn routes(results: Results) -> Router {
    Router::new()
        .route("/webhooks/calls/voximplant", post(voximplant))
        .route("/webhooks/calls/exolve", post(exolve))
        .with_state(results)
}

/// A provider's report, read.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub dialer: &'static str,
    pub provider_call_id: String,
    /// The lead and attempt when the report names them (Voximplant's
    /// custom data); Exolve's name only the call.
    pub attempt: Option<(Uuid, u32)>,
    pub outcome: CallOutcome,
    pub sip_code: u32,
    pub amd_result: String,
    pub amd_confidence: u32,
    pub duration: Duration,
}

#[derive(Serialize)]
struct Recorded {
    lead_id: String,
    attempt: u32,
    outcome: &'static str,
    duplicate: bool,
}

fn body(bytes: &[u8]) -> Result<serde_json::Map<String, Value>, ApiError> {
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(ApiError::malformed("the body must be a JSON object")),
    }
}

fn text(map: &serde_json::Map<String, Value>, field: &str) -> String {
    match map.get(field) {
        Some(Value::String(s)) => s.trim().to_owned(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

fn number(map: &serde_json::Map<String, Value>, field: &str) -> Result<u64, ApiError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            .ok_or_else(|| ApiError::invalid(field, format!("`{field}` must not be negative"))),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map_err(|_| ApiError::invalid(field, format!("`{field}` must be a number"))),
        Some(_) => Err(ApiError::invalid(
            field,
            format!("`{field}` must be a number"),
        )),
    }
}

/// Reads the Voximplant scenario's report.
pub fn read_voximplant(bytes: &[u8]) -> Result<Report, ApiError> {
    let map = body(bytes)?;
    let session = text(&map, "call_session_history_id");
    if session.is_empty() {
        return Err(ApiError::invalid(
            "call_session_history_id",
            "`call_session_history_id` is required",
        ));
    }
    let custom: Value = serde_json::from_str(&text(&map, "custom_data")).map_err(|_| {
        ApiError::invalid(
            "custom_data",
            "`custom_data` must be the JSON the dialer sent",
        )
    })?;
    let reference = custom.get("ref").and_then(Value::as_str).unwrap_or("");
    let attempt = reference
        .split_once('/')
        .and_then(|(lead, n)| Some((Uuid::parse_str(lead).ok()?, n.parse::<u32>().ok()?)))
        .filter(|(_, n)| *n > 0)
        .ok_or_else(|| {
            ApiError::invalid(
                "custom_data",
                "`custom_data.ref` must be `<lead id>/<attempt>`",
            )
        })?;
    let code = number(&map, "code")? as u32;
    let class = text(&map, "result_class").to_ascii_uppercase();
    let outcome = match text(&map, "result").as_str() {
        "Connected" => match class.as_str() {
            "VOICEMAIL" => CallOutcome::Machine,
            // The line dropped while the detector listened: nobody talked.
            "CALL_ENDED" => CallOutcome::NoAnswer,
            // HUMAN, or a detector that could not tell (TIMEOUT): someone
            // picked up and listened.
            _ => CallOutcome::Human,
        },
        "Failed" => match code {
            486 | 600 | 603 => CallOutcome::Busy,
            480 | 503 => CallOutcome::Unavailable,
            404 | 484 | 604 => CallOutcome::WrongNumber,
            408 | 487 => CallOutcome::NoAnswer,
            _ => CallOutcome::Failed,
        },
        _ => {
            return Err(ApiError::invalid(
                "result",
                "`result` must be Connected or Failed",
            ));
        }
    };
    Ok(Report {
        dialer: "voximplant",
        provider_call_id: session,
        attempt: Some(attempt),
        outcome,
        sip_code: code,
        amd_result: class,
        amd_confidence: number(&map, "confidence")?.min(100) as u32,
        duration: Duration::from_secs(number(&map, "duration")?),
    })
}

/// Reads Exolve's call event; `None` for events other than the end of a
/// call (nothing to record).
pub fn read_exolve(bytes: &[u8]) -> Result<Option<Report>, ApiError> {
    let map = body(bytes)?;
    let call_id = text(&map, "call_id");
    if call_id.is_empty() {
        return Err(ApiError::invalid("call_id", "`call_id` is required"));
    }
    if text(&map, "event") != "call_finished" {
        return Ok(None);
    }
    let amd = text(&map, "amd_result").to_ascii_lowercase();
    let outcome = match text(&map, "status").as_str() {
        "answered" if amd == "machine" => CallOutcome::Machine,
        "answered" => CallOutcome::Human,
        "no_answer" => CallOutcome::NoAnswer,
        "busy" => CallOutcome::Busy,
        "unavailable" => CallOutcome::Unavailable,
        "invalid_number" => CallOutcome::WrongNumber,
        "failed" => CallOutcome::Failed,
        other => {
            return Err(ApiError::invalid(
                "status",
                format!("unknown call status `{other}`"),
            ));
        }
    };
    Ok(Some(Report {
        dialer: "exolve",
        provider_call_id: call_id,
        attempt: None,
        outcome,
        sip_code: 0,
        amd_result: amd.to_ascii_uppercase(),
        amd_confidence: 0,
        duration: Duration::from_secs(number(&map, "duration")?),
    }))
}

fn authorize(results: &Results, headers: &HeaderMap) -> Result<(), ApiError> {
    match &results.token {
        Some(token) => kit::api_error::check_bearer(token, headers),
        None => Ok(()),
    }
}

async fn voximplant(
    State(results): State<Results>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<Recorded>, ApiError> {
    authorize(&results, &headers)?;
    let report = read_voximplant(&bytes)?;
    results.record(report).await.map(Json)
}

async fn exolve(
    State(results): State<Results>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    authorize(&results, &headers)?;
    match read_exolve(&bytes)? {
        None => Ok((StatusCode::OK, Json(serde_json::json!({ "ignored": true })))),
        Some(report) => {
            let recorded = results.record(report).await?;
            Ok((
                StatusCode::OK,
                Json(serde_json::to_value(recorded).unwrap_or_default()),
            ))
        }
    }
}

fn outcome_name(outcome: CallOutcome) -> &'static str {
    match outcome {
        CallOutcome::Human => "human",
        CallOutcome::Machine => "machine",
        CallOutcome::NoAnswer => "no_answer",
        CallOutcome::Busy => "busy",
        CallOutcome::Unavailable => "unavailable",
        CallOutcome::WrongNumber => "wrong_number",
        CallOutcome::Failed => "failed",
        CallOutcome::Unspecified => "unspecified",
    }
}

impl Results {
    async fn record(&self, report: Report) -> Result<Recorded, ApiError> {
        let unavailable = |e: &dyn std::fmt::Display| ApiError::unavailable(e.to_string());
        let (lead_id, attempt) = match report.attempt {
            Some(attempt) => attempt,
            None => dials::find(&self.pool, report.dialer, &report.provider_call_id)
                .await
                .map_err(|e| unavailable(&e))?
                .ok_or_else(|| not_yet("no call with this id is known (yet)"))?,
        };
        let stream = format!("lead-{lead_id}");
        let lead = crate::lead::read(&self.store, lead_id)
            .await
            .map_err(|s| ApiError::unavailable(s.message().to_owned()))?;
        let recorded = |duplicate| Recorded {
            lead_id: lead_id.to_string(),
            attempt,
            outcome: outcome_name(report.outcome),
            duplicate,
        };
        match lead.attempt(attempt) {
            Some(a) if a.finished.is_some() => return Ok(recorded(true)),
            Some(a) if a.started.is_some() => {}
            _ => return Err(not_yet("the call is not recorded as started (yet)")),
        }
        let id = lead_id.to_string();
        let mut event = new_event(
            derive_event_id(&id, &format!("finished/{attempt}")),
            Some(self.clock.now()),
            &CallAttemptFinished {
                lead_id: id.clone(),
                attempt,
                outcome: report.outcome as i32,
                dialer: report.dialer.into(),
                provider_call_id: report.provider_call_id,
                sip_code: report.sip_code,
                amd_result: report.amd_result,
                amd_confidence: report.amd_confidence,
                duration: Some(to_proto_duration(report.duration)),
                detail: String::new(),
            },
        );
        event.correlation_id = id;
        event.trace = Some(kit::telemetry::current_trace_context());
        let appended = self
            .store
            .append(&stream, Expected::Any, vec![event])
            .await
            .map_err(|e| unavailable(&e))?;
        metrics::counter!("callflow_lead_call_results_total", "outcome" => outcome_name(report.outcome))
            .increment(1);
        Ok(recorded(appended.duplicate))
    }
}

fn not_yet(message: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "unknown_call", message)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEAD: &str = "0b6f3a3e-8c1f-4f57-9d8e-1a2b3c4d5e6f";

    fn voximplant(result: &str, code: u32, class: &str) -> Report {
        let custom =
            serde_json::json!({"phone": "+79161234567", "ref": format!("{LEAD}/2")}).to_string();
        let body = serde_json::json!({
            "call_session_history_id": 5001, "custom_data": custom, "result": result,
            "code": code, "result_class": class, "confidence": 92, "duration": 25,
        });
        read_voximplant(body.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn voximplant_outcomes() {
        let report = voximplant("Connected", 0, "HUMAN");
        assert_eq!(report.outcome, CallOutcome::Human);
        assert_eq!(report.attempt, Some((Uuid::parse_str(LEAD).unwrap(), 2)));
        assert_eq!(report.provider_call_id, "5001");
        assert_eq!(
            voximplant("Connected", 0, "VOICEMAIL").outcome,
            CallOutcome::Machine
        );
        assert_eq!(voximplant("Failed", 486, "").outcome, CallOutcome::Busy);
        assert_eq!(
            voximplant("Failed", 480, "").outcome,
            CallOutcome::Unavailable
        );
        assert_eq!(
            voximplant("Failed", 404, "").outcome,
            CallOutcome::WrongNumber
        );
        assert_eq!(voximplant("Failed", 487, "").outcome, CallOutcome::NoAnswer);
        assert_eq!(voximplant("Failed", 402, "").outcome, CallOutcome::Failed);
    }

    #[test]
    fn exolve_outcomes() {
        let read = |status: &str, amd: &str| {
            let body = serde_json::json!({"call_id": "77", "event": "call_finished", "status": status, "amd_result": amd, "duration": 3});
            read_exolve(body.to_string().as_bytes())
                .unwrap()
                .unwrap()
                .outcome
        };
        assert_eq!(read("answered", "human"), CallOutcome::Human);
        assert_eq!(read("answered", ""), CallOutcome::Human);
        assert_eq!(read("answered", "machine"), CallOutcome::Machine);
        assert_eq!(read("invalid_number", ""), CallOutcome::WrongNumber);
        assert_eq!(read("no_answer", ""), CallOutcome::NoAnswer);
        let other = serde_json::json!({"call_id": "77", "event": "call_started"});
        assert_eq!(read_exolve(other.to_string().as_bytes()).unwrap(), None);
    }

    #[test]
    fn bad_reports_name_the_field() {
        for (body, field) in [
            (
                r#"{"custom_data": "{}", "result": "Connected"}"#,
                "call_session_history_id",
            ),
            (
                r#"{"call_session_history_id": 1, "custom_data": "x", "result": "Connected"}"#,
                "custom_data",
            ),
            (
                r#"{"call_session_history_id": 1, "custom_data": "{\"ref\":\"nope/1\"}", "result": "Connected"}"#,
                "custom_data",
            ),
            (
                r#"{"call_session_history_id": 1, "custom_data": "{\"ref\":\"0b6f3a3e-8c1f-4f57-9d8e-1a2b3c4d5e6f/1\"}", "result": "Ringing"}"#,
                "result",
            ),
        ] {
            let error = read_voximplant(body.as_bytes()).unwrap_err();
            assert_eq!(error.field.as_deref(), Some(field), "{body}");
        }
        assert_eq!(
            read_voximplant(b"[1]").unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        let error = read_exolve(br#"{"call_id": "1", "event": "call_finished", "status": "odd"}"#)
            .unwrap_err();
        assert_eq!(error.field.as_deref(), Some("status"));
    }
}
