//! The `/_sim/...` control API: the same scripting, fault injection and
//! inspection as [`crate::SimHandle`], as JSON over HTTP, for a demo or a
//! test running in another process. The crate docs list every route.
//!
//! Refusals are `400 {"error": "..."}`.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::calls::{self, CallOutcome};
use crate::faults::{Fault, Target};
use crate::pbx::{self, PbxScript};
use crate::pipeline::parse_form;
use crate::state::digits;
use crate::{Shared, SimHandle, exolve};

/// A control request the simulator cannot carry out.
struct BadRequest(String);

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        (StatusCode::BAD_REQUEST, Json(json!({ "error": self.0 }))).into_response()
    }
}

fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, BadRequest> {
    serde_json::from_slice(body).map_err(|e| BadRequest(format!("invalid request: {e}")))
}

fn handle(sim: Arc<Shared>) -> SimHandle {
    SimHandle { shared: sim }
}

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route(
            "/_sim/healthz",
            get(|| async { Json(json!({ "ok": true })) }),
        )
        .route("/_sim/reset", post(reset))
        .route(
            "/_sim/faults",
            post(inject).get(pending_faults).delete(clear_faults),
        )
        .route("/_sim/exolve/transcripts", post(script_transcript))
        .route("/_sim/exolve/undeliverable", post(mark_undeliverable))
        .route("/_sim/requests", get(requests))
        .route("/_sim/sms", get(sms))
        .route(
            "/_sim/exolve/transcription-states",
            get(transcription_states),
        )
        .route("/_sim/exolve/amd-states", get(amd_states))
        .route("/_sim/exolve/voice-messages", get(voice_messages))
        .route("/_sim/telegram/messages", get(telegram_messages))
        .route("/_sim/slack/messages", get(slack_messages))
        .route("/_sim/bitrix/leads", get(bitrix_leads))
        .route("/_sim/voximplant/calls", get(voximplant_calls))
        .route(
            "/_sim/bitrix/companies",
            post(add_company).get(bitrix_companies),
        )
        .route("/_sim/calls", get(placed_calls))
        .route("/_sim/calls/scripts", post(script_calls))
        .route("/_sim/calls/webhooks", post(set_call_events))
        .route("/_sim/pbx/calls", post(play_pbx_call))
}

async fn reset(State(sim): State<Arc<Shared>>) -> Json<Value> {
    handle(sim).reset();
    Json(json!({}))
}

#[derive(Deserialize)]
struct InjectRequest {
    target: Target,
    fault: Fault,
    #[serde(default = "one")]
    times: usize,
}

fn one() -> usize {
    1
}

/// The most faults one call may queue; more is surely a typo.
const MAX_TIMES: usize = 10_000;

async fn inject(State(sim): State<Arc<Shared>>, body: Bytes) -> Result<Json<Value>, BadRequest> {
    let request: InjectRequest = parse(&body)?;
    let not_5xx = match request.fault {
        Fault::ServerError { status } if !(500..=599).contains(&status) => Some(status),
        _ => None,
    };
    if let Some(status) = not_5xx {
        return Err(BadRequest(format!(
            "server_error status {status} is not 5xx"
        )));
    }
    if request.times == 0 || request.times > MAX_TIMES {
        return Err(BadRequest(format!("times must be 1 to {MAX_TIMES}")));
    }
    let handle = handle(sim);
    handle.inject(request.target, request.fault, request.times);
    let queued = handle
        .pending_faults()
        .get(&request.target)
        .map_or(0, Vec::len);
    Ok(Json(json!({ "target": request.target, "queued": queued })))
}

async fn pending_faults(State(sim): State<Arc<Shared>>) -> Json<Value> {
    Json(json!(handle(sim).pending_faults()))
}

async fn clear_faults(State(sim): State<Arc<Shared>>) -> Json<Value> {
    handle(sim).clear_faults();
    Json(json!({}))
}

#[derive(Deserialize)]
struct ChunkSpec {
    channel_tag: String,
    text: String,
}

#[derive(Deserialize)]
struct TranscriptRequest {
    uid: Value,
    #[serde(default)]
    not_ready_polls: u32,
    /// The whole `GetTranscribation` answer, as is.
    body: Option<Value>,
    /// Or: the chunks, from which a body is built.
    chunks: Option<Vec<ChunkSpec>>,
    called_number: Option<String>,
    calling_number: Option<String>,
}

