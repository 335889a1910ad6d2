//! MTS Exolve's HTTP API, as callflow's services use it: transcriptions,
//! the transcription switch of a number, SMS, outbound voice calls with
//! answering-machine detection. Every call is a `POST` with a
//! JSON body and `Authorization: Bearer <application API key>`.
//!
//! Failures are classified for the caller's retry policy ([`ExolveError`]):
//! not ready yet, rate limited (with the provider's `Retry-After`), a
//! transient fault (5xx, network), a permanent refusal (4xx with Exolve's
//! `{"error": {"message"}}`), or an ambiguous outcome (the request may have
//! been carried out but no answer came back).

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

/// Where and how to reach Exolve; shared by every service that calls it.
#[derive(clap::Args, Debug, Clone)]
#[group(id = "exolve")]
#[command(next_help_heading = "MTS Exolve")]
pub struct ExolveConfig {
    /// Base URL of Exolve's API (`https://api.exolve.ru` in production; the
    /// provider simulator's URL in development).
    #[arg(
        id = "exolve_url",
        long = "exolve-url",
        env = "EXOLVE_API_URL",
        default_value = "http://127.0.0.1:9900"
    )]
    pub url: String,

    /// The application's API key.
    #[arg(
        id = "exolve_key",
        long = "exolve-key",
        env = "EXOLVE_API_KEY",
        default_value = "sim-exolve-key",
        hide_env_values = true
    )]
    pub key: String,

    /// Time limit of one request.
    #[arg(id = "exolve_timeout", long = "exolve-timeout", env = "EXOLVE_TIMEOUT", default_value = "10s", value_parser = crate::config::parse_duration)]
    pub timeout: Duration,
}

impl ExolveConfig {
    pub fn client(&self) -> ExolveClient {
        ExolveClient::new(&self.url, &self.key, self.timeout)
    }
}

/// How Exolve answered, when it did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExolveError {
    #[error("not found (not ready yet)")]
    NotFound,
    #[error("rate limited; retry after {0:?}")]
    RateLimited(Option<Duration>),
    #[error("provider fault: {0}")]
    Transient(String),
    #[error("refused: {0}")]
    Permanent(String),
    #[error("no answer after the request was sent: {0}")]
    Ambiguous(String),
}

impl ExolveError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, ExolveError::Permanent(_))
    }
}

/// A client of one Exolve application.
#[derive(Clone)]
pub struct ExolveClient {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl std::fmt::Debug for ExolveClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExolveClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// One recognised utterance of a transcription.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// Which channel (party) spoke: Exolve's `channel_tag`.
    pub channel: String,
    pub text: String,
    pub start: Option<Duration>,
    pub end: Option<Duration>,
}

/// A call's transcription.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcription {
    pub calling_number: String,
    pub called_number: String,
    pub chunks: Vec<Chunk>,
}

/// An SMS as Exolve's message list reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedSms {
    pub message_id: String,
    /// Recipient digits.
    pub destination: String,
    pub text: String,
    pub delivery: Delivery,
    /// Exolve's status as it came (for the record).
    pub raw_status: String,
}

/// Where an SMS stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Handed to the network; no report yet.
    Pending,
    Delivered,
    Undelivered,
}

/// Which SMS `GetList` should return.
#[derive(Debug, Clone, Default)]
pub struct SmsQuery {
    pub message_id: Option<String>,
    /// Recipient digits.
    pub destination: Option<String>,
    /// Only SMS accepted at or after this time.
    pub since: Option<jiff::Timestamp>,
}

