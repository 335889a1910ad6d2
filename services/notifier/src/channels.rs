//! Talking to the destinations in their own wire formats: Telegram Bot API
//! `sendMessage`, Slack incoming webhooks, and signed JSON webhooks.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::rules::Destination;

/// How a delivery went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The destination asked to wait (Telegram `retry_after`, HTTP `Retry-After`).
    #[error("rate limited; retry after {0:?}")]
    RateLimited(Duration),
    /// Worth trying again: 5xx, or the request never reached the server.
    #[error("{0}")]
    Transient(String),
    /// The request may have been delivered; repeating could duplicate it.
    #[error("outcome unknown: {0}")]
    Unknown(String),
    /// Refused for good (bad token, unknown chat, bad payload).
    #[error("{0}")]
    Refused(String),
}

/// Header of a webhook's signature: `sha256=<hex of HMAC-SHA256(secret, body)>`.
pub const SIGNATURE_HEADER: &str = "X-Callflow-Signature";

/// Telegram's longest message.
const TELEGRAM_MAX_CHARS: usize = 4096;

fn transport(e: reqwest::Error) -> SendError {
    if e.is_connect() {
        SendError::Transient(e.to_string())
    } else {
        SendError::Unknown(e.to_string())
    }
}

fn retry_after_header(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
        .map(Duration::from_secs)
}

/// Sends `text` (and, for webhooks, the event as `json`) to `destination`.
pub async fn send(
    http: &reqwest::Client,
    destination: &Destination,
    text: &str,
    json_body: &Value,
) -> Result<(), SendError> {
    match destination {
        Destination::Telegram {
            url,
            token,
            chat_id,
        } => {
            let text: String = text.chars().take(TELEGRAM_MAX_CHARS).collect();
            let response = http
                .post(format!(
                    "{}/bot{token}/sendMessage",
                    url.trim_end_matches('/')
                ))
                .json(&json!({ "chat_id": chat_id, "text": text }))
                .send()
                .await
                .map_err(transport)?;
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            if body.get("ok").and_then(Value::as_bool) == Some(true) {
                return Ok(());
            }
            let description = body
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or("no description")
                .to_owned();
            match status.as_u16() {
                429 => Err(SendError::RateLimited(Duration::from_secs(
                    body.pointer("/parameters/retry_after")
                        .and_then(Value::as_u64)
                        .unwrap_or(5),
                ))),
                500..=599 => Err(SendError::Transient(format!(
                    "Telegram {status}: {description}"
                ))),
                _ => Err(SendError::Refused(format!(
                    "Telegram {status}: {description}"
                ))),
            }
        }
        Destination::Slack { webhook_url } => {
            let response = http
                .post(webhook_url)
                .json(&json!({ "text": text }))
                .send()
                .await
                .map_err(transport)?;
            let status = response.status();
            let retry_after = retry_after_header(&response);
            let body = response.text().await.unwrap_or_default();
            match status.as_u16() {
                200..=299 => Ok(()),
                429 => Err(SendError::RateLimited(
                    retry_after.unwrap_or(Duration::from_secs(1)),
                )),
                500..=599 => Err(SendError::Transient(format!("Slack {status}: {body}"))),
                _ => Err(SendError::Refused(format!("Slack {status}: {body}"))),
            }
        }
        Destination::Webhook { url, secret } => {
            let body = serde_json::to_vec(json_body).expect("JSON");
            let mut mac =
                Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
            mac.update(&body);
            let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
            let response = http
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(SIGNATURE_HEADER, signature)
                .body(body)
                .send()
                .await
                .map_err(transport)?;
            let status = response.status();
            let retry_after = retry_after_header(&response);
            match status.as_u16() {
                200..=299 => Ok(()),
                429 => Err(SendError::RateLimited(
                    retry_after.unwrap_or(Duration::from_secs(5)),
                )),
                500..=599 => Err(SendError::Transient(format!("webhook {status}"))),
                _ => Err(SendError::Refused(format!("webhook {status}"))),
            }
        }
    }
}