async fn script_transcript(
    State(sim): State<Arc<Shared>>,
    body: Bytes,
) -> Result<Json<Value>, BadRequest> {
    let request: TranscriptRequest = parse(&body)?;
    let uid = exolve::uid_key(&request.uid)
        .ok_or_else(|| BadRequest("uid must be a number or a non-empty string".into()))?;
    let body = match (request.body, request.chunks) {
        (Some(body), None) => body,
        (None, Some(chunks)) => {
            let pairs: Vec<(&str, &str)> = chunks
                .iter()
                .map(|c| (c.channel_tag.as_str(), c.text.as_str()))
                .collect();
            let mut body = exolve::transcript_body(&uid, &pairs, sim.now());
            if let Some(number) = request.called_number {
                body["called_number"] = Value::String(number);
            }
            if let Some(number) = request.calling_number {
                body["calling_number"] = Value::String(number);
            }
            body
        }
        _ => return Err(BadRequest("give exactly one of `body` and `chunks`".into())),
    };
    handle(sim).script_transcript(&uid, request.not_ready_polls, body);
    Ok(Json(
        json!({ "uid": uid, "not_ready_polls": request.not_ready_polls }),
    ))
}

#[derive(Deserialize)]
struct UndeliverableRequest {
    destination: Option<String>,
    #[serde(default)]
    destinations: Vec<String>,
}

async fn mark_undeliverable(
    State(sim): State<Arc<Shared>>,
    body: Bytes,
) -> Result<Json<Value>, BadRequest> {
    let request: UndeliverableRequest = parse(&body)?;
    let all: Vec<String> = request
        .destination
        .into_iter()
        .chain(request.destinations)
        .collect();
    if all.is_empty() {
        return Err(BadRequest("give `destination` or `destinations`".into()));
    }
    let handle = handle(sim);
    for destination in &all {
        handle.mark_undeliverable(destination);
    }
    Ok(Json(json!({ "undeliverable": all })))
}