impl ExolveClient {
    /// `base` is `https://api.exolve.ru` in production (the simulator's URL
    /// in tests); `timeout` bounds each request.
    pub fn new(base: &str, key: &str, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("HTTP client");
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            key: key.to_owned(),
        }
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value, ExolveError> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    ExolveError::Ambiguous(e.to_string())
                } else if e.is_connect() {
                    ExolveError::Transient(e.to_string())
                } else {
                    ExolveError::Ambiguous(e.to_string())
                }
            })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = response
            .text()
            .await
            .map_err(|e| ExolveError::Ambiguous(e.to_string()))?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
        let message = value
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or(text.as_str())
            .to_owned();
        match status.as_u16() {
            200..=299 if value.get("error").is_none() => Ok(value),
            404 => Err(ExolveError::NotFound),
            _ if message.to_lowercase().contains("not found") => Err(ExolveError::NotFound),
            429 => Err(ExolveError::RateLimited(retry_after)),
            500..=599 => Err(ExolveError::Transient(format!("HTTP {status}: {message}"))),
            _ => Err(ExolveError::Permanent(format!("HTTP {status}: {message}"))),
        }
    }

    /// `GetTranscribation`: the transcription of call `uid`, or
    /// [`ExolveError::NotFound`] while it is not ready.
    pub async fn transcription(&self, uid: &str) -> Result<Transcription, ExolveError> {
        // Exolve's uids are numbers; send one when the id is numeric.
        let uid_value = uid
            .parse::<u64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::from(uid));
        let body = self
            .post(
                "/statistics/call-record/v1/GetTranscribation",
                json!({ "uid": uid_value }),
            )
            .await?;
        parse_transcription(&body)
            .ok_or_else(|| ExolveError::Permanent(format!("unreadable transcription: {body}")))
    }

    /// `SetCallTranscribationState` for one of the application's numbers
    /// (digits of E.164, without `+`).
    pub async fn set_transcription(
        &self,
        number_digits: &str,
        enabled: bool,
    ) -> Result<(), ExolveError> {
        let number: u64 = number_digits
            .parse()
            .map_err(|_| ExolveError::Permanent(format!("`{number_digits}` is not a number")))?;
        self.post(
            "/number/v1/SetCallTranscribationState",
            json!({ "number_code": number, "call_transcribation": enabled }),
        )
        .await
        .map(|_| ())
    }
}

impl ExolveClient {
    /// `SendSMS` from `sender` (a number's digits or an alpha name) to
    /// `destination` digits. Returns Exolve's message id. There is no
    /// idempotency key: after [`ExolveError::Ambiguous`], look the message
    /// up with [`ExolveClient::list_sms`] before sending again.
    pub async fn send_sms(
        &self,
        sender: &str,
        destination: &str,
        text: &str,
    ) -> Result<String, ExolveError> {
        let body = self
            .post(
                "/messaging/v1/SendSMS",
                json!({ "number": sender, "destination": destination, "text": text }),
            )
            .await?;
        let id = text_of(body.get("message_id"));
        if id.is_empty() {
            return Err(ExolveError::Ambiguous(format!(
                "SendSMS answered without a message id: {body}"
            )));
        }
        Ok(id)
    }

    /// `GetList`: the application's SMS matching `query`, with their
    /// delivery statuses.
    pub async fn list_sms(&self, query: &SmsQuery) -> Result<Vec<ListedSms>, ExolveError> {
        let mut body = serde_json::Map::new();
        if let Some(id) = &query.message_id {
            body.insert(
                "message_id".into(),
                id.parse::<u64>()
                    .map(Value::from)
                    .unwrap_or_else(|_| Value::from(id.as_str())),
            );
        }
        if let Some(destination) = &query.destination {
            body.insert("receiver".into(), Value::from(destination.as_str()));
        }
        if let Some(since) = query.since {
            body.insert("date_gte".into(), Value::from(since.to_string()));
        }
        let answer = self
            .post("/messaging/v1/GetList", Value::Object(body))
            .await?;
        let messages = answer
            .get("messages")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        Ok(messages.iter().map(parse_listed).collect())
    }
}

impl ExolveClient {
    /// `MakeVoiceMessage`: calls `destination` (digits) from `source` (one
    /// of the application's numbers, digits) and speaks `text`. Returns
    /// Exolve's call id. No idempotency key: after
    /// [`ExolveError::Ambiguous`] the call may or may not ring.
    pub async fn make_voice_message(
        &self,
        source: &str,
        destination: &str,
        text: &str,
        voice: &str,
    ) -> Result<String, ExolveError> {
        let body = self
            .post(
                "/call/v1/MakeVoiceMessage",
                json!({
                    "source": source,
                    "destination": destination,
                    "tts": { "text": text, "voice": voice },
                }),
            )
            .await?;
        let id = text_of(body.get("call_id"));
        if id.is_empty() {
            return Err(ExolveError::Ambiguous(format!(
                "MakeVoiceMessage answered without a call id: {body}"
            )));
        }
        Ok(id)
    }

