//! The partner dashboard's queries (`callflow.leads.v1.LeadDashboard`),
//! served over gRPC and, the same, as JSON over HTTP:
//!
//! - `GET /dashboard/summary?from_day=&to_day=&partner_id=&site=`
//! - `GET /dashboard/manual-queue?limit=&partner_id=&site=`
//! - `POST /dashboard/manual-queue/{lead_id}/handled` with
//!   `{"handled_by": "...", "note": "..."}` (`MarkHandled`, see
//!   [`crate::handled`])
//!
//! Both transports turn their input into the protobuf request and go
//! through [`Queries::summary_for`], [`Queries::manual_queue_for`] and
//! [`Queries::mark_handled_for`], so they validate and answer alike. The JSON answers are the protobuf
//! responses in the protobuf JSON mapping (field names as in the `.proto`,
//! every field present, timestamps in RFC 3339), except that 64-bit
//! numbers are JSON numbers: they are counts and amounts far below 2^53,
//! and a dashboard should not have to parse strings to add them up.
//!
//! Bad input is `INVALID_ARGUMENT` over gRPC and `400 {"error": "...",
//! "field": "..."}` over HTTP, naming the field (also an unknown query
//! parameter, so that a misspelt filter is not silently ignored). A
//! database that cannot be reached is `UNAVAILABLE` / `503`.
//!
//! The POST answers as callflow's other POST endpoints do (kit::api_error):
//! `400 malformed_body` for a body that is not a JSON object, `422
//! invalid_field` naming the field (`lead_id`, `handled_by`, `note`, or an
//! unknown one), `404 unknown_lead` (NOT_FOUND), `409 not_in_manual_queue`
//! (FAILED_PRECONDITION), `409 conflict` (ABORTED), `503 unavailable`; and
//! `200` with the `MarkHandledResponse` as JSON.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use jiff::Unit;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use kit::api_error::ApiError;
use serde_json::Value;
use tonic::{Request, Status};

use kit::clock::SharedClock;
use kit::proto::leads::v1::lead_dashboard_server::LeadDashboard;
use kit::proto::leads::v1::{
    ManualQueueRequest, ManualQueueResponse, MarkHandledRequest, MarkHandledResponse,
    SummaryRequest, SummaryResponse,
};
use kit::proto::prost::{Message, Name};
use kit::proto::prost_reflect::{DynamicMessage, SerializeOptions};
use kit::store_client::EventStoreClient;

use crate::dashboard::{self, Scope};
use crate::handled::{self, MarkError};

/// Leads in a manual queue answer when the request names no limit.
pub const DEFAULT_LIMIT: u32 = 100;
/// The most leads a manual queue answer holds.
pub const MAX_LIMIT: u32 = 1000;
/// The longest summary range, in days (a leap year).
pub const MAX_DAYS: i64 = 366;

/// What the queries need.
#[derive(Clone)]
pub struct Queries {
    pub pool: deadpool_postgres::Pool,
    /// Where MarkHandled reads the lead's stream and appends.
    pub store: EventStoreClient,
    /// Zone of the dashboard's days: the projection's (see
    /// [`dashboard::Dashboard`]), for what "today" is.
    pub zone: TimeZone,
    pub clock: SharedClock,
}

/// Why a query got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The request is malformed; `field` names what is wrong.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// The database cannot be reached; asking again later may work.
    #[error("the dashboard's database cannot be reached: {0}")]
    Unavailable(String),
    /// A fault of the service itself.
    #[error("the dashboard failed: {0}")]
    Internal(String),
}

fn invalid(field: &str, message: impl Into<String>) -> QueryError {
    QueryError::Invalid {
        field: field.to_owned(),
        message: message.into(),
    }
}

impl From<deadpool_postgres::PoolError> for QueryError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        Self::Unavailable(error.to_string())
    }
}

impl From<tokio_postgres::Error> for QueryError {
    fn from(error: tokio_postgres::Error) -> Self {
        // An error the server answered with is a fault of the query; one
        // without an answer (closed connection, I/O) is the database being
        // out of reach.
        if error.as_db_error().is_some() {
            tracing::error!(%error, "dashboard query failed");
            Self::Internal(error.to_string())
        } else {
            Self::Unavailable(error.to_string())
        }
    }
}

impl From<QueryError> for Status {
    fn from(error: QueryError) -> Self {
        match error {
            QueryError::Invalid { .. } => Status::invalid_argument(error.to_string()),
            QueryError::Unavailable(_) => Status::unavailable(error.to_string()),
            QueryError::Internal(_) => Status::internal(error.to_string()),
        }
    }
}

