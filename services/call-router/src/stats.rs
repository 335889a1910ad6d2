//! What the router did, per day: calls by caller type, who answered (shop,
//! office, call centre…), escalations, time to answer, masking sessions
//! used, fallbacks; and each courier's supervised calls. A projection of the
//! call streams (`inbound-<call_id>`): one row per call filled in by its
//! events, aggregated when asked. Served over gRPC (`RoutingStats`) and as
//! JSON (`GET /stats/daily`, `GET /stats/couriers/{courier_id}`).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use deadpool_postgres::{Pool, Transaction};
use jiff::civil::Date;
use jiff::tz::TimeZone;
use serde::Deserialize;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use kit::api_error::ApiError;
use kit::clock::SharedClock;
use kit::events::{decode, from_proto_time, to_proto_duration, to_proto_time};
use kit::projection::{ApplyError, Projector};
use kit::proto::events::v1::{
    CallerIdentified, CallerKind, DialAttempted, DialFinished, DialOutcome, Event,
    InboundCallEnded, InboundCallStarted, MaskedCallBridged, RecordingAvailable, TargetRole,
};
use kit::proto::eventstore::v1::Filter;
use kit::proto::routing::v1::routing_stats_server::RoutingStats;
use kit::proto::routing::v1::{
    CourierCall, CourierLogRequest, CourierLogResponse, DailyRequest, DailyResponse, DailyRow,
};

use crate::directory::kind_name;
use crate::scenario::role_name;

pub struct StatsProjector;

impl Projector for StatsProjector {
    fn schema(&self) -> &'static str {
        crate::SCHEMA
    }
    fn name(&self) -> &'static str {
        "stats"
    }
    fn filter(&self) -> Filter {
        Filter {
            categories: vec!["inbound".into()],
            ..Default::default()
        }
    }
    fn tables(&self) -> &'static [&'static str] {
        &["calls", "escalations"]
    }

    async fn apply(&self, tx: &Transaction<'_>, event: &Event) -> Result<(), ApplyError> {
        let call_id = event
            .stream
            .strip_prefix("inbound-")
            .unwrap_or(&event.stream)
            .to_owned();
        // Every event sets its own columns of the call's row.
        let set = |columns: &'static str| async move {
            tx.prepare_cached(&format!(
                "UPDATE call_router.calls SET {columns} WHERE call_id = $1"
            ))
            .await
        };
        // A call's row is made by its first event (InboundCallStarted, or
        // FallbackUsed for a step of a call the router never saw start);
        // the others only fill in columns.
        if matches!(event.r#type.as_str(), "InboundCallStarted" | "FallbackUsed") {
            let ensure = tx
                .prepare_cached(
                    "INSERT INTO call_router.calls (call_id) VALUES ($1) ON CONFLICT (call_id) DO NOTHING",
                )
                .await?;
            tx.execute(&ensure, &[&call_id]).await?;
        }
        match event.r#type.as_str() {
            "InboundCallStarted" => {
                let e: InboundCallStarted = decode(event)?;
                let at = e
                    .started_at
                    .as_ref()
                    .and_then(from_proto_time)
                    .unwrap_or_default();
                let sql = set("started_at = $2").await?;
                tx.execute(&sql, &[&call_id, &kit::events::to_system_time(at)])
                    .await?;
            }
            "CallerIdentified" => {
                let e: CallerIdentified = decode(event)?;
                let kind = kind_name(CallerKind::try_from(e.kind).unwrap_or_default());
                let courier = (!e.courier_id.is_empty()).then_some(e.courier_id);
                let sql = set("caller_kind = $2, courier_id = $3").await?;
                tx.execute(&sql, &[&call_id, &kind, &courier]).await?;
            }
            "DialAttempted" => {
                let e: DialAttempted = decode(event)?;
                if e.role == TargetRole::Store as i32 {
                    let sql = set("store_phone = $2").await?;
                    tx.execute(&sql, &[&call_id, &e.number]).await?;
                }
            }
            "DialFinished" => {
                let e: DialFinished = decode(event)?;
                if e.outcome == DialOutcome::Answered as i32 {
                    let role = role_name(TargetRole::try_from(e.role).unwrap_or_default());
                    let talk = millis(e.talk.as_ref());
                    let sql = set("answered = true, answered_by = $2, talk_ms = $3").await?;
                    tx.execute(&sql, &[&call_id, &role, &talk]).await?;
                }
            }
            "Escalated" => {
                let id = Uuid::parse_str(&event.event_id)
                    .map_err(|_| ApplyError::Unusable("event id".into()))?;
                tx.execute(
                    "INSERT INTO call_router.escalations (event_id, call_id) VALUES ($1, $2)
                     ON CONFLICT DO NOTHING",
                    &[&id, &call_id],
                )
                .await?;
            }
            "FallbackUsed" => {
                let sql = set("fallback = true").await?;
                tx.execute(&sql, &[&call_id]).await?;
            }
            "MaskedCallBridged" => {
                let e: MaskedCallBridged = decode(event)?;
                let sql = set("masking = true, bridged = true, session_id = $2").await?;
                tx.execute(&sql, &[&call_id, &e.session_id]).await?;
            }
            "InboundCallEnded" => {
                let e: InboundCallEnded = decode(event)?;
                let tta = e.time_to_answer.as_ref().map(|d| millis(Some(d)));
                let sql =
                    set("ended = true, time_to_answer_ms = $2, masking = masking OR $3").await?;
                tx.execute(&sql, &[&call_id, &tta, &e.masking.is_some()])
                    .await?;
            }
            "RecordingAvailable" => {
                let e: RecordingAvailable = decode(event)?;
                let sql = set("recording_url = $2").await?;
                tx.execute(&sql, &[&call_id, &e.url]).await?;
            }
            _ => {}
        }
        Ok(())
    }
}

