//! The event-store client services append through.
//!
//! Every request carries the caller's trace context and service name in gRPC
//! metadata. Appends are retried when the store is unreachable: they are
//! idempotent on event ids, so a retry after an unknown outcome is safe.

use std::time::Duration;

use tonic::Code;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::proto::eventstore::v1::event_store_client::EventStoreClient as GrpcClient;
use crate::proto::eventstore::v1::{
    AppendBatchRequest, AppendRequest, AppendResponse, ExpectedVersion, NewEvent, expected_version,
};

/// gRPC metadata key naming the calling service.
pub const PRODUCER_HEADER: &str = "x-callflow-producer";
/// Trailer metadata key holding a stream's current version on a conflict.
pub const CURRENT_VERSION_HEADER: &str = "x-callflow-current-version";

/// The version a stream must be at for an append to be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Expected {
    /// Whatever the stream's version.
    #[default]
    Any,
    /// The stream must have no events yet.
    NoStream,
    /// The stream's last version must be exactly this.
    Exact(u64),
}

impl From<Expected> for ExpectedVersion {
    fn from(expected: Expected) -> Self {
        let kind = match expected {
            Expected::Any => expected_version::Kind::Any(()),
            Expected::NoStream => expected_version::Kind::NoStream(()),
            Expected::Exact(v) => expected_version::Kind::Exact(v),
        };
        ExpectedVersion { kind: Some(kind) }
    }
}

/// Why an append failed.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("stream {stream} is at version {current}, not the expected one")]
    WrongExpectedVersion { stream: String, current: u64 },
    #[error("append refused: {0}")]
    Invalid(String),
    #[error("event store unavailable: {0}")]
    Unavailable(tonic::Status),
}

/// The token a service presents to the event store: hex of
/// HMAC-SHA256(secret, service name). The store recomputes it, so the name
/// cannot be claimed without the secret or the token.
pub fn token_for(secret: &str, service: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(service.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Adds the trace context, the service's name and its token to every
/// request.
#[derive(Clone)]
pub struct Outgoing {
    producer: AsciiMetadataValue,
    authorization: Option<AsciiMetadataValue>,
}

impl Interceptor for Outgoing {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        crate::telemetry::inject_grpc_metadata(request.metadata_mut());
        request
            .metadata_mut()
            .insert(PRODUCER_HEADER, self.producer.clone());
        if let Some(authorization) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", authorization.clone());
        }
        Ok(request)
    }
}

/// The generated gRPC client with [`Outgoing`] metadata, for reads.
pub type Grpc = GrpcClient<InterceptedService<Channel, Outgoing>>;

/// A cheap-to-clone event-store client.
#[derive(Clone)]
pub struct EventStoreClient {
    channel: Channel,
    outgoing: Outgoing,
    retry: RetryPolicy,
}

/// How appends are retried while the store is unreachable.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 6,
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            timeout: Duration::from_secs(10),
        }
    }
}

impl EventStoreClient {
    /// A client for the store at `url` that names itself `producer`. Connects
    /// lazily, so a service can start before the store does.
    pub fn connect_lazy(url: &str, producer: &str) -> Result<Self, tonic::transport::Error> {
        let channel = Endpoint::from_shared(url.to_owned())?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .connect_lazy();
        let producer = producer
            .parse()
            .unwrap_or_else(|_| AsciiMetadataValue::from_static("unknown"));
        Ok(Self {
            channel,
            outgoing: Outgoing {
                producer,
                authorization: None,
            },
            retry: RetryPolicy::default(),
        })
    }

