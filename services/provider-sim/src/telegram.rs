//! Telegram Bot API: `POST /bot<token>/sendMessage`.
//!
//! Answers are always `{"ok": ...}` objects: `{"ok": true, "result": ...}`
//! on success, `{"ok": false, "error_code", "description"}` otherwise, with
//! the HTTP status equal to `error_code`; a rate limit adds
//! `parameters.retry_after`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::Shared;
use crate::pipeline::{Incoming, json as json_response};
use crate::state::TelegramMessage;

/// Telegram's limit on a message's text, in characters.
const MAX_TEXT_CHARS: usize = 4096;

/// The simulated bot, as `result.from` reports it.
const BOT_ID: u64 = 7_000_000_001;

struct Refusal(StatusCode, String);

impl Refusal {
    fn bad_request(what: &str) -> Self {
        Refusal(StatusCode::BAD_REQUEST, format!("Bad Request: {what}"))
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        failure(self.0, &self.1, None)
    }
}

fn failure(status: StatusCode, description: &str, parameters: Option<Value>) -> Response {
    let mut body = json!({
        "ok": false,
        "error_code": status.as_u16(),
        "description": description,
    });
    if let Some(parameters) = parameters {
        body["parameters"] = parameters;
    }
    json_response(status, body)
}

pub(crate) fn server_error(status: StatusCode) -> Response {
    failure(
        status,
        status.canonical_reason().unwrap_or("Internal Server Error"),
        None,
    )
}

pub(crate) fn rate_limited(retry_after_secs: u32) -> Response {
    failure(
        StatusCode::TOO_MANY_REQUESTS,
        &format!("Too Many Requests: retry after {retry_after_secs}"),
        Some(json!({ "retry_after": retry_after_secs })),
    )
}

/// `/bot<token>/sendMessage`.
pub(crate) fn send_message(sim: &Shared, incoming: &Incoming) -> Response {
    let answer = || -> Result<Response, Refusal> {
        let token = incoming
            .segments()
            .first()
            .and_then(|segment| segment.strip_prefix("bot"))
            .unwrap_or_default()
            .to_owned();
        if token != sim.config.telegram_token {
            return Err(Refusal(StatusCode::UNAUTHORIZED, "Unauthorized".into()));
        }
        let body: Map<String, Value> = match incoming.json_or_empty() {
            Ok(Value::Object(map)) => map,
            _ => return Err(Refusal::bad_request("can't parse JSON object")),
        };
        let chat_id = match body.get("chat_id") {
            Some(Value::Number(n)) if n.is_i64() => Value::Number(n.clone()),
            Some(Value::String(s)) if !s.trim().is_empty() => Value::String(s.clone()),
            _ => return Err(Refusal::bad_request("chat_id is empty")),
        };
        let text = match body.get("text") {
            None | Some(Value::Null) => "",
            Some(Value::String(s)) => s.as_str(),
            Some(_) => return Err(Refusal::bad_request("message text is empty")),
        };
        // Telegram trims the text before checking it is there.
        if text.trim().is_empty() {
            return Err(Refusal::bad_request("message text is empty"));
        }
        if text.chars().count() > MAX_TEXT_CHARS {
            return Err(Refusal::bad_request("message is too long"));
        }
        let parse_mode = match body.get("parse_mode") {
            None | Some(Value::Null) => None,
            Some(Value::String(mode))
                if ["HTML", "Markdown", "MarkdownV2"]
                    .iter()
                    .any(|known| known.eq_ignore_ascii_case(mode)) =>
            {
                Some(mode.clone())
            }
            Some(_) => return Err(Refusal::bad_request("unsupported parse_mode")),
        };
        let date = sim.now().as_second();
        let mut records = sim.records();
        let message_id = records.ids.telegram();
        records.telegram.push(TelegramMessage {
            message_id,
            chat_id: chat_id.clone(),
            text: text.to_owned(),
            parse_mode,
            date,
        });
        // A numeric chat id comes back as a number even when sent as a
        // string, as Telegram does; `@channel` names stay strings.
        let chat = match &chat_id {
            Value::String(s) => s.parse::<i64>().map(Value::from).unwrap_or(chat_id.clone()),
            _ => chat_id.clone(),
        };
        let chat_type = match chat.as_i64() {
            Some(id) if id < 0 => "group",
            Some(_) => "private",
            None => "channel",
        };
        Ok(json_response(
            StatusCode::OK,
            json!({
                "ok": true,
                "result": {
                    "message_id": message_id,
                    "from": {
                        "id": BOT_ID,
                        "is_bot": true,
                        "first_name": "callflow",
                        "username": "callflow_sim_bot",
                    },
                    "chat": { "id": chat, "type": chat_type },
                    "date": date,
                    "text": text,
                },
            }),
        ))
    };
    answer().unwrap_or_else(IntoResponse::into_response)
}