    /// `SetAmdState`: answering-machine detection on calls from one of the
    /// application's numbers (digits).
    pub async fn set_amd(&self, number_digits: &str, enabled: bool) -> Result<(), ExolveError> {
        let number: u64 = number_digits
            .parse()
            .map_err(|_| ExolveError::Permanent(format!("`{number_digits}` is not a number")))?;
        self.post(
            "/number/v1/SetAmdState",
            json!({ "number_code": number, "amd": enabled }),
        )
        .await
        .map(|_| ())
    }
}

/// Reads one entry of `GetList`. Statuses come as numbers (1 sent, 2
/// delivered, 3 undelivered, as far as third-party clients show) or words;
/// both are mapped here and only here.
fn parse_listed(entry: &Value) -> ListedSms {
    let raw = entry.get("delivery_status").or_else(|| entry.get("status"));
    let raw_status = text_of(raw);
    let delivery = match raw_status.to_ascii_uppercase().as_str() {
        "2" | "DELIVERED" | "DELIVRD" => Delivery::Delivered,
        "3" | "UNDELIVERED" | "UNDELIV" | "FAILED" | "REJECTED" | "EXPIRED" => {
            Delivery::Undelivered
        }
        _ => Delivery::Pending,
    };
    ListedSms {
        message_id: text_of(entry.get("message_id")),
        destination: text_of(entry.get("receiver").or_else(|| entry.get("destination"))),
        text: text_of(entry.get("text")),
        delivery,
        raw_status,
    }
}

fn seconds(value: Option<&Value>) -> Option<Duration> {
    let value = value?;
    let secs = match value {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().trim_end_matches('s').parse().ok()?,
        _ => return None,
    };
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

fn text_of(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// Reads `GetTranscribation`'s answer; tolerant of the shapes seen in
/// third-party code (numbers or strings, missing times).
pub fn parse_transcription(body: &Value) -> Option<Transcription> {
    #[derive(Deserialize)]
    struct Part {
        #[serde(default)]
        chunks: Vec<Value>,
    }
    let parts: Vec<Part> = serde_json::from_value(body.get("transcribation")?.clone()).ok()?;
    let chunks = parts
        .into_iter()
        .flat_map(|p| p.chunks)
        .filter_map(|chunk| {
            let text = text_of(chunk.get("text"));
            (!text.trim().is_empty()).then(|| Chunk {
                channel: text_of(chunk.get("channel_tag")),
                text,
                start: seconds(chunk.get("start_time")),
                end: seconds(chunk.get("end_time")),
            })
        })
        .collect();
    Some(Transcription {
        calling_number: text_of(body.get("calling_number")),
        called_number: text_of(body.get("called_number")),
        chunks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcriptions_are_read_tolerantly() {
        let body = json!({
            "uid": 123, "calling_number": 79161234567u64, "called_number": "74951234567",
            "transcribation": [{"chunks": [
                {"channel_tag": "1", "text": "Алло", "start_time": 0.5, "end_time": "1.2s"},
                {"channel_tag": 2, "text": "Добрый день", "start_time": "2"},
                {"channel_tag": "1", "text": "  "}
            ]}]
        });
        let t = parse_transcription(&body).unwrap();
        assert_eq!(t.calling_number, "79161234567");
        assert_eq!(t.chunks.len(), 2);
        assert_eq!(t.chunks[1].channel, "2");
        assert_eq!(t.chunks[0].end, Some(Duration::from_millis(1200)));
        assert!(parse_transcription(&json!({"uid": 1})).is_none());
    }

    #[test]
    fn listed_statuses_map_from_numbers_or_words() {
        let delivered = parse_listed(
            &json!({"message_id": 5, "receiver": "79161234567", "text": "x", "delivery_status": 2}),
        );
        assert_eq!(delivered.delivery, Delivery::Delivered);
        assert_eq!(delivered.message_id, "5");
        assert_eq!(
            parse_listed(&json!({"status": "UNDELIVERED"})).delivery,
            Delivery::Undelivered
        );
        assert_eq!(
            parse_listed(&json!({"delivery_status": 1})).delivery,
            Delivery::Pending
        );
    }
}
