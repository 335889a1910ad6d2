//! The gRPC API (`callflow.eventstore.v1.EventStore`): request validation,
//! then the appender or the reader.

use std::pin::Pin;
use std::time::SystemTime;

use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use kit::events::{is_valid_type, stream_category};
use kit::proto::eventstore::v1::event_store_server::EventStore;
use kit::proto::eventstore::v1::{
    AppendBatchRequest, AppendBatchResponse, AppendBatchResult, AppendRequest, AppendResponse,
    ForgetContactRequest, ForgetContactResponse, HeadResponse, ReadAllRequest, ReadAllResponse,
    ReadStreamRequest, ReadStreamResponse, SubscribeRequest, SubscribeResponse, VerifyRequest,
    VerifyResponse, expected_version,
};
use kit::store_client::{CURRENT_VERSION_HEADER, Expected, PRODUCER_HEADER};

use crate::append::{AppendFailure, AppendJob, Appender, ValidEvent};
use crate::read::{Criteria, Page, Reader};

/// Most events in one append (and most appends in one AppendBatch).
pub const MAX_BATCH: usize = 1000;
/// Most events in one AppendBatch.
pub const MAX_BATCH_EVENTS: usize = 10_000;
/// Largest payload of one event. An event is published to NATS as one
/// message, whose default limit is 1 MiB with the envelope and headers.
pub const MAX_PAYLOAD: usize = 512 * 1024;
/// Default and largest number of events per streamed response.
pub const DEFAULT_READ_BATCH: u32 = 500;
pub const MAX_READ_BATCH: u32 = 5000;

/// The service behind the gRPC API.
pub struct Api {
    /// Seals personal fields on the way in (reads open them).
    pub privacy: std::sync::Arc<crate::privacy::Privacy>,
    /// The secret service tokens are derived from.
    pub auth_secret: String,
    pub appender: Appender,
    pub reader: Reader,
    /// The log's head (see [`crate::notify`]).
    pub committed: watch::Receiver<u64>,
    pub shutdown: CancellationToken,
}

