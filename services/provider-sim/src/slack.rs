//! Slack incoming webhooks: `POST /services/T…/B…/<secret>`.
//!
//! Slack answers webhooks in plain text: `ok` on success, a short error
//! word otherwise (`invalid_payload`, `rate_limited`, ...). Any three-segment
//! webhook path is accepted; which one was used is recorded.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::Shared;
use crate::pipeline::{Incoming, parse_form};
use crate::state::SlackMessage;

fn plain(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

pub(crate) fn server_error(status: StatusCode) -> Response {
    plain(status, "internal_error")
}

pub(crate) fn rate_limited(retry_after_secs: u32) -> Response {
    let mut response = plain(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    response
}

/// The message of a webhook request: a JSON body, or (as Slack also
/// accepts) a form whose `payload` field holds the JSON.
fn payload(incoming: &Incoming) -> Option<Value> {
    if incoming.is_form() {
        let form = parse_form(&String::from_utf8_lossy(&incoming.body));
        let (_, json) = form.into_iter().find(|(name, _)| name == "payload")?;
        return serde_json::from_str(&json).ok();
    }
    serde_json::from_slice(&incoming.body).ok()
}

/// `/services/{team}/{bot}/{secret}`.
pub(crate) fn post_message(sim: &Shared, incoming: &Incoming) -> Response {
    let invalid = || plain(StatusCode::BAD_REQUEST, "invalid_payload");
    let Some(Value::Object(message)) = payload(incoming) else {
        return invalid();
    };
    let text = match message.get("text") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text.clone()),
        Some(_) => return invalid(),
    };
    let blocks = match message.get("blocks") {
        None | Some(Value::Null) => None,
        Some(blocks @ Value::Array(_)) => Some(blocks.clone()),
        Some(_) => return invalid(),
    };
    let has_text = text.as_deref().is_some_and(|t| !t.trim().is_empty());
    let has_blocks = blocks
        .as_ref()
        .and_then(Value::as_array)
        .is_some_and(|b| !b.is_empty());
    if !has_text && !has_blocks {
        return invalid();
    }
    sim.records().slack.push(SlackMessage {
        path: incoming.path.clone(),
        text,
        blocks,
    });
    plain(StatusCode::OK, "ok")
}