    /// Presents `token` (see [`token_for`]) with every request.
    pub fn authenticated(mut self, token: &str) -> Self {
        self.outgoing.authorization = format!("Bearer {token}").parse().ok();
        self
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The raw gRPC client, for reads and subscriptions.
    pub fn grpc(&self) -> Grpc {
        GrpcClient::with_interceptor(self.channel.clone(), self.outgoing.clone())
            .max_decoding_message_size(64 * 1024 * 1024)
    }

    /// Appends `events` to `stream`, atomically. Returns the positions; when
    /// the events were already in the log, their original positions.
    pub async fn append(
        &self,
        stream: &str,
        expected: Expected,
        events: Vec<NewEvent>,
    ) -> Result<AppendResponse, AppendError> {
        let request = AppendRequest {
            stream: stream.to_owned(),
            expected_version: Some(expected.into()),
            events,
        };
        let mut delay = self.retry.first_delay;
        let mut attempt = 1;
        loop {
            let mut grpc = self.grpc();
            let call = grpc.append(request.clone());
            let status = match tokio::time::timeout(self.retry.timeout, call).await {
                Ok(Ok(response)) => return Ok(response.into_inner()),
                Ok(Err(status)) => status,
                Err(_) => tonic::Status::deadline_exceeded("append timed out"),
            };
            match status.code() {
                Code::Aborted => {
                    return Err(AppendError::WrongExpectedVersion {
                        stream: stream.to_owned(),
                        current: current_version(status.metadata()).unwrap_or(0),
                    });
                }
                Code::InvalidArgument
                | Code::AlreadyExists
                | Code::FailedPrecondition
                | Code::PermissionDenied
                | Code::Unauthenticated
                | Code::OutOfRange => {
                    return Err(AppendError::Invalid(status.message().to_owned()));
                }
                _ if attempt >= self.retry.attempts => {
                    return Err(AppendError::Unavailable(status));
                }
                _ => {
                    tracing::warn!(stream, attempt, code = ?status.code(), message = status.message(), "append failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.retry.max_delay);
                    attempt += 1;
                }
            }
        }
    }
}

impl EventStoreClient {
    /// Appends to several streams in one request (`AppendBatch`): each
    /// entry is decided on its own, as [`append`](Self::append) would;
    /// the outcome of each comes back in order. The request as a whole is
    /// retried while the store is unreachable (appends are idempotent).
    pub async fn append_batch(
        &self,
        appends: Vec<(String, Expected, Vec<NewEvent>)>,
    ) -> Result<Vec<Result<AppendResponse, AppendError>>, AppendError> {
        let streams: Vec<String> = appends.iter().map(|(s, _, _)| s.clone()).collect();
        let request = AppendBatchRequest {
            appends: appends
                .into_iter()
                .map(|(stream, expected, events)| AppendRequest {
                    stream,
                    expected_version: Some(expected.into()),
                    events,
                })
                .collect(),
        };
        let mut delay = self.retry.first_delay;
        let mut attempt = 1;
        let results = loop {
            let mut grpc = self.grpc();
            let call = grpc.append_batch(request.clone());
            let status = match tokio::time::timeout(self.retry.timeout, call).await {
                Ok(Ok(response)) => break response.into_inner().results,
                Ok(Err(status)) => status,
                Err(_) => tonic::Status::deadline_exceeded("append batch timed out"),
            };
            match status.code() {
                Code::InvalidArgument | Code::PermissionDenied | Code::Unauthenticated => {
                    return Err(AppendError::Invalid(status.message().to_owned()));
                }
                _ if attempt >= self.retry.attempts => {
                    return Err(AppendError::Unavailable(status));
                }
                _ => {
                    tracing::warn!(attempt, code = ?status.code(), message = status.message(), "append batch failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.retry.max_delay);
                    attempt += 1;
                }
            }
        };
        Ok(results
            .into_iter()
            .zip(streams)
            .map(|(result, stream)| match result.response {
                Some(response) => Ok(response),
                None => Err(match Code::from_i32(result.code) {
                    Code::Aborted => AppendError::WrongExpectedVersion {
                        stream,
                        current: result.current_version,
                    },
                    Code::InvalidArgument | Code::AlreadyExists | Code::FailedPrecondition => {
                        AppendError::Invalid(result.message)
                    }
                    code => AppendError::Unavailable(tonic::Status::new(code, result.message)),
                }),
            })
            .collect())
    }
}

/// The stream version a refused append's status carries.
pub fn current_version(metadata: &MetadataMap) -> Option<u64> {
    metadata
        .get(CURRENT_VERSION_HEADER)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}