impl From<MarkError> for Status {
    fn from(error: MarkError) -> Self {
        let message = error.to_string();
        match error {
            MarkError::Invalid { .. } => Status::invalid_argument(message),
            MarkError::NotFound(_) => Status::not_found(message),
            MarkError::NotQueued(_) => Status::failed_precondition(message),
            MarkError::Conflict(_) => Status::aborted(message),
            MarkError::Unavailable(_) => Status::unavailable(message),
            MarkError::Internal(_) => Status::internal(message),
        }
    }
}

impl From<MarkError> for ApiError {
    /// The JSON error answer of callflow's POST endpoints (see
    /// kit::api_error).
    fn from(error: MarkError) -> Self {
        let message = error.to_string();
        match error {
            MarkError::Invalid { field, .. } => ApiError {
                message,
                ..ApiError::invalid(field, "")
            },
            MarkError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "unknown_lead", message),
            MarkError::NotQueued(_) => {
                ApiError::new(StatusCode::CONFLICT, "not_in_manual_queue", message)
            }
            MarkError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, "conflict", message),
            MarkError::Unavailable(_) => ApiError::unavailable(message),
            MarkError::Internal(_) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
            }
        }
    }
}

impl IntoResponse for QueryError {
    /// The JSON error answer every callflow HTTP endpoint gives
    /// (`{"error": {"code", "message", "field"?}}`, see kit::api_error).
    fn into_response(self) -> Response {
        let message = self.to_string();
        let error = match self {
            QueryError::Invalid { field, .. } => ApiError {
                field: Some(field),
                ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", message)
            },
            QueryError::Unavailable(_) => ApiError::unavailable(message),
            QueryError::Internal(_) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
            }
        };
        error.into_response()
    }
}

/// A day `YYYY-MM-DD` (exactly that shape: `20260302` or `2026-3-2` are
/// refused rather than guessed at); `None` when `text` is empty.
fn parse_day(field: &str, text: &str) -> Result<Option<Date>, QueryError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let bytes = text.as_bytes();
    let shaped = bytes.len() == 10
        && bytes.iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            _ => b.is_ascii_digit(),
        });
    shaped
        .then(|| text.parse::<Date>().ok())
        .flatten()
        .map(Some)
        .ok_or_else(|| invalid(field, format!("`{text}` is not a day (YYYY-MM-DD)")))
}

/// The inclusive range of days a summary asks for; an empty day is `today`.
pub fn day_range(from_day: &str, to_day: &str, today: Date) -> Result<(Date, Date), QueryError> {
    let from = parse_day("from_day", from_day)?.unwrap_or(today);
    let to = parse_day("to_day", to_day)?.unwrap_or(today);
    if from > to {
        return Err(invalid("from_day", format!("{from} is after to_day {to}")));
    }
    let days = from
        .until((Unit::Day, to))
        .map_err(|e| invalid("to_day", e.to_string()))?
        .get_days() as i64
        + 1;
    if days > MAX_DAYS {
        return Err(invalid(
            "to_day",
            format!("{from} to {to} is {days} days; at most {MAX_DAYS}"),
        ));
    }
    Ok((from, to))
}

/// The number of leads a manual queue answer may hold: 0 asks for the
/// default.
pub fn queue_limit(limit: u32) -> Result<u32, QueryError> {
    match limit {
        0 => Ok(DEFAULT_LIMIT),
        n if n > MAX_LIMIT => Err(invalid("limit", format!("{n} is more than {MAX_LIMIT}"))),
        n => Ok(n),
    }
}

/// Filters: an empty (or blank) value means all.
fn scope(partner_id: &str, site: &str) -> Scope {
    let given = |text: &str| {
        Some(text.trim())
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
    };
    Scope {
        partner_id: given(partner_id),
        site: given(site),
    }
}

impl Queries {
    /// Today in the dashboard's zone.
    pub fn today(&self) -> Date {
        self.clock.now().to_zoned_datetime(self.zone.clone()).date()
    }

    /// The answer to a `Summary`.
    pub async fn summary_for(
        &self,
        request: &SummaryRequest,
    ) -> Result<SummaryResponse, QueryError> {
        let (from, to) = day_range(&request.from_day, &request.to_day, self.today())?;
        let scope = scope(&request.partner_id, &request.site);
        let client = self.pool.get().await?;
        Ok(dashboard::summary(&**client, from, to, &scope).await?)
    }

