//! The HTTP routes of call-ingest and what each does with a request:
//! authenticate, read the body, append the event, answer only once it is
//! committed.

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use serde::Serialize;
use tracing::Instrument;

use kit::events::{Payload, derive_event_id, new_event};
use kit::proto::eventstore::v1::ReadStreamRequest;
use kit::store_client::{AppendError, Expected};

use crate::errors::ApiError;
use crate::exolve::{self, ExolveEvent};
use crate::fields::Fields;
use crate::{Call, Ingest, generic, leads, transcripts};

/// The answer to an accepted webhook.
#[derive(Debug, Serialize)]
pub struct Accepted {
    pub event_id: String,
    pub stream: String,
    pub position: u64,
    /// True when this webhook had already been recorded.
    pub duplicate: bool,
}

pub fn routes(ingest: Arc<Ingest>) -> Router {
    let limit = ingest.settings.max_body_bytes;
    // Reading the body and recording the event together get a deadline, so
    // a client that sends its body slowly cannot hold a connection forever.
    let deadline = ingest.settings.request_timeout + std::time::Duration::from_secs(5);
    Router::new()
        .route("/webhooks/exolve/call-events", post(exolve_call_event))
        .route(
            "/webhooks/generic/call-completed",
            post(generic_call_completed),
        )
        .route(
            "/webhooks/transcripts",
            // A transcript is larger than a call event; its event must still
            // fit the event store's payload limit.
            post(pushed_transcript).layer(DefaultBodyLimit::max(TRANSCRIPT_BODY_LIMIT)),
        )
        .route("/webhooks/leads", post(web_lead))
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(
            move |request, next: axum::middleware::Next| async move {
                match tokio::time::timeout(deadline, next.run(request)).await {
                    Ok(response) => response,
                    Err(_) => ApiError::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "request_timeout",
                        "the request took too long to arrive or to record; retrying is safe",
                    )
                    .into_response(),
                }
            },
        ))
        .with_state(ingest)
}

async fn exolve_call_event(
    State(ingest): State<Arc<Ingest>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let span = webhook_span("exolve", &headers);
    let result = async {
        let body = read_body(body)?;
        ingest.settings.exolve.check(&headers, &body)?;
        let fields = Fields::parse(&body)?;
        let (call, event) = exolve::parse(&fields, &ingest.settings)?;
        match event {
            ExolveEvent::Started(p) => ingest.record(&call, &p).await,
            ExolveEvent::Answered(p) => ingest.record(&call, &p).await,
            ExolveEvent::Disconnected(p) => ingest.record(&call, &p).await,
            ExolveEvent::RecordingReady(p) => ingest.record(&call, &p).await,
            ExolveEvent::Ended(p) => {
                let earlier = ingest.earlier_events(&call).await?;
                let completed = exolve::complete(p, &earlier, call.occurred_at);
                ingest.record(&call, &completed).await
            }
        }
    }
    .instrument(span)
    .await;
    answer("exolve", result)
}

async fn generic_call_completed(
    State(ingest): State<Arc<Ingest>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let span = webhook_span("generic", &headers);
    let result = async {
        let body = read_body(body)?;
        ingest.settings.generic.check(&headers, &body)?;
        let fields = Fields::parse(&body)?;
        let (call, completed) = generic::parse(&fields, &ingest.settings)?;
        ingest.record(&call, &completed).await
    }
    .instrument(span)
    .await;
    answer("generic", result)
}

async fn web_lead(
    State(ingest): State<Arc<Ingest>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let span = webhook_span("lead", &headers);
    let result = async {
        let body = read_body(body)?;
        ingest.settings.leads.check(&headers, &body)?;
        let lead = leads::parse(&Fields::parse(&body)?)?;
        ingest.receive_lead(lead).await
    }
    .instrument(span)
    .await;
    let outcome = match &result {
        Ok(accepted) if accepted.duplicate => "duplicate",
        Ok(accepted) => accepted.status,
        Err(error) => error.code,
    };
    respond("lead", outcome, result)
}

/// The span of one webhook, continuing the caller's trace when it sent one.
fn webhook_span(webhook: &'static str, headers: &HeaderMap) -> tracing::Span {
    let span = tracing::info_span!("webhook", webhook);
    kit::telemetry::set_parent_from_http(&span, headers);
    span
}

/// Largest pushed transcript body.
pub const TRANSCRIPT_BODY_LIMIT: usize = 256 * 1024;

async fn pushed_transcript(
    State(ingest): State<Arc<Ingest>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let span = webhook_span("transcript", &headers);
    let result = async {
        let body = read_body(body)?;
        ingest.settings.generic.check(&headers, &body)?;
        let fields = Fields::parse(&body)?;
        let (call, transcript) = transcripts::parse(&fields, &ingest.settings)?;
        // One transcript per call, whoever delivered it first.
        let earlier = ingest.earlier_events(&call).await?;
        if let Some(existing) = earlier.iter().find(|e| e.r#type == "TranscriptReady") {
            return Ok(Accepted {
                event_id: existing.event_id.clone(),
                stream: existing.stream.clone(),
                position: existing.position,
                duplicate: true,
            });
        }
        ingest.record(&call, &transcript).await
    }
    .instrument(span)
    .await;
    answer("transcript", result)
}

