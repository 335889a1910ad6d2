//! The endpoints PBXs call: `POST /pbx/v1/calls` (the call-control
//! protocol, [`crate::protocol`]) and `POST /pbx/exolve/{line}` (Exolve's
//! dynamic forwarding, `getControlCallFollowMe`).
//!
//! Every answer leaves within the PBX's deadline: the decision and the
//! durable write of its events run under a time budget, and when the budget
//! runs out, or the store fails, or the state is not ours, the PBX gets the
//! configured fallback and the router records `FallbackUsed` (in the
//! background: the database may be the thing that is stuck). Never a 5xx;
//! a malformed request is a 400 with the reason.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use kit::api_error::{ApiError, check_bearer};

use crate::directory::PgLookups;
use crate::engine::{Decision, Engine, Failure};
use crate::outbox::Outbox;
use crate::protocol::{Step, StepRequest};

/// What the endpoints share.
#[derive(Clone)]
pub struct Pbx {
    pub engine: Arc<Engine>,
    pub lookups: PgLookups,
    pub outbox: Outbox,
    /// Time allowed for a decision (the PBX's deadline minus a margin for
    /// the network and the PBX itself).
    pub budget: Duration,
    pub token: Option<String>,
}

pub fn routes(pbx: Pbx) -> Router {
    Router::new()
        .route("/pbx/v1/calls", post(step))
        .route("/pbx/exolve/{line}", post(exolve))
        .with_state(pbx)
}

/// The decision budget for a PBX deadline: what is left after a margin for
/// the answer's way back (a fifth of the deadline, at most 300 ms).
pub fn budget(deadline: Duration) -> Duration {
    deadline.saturating_sub((deadline / 5).min(Duration::from_millis(300)))
}

impl Pbx {
    /// Decides and records a step within the budget, or falls back.
    async fn decide(&self, step: &Step) -> Result<Decision, ApiError> {
        let started = Instant::now();
        let deadline = started + self.budget;
        let work = async {
            let decision = self.engine.decide(&self.lookups, step).await?;
            self.outbox
                .write(&decision.stream, &decision.events, Some(deadline))
                .await
                .map_err(|e| Failure::Lookup(crate::engine::LookupError(e.to_string())))?;
            Ok::<_, Failure>(decision)
        };
        let (reason, detail) = match tokio::time::timeout(self.budget, work).await {
            Ok(Ok(decision)) => {
                metrics::histogram!("call_router_decision_seconds")
                    .record(started.elapsed().as_secs_f64());
                return Ok(decision);
            }
            Ok(Err(Failure::Malformed(message))) => return Err(ApiError::malformed(message)),
            Ok(Err(failure)) => (failure.reason(), failure.to_string()),
            Err(_) => (
                "deadline",
                format!("no decision within {} ms", self.budget.as_millis()),
            ),
        };
        tracing::warn!(call_id = %step.call_id, reason, %detail, "answering the fallback");
        metrics::counter!("call_router_fallbacks_total", "reason" => reason).increment(1);
        let decision = self.engine.fallback(step, reason, &detail);
        self.outbox
            .write_later(decision.stream.clone(), decision.events.clone());
        Ok(decision)
    }
}

async fn step(
    State(pbx): State<Pbx>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<crate::protocol::Answer>, ApiError> {
    if let Some(token) = &pbx.token {
        check_bearer(token, &headers)?;
    }
    let request: StepRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::malformed(format!("not a call-control step: {e}")))?;
    let step = request.check().map_err(|e| ApiError::malformed(e.0))?;
    Ok(Json(pbx.decide(&step).await?.answer))
}

/// Exolve's JSON-RPC request.
#[derive(Deserialize)]
struct RpcRequest {
    id: Value,
    jsonrpc: String,
    method: String,
    params: RpcParams,
}

#[derive(Deserialize)]
struct RpcParams {
    #[serde(default)]
    sip_id: Value,
    #[serde(rename = "numberA")]
    number_a: Value,
    call_sid: Value,
}

fn rpc_error(id: Value, code: i64, message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})),
    )
        .into_response()
}

/// JSON numbers or strings, as Exolve's front sends either.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

async fn exolve(
    State(pbx): State<Pbx>,
    Path(line): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(token) = &pbx.token
        && let Err(e) = check_bearer(token, &headers)
    {
        return e.into_response();
    }
    let request: RpcRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return rpc_error(Value::Null, -32700, format!("not a JSON-RPC request: {e}")),
    };
    if request.jsonrpc != "2.0" || request.method != "getControlCallFollowMe" {
        return rpc_error(
            request.id,
            -32601,
            format!("method `{}` is not getControlCallFollowMe", request.method),
        );
    }
    let _sip_id = text(&request.params.sip_id);
    let step = StepRequest {
        call_id: text(&request.params.call_sid),
        numa: text(&request.params.number_a),
        numb: line,
        started_at: pbx.engine.clock.now().to_string(),
        state: None,
        result: None,
    }
    .check();
    let step = match step {
        Ok(s) => s,
        Err(e) => return rpc_error(request.id, -32602, e.0),
    };
    let started = Instant::now();
    let deadline = started + pbx.budget;
    let work = async {
        let (targets, events) = pbx.engine.follow_me(&pbx.lookups, &step).await?;
        pbx.outbox
            .write(
                &crate::engine::stream_of(&step.call_id),
                &events,
                Some(deadline),
            )
            .await
            .map_err(|e| Failure::Lookup(crate::engine::LookupError(e.to_string())))?;
        Ok::<_, Failure>(targets)
    };
    let targets = match tokio::time::timeout(pbx.budget, work).await {
        Ok(Ok(targets)) if !targets.is_empty() => {
            metrics::histogram!("call_router_decision_seconds")
                .record(started.elapsed().as_secs_f64());
            targets
        }
        other => {
            let (reason, detail) = match other {
                Ok(Ok(_)) => ("no_route", "the route reaches no number to dial".to_owned()),
                Ok(Err(f)) => (f.reason(), f.to_string()),
                Err(_) => ("deadline", "no decision in time".to_owned()),
            };
            metrics::counter!("call_router_fallbacks_total", "reason" => reason).increment(1);
            let decision = pbx.engine.fallback(&step, reason, &detail);
            pbx.outbox
                .write_later(decision.stream.clone(), decision.events.clone());
            pbx.engine
                .scenarios
                .fallback
                .targets
                .iter()
                .map(|(name, timeout)| {
                    (
                        pbx.engine.scenarios.targets[name]
                            .number
                            .as_str()
                            .to_owned(),
                        *timeout,
                    )
                })
                .collect()
        }
    };
    let list: Vec<Value> = targets
        .iter()
        .enumerate()
        .map(|(i, (number, timeout))| {
            json!({
                "I_FOLLOW_ORDER": i + 1,
                "ACTIVE": "Y",
                "NAME": number,
                "REDIRECT_NUMBER": number.trim_start_matches('+'),
                "PERIOD": "always",
                "PERIOD_DESCRIPTION": "always",
                "TIMEOUT": timeout.as_secs(),
            })
        })
        .collect();
    Json(json!({
        "id": request.id,
        "jsonrpc": "2.0",
        "result": {
            "redirect_type": if list.len() == 1 { 1 } else { 2 },
            "event_URL": "",
            "masking": false,
            "followme_struct": [list.len(), list],
        }
    }))
    .into_response()
}