    /// The answer to a `ManualQueue`.
    pub async fn manual_queue_for(
        &self,
        request: &ManualQueueRequest,
    ) -> Result<ManualQueueResponse, QueryError> {
        let limit = queue_limit(request.limit)?;
        let scope = scope(&request.partner_id, &request.site);
        let client = self.pool.get().await?;
        let leads = dashboard::manual_queue(&**client, limit, &scope, self.clock.now()).await?;
        Ok(ManualQueueResponse { leads })
    }

    /// The answer to a `MarkHandled`: once the manual queue no longer
    /// shows the lead.
    pub async fn mark_handled_for(
        &self,
        request: &MarkHandledRequest,
    ) -> Result<MarkHandledResponse, MarkError> {
        let mark = handled::validate(request)?;
        let (response, position) = handled::mark(&self.store, &mark, self.clock.now()).await?;
        handled::settle(&self.pool, position, handled::SETTLE_WITHIN).await?;
        if !response.repeated {
            tracing::info!(lead = %mark.lead_id, handled_by = %mark.handled_by,
                           event_id = %response.event_id, "lead marked handled");
        }
        Ok(response)
    }
}

#[tonic::async_trait]
impl LeadDashboard for Queries {
    async fn summary(
        &self,
        request: Request<SummaryRequest>,
    ) -> Result<tonic::Response<SummaryResponse>, Status> {
        Ok(tonic::Response::new(
            self.summary_for(request.get_ref()).await?,
        ))
    }

    async fn manual_queue(
        &self,
        request: Request<ManualQueueRequest>,
    ) -> Result<tonic::Response<ManualQueueResponse>, Status> {
        Ok(tonic::Response::new(
            self.manual_queue_for(request.get_ref()).await?,
        ))
    }

    async fn mark_handled(
        &self,
        request: Request<MarkHandledRequest>,
    ) -> Result<tonic::Response<MarkHandledResponse>, Status> {
        Ok(tonic::Response::new(
            self.mark_handled_for(request.get_ref()).await?,
        ))
    }
}

/// `GET /dashboard/summary`, `GET /dashboard/manual-queue`,
/// `POST /dashboard/manual-queue/{lead_id}/handled`.
pub fn routes(queries: Queries) -> Router {
    Router::new()
        .route("/dashboard/summary", get(summary_json))
        .route("/dashboard/manual-queue", get(manual_queue_json))
        .route(
            "/dashboard/manual-queue/{lead_id}/handled",
            post(mark_handled_json),
        )
        .with_state(queries)
}

type RawParams = Result<Query<Vec<(String, String)>>, QueryRejection>;

/// The query parameters, each at most once and each one of `known`.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(raw: RawParams, known: &[&str]) -> Result<Self, QueryError> {
        let Query(pairs) = raw.map_err(|e| invalid("query", e.body_text()))?;
        for (i, (name, _)) in pairs.iter().enumerate() {
            if !known.contains(&name.as_str()) {
                return Err(invalid(
                    name,
                    format!("unknown parameter; known are {}", known.join(", ")),
                ));
            }
            if pairs[..i].iter().any(|(earlier, _)| earlier == name) {
                return Err(invalid(name, "given more than once"));
            }
        }
        Ok(Self(pairs))
    }

    fn get(&self, name: &str) -> String {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value.clone())
            .unwrap_or_default()
    }
}

/// A protobuf message as JSON (see the module's notes).
fn to_json<M: Message + Name>(message: &M) -> Result<Value, QueryError> {
    const OPTIONS: SerializeOptions = SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(false)
        .stringify_64_bit_integers(false);
    let name = M::full_name();
    let descriptor = kit::proto::descriptors()
        .get_message_by_name(&name)
        .ok_or_else(|| QueryError::Internal(format!("no descriptor of {name}")))?;
    DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())
        .map_err(|e| QueryError::Internal(e.to_string()))?
        .serialize_with_options(serde_json::value::Serializer, &OPTIONS)
        .map_err(|e| QueryError::Internal(e.to_string()))
}

async fn summary_json(State(queries): State<Queries>, raw: RawParams) -> Response {
    let answer = async {
        let params = Params::parse(raw, &["from_day", "to_day", "partner_id", "site"])?;
        let request = SummaryRequest {
            from_day: params.get("from_day"),
            to_day: params.get("to_day"),
            partner_id: params.get("partner_id"),
            site: params.get("site"),
        };
        to_json(&queries.summary_for(&request).await?)
    };
    json_answer(answer.await)
}