async fn requests(
    State(sim): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, BadRequest> {
    let target = parse_form(query.as_deref().unwrap_or_default())
        .into_iter()
        .find(|(name, _)| name == "target")
        .map(|(_, value)| value.parse::<Target>())
        .transpose()
        .map_err(|e| BadRequest(e.to_string()))?;
    let handle = handle(sim);
    let requests = match target {
        Some(target) => handle.requests_to(target),
        None => handle.requests(),
    };
    Ok(Json(json!(requests)))
}

async fn sms(State(sim): State<Arc<Shared>>) -> Json<Value> {
    Json(json!(handle(sim).sms()))
}

async fn transcription_states(State(sim): State<Arc<Shared>>) -> Json<Value> {
    Json(json!(handle(sim).transcription_states()))
}

async fn amd_states(State(sim): State<Arc<Shared>>) -> Json<Value> {
    Json(json!(handle(sim).amd_states()))
}

async fn voice_messages(State(sim): State<Arc<Shared>>) -> Json<Value> {
    Json(json!(handle(sim).voice_messages()))
}

async fn telegram_messages(State(sim): State<Arc<Shared>>) -> Json<Value> {
    Json(json!(handle(sim).telegram_messages()))
}

async fn slack_messages(State(sim): State<Arc<Shared>>) -> Json<Value> {
    Json(json!(handle(sim).slack_messages()))
}

async fn bitrix_leads(State(sim): State<Arc<Shared>>) -> Json<Value> {
    Json(json!(handle(sim).bitrix_leads()))
}

async fn voximplant_calls(State(sim): State<Arc<Shared>>) -> Json<Value> {
    Json(json!(handle(sim).voximplant_calls()))
}

async fn add_company(
    State(sim): State<Arc<Shared>>,
    body: Bytes,
) -> Result<Json<Value>, BadRequest> {
    let fields = match parse::<Value>(&body)? {
        Value::Object(fields) if !fields.is_empty() => fields,
        _ => {
            return Err(BadRequest(
                "give the company's fields as a non-empty object, e.g. {\"TITLE\": \"CPA Net\"}"
                    .into(),
            ));
        }
    };
    let id = handle(sim).add_company(fields);
    Ok(Json(json!({ "id": id })))
}

async fn bitrix_companies(State(sim): State<Arc<Shared>>) -> Json<Value> {
    Json(json!(handle(sim).bitrix_companies()))
}

async fn placed_calls(State(sim): State<Arc<Shared>>) -> Json<Value> {
    Json(json!(handle(sim).calls()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallScriptRequest {
    phone: String,
    outcomes: Vec<CallOutcome>,
    #[serde(default)]
    delay_ms: u64,
}

/// The longest delay a script may ask for; more is surely a typo.
const MAX_DELAY_MS: u64 = 3_600_000;

async fn script_calls(
    State(sim): State<Arc<Shared>>,
    body: Bytes,
) -> Result<Json<Value>, BadRequest> {
    let request: CallScriptRequest = parse(&body)?;
    let phone = digits(&request.phone);
    // The numbers providers dial: 11 to 15 digits with the country code.
    if !(11..=15).contains(&phone.len()) {
        return Err(BadRequest(format!(
            "phone `{}` must have 11 to 15 digits, country code included",
            request.phone
        )));
    }
    if request.outcomes.is_empty() {
        return Err(BadRequest("outcomes must not be empty".into()));
    }
    if request.delay_ms > MAX_DELAY_MS {
        return Err(BadRequest(format!(
            "delay_ms must be at most {MAX_DELAY_MS}"
        )));
    }
    handle(sim).script_calls(
        &phone,
        &request.outcomes,
        Duration::from_millis(request.delay_ms),
    );
    Ok(Json(json!({
        "phone": phone,
        "outcomes": request.outcomes,
        "delay_ms": request.delay_ms,
    })))
}

/// Every field is required-or-null in spirit: a missing one means null.
/// Unknown fields are refused, so that a typo does not silently leave a
/// provider unreported.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallEventsRequest {
    #[serde(default)]
    voximplant: Option<String>,
    #[serde(default)]
    exolve: Option<String>,
    #[serde(default)]
    token: Option<String>,
}

async fn set_call_events(
    State(sim): State<Arc<Shared>>,
    body: Bytes,
) -> Result<Json<Value>, BadRequest> {
    let request: CallEventsRequest = parse(&body)?;
    for (name, url) in [
        ("voximplant", &request.voximplant),
        ("exolve", &request.exolve),
    ] {
        if let Some(url) = url.as_deref().filter(|url| !calls::is_webhook_url(url)) {
            return Err(BadRequest(format!(
                "{name}: `{url}` is not an absolute http(s) URL"
            )));
        }
    }
    if request
        .token
        .as_deref()
        .is_some_and(|t| t.trim().is_empty())
    {
        return Err(BadRequest("token is empty; give null for none".into()));
    }
    let answer = json!({
        "voximplant": request.voximplant,
        "exolve": request.exolve,
        "token": request.token.is_some(),
    });
    handle(sim).set_call_events(request.voximplant, request.exolve, request.token);
    Ok(Json(answer))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PbxCallRequest {
    /// The call-control server's endpoint.
    url: String,
    script: PbxScript,
}

/// Plays a whole call against a router and answers its log; 502 when the
/// router broke the protocol (or could not be reached), since the fault is
/// upstream of the simulator.
async fn play_pbx_call(
    State(sim): State<Arc<Shared>>,
    body: Bytes,
) -> Result<Response, BadRequest> {
    let mut request: PbxCallRequest = parse(&body)?;
    if !calls::is_webhook_url(&request.url) {
        return Err(BadRequest(format!(
            "url `{}` is not an absolute http(s) URL",
            request.url
        )));
    }
    // "Now" is the simulator's clock, so a test clock dates the call.
    request.script.started_at.get_or_insert_with(|| sim.now());
    let client = reqwest::Client::new();
    let played = tokio::select! {
        played = pbx::play_call(&client, &request.url, &request.script) => played,
        _ = sim.stopping.cancelled() => {
            let stopping = json!({ "error": "the simulator is shutting down" });
            return Ok((StatusCode::SERVICE_UNAVAILABLE, Json(stopping)).into_response());
        }
    };
    Ok(match played {
        Ok(call) => Json(json!(call)).into_response(),
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            Json(json!({ "error": e.to_string() })),
        )
            .into_response(),
    })
}