fn millis(d: Option<&prost_types::Duration>) -> i64 {
    d.and_then(|d| Duration::try_from(*d).ok())
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The statistics' queries.
#[derive(Clone)]
pub struct Stats {
    pub pool: Pool,
    pub zone: TimeZone,
    pub clock: SharedClock,
}

fn day(text: &str, field: &str, today: Date) -> Result<Date, String> {
    if text.is_empty() {
        return Ok(today);
    }
    text.parse::<Date>()
        .map_err(|_| format!("{field}: `{text}` is not a day like 2026-11-24"))
}

impl Stats {
    pub async fn daily(&self, from: &str, to: &str) -> Result<DailyResponse, StatsError> {
        let today = self.zone.to_datetime(self.clock.now()).date();
        let from = day(from, "from_day", today).map_err(StatsError::Invalid)?;
        let to = day(to, "to_day", today).map_err(StatsError::Invalid)?;
        if from > to {
            return Err(StatsError::Invalid("from_day is after to_day".into()));
        }
        let start = self
            .zone
            .to_timestamp(from.to_datetime(jiff::civil::Time::midnight()));
        let end = self.zone.to_timestamp(
            to.tomorrow()
                .unwrap_or(to)
                .to_datetime(jiff::civil::Time::midnight()),
        );
        let (start, end) = match (start, end) {
            (Ok(s), Ok(e)) => (
                kit::events::to_system_time(s),
                kit::events::to_system_time(e),
            ),
            _ => return Err(StatsError::Invalid("days out of range".into())),
        };
        let zone = self.zone.iana_name().unwrap_or("UTC").to_owned();
        let client = self
            .pool
            .get()
            .await
            .map_err(|e| StatsError::Db(e.to_string()))?;
        let db = |e: tokio_postgres::Error| StatsError::Db(e.to_string());
        let rows = client
            .query(
                "SELECT to_char((c.started_at AT TIME ZONE $3)::date, 'YYYY-MM-DD') AS day,
                        count(*),
                        count(*) FILTER (WHERE NOT c.answered AND c.ended),
                        coalesce(sum((SELECT count(*) FROM call_router.escalations e WHERE e.call_id = c.call_id)), 0)::bigint,
                        coalesce(avg(c.time_to_answer_ms) FILTER (WHERE c.answered), 0)::bigint,
                        coalesce(max(c.time_to_answer_ms) FILTER (WHERE c.answered), 0)::bigint,
                        count(*) FILTER (WHERE c.masking),
                        count(*) FILTER (WHERE c.bridged),
                        count(DISTINCT c.session_id),
                        count(*) FILTER (WHERE c.fallback)
                   FROM call_router.calls c
                  WHERE c.started_at >= $1 AND c.started_at < $2
                  GROUP BY 1 ORDER BY 1",
                &[&start, &end, &zone],
            )
            .await
            .map_err(db)?;
        let mut days: BTreeMap<String, DailyRow> = BTreeMap::new();
        for r in rows {
            let day: String = r.get(0);
            let n = |i: usize| r.get::<_, i64>(i) as u64;
            days.insert(
                day.clone(),
                DailyRow {
                    day,
                    calls: n(1),
                    unanswered: n(2),
                    escalations: n(3),
                    time_to_answer_avg_ms: n(4),
                    time_to_answer_max_ms: n(5),
                    masking_calls: n(6),
                    masking_bridged: n(7),
                    masking_sessions_used: n(8),
                    fallbacks: n(9),
                    ..Default::default()
                },
            );
        }
        for (column, by_caller) in [("caller_kind", true), ("answered_by", false)] {
            let rows = client
                .query(
                    &format!(
                        "SELECT to_char((started_at AT TIME ZONE $3)::date, 'YYYY-MM-DD'), {column}, count(*)
                           FROM call_router.calls
                          WHERE started_at >= $1 AND started_at < $2 AND {column} IS NOT NULL
                          GROUP BY 1, 2"
                    ),
                    &[&start, &end, &zone],
                )
                .await
                .map_err(db)?;
            for r in rows {
                let day: String = r.get(0);
                let key: String = r.get(1);
                let count = r.get::<_, i64>(2) as u64;
                if let Some(row) = days.get_mut(&day) {
                    if by_caller {
                        row.by_caller.insert(key, count);
                    } else {
                        row.answered_by.insert(key, count);
                    }
                }
            }
        }
        Ok(DailyResponse {
            days: days.into_values().collect(),
        })
    }

    pub async fn courier_log(
        &self,
        courier_id: &str,
        limit: u32,
    ) -> Result<CourierLogResponse, StatsError> {
        if courier_id.is_empty() {
            return Err(StatsError::Invalid("courier_id: is empty".into()));
        }
        let limit = if limit == 0 { 100 } else { limit.min(1000) } as i64;
        let client = self
            .pool
            .get()
            .await
            .map_err(|e| StatsError::Db(e.to_string()))?;
        let rows = client
            .query(
                "SELECT call_id, started_at, coalesce(store_phone, ''), answered,
                        coalesce(talk_ms, 0), coalesce(recording_url, '')
                   FROM call_router.calls
                  WHERE courier_id = $1 ORDER BY started_at DESC NULLS LAST LIMIT $2",
                &[&courier_id, &limit],
            )
            .await
            .map_err(|e| StatsError::Db(e.to_string()))?;
        Ok(CourierLogResponse {
            calls: rows
                .iter()
                .map(|r| {
                    let at: Option<std::time::SystemTime> = r.get(1);
                    CourierCall {
                        call_id: r.get(0),
                        started_at: at
                            .and_then(|t| jiff::Timestamp::try_from(t).ok())
                            .map(to_proto_time),
                        store_phone: r.get(2),
                        answered: r.get(3),
                        talk: Some(to_proto_duration(Duration::from_millis(
                            r.get::<_, i64>(4) as u64
                        ))),
                        recording_url: r.get(5),
                    }
                })
                .collect(),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("{0}")]
    Invalid(String),
    #[error("database: {0}")]
    Db(String),
}

impl From<StatsError> for Status {
    fn from(e: StatsError) -> Self {
        match e {
            StatsError::Invalid(m) => Status::invalid_argument(m),
            StatsError::Db(m) => Status::unavailable(m),
        }
    }
}

impl From<StatsError> for ApiError {
    fn from(e: StatsError) -> Self {
        match e {
            StatsError::Invalid(m) => ApiError::malformed(m),
            StatsError::Db(m) => ApiError::unavailable(m),
        }
    }
}

#[tonic::async_trait]
impl RoutingStats for Stats {
    async fn daily(
        &self,
        request: Request<DailyRequest>,
    ) -> Result<Response<DailyResponse>, Status> {
        let r = request.into_inner();
        Ok(Response::new(
            Stats::daily(self, &r.from_day, &r.to_day).await?,
        ))
    }

    async fn courier_log(
        &self,
        request: Request<CourierLogRequest>,
    ) -> Result<Response<CourierLogResponse>, Status> {
        let r = request.into_inner();
        Ok(Response::new(
            Stats::courier_log(self, &r.courier_id, r.limit).await?,
        ))
    }
}

#[derive(Deserialize)]
struct DailyQuery {
    #[serde(default)]
    from_day: String,
    #[serde(default)]
    to_day: String,
}

#[derive(Deserialize)]
struct LogQuery {
    #[serde(default)]
    limit: u32,
}

/// `GET /stats/daily` and `GET /stats/couriers/{courier_id}`: the gRPC
/// answers as JSON.
pub fn routes(stats: Stats) -> Router {
    Router::new()
        .route("/stats/daily", get(daily_json))
        .route("/stats/couriers/{courier_id}", get(courier_json))
        .with_state(stats)
}

async fn daily_json(
    State(stats): State<Stats>,
    Query(q): Query<DailyQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let days = stats.daily(&q.from_day, &q.to_day).await?;
    Ok(Json(serde_json::json!({
        "days": days.days.iter().map(|d| serde_json::json!({
            "day": d.day, "calls": d.calls, "by_caller": d.by_caller, "answered_by": d.answered_by,
            "unanswered": d.unanswered, "escalations": d.escalations,
            "time_to_answer_avg_ms": d.time_to_answer_avg_ms, "time_to_answer_max_ms": d.time_to_answer_max_ms,
            "masking_calls": d.masking_calls, "masking_bridged": d.masking_bridged,
            "masking_sessions_used": d.masking_sessions_used, "fallbacks": d.fallbacks,
        })).collect::<Vec<_>>()
    })))
}

async fn courier_json(
    State(stats): State<Stats>,
    Path(courier_id): Path<String>,
    Query(q): Query<LogQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let log = stats.courier_log(&courier_id, q.limit).await?;
    Ok(Json(serde_json::json!({
        "calls": log.calls.iter().map(|c| serde_json::json!({
            "call_id": c.call_id,
            "started_at": c.started_at.as_ref().and_then(from_proto_time).map(|t| t.to_string()),
            "store_phone": c.store_phone, "answered": c.answered,
            "talk_ms": millis(c.talk.as_ref()), "recording_url": c.recording_url,
        })).collect::<Vec<_>>()
    })))
}
