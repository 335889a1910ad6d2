//! The `Dialer` port: "call this client about this order", with two
//! adapters, Voximplant and MTS Exolve. Both switch answering-machine
//! detection on and neither waits for the call itself: the outcome comes
//! later by webhook ([`crate::results`]).
//!
//! The calls are informational (an order confirmation the client asked for
//! by sending the form), never advertising: 38-FZ forbids advertising by
//! automatic dialling outright.

use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Value, json};

use kit::exolve::{ExolveClient, ExolveError};
use kit::phone::PhoneNumber;

/// A call to place.
#[derive(Debug, Clone)]
pub struct CallRequest {
    pub lead_id: String,
    pub attempt: u32,
    pub phone: PhoneNumber,
    pub name: String,
    pub order_id: String,
    pub site: String,
}

impl CallRequest {
    /// The short reference a provider carries back in its result:
    /// `<lead id>/<attempt>`.
    pub fn reference(&self) -> String {
        format!("{}/{}", self.lead_id, self.attempt)
    }
}

/// Why a call was not placed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DialError {
    /// The provider is down or busy and certainly did not call: try again
    /// soon (after its Retry-After, when it gave one).
    #[error("provider unavailable: {0}")]
    Transient(String, Option<Duration>),
    /// The provider refused this call (bad number, no funds, bad
    /// credentials): it will not ring.
    #[error("provider refused the call: {0}")]
    Refused(String),
    /// No answer after the request was sent: the phone may or may not ring.
    #[error("no answer from the provider: {0}")]
    Unknown(String),
}

/// Places calls. Returns the provider's call id.
pub trait Dialer: Send + Sync {
    /// `voximplant` or `exolve`, as recorded in the events.
    fn name(&self) -> &'static str;
    fn dial<'a>(&'a self, call: &'a CallRequest) -> BoxFuture<'a, Result<String, DialError>>;
}

/// Voximplant: `StartScenarios` runs the rule's scenario, which dials the
/// client with answering-machine detection and reports the result to our
/// webhook. The scenario gets the number and our reference in
/// `script_custom_data` (at most 200 bytes: a JSON of two short fields).
pub struct Voximplant {
    http: reqwest::Client,
    url: String,
    token: String,
    rule: String,
}

impl Voximplant {
    pub fn new(base: &str, token: &str, rule: &str, timeout: Duration) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(Duration::from_secs(5))
                .build()
                .expect("HTTP client"),
            url: format!("{}/platform_api/StartScenarios", base.trim_end_matches('/')),
            token: token.to_owned(),
            rule: rule.to_owned(),
        }
    }

    /// The scenario's input.
    pub fn custom_data(call: &CallRequest) -> String {
        json!({ "phone": call.phone.as_str(), "ref": call.reference() }).to_string()
    }

    async fn start(&self, call: &CallRequest) -> Result<String, DialError> {
        let response = self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .form(&[
                ("rule_name", self.rule.as_str()),
                ("script_custom_data", &Self::custom_data(call)),
            ])
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    DialError::Transient(e.to_string(), None)
                } else {
                    DialError::Unknown(e.to_string())
                }
            })?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let body: Value = response
            .json()
            .await
            .map_err(|e| DialError::Unknown(format!("unreadable answer: {e}")))?;
        let message = body
            .pointer("/error/msg")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        if status.as_u16() == 429 || status.is_server_error() {
            return Err(DialError::Transient(
                format!("HTTP {status} {message}"),
                retry_after,
            ));
        }
        // Voximplant answers request errors with HTTP 200 and an `error`.
        if !status.is_success() || body.get("error").is_some() {
            return Err(DialError::Refused(format!("HTTP {status} {message}")));
        }
        match body.get("call_session_history_id") {
            Some(Value::Number(id)) => Ok(id.to_string()),
            Some(Value::String(id)) if !id.is_empty() => Ok(id.clone()),
            _ => Err(DialError::Unknown(format!(
                "StartScenarios answered without a session: {body}"
            ))),
        }
    }
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
        .map(Duration::from_secs)
}

impl Dialer for Voximplant {
    fn name(&self) -> &'static str {
        "voximplant"
    }

    fn dial<'a>(&'a self, call: &'a CallRequest) -> BoxFuture<'a, Result<String, DialError>> {
        Box::pin(self.start(call))
    }
}

/// MTS Exolve: `MakeVoiceMessage` calls the client from one of the
/// application's numbers and speaks the text; answering-machine detection
/// is switched on for that number when the service starts (`SetAmdState`).
pub struct Exolve {
    pub client: ExolveClient,
    /// The calling number, digits.
    pub source: String,
    pub voice: String,
    /// What the robot says; `{name}`, `{order_id}`, `{site}` are filled in.
    pub text: String,
}

/// Fills `{name}`, `{order_id}`, `{site}` and `{call_at}` (and drops a
/// `{name}` that is unknown together with the space or comma before it).
pub fn fill(template: &str, name: &str, order_id: &str, site: &str, call_at: &str) -> String {
    let name = name.trim();
    let text = if name.is_empty() {
        template
            .replace(", {name}", "")
            .replace(" {name}", "")
            .replace("{name}", "")
    } else {
        template.replace("{name}", name)
    };
    text.replace("{order_id}", order_id)
        .replace("{site}", site)
        .replace("{call_at}", call_at)
}

/// What the robot says for `call`.
pub fn render(template: &str, call: &CallRequest) -> String {
    fill(template, &call.name, &call.order_id, &call.site, "")
}

impl Dialer for Exolve {
    fn name(&self) -> &'static str {
        "exolve"
    }

    fn dial<'a>(&'a self, call: &'a CallRequest) -> BoxFuture<'a, Result<String, DialError>> {
        Box::pin(async move {
            let text = render(&self.text, call);
            self.client
                .make_voice_message(&self.source, call.phone.digits(), &text, &self.voice)
                .await
                .map_err(|error| match error {
                    ExolveError::RateLimited(after) => {
                        DialError::Transient(error.to_string(), after)
                    }
                    ExolveError::Transient(reason) => DialError::Transient(reason, None),
                    ExolveError::Ambiguous(reason) => DialError::Unknown(reason),
                    ExolveError::Permanent(reason) => DialError::Refused(reason),
                    ExolveError::NotFound => DialError::Refused(error.to_string()),
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kit::phone::DefaultRegion;

    fn call(name: &str) -> CallRequest {
        CallRequest {
            lead_id: "0b6f3a3e-8c1f-4f57-9d8e-1a2b3c4d5e6f".into(),
            attempt: 3,
            phone: PhoneNumber::parse("+79161234567", DefaultRegion::default()).unwrap(),
            name: name.into(),
            order_id: "100234".into(),
            site: "shop.example".into(),
        }
    }

    #[test]
    fn voximplant_custom_data_fits_its_200_bytes() {
        let data = Voximplant::custom_data(&call("Анна"));
        assert!(data.len() <= 200, "{data}");
        let parsed: Value = serde_json::from_str(&data).unwrap();
        assert_eq!(parsed["phone"], "+79161234567");
        assert_eq!(parsed["ref"], "0b6f3a3e-8c1f-4f57-9d8e-1a2b3c4d5e6f/3");
    }

    #[test]
    fn the_spoken_text_names_the_client_when_known() {
        let template = "Здравствуйте, {name}! Заказ {order_id} на {site}.";
        assert_eq!(
            render(template, &call("Анна")),
            "Здравствуйте, Анна! Заказ 100234 на shop.example."
        );
        assert_eq!(
            render(template, &call(" ")),
            "Здравствуйте! Заказ 100234 на shop.example."
        );
    }
}