fn read_body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                status,
                "body_too_large",
                "the body is larger than this endpoint accepts",
            )
        } else {
            ApiError::new(status, "unreadable_body", rejection.body_text())
        }
    })
}

fn answer(webhook: &'static str, result: Result<Accepted, ApiError>) -> Response {
    let outcome = match &result {
        Ok(a) if a.duplicate => "duplicate",
        Ok(_) => "recorded",
        Err(e) => e.code,
    };
    respond(webhook, outcome, result)
}

/// Counts the webhook's outcome and answers: 200 with the body, or the
/// error's JSON.
fn respond<T: Serialize>(
    webhook: &'static str,
    outcome: &'static str,
    result: Result<T, ApiError>,
) -> Response {
    metrics::counter!("callflow_ingest_webhooks_total", "webhook" => webhook, "outcome" => outcome)
        .increment(1);
    match result {
        Ok(accepted) => (StatusCode::OK, axum::Json(accepted)).into_response(),
        Err(error) => {
            tracing::info!(webhook, code = error.code, message = %error.message, "webhook refused");
            error.into_response()
        }
    }
}

impl Ingest {
    fn stream(call: &Call) -> String {
        format!("call-{}-{}", call.provider, call.call_id)
    }

    /// Appends `payload` to the call's stream with an id derived from the
    /// provider's call id and the webhook kind, and waits for the commit.
    async fn record<P: Payload>(&self, call: &Call, payload: &P) -> Result<Accepted, ApiError> {
        let stream = Self::stream(call);
        let event_id = derive_event_id(&format!("{}:{}", call.provider, call.call_id), call.kind);
        let occurred_at = call.occurred_at.unwrap_or_else(|| self.clock.now());
        let mut event = new_event(event_id, Some(occurred_at), payload);
        // Every event of a call shares one correlation id.
        event.correlation_id =
            derive_event_id(&format!("{}:{}", call.provider, call.call_id), "call").to_string();
        event.trace = Some(kit::telemetry::current_trace_context());
        let appended = self
            .append_in_time(&stream, Expected::Any, vec![event], "call")
            .await?
            .ok_or_else(|| ApiError::unavailable("not recorded, retry"))?;
        Ok(Accepted {
            event_id: event_id.to_string(),
            stream,
            position: appended.positions.first().copied().unwrap_or_default(),
            duplicate: appended.duplicate,
        })
    }

    /// Appends within the request's deadline; `None` when the stream is not
    /// at `expected`. A refused event is a 422 on `field`, anything else a
    /// 503 (retrying is safe: event ids are derived).
    pub(crate) async fn append_in_time(
        &self,
        stream: &str,
        expected: Expected,
        events: Vec<kit::proto::eventstore::v1::NewEvent>,
        field: &str,
    ) -> Result<Option<kit::proto::eventstore::v1::AppendResponse>, ApiError> {
        let append = self.store.append(stream, expected, events);
        match tokio::time::timeout(self.settings.request_timeout, append).await {
            Ok(Ok(appended)) => Ok(Some(appended)),
            Ok(Err(AppendError::WrongExpectedVersion { .. })) => Ok(None),
            Ok(Err(AppendError::Invalid(message))) => Err(ApiError::invalid(field, message)),
            Ok(Err(error)) => Err(ApiError::unavailable(format!(
                "not recorded, retry: {error}"
            ))),
            Err(_) => Err(ApiError::unavailable(
                "not recorded in time, retry (retries are safe)",
            )),
        }
    }

    /// The call's events so far.
    async fn earlier_events(
        &self,
        call: &Call,
    ) -> Result<Vec<kit::proto::events::v1::Event>, ApiError> {
        self.read_stream(&Self::stream(call)).await
    }

    /// The events of `stream` so far (none when it does not exist).
    pub(crate) async fn read_stream(
        &self,
        stream: &str,
    ) -> Result<Vec<kit::proto::events::v1::Event>, ApiError> {
        let mut grpc = self.store.grpc();
        let read = grpc.read_stream(ReadStreamRequest {
            stream: stream.to_owned(),
            from_version: 1,
            max_count: 0,
        });
        match tokio::time::timeout(self.settings.request_timeout, read).await {
            Ok(Ok(response)) => Ok(response.into_inner().events),
            Ok(Err(status)) => Err(ApiError::unavailable(format!(
                "not recorded, retry: {}",
                status.message()
            ))),
            Err(_) => Err(ApiError::unavailable(
                "not recorded in time, retry (retries are safe)",
            )),
        }
    }
}
