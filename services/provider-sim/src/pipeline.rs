//! The path every provider request takes: read the body, record the
//! request, take the next queued fault for its target, and answer — with the
//! fault's answer or the provider's normal one.
//!
//! Provider handlers are plain synchronous functions of the request
//! ([`Answer`]): all their state lives behind one mutex that is never held
//! across an await, and the only waiting (slow answers, hung requests) is
//! done here, where it can also end early when the server shuts down.

use std::sync::Arc;

use axum::body::{Bytes, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use serde_json::{Map, Value};

use crate::Shared;
use crate::faults::{self, Fault, Target};

/// The largest request body the simulator reads; real providers refuse far
/// smaller bodies, and nothing callflow sends comes near it.
const MAX_BODY: usize = 1024 * 1024;

/// A provider's normal answer to one request.
pub(crate) type Answer = fn(&Shared, &Incoming) -> Response;

/// One request as the provider handlers see it.
pub(crate) struct Incoming {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Incoming {
    /// The token of an `Authorization: Bearer <token>` header.
    pub fn bearer(&self) -> Option<&str> {
        let value = self.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, token) = value.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    }

    pub fn is_form(&self) -> bool {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
    }

    /// The body as JSON; an empty body counts as `{}` (several providers
    /// accept an empty request to mean "no filters").
    pub fn json_or_empty(&self) -> Result<Value, serde_json::Error> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Object(Map::new()));
        }
        serde_json::from_slice(&self.body)
    }

    /// The body for the request log: parsed JSON, else a form as an object
    /// of strings, `null` when empty, or the text itself.
    pub fn body_for_record(&self) -> Value {
        if self.body.is_empty() {
            return Value::Null;
        }
        // JSON first: clients such as curl label JSON bodies as forms.
        if let Ok(json) = serde_json::from_slice(&self.body) {
            return json;
        }
        let text = String::from_utf8_lossy(&self.body);
        if self.is_form() {
            form_object(&text)
        } else {
            Value::String(text.into_owned())
        }
    }

    /// The path's segments, without the empty one before the leading `/`.
    pub fn segments(&self) -> Vec<&str> {
        self.path.trim_start_matches('/').split('/').collect()
    }
}

/// A route whose requests go through [`serve`] to `answer`.
pub(crate) fn endpoint(
    methods: MethodFilter,
    target: Target,
    answer: Answer,
) -> MethodRouter<Arc<Shared>> {
    on(
        methods,
        move |State(sim): State<Arc<Shared>>, request: Request| async move {
            serve(&sim, target, request, answer).await
        },
    )
}

/// Records `request` under `target`, applies the next queued fault, and
/// answers.
pub(crate) async fn serve(
    sim: &Arc<Shared>,
    target: Target,
    request: Request,
    answer: Answer,
) -> Response {
    let (parts, body) = request.into_parts();
    let body = match to_bytes(body, MAX_BODY).await {
        Ok(body) => body,
        Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response(),
    };
    let incoming = Incoming {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        body,
    };
    let seq = sim.records().record(target, &incoming, sim.now());
    let fault = sim.faults().pop(target);
    if let Some(fault) = &fault {
        tracing::info!(target_name = %target, ?fault, "injecting fault");
    }
    let provider = target.provider();
    let response = match fault {
        None => answer(sim, &incoming),
        Some(Fault::ServerError { status }) => faults::server_error(provider, status),
        Some(Fault::RateLimited { retry_after_secs }) => {
            faults::rate_limited(provider, retry_after_secs)
        }
        Some(Fault::Slow { delay_ms }) => {
            if sim.pause(std::time::Duration::from_millis(delay_ms)).await {
                answer(sim, &incoming)
            } else {
                faults::server_error(provider, 503)
            }
        }
        Some(Fault::Timeout { accepted }) => {
            if accepted {
                // The provider carries the request out; only its answer is
                // lost. The caller cannot tell this from a request that never
                // arrived, which is exactly what its retry logic must face.
                let _lost = answer(sim, &incoming);
            }
            sim.pause(sim.config.hang_for).await;
            // Past the hang (or at shutdown) answer as a gateway would; no
            // client is expected to be still waiting.
            faults::server_error(provider, 504)
        }
    };
    sim.records().answered(seq, response.status().as_u16());
    response
}

/// Parses `application/x-www-form-urlencoded` text into pairs.
pub(crate) fn parse_form(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

/// A form as a JSON object of strings (the last of repeated names wins).
pub(crate) fn form_object(text: &str) -> Value {
    Value::Object(
        parse_form(text)
            .into_iter()
            .map(|(name, value)| (name, Value::String(value)))
            .collect(),
    )
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push(high * 16 + low);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(byte: u8) -> Option<u8> {
    (byte as char).to_digit(16).map(|d| d as u8)
}

/// A number given as a JSON number or as a string of digits, as
/// gRPC-gateway style APIs (Exolve) and PHP ones (Bitrix24) both accept.
pub(crate) fn flexible_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A JSON response with `status`.
pub(crate) fn json(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode_plus_and_percent_escapes() {
        let pairs = parse_form("rule_id=12&script_custom_data=a+b%2Fc%D1%8F&empty=&bad=%zz%4");
        assert_eq!(
            pairs,
            vec![
                ("rule_id".into(), "12".into()),
                ("script_custom_data".into(), "a b/cя".into()),
                ("empty".into(), "".into()),
                ("bad".into(), "%zz%4".into()),
            ]
        );
    }

    fn incoming(content_type: &str, body: &'static str) -> Incoming {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, content_type.parse().unwrap());
        Incoming {
            method: Method::POST,
            path: "/x".into(),
            query: None,
            headers,
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    #[test]
    fn recorded_bodies_prefer_json_then_forms_then_text() {
        let form = "application/x-www-form-urlencoded";
        assert_eq!(
            incoming(form, r#"{"uid":1}"#).body_for_record(),
            serde_json::json!({"uid": 1})
        );
        assert_eq!(
            incoming(form, "a=1&b=x+y").body_for_record(),
            serde_json::json!({"a": "1", "b": "x y"})
        );
        assert_eq!(
            incoming("text/plain", "hello").body_for_record(),
            serde_json::json!("hello")
        );
        assert_eq!(
            incoming("application/json", "").body_for_record(),
            Value::Null
        );
        assert_eq!(
            incoming("application/json", " ").json_or_empty().unwrap(),
            serde_json::json!({})
        );
    }

    #[test]
    fn numbers_come_as_numbers_or_digit_strings() {
        assert_eq!(flexible_u64(&serde_json::json!(42)), Some(42));
        assert_eq!(flexible_u64(&serde_json::json!(" 42 ")), Some(42));
        assert_eq!(flexible_u64(&serde_json::json!("4x2")), None);
        assert_eq!(flexible_u64(&serde_json::json!(-1)), None);
        assert_eq!(flexible_u64(&serde_json::json!(null)), None);
    }
}
