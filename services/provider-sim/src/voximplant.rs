//! Voximplant Management API: `StartScenarios` under `/platform_api/`.
//!
//! Parameters come as a query string, a form body or a JSON object (merged
//! in that order). Authentication is a service-account JWT in
//! `Authorization: Bearer`; the simulator accepts any non-empty bearer
//! token, since checking RS256 signatures would test nothing of callflow's.
//! Like Voximplant, it reports request errors with HTTP 200 and
//! `{"error": {"code", "msg"}}`.
//!
//! When `script_custom_data` is callflow's `{"phone", "ref"}` JSON, the
//! scenario "dials" that phone: the call is played from its script and the
//! scenario's report is sent by [`crate::calls`].

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Map, Value, json};

use crate::Shared;
use crate::calls::{self, Placement};
use crate::pipeline::{Incoming, flexible_u64, form_object, json as json_response};
use crate::state::VoximplantCall;

/// Voximplant's limit on `script_custom_data`, in bytes.
const MAX_CUSTOM_DATA: usize = 200;

/// Voximplant's code for an invalid or missing parameter.
const INVALID_PARAMETER: u32 = 100;

fn failure(status: StatusCode, code: u32, msg: &str) -> Response {
    json_response(status, json!({ "error": { "code": code, "msg": msg } }))
}

pub(crate) fn server_error(status: StatusCode) -> Response {
    failure(status, 500, "Internal error")
}

pub(crate) fn rate_limited(retry_after_secs: u32) -> Response {
    let mut response = failure(StatusCode::TOO_MANY_REQUESTS, 429, "Too many requests");
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    response
}

/// The request's parameters from wherever they came.
fn parameters(incoming: &Incoming) -> Option<Map<String, Value>> {
    let mut params = Map::new();
    if let Some(Value::Object(query)) = incoming.query.as_deref().map(form_object) {
        params.extend(query);
    }
    if incoming.body.iter().all(u8::is_ascii_whitespace) {
        return Some(params);
    }
    let body = if incoming.is_form() {
        form_object(&String::from_utf8_lossy(&incoming.body))
    } else {
        serde_json::from_slice(&incoming.body).ok()?
    };
    match body {
        Value::Object(body) => {
            params.extend(body);
            Some(params)
        }
        _ => None,
    }
}

/// `/platform_api/StartScenarios`.
pub(crate) fn start_scenarios(sim: &Shared, incoming: &Incoming) -> Response {
    if incoming.bearer().is_none_or(str::is_empty) {
        return failure(StatusCode::UNAUTHORIZED, 401, "Authorization required");
    }
    let invalid = |msg: &str| failure(StatusCode::OK, INVALID_PARAMETER, msg);
    let Some(params) = parameters(incoming) else {
        return invalid("Invalid request body");
    };
    let rule_id = match params.get("rule_id") {
        None | Some(Value::Null) => None,
        Some(value) => match flexible_u64(value) {
            Some(id) => Some(id),
            None => return invalid("Invalid parameter: rule_id"),
        },
    };
    let rule_name = params
        .get("rule_name")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(str::to_owned);
    if rule_id.is_none() && rule_name.is_none() {
        return invalid("Missing parameter: rule_id or rule_name");
    }
    let script_custom_data = match params.get("script_custom_data") {
        None | Some(Value::Null) => None,
        Some(Value::String(data)) => Some(data.clone()),
        Some(_) => return invalid("Invalid parameter: script_custom_data"),
    };
    if script_custom_data
        .as_ref()
        .is_some_and(|d| d.len() > MAX_CUSTOM_DATA)
    {
        return invalid("Invalid parameter: script_custom_data is longer than 200 bytes");
    }
    // callflow's dialer writes `{"phone": ..., "ref": ...}`; other custom
    // data starts a scenario the simulator has no callee for.
    let phone = script_custom_data
        .as_deref()
        .and_then(calls::custom_data_phone);
    let mut records = sim.records();
    let session = records.ids.session();
    records.voximplant.push(VoximplantCall {
        call_session_history_id: session,
        rule_id,
        rule_name,
        script_custom_data: script_custom_data.clone(),
    });
    drop(records);
    match (phone, script_custom_data) {
        (Some(phone), Some(custom_data)) => sim.calls.place(
            Placement::Voximplant {
                session,
                custom_data,
            },
            &phone,
            sim.now(),
        ),
        _ => tracing::debug!(
            session,
            "scenario started without callflow's custom data; no call is played"
        ),
    }
    // The media session URL lets a caller talk to the running scenario;
    // the simulator runs no scenario, so it only has to look the part.
    let url = format!("{}/_sim/voximplant/media/{session}", sim.base_url);
    json_response(
        StatusCode::OK,
        json!({
            "result": 1,
            "call_session_history_id": session,
            "media_session_access_url": url,
            "media_session_access_secure_url": url,
        }),
    )
}