async fn manual_queue_json(State(queries): State<Queries>, raw: RawParams) -> Response {
    let answer = async {
        let params = Params::parse(raw, &["limit", "partner_id", "site"])?;
        let limit = match params.get("limit").trim() {
            "" => 0,
            text => text.parse::<u32>().map_err(|_| {
                invalid(
                    "limit",
                    format!("`{text}` is not a whole number from 1 to {MAX_LIMIT}"),
                )
            })?,
        };
        let request = ManualQueueRequest {
            limit,
            partner_id: params.get("partner_id"),
            site: params.get("site"),
        };
        to_json(&queries.manual_queue_for(&request).await?)
    };
    json_answer(answer.await)
}

/// The body of `POST /dashboard/manual-queue/{lead_id}/handled`: a JSON
/// object with `handled_by` and, optionally, `note` (strings); nothing
/// else.
pub fn mark_handled_request(lead_id: &str, body: &[u8]) -> Result<MarkHandledRequest, ApiError> {
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
        return Err(ApiError::malformed(
            "the body must be a JSON object: {\"handled_by\": \"...\", \"note\": \"...\"}",
        ));
    };
    let invalid = |field: &str, message: &str| -> ApiError {
        MarkError::Invalid {
            field: field.to_owned(),
            message: message.to_owned(),
        }
        .into()
    };
    if let Some(unknown) = fields
        .keys()
        .find(|k| !["handled_by", "note"].contains(&k.as_str()))
    {
        return Err(invalid(
            unknown,
            "unknown field; known are handled_by, note",
        ));
    }
    let field = |name: &str| match fields.get(name) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(_) => Err(invalid(name, "must be a string")),
    };
    Ok(MarkHandledRequest {
        lead_id: lead_id.to_owned(),
        handled_by: field("handled_by")?,
        note: field("note")?,
    })
}

async fn mark_handled_json(
    State(queries): State<Queries>,
    Path(lead_id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let request = mark_handled_request(&lead_id, &body)?;
    let answer = queries.mark_handled_for(&request).await?;
    to_json(&answer).map(Json).map_err(|error| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            error.to_string(),
        )
    })
}

fn json_answer(answer: Result<Value, QueryError>) -> Response {
    match answer {
        Ok(value) => Json(value).into_response(),
        Err(error) => error.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> Date {
        text.parse().unwrap()
    }

    fn field_of(error: QueryError) -> String {
        match error {
            QueryError::Invalid { field, .. } => field,
            other => panic!("not invalid input: {other:?}"),
        }
    }

    #[test]
    fn empty_days_are_today() {
        let today = day("2026-03-03");
        assert_eq!(day_range("", "", today), Ok((today, today)));
        assert_eq!(
            day_range("2026-03-01", "", today),
            Ok((day("2026-03-01"), today))
        );
        assert_eq!(
            day_range(" 2026-03-01 ", "2026-03-02", today),
            Ok((day("2026-03-01"), day("2026-03-02")))
        );
    }

    #[test]
    fn bad_days_name_their_field() {
        let today = day("2026-03-03");
        for bad in [
            "2026-3-2",
            "20260302",
            "2026-02-30",
            "yesterday",
            "2026-03-02T00:00",
        ] {
            assert_eq!(field_of(day_range(bad, "", today).unwrap_err()), "from_day");
            assert_eq!(field_of(day_range("", bad, today).unwrap_err()), "to_day");
        }
        let after = day_range("2026-03-04", "", today).unwrap_err();
        assert_eq!(
            after.to_string(),
            "from_day: 2026-03-04 is after to_day 2026-03-03"
        );
    }

    #[test]
    fn ranges_hold_at_most_a_leap_year() {
        let today = day("2026-03-03");
        assert!(
            day_range("2024-01-01", "2024-12-31", today).is_ok(),
            "366 days"
        );
        let long = day_range("2025-01-01", "2026-01-02", today).unwrap_err();
        assert_eq!(field_of(long), "to_day");
    }

    #[test]
    fn limits_default_and_are_bounded() {
        assert_eq!(queue_limit(0), Ok(DEFAULT_LIMIT));
        assert_eq!(queue_limit(1), Ok(1));
        assert_eq!(queue_limit(MAX_LIMIT), Ok(MAX_LIMIT));
        assert_eq!(field_of(queue_limit(MAX_LIMIT + 1).unwrap_err()), "limit");
    }

    #[test]
    fn blank_filters_mean_all() {
        assert_eq!(scope("", " "), Scope::default());
        assert_eq!(scope(" p-1 ", "").partner_id.as_deref(), Some("p-1"));
    }
}