type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl EventStore for Api {
    async fn append(
        &self,
        request: Request<AppendRequest>,
    ) -> Result<Response<AppendResponse>, Status> {
        let span = tracing::info_span!(
            "Append",
            stream = tracing::field::Empty,
            events = tracing::field::Empty
        );
        kit::telemetry::set_parent_from_grpc(&span, request.metadata());
        let producer = self.authenticate(request.metadata())?;
        let request = request.into_inner();
        span.record("stream", request.stream.as_str());
        span.record("events", request.events.len());
        let appended = tracing::Instrument::instrument(
            self.append_one(request, producer, &span),
            span.clone(),
        )
        .await?;
        Ok(Response::new(appended))
    }

    async fn append_batch(
        &self,
        request: Request<AppendBatchRequest>,
    ) -> Result<Response<AppendBatchResponse>, Status> {
        let span = tracing::info_span!(
            "AppendBatch",
            appends = tracing::field::Empty,
            events = tracing::field::Empty
        );
        kit::telemetry::set_parent_from_grpc(&span, request.metadata());
        let producer = self.authenticate(request.metadata())?;
        let appends = request.into_inner().appends;
        let events: usize = appends.iter().map(|a| a.events.len()).sum();
        if appends.is_empty() || appends.len() > MAX_BATCH || events > MAX_BATCH_EVENTS {
            return Err(invalid(format!(
                "appends: 1 to {MAX_BATCH} appends of at most {MAX_BATCH_EVENTS} events in all"
            )));
        }
        span.record("appends", appends.len());
        span.record("events", events);
        // All at once: the appender commits them in the same groups.
        let outcomes = futures::future::join_all(
            appends
                .into_iter()
                .map(|append| self.append_one(append, producer.clone(), &span)),
        );
        let results = tracing::Instrument::instrument(outcomes, span.clone())
            .await
            .into_iter()
            .map(|outcome| match outcome {
                Ok(response) => AppendBatchResult {
                    response: Some(response),
                    ..Default::default()
                },
                Err(status) => AppendBatchResult {
                    response: None,
                    code: status.code() as i32,
                    message: status.message().to_owned(),
                    current_version: kit::store_client::current_version(status.metadata())
                        .unwrap_or(0),
                },
            })
            .collect();
        Ok(Response::new(AppendBatchResponse { results }))
    }

    async fn read_stream(
        &self,
        request: Request<ReadStreamRequest>,
    ) -> Result<Response<ReadStreamResponse>, Status> {
        self.authenticate(request.metadata())?;
        let request = request.into_inner();
        stream_category(&request.stream).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let limit = match request.max_count {
            0 => MAX_BATCH as u32,
            n => n.min(MAX_BATCH as u32),
        };
        let (events, stream_version) = self
            .reader
            .stream(&request.stream, request.from_version, limit)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(ReadStreamResponse {
            events,
            stream_version,
        }))
    }

    type ReadAllStream = EventStream<ReadAllResponse>;

    async fn read_all(
        &self,
        request: Request<ReadAllRequest>,
    ) -> Result<Response<Self::ReadAllStream>, Status> {
        self.authenticate(request.metadata())?;
        let request = request.into_inner();
        let criteria = validate_filter(request.filter.as_ref())?;
        let batch = read_batch(request.batch_size);
        let reader = self.reader.clone();
        let shutdown = self.shutdown.clone();
        let (tx, rx) = mpsc::channel(2);
        // Two stages, so that decrypting one page overlaps fetching the
        // next: the fetcher reads sealed pages, this task opens and sends.
        let (fetched, mut to_open) = mpsc::channel::<Result<Page, Status>>(2);
        let opener = reader.clone();
        tokio::spawn(async move {
            while let Some(page) = to_open.recv().await {
                let response = match page {
                    Ok(mut page) => match opener.open(&mut page).await {
                        Ok(()) => Ok(ReadAllResponse {
                            events: page.events,
                            checkpoint: page.checkpoint,
                        }),
                        Err(error) => Err(Status::unavailable(error.to_string())),
                    },
                    Err(status) => Err(status),
                };
                let failed = response.is_err();
                if tx.send(response).await.is_err() || failed {
                    return;
                }
            }
        });
        let tx = fetched;
        tokio::spawn(async move {
            let head = match reader.head().await {
                Ok(head) => head,
                Err(error) => {
                    let _ = tx.send(Err(Status::unavailable(error.to_string()))).await;
                    return;
                }
            };
            let upto = match request.to_position {
                0 => head,
                to => to.min(head),
            };
            let mut after = request.after_position;
            while after < upto && !shutdown.is_cancelled() {
                let response = match reader.sealed_page(after, upto, &criteria, batch).await {
                    Ok(page) => {
                        after = page.checkpoint;
                        if page.events.is_empty() && after < upto {
                            // Nothing matched in this window; keep scanning
                            // without sending an empty message.
                            continue;
                        }
                        Ok(page)
                    }
                    Err(error) => Err(Status::unavailable(error.to_string())),
                };
                let failed = response.is_err();
                if tx.send(response).await.is_err() || failed {
                    return;
                }
            }
            if shutdown.is_cancelled() && after < upto {
                let _ = tx
                    .send(Err(Status::unavailable(
                        "event store is shutting down; resume from the last checkpoint",
                    )))
                    .await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn verify(
        &self,
        request: Request<VerifyRequest>,
    ) -> Result<Response<VerifyResponse>, Status> {
        self.authenticate(request.metadata())?;
        let request = request.into_inner();
        let head = self
            .reader
            .head()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let upto = match request.to_position {
            0 => head,
            to => to.min(head),
        };
        let report = self
            .reader
            .verify(request.after_position, upto)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let (first_broken_position, detail) = report.first_broken.clone().unwrap_or_default();
        Ok(Response::new(VerifyResponse {
            intact: report.first_broken.is_none(),
            checked: report.checked,
            first_broken_position,
            detail,
            unchained: report.unchained,
            last_position: report.last_position,
        }))
    }

    async fn head(&self, request: Request<()>) -> Result<Response<HeadResponse>, Status> {
        self.authenticate(request.metadata())?;
        let position = self
            .reader
            .head()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(HeadResponse { position }))
    }

    async fn forget_contact(
        &self,
        request: Request<ForgetContactRequest>,
    ) -> Result<Response<ForgetContactResponse>, Status> {
        let producer = self.authenticate(request.metadata())?;
        let request = request.into_inner();
        let phone = kit::phone::PhoneNumber::parse(&request.phone, Default::default())
            .map_err(|e| invalid(format!("phone: `{}` {e}", request.phone)))?;
        let requested_by = request.requested_by.trim();
        if requested_by.is_empty() || requested_by.len() > 200 {
            return Err(invalid("requested_by: say who asks (1 to 200 characters)"));
        }
        if !request.contact_stream.is_empty()
            && stream_category(&request.contact_stream) != Ok("contact")
        {
            return Err(invalid("contact_stream: a `contact-…` stream name"));
        }
        let (contact_ref, keys_destroyed) = self
            .privacy
            .forget(phone.as_str(), requested_by)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let contact_ref = hex::encode(contact_ref);
        let payload = kit::proto::events::v1::ContactForgotten {
            contact_ref: contact_ref.clone(),
            keys_destroyed,
            requested_by: requested_by.to_owned(),
            reason: request.reason,
            contact_stream: request.contact_stream,
        };
        let event_id = Uuid::new_v4();
        let job = AppendJob {
            stream: format!(
                "{}-{}",
                kit::contacts::FORGOTTEN_CATEGORY,
                &contact_ref[..32]
            ),
            category: kit::contacts::FORGOTTEN_CATEGORY.into(),
            expected: Expected::Any,
            producer,
            events: vec![ValidEvent {
                event_id,
                event_type: kit::events::type_of::<kit::proto::events::v1::ContactForgotten>()
                    .into(),
                occurred_at: None,
                correlation_id: event_id,
                causation_id: None,
                traceparent: kit::telemetry::current_trace_context().traceparent,
                tracestate: String::new(),
                payload: prost::Message::encode_to_vec(&payload),
            }],
        };
        let appended = self
            .appender
            .append(job)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        tracing::info!(%contact_ref, keys_destroyed, "contact forgotten");
        Ok(Response::new(ForgetContactResponse {
            contact_ref,
            keys_destroyed,
            position: appended.positions.first().copied().unwrap_or_default(),
        }))
    }

    type SubscribeStream = EventStream<SubscribeResponse>;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        self.authenticate(request.metadata())?;
        let request = request.into_inner();
        let criteria = validate_filter(request.filter.as_ref())?;
        let batch = read_batch(request.batch_size);
        let reader = self.reader.clone();
        let shutdown = self.shutdown.clone();
        let mut committed = self.committed.clone();
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(async move {
            let mut after = request.after_position;
            let mut caught_up = false;
            loop {
                // The head as the writer and the head poll know it: no
                // query per wake-up for each of the subscribers.
                let head = *committed.borrow_and_update();
                while after < head {
                    match reader.page(after, head, &criteria, batch).await {
                        Ok(page) => {
                            after = page.checkpoint;
                            if page.events.is_empty() && after < head {
                                continue;
                            }
                            let response = SubscribeResponse {
                                events: page.events,
                                checkpoint: after,
                                caught_up: false,
                            };
                            if tx.send(Ok(response)).await.is_err() {
                                return;
                            }
                        }
                        Err(error) => {
                            let _ = tx.send(Err(Status::unavailable(error.to_string()))).await;
                            return;
                        }
                    }
                }
                if !caught_up {
                    caught_up = true;
                    let marker = SubscribeResponse {
                        events: Vec::new(),
                        checkpoint: after.max(head),
                        caught_up: true,
                    };
                    if tx.send(Ok(marker)).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        let _ = tx.send(Err(Status::unavailable("event store is shutting down; resume from the last checkpoint"))).await;
                        return;
                    }
                    _ = tx.closed() => return,
                    _ = committed.changed() => {}
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

fn read_batch(requested: u32) -> u32 {
    match requested {
        0 => DEFAULT_READ_BATCH,
        n => n.min(MAX_READ_BATCH),
    }
}

impl Api {
    /// The service a request comes from: the name it claims
    /// (`x-callflow-producer`), proven by its token (`authorization: Bearer
    /// <token>`, see `kit::store_client::token_for`).
    /// One append, checked, sealed and committed; `Status` as Append
    /// answers it.
    async fn append_one(
        &self,
        request: AppendRequest,
        producer: String,
        span: &tracing::Span,
    ) -> Result<AppendResponse, Status> {
        let mut job = validate_append(request, producer)?;
        for event in job.events.iter_mut() {
            let payload = std::mem::take(&mut event.payload);
            event.payload =
                self.privacy
                    .seal(&event.event_type, &job.stream, payload)
                    .await
                    .map_err(|e| match e {
                        crate::privacy::PrivacyError::Wire(why) => Status::invalid_argument(
                            format!("events[].payload: not a {}: {why}", event.event_type),
                        ),
                        other => Status::unavailable(other.to_string()),
                    })?;
        }
        let call_trace = span.in_scope(kit::telemetry::current_trace_context);
        for event in job.events.iter_mut().filter(|e| e.traceparent.is_empty()) {
            event.traceparent.clone_from(&call_trace.traceparent);
            event.tracestate.clone_from(&call_trace.tracestate);
        }
        let stream = job.stream.clone();
        match self.appender.append(job).await {
            Ok(appended) => Ok(AppendResponse {
                positions: appended.positions,
                stream_version: appended.stream_version,
                duplicate: appended.duplicate,
            }),
            Err(AppendFailure::WrongExpectedVersion { current }) => {
                let mut status = Status::aborted(format!(
                    "wrong expected version: stream {stream} is at version {current}"
                ));
                status.metadata_mut().insert(
                    CURRENT_VERSION_HEADER,
                    current.to_string().parse().expect("digits"),
                );
                Err(status)
            }
            Err(AppendFailure::Conflict(message)) => Err(Status::invalid_argument(message)),
            Err(AppendFailure::Unavailable(message)) => Err(Status::unavailable(message)),
        }
    }

    fn authenticate(&self, metadata: &tonic::metadata::MetadataMap) -> Result<String, Status> {
        let claimed = metadata
            .get(PRODUCER_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 100)
            .ok_or_else(|| {
                Status::unauthenticated(format!("say who you are in `{PRODUCER_HEADER}`"))
            })?;
        let token = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Status::unauthenticated(
                    "present your service token as `authorization: Bearer <token>`",
                )
            })?;
        let expected = kit::store_client::token_for(&self.auth_secret, claimed);
        let matches = expected.len() == token.len()
            && expected
                .bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !matches {
            return Err(Status::unauthenticated(format!(
                "the token is not `{claimed}`'s"
            )));
        }
        Ok(claimed.to_owned())
    }
}

fn invalid(message: impl Into<String>) -> Status {
    Status::invalid_argument(message.into())
}

/// Checks an append request and turns it into a job; every problem is an
/// INVALID_ARGUMENT naming the field.
pub fn validate_append(request: AppendRequest, producer: String) -> Result<AppendJob, Status> {
    let category = stream_category(&request.stream)
        .map_err(|e| invalid(format!("stream: {e}")))?
        .to_owned();
    if request.events.is_empty() {
        return Err(invalid("events: at least one event is required"));
    }
    if request.events.len() > MAX_BATCH {
        return Err(invalid(format!(
            "events: at most {MAX_BATCH} per append, got {}",
            request.events.len()
        )));
    }
    let expected = match request.expected_version.and_then(|v| v.kind) {
        None | Some(expected_version::Kind::Any(())) => Expected::Any,
        Some(expected_version::Kind::NoStream(())) => Expected::NoStream,
        Some(expected_version::Kind::Exact(version)) => Expected::Exact(version),
    };
    let mut seen = std::collections::HashSet::with_capacity(request.events.len());
    let mut events = Vec::with_capacity(request.events.len());
    for (index, event) in request.events.into_iter().enumerate() {
        let field = |name: &str| format!("events[{index}].{name}");
        let event_id = Uuid::parse_str(&event.event_id).map_err(|_| {
            invalid(format!(
                "{}: `{}` is not a UUID",
                field("event_id"),
                event.event_id
            ))
        })?;
        if event_id.is_nil() {
            return Err(invalid(format!(
                "{}: the nil UUID is not an id",
                field("event_id")
            )));
        }
        if !seen.insert(event_id) {
            return Err(invalid(format!(
                "{}: {event_id} appears twice in the batch",
                field("event_id")
            )));
        }
        if !is_valid_type(&event.r#type) {
            return Err(invalid(format!(
                "{}: `{}` is not a type name (an identifier starting with an uppercase letter)",
                field("type"),
                event.r#type
            )));
        }
        if event.payload.len() > MAX_PAYLOAD {
            return Err(invalid(format!(
                "{}: {} bytes, at most {MAX_PAYLOAD}",
                field("payload"),
                event.payload.len()
            )));
        }
        let optional_uuid = |name: &str, text: &str| -> Result<Option<Uuid>, Status> {
            if text.is_empty() {
                return Ok(None);
            }
            Uuid::parse_str(text)
                .map(Some)
                .map_err(|_| invalid(format!("{}: `{text}` is not a UUID", field(name))))
        };
        let correlation_id =
            optional_uuid("correlation_id", &event.correlation_id)?.unwrap_or(event_id);
        let causation_id = optional_uuid("causation_id", &event.causation_id)?;
        let occurred_at = match event.occurred_at {
            None => None,
            Some(ts) => Some(
                SystemTime::try_from(ts)
                    .map_err(|_| invalid(format!("{}: out of range", field("occurred_at"))))?,
            ),
        };
        let (traceparent, tracestate) = event
            .trace
            .map(|t| (t.traceparent, t.tracestate))
            .unwrap_or_default();
        if traceparent.len() > 256 || tracestate.len() > 512 {
            return Err(invalid(format!("{}: too long", field("trace"))));
        }
        events.push(ValidEvent {
            event_id,
            event_type: event.r#type,
            occurred_at,
            correlation_id,
            causation_id,
            traceparent,
            tracestate,
            payload: event.payload,
        });
    }
    Ok(AppendJob {
        stream: request.stream,
        category,
        expected,
        producer,
        events,
    })
}

/// Checks a read filter.
pub fn validate_filter(
    filter: Option<&kit::proto::eventstore::v1::Filter>,
) -> Result<Criteria, Status> {
    let criteria = Criteria::from_filter(filter);
    if let Some(filter) = filter {
        if filter.recorded_from.is_some() && criteria.recorded_from.is_none() {
            return Err(invalid("filter.recorded_from: out of range"));
        }
        if filter.recorded_until.is_some() && criteria.recorded_until.is_none() {
            return Err(invalid("filter.recorded_until: out of range"));
        }
    }
    if let Some(filter) = filter
        && criteria.correlation_ids.len() != filter.correlation_ids.len()
    {
        return Err(invalid("filter.correlation_ids: every id must be a UUID"));
    }
    if let Some(bad) = criteria.types.iter().find(|t| !is_valid_type(t)) {
        return Err(invalid(format!("filter.types: `{bad}` is not a type name")));
    }
    if criteria
        .categories
        .iter()
        .any(|c| c.is_empty() || c.len() > 50)
    {
        return Err(invalid(
            "filter.categories: categories are 1 to 50 characters",
        ));
    }
    Ok(criteria)
}
