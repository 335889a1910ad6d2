//! Appending: one writer task per event-store process commits the appends of
//! all concurrent callers in one statement ("group commit").
//!
//! Appends must be serialised anyway for the log to have one global order
//! (see the migration), so instead of every caller queueing on the advisory
//! lock with its own transaction, callers queue on a channel and the writer
//! takes whatever is waiting, up to a limit, and commits it at once. Each
//! request stays atomic: a rejected request writes nothing, the accepted
//! ones commit together.
//!
//! A group holds at most one request per stream and per event id (later ones
//! wait for the next group, in order), which allows a fast path: one plain
//! `INSERT … SELECT` that computes the versions, checks expected versions and
//! lets the unique indexes catch duplicates, in one round trip and its
//! implicit transaction. When it reports a problem (an event id already in
//! the log, a version taken by another replica, an expectation not met), the
//! group goes through `eventlog.append_group`, which decides every request
//! exactly (idempotent duplicates, conflicts, current versions).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use kit::health::Health;

use crate::notify;
use kit::store_client::Expected;

/// An event that passed validation, ready to be written.
#[derive(Debug, Clone)]
pub struct ValidEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub occurred_at: Option<SystemTime>,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    pub traceparent: String,
    pub tracestate: String,
    pub payload: Vec<u8>,
}

/// A validated append request.
#[derive(Debug)]
pub struct AppendJob {
    pub stream: String,
    pub category: String,
    pub expected: Expected,
    pub producer: String,
    pub events: Vec<ValidEvent>,
}

/// The outcome of a successful append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub positions: Vec<u64>,
    pub stream_version: u64,
    pub duplicate: bool,
}

/// Why an append was not written.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AppendFailure {
    #[error("stream is at version {current}")]
    WrongExpectedVersion { current: u64 },
    #[error("{0}")]
    Conflict(String),
    #[error("database unavailable: {0}")]
    Unavailable(String),
}

type Reply = oneshot::Sender<Result<Appended, AppendFailure>>;

/// The handle callers append through.
#[derive(Clone)]
pub struct Appender {
    jobs: mpsc::Sender<(AppendJob, Reply)>,
}

impl Appender {
    pub async fn append(&self, job: AppendJob) -> Result<Appended, AppendFailure> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send((job, reply))
            .await
            .map_err(|_| AppendFailure::Unavailable("event store is shutting down".into()))?;
        answer
            .await
            .map_err(|_| AppendFailure::Unavailable("writer stopped".into()))?
    }
}

/// Limits of one group commit.
#[derive(Debug, Clone, Copy)]
pub struct GroupLimits {
    /// Most events written in one transaction.
    pub max_events: usize,
}

/// Starts the writer task. `committed` is moved to the log's head after
/// every commit, to wake subscribers and the relay.
pub fn start(
    database_url: String,
    limits: GroupLimits,
    committed: Arc<watch::Sender<u64>>,
    health: Health,
    shutdown: CancellationToken,
) -> (Appender, tokio::task::JoinHandle<()>) {
    let (jobs, queue) = mpsc::channel(4096);
    let task = tokio::spawn(writer(
        database_url,
        limits,
        queue,
        committed,
        health,
        shutdown,
    ));
    (Appender { jobs }, task)
}

async fn writer(
    database_url: String,
    limits: GroupLimits,
    mut queue: mpsc::Receiver<(AppendJob, Reply)>,
    committed: Arc<watch::Sender<u64>>,
    health: Health,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    'connect: loop {
        let writer = match Writer::connect(&database_url).await {
            Ok(writer) => {
                health.set("postgres", true);
                backoff = Duration::from_millis(100);
                writer
            }
            Err(error) => {
                health.set("postgres", false);
                tracing::warn!(%error, "writer cannot reach Postgres; retrying");
                // Callers waiting now get an answer they can retry on.
                while let Ok((_, reply)) = queue.try_recv() {
                    let _ = reply.send(Err(AppendFailure::Unavailable(error.to_string())));
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue 'connect;
            }
        };
        let mut held_back = VecDeque::new();
        loop {
            // Finish what was accepted before shutdown, then stop.
            let first = match held_back.pop_front() {
                Some(job) => Some(job),
                None => tokio::select! {
                    biased;
                    job = queue.recv() => job,
                    _ = shutdown.cancelled() => { queue.close(); queue.recv().await }
                },
            };
            let Some(first) = first else { return };
            let mut group = vec![first];
            let mut events = group[0].0.events.len();
            while events < limits.max_events {
                match held_back
                    .pop_front()
                    .map(Ok)
                    .unwrap_or_else(|| queue.try_recv())
                {
                    Ok(job) => {
                        events += job.0.events.len();
                        group.push(job);
                    }
                    Err(_) => break,
                }
            }
            // One request per stream and per event id in a group: a later
            // request on the same stream waits for the next group (so its
            // versions follow the earlier one's), and so does a retry of an
            // event still waiting here (it will then be a plain duplicate).
            let mut streams = HashSet::new();
            let mut ids = HashSet::new();
            let (group, later): (Vec<_>, Vec<_>) = group.into_iter().partition(|(job, _)| {
                streams.insert(job.stream.clone())
                    && job.events.iter().all(|e| ids.insert(e.event_id))
            });
            held_back.extend(later);
            let (jobs, replies): (Vec<AppendJob>, Vec<Reply>) = group.into_iter().unzip();
            let started = std::time::Instant::now();
            match writer.commit_group(&jobs).await {
                Ok(outcomes) => {
                    metrics::histogram!("callflow_eventstore_group_commit_seconds")
                        .record(started.elapsed().as_secs_f64());
                    metrics::histogram!("callflow_eventstore_group_requests")
                        .record(jobs.len() as f64);
                    let written: usize = outcomes
                        .iter()
                        .filter_map(|o| o.as_ref().ok())
                        .filter(|a| !a.duplicate)
                        .map(|a| a.positions.len())
                        .sum();
                    metrics::counter!("callflow_eventstore_events_appended_total")
                        .increment(written as u64);
                    // Positions commit in order (the append lock), so
                    // everything up to the highest one written is readable.
                    let head = outcomes
                        .iter()
                        .filter_map(|o| o.as_ref().ok())
                        .filter(|a| !a.duplicate)
                        .filter_map(|a| a.positions.last().copied())
                        .max();
                    if let Some(head) = head {
                        notify::advance(&committed, head);
                    }
                    for (reply, outcome) in replies.into_iter().zip(outcomes) {
                        let _ = reply.send(outcome);
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "group commit failed");
                    for reply in replies {
                        let _ = reply.send(Err(AppendFailure::Unavailable(error.to_string())));
                    }
                    if writer.client.is_closed() {
                        health.set("postgres", false);
                        continue 'connect;
                    }
                }
            }
        }
    }
}

/// The writer's connection and its statements.
struct Writer {
    client: Client,
    single: tokio_postgres::Statement,
    fast: tokio_postgres::Statement,
    exact: tokio_postgres::Statement,
}

/// The fast path for the most common group, one request of one event: the
/// same as [`FAST_APPEND`] with a plan a fraction of its cost.
const SINGLE_APPEND: &str = "
INSERT INTO eventlog.events (event_id, stream, version, category, type, occurred_at, correlation_id, causation_id,
                             traceparent, tracestate, producer, payload)
SELECT $1, $2, c.version + 1, $3, $4, coalesce($5, clock_timestamp()), $6, $7, $8, $9, $10, $11
  FROM (SELECT coalesce(max(e.version), 0) AS version FROM eventlog.events e WHERE e.stream = $2) AS c
 WHERE $12::int8 IS NULL OR $12 = c.version
RETURNING event_id, position, version";

/// The fast path: versions from the streams' current ones, requests whose
/// expected version does not hold are filtered out, duplicates and races
/// make the unique indexes fail the whole statement.
const FAST_APPEND: &str = "
WITH input AS (
    SELECT * FROM unnest($1::int4[], $2::text[], $3::text[], $4::int8[], $5::text[], $6::int8[], $7::uuid[],
                         $8::text[], $9::timestamptz[], $10::uuid[], $11::uuid[], $12::text[], $13::text[], $14::bytea[])
        WITH ORDINALITY AS u(request, stream, category, expected, producer, step, event_id, type, occurred_at,
                             correlation_id, causation_id, traceparent, tracestate, payload, ord)
), current AS MATERIALIZED (
    SELECT s.stream, coalesce((SELECT max(e.version) FROM eventlog.events e WHERE e.stream = s.stream), 0) AS version
      FROM (SELECT DISTINCT stream FROM input) AS s
)
INSERT INTO eventlog.events (event_id, stream, version, category, type, occurred_at, correlation_id, causation_id,
                             traceparent, tracestate, producer, payload)
SELECT u.event_id, u.stream, c.version + u.step, u.category, u.type, coalesce(u.occurred_at, clock_timestamp()),
       u.correlation_id, u.causation_id, u.traceparent, u.tracestate, u.producer, u.payload
  FROM input u JOIN current c ON c.stream = u.stream
 WHERE u.expected IS NULL OR u.expected = c.version
 ORDER BY u.ord
RETURNING event_id, position, version";

impl Writer {
    async fn connect(url: &str) -> Result<Self, kit::db::DbError> {
        let client = kit::db::connect(url).await?;
        // Every query of the group commit is a lookup by a unique index.
        // While the log grows fast, table statistics lag behind and the
        // planner may think the table tiny and scan it whole, which costs
        // milliseconds per append on a large log; forbid that.
        client.batch_execute("SET enable_seqscan = off").await?;
        // The plans do not depend on the values; planning the statements
        // again for every group would cost more than running them.
        client
            .batch_execute("SET plan_cache_mode = force_generic_plan")
            .await?;
        let single = client
            .prepare_typed(
                SINGLE_APPEND,
                &[
                    Type::UUID,
                    Type::TEXT,
                    Type::TEXT,
                    Type::TEXT,
                    Type::TIMESTAMPTZ,
                    Type::UUID,
                    Type::UUID,
                    Type::TEXT,
                    Type::TEXT,
                    Type::TEXT,
                    Type::BYTEA,
                    Type::INT8,
                ],
            )
            .await?;
        let fast = client.prepare(FAST_APPEND).await?;
        let exact = client
            .prepare_typed(
                "SELECT request, outcome, detail, stream_version, event_position
                 FROM eventlog.append_group($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                &[
                    Type::TEXT_ARRAY, Type::TEXT_ARRAY, Type::INT8_ARRAY, Type::TEXT_ARRAY, Type::INT4_ARRAY,
                    Type::UUID_ARRAY, Type::TEXT_ARRAY, Type::TIMESTAMPTZ_ARRAY, Type::UUID_ARRAY,
                    Type::UUID_ARRAY, Type::TEXT_ARRAY, Type::TEXT_ARRAY, Type::BYTEA_ARRAY,
                ],
            )
            .await?;
        Ok(Self {
            client,
            single,
            fast,
            exact,
        })
    }

    /// Writes one group: the fast path, then the exact one for the requests
    /// it could not settle. The outer error means nothing was written — or,
    /// if the connection broke while committing, that the outcome is unknown;
    /// callers retry, which is safe because appends are idempotent.
    async fn commit_group(
        &self,
        jobs: &[AppendJob],
    ) -> Result<Vec<Result<Appended, AppendFailure>>, tokio_postgres::Error> {
        let unsettled: Vec<usize> = match self.fast_path(jobs).await {
            Ok(outcomes) => {
                let unsettled: Vec<usize> =
                    (0..jobs.len()).filter(|i| outcomes[*i].is_none()).collect();
                if unsettled.is_empty() {
                    return Ok(outcomes
                        .into_iter()
                        .map(|o| Ok(o.expect("settled")))
                        .collect());
                }
                // Some expectations did not hold: the exact path says why,
                // for those requests only.
                let retry: Vec<&AppendJob> = unsettled.iter().map(|i| &jobs[*i]).collect();
                let exact = self.exact_path(&retry).await?;
                let mut exact = exact.into_iter();
                return Ok(outcomes
                    .into_iter()
                    .map(|o| match o {
                        Some(appended) => Ok(appended),
                        None => exact.next().expect("one outcome per retried request"),
                    })
                    .collect());
            }
            Err(error) if error.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                (0..jobs.len()).collect()
            }
            Err(error) => return Err(error),
        };
        let all: Vec<&AppendJob> = unsettled.iter().map(|i| &jobs[*i]).collect();
        self.exact_path(&all).await
    }

    /// One statement for the whole group. `None` for a request whose
    /// expected version did not hold.
    async fn fast_path(
        &self,
        jobs: &[AppendJob],
    ) -> Result<Vec<Option<Appended>>, tokio_postgres::Error> {
        if let [job] = jobs
            && let [event] = job.events.as_slice()
        {
            let expected = expected_param(job.expected);
            let params: [&(dyn ToSql + Sync); 12] = [
                &event.event_id,
                &job.stream,
                &job.category,
                &event.event_type,
                &event.occurred_at,
                &event.correlation_id,
                &event.causation_id,
                &event.traceparent,
                &event.tracestate,
                &job.producer,
                &event.payload,
                &expected,
            ];
            let row = self.client.query_opt(&self.single, &params).await?;
            return Ok(vec![row.map(|row| Appended {
                positions: vec![row.get::<_, i64>(1) as u64],
                stream_version: row.get::<_, i64>(2) as u64,
                duplicate: false,
            })]);
        }
        let events: usize = jobs.iter().map(|j| j.events.len()).sum();
        let mut request = Vec::with_capacity(events);
        let mut stream = Vec::with_capacity(events);
        let mut category = Vec::with_capacity(events);
        let mut expected = Vec::with_capacity(events);
        let mut producer = Vec::with_capacity(events);
        let mut step = Vec::with_capacity(events);
        let mut index = HashMap::with_capacity(events);
        for (r, job) in jobs.iter().enumerate() {
            for (k, event) in job.events.iter().enumerate() {
                request.push(r as i32);
                stream.push(job.stream.as_str());
                category.push(job.category.as_str());
                expected.push(expected_param(job.expected));
                producer.push(job.producer.as_str());
                step.push(k as i64 + 1);
                index.insert(event.event_id, (r, k));
            }
        }
        let columns = EventColumns::of(jobs.iter().flat_map(|j| &j.events));
        let params: [&(dyn ToSql + Sync); 14] = [
            &request,
            &stream,
            &category,
            &expected,
            &producer,
            &step,
            &columns.id,
            &columns.event_type,
            &columns.occurred,
            &columns.correlation,
            &columns.causation,
            &columns.traceparent,
            &columns.tracestate,
            &columns.payload,
        ];
        let rows = self.client.query(&self.fast, &params).await?;
        let mut outcomes: Vec<Option<Appended>> = vec![None; jobs.len()];
        for row in rows {
            let (r, _) = index[&row.get::<_, Uuid>(0)];
            let position = row.get::<_, i64>(1) as u64;
            let version = row.get::<_, i64>(2) as u64;
            let appended = outcomes[r].get_or_insert_with(|| Appended {
                positions: Vec::new(),
                stream_version: 0,
                duplicate: false,
            });
            appended.positions.push(position);
            appended.stream_version = appended.stream_version.max(version);
        }
        for appended in outcomes.iter_mut().flatten() {
            appended.positions.sort_unstable();
        }
        Ok(outcomes)
    }

    /// `eventlog.append_group`: decides each request exactly and writes the
    /// accepted ones, in one statement.
    async fn exact_path(
        &self,
        jobs: &[&AppendJob],
    ) -> Result<Vec<Result<Appended, AppendFailure>>, tokio_postgres::Error> {
        let r_stream: Vec<&str> = jobs.iter().map(|j| j.stream.as_str()).collect();
        let r_category: Vec<&str> = jobs.iter().map(|j| j.category.as_str()).collect();
        let r_expected: Vec<Option<i64>> =
            jobs.iter().map(|j| expected_param(j.expected)).collect();
        let r_producer: Vec<&str> = jobs.iter().map(|j| j.producer.as_str()).collect();
        let r_size: Vec<i32> = jobs.iter().map(|j| j.events.len() as i32).collect();
        let columns = EventColumns::of(jobs.iter().flat_map(|j| &j.events));
        let params: [&(dyn ToSql + Sync); 13] = [
            &r_stream,
            &r_category,
            &r_expected,
            &r_producer,
            &r_size,
            &columns.id,
            &columns.event_type,
            &columns.occurred,
            &columns.correlation,
            &columns.causation,
            &columns.traceparent,
            &columns.tracestate,
            &columns.payload,
        ];
        let rows = self.client.query(&self.exact, &params).await?;

        let mut outcomes: Vec<Option<Result<Appended, AppendFailure>>> = vec![None; jobs.len()];
        for row in rows {
            let index = row.get::<_, i32>(0) as usize - 1;
            let outcome: &str = row.get(1);
            let version = row.get::<_, Option<i64>>(3).unwrap_or(0) as u64;
            let position = row.get::<_, Option<i64>>(4).map(|p| p as u64);
            let slot = &mut outcomes[index];
            match (outcome, position) {
                ("appended" | "duplicate", Some(position)) => {
                    let appended = slot.get_or_insert_with(|| {
                        Ok(Appended {
                            positions: Vec::new(),
                            stream_version: version,
                            duplicate: outcome == "duplicate",
                        })
                    });
                    if let Ok(appended) = appended {
                        appended.positions.push(position);
                    }
                }
                ("wrong_version", _) => {
                    *slot = Some(Err(AppendFailure::WrongExpectedVersion {
                        current: version,
                    }))
                }
                (_, _) => {
                    let detail: Option<String> = row.get(2);
                    *slot = Some(Err(AppendFailure::Conflict(
                        detail.unwrap_or_else(|| format!("append refused: {outcome}")),
                    )));
                }
            }
        }
        Ok(outcomes
            .into_iter()
            .map(|outcome| {
                let mut outcome = outcome.unwrap_or_else(|| {
                    Err(AppendFailure::Unavailable(
                        "no outcome for a request".into(),
                    ))
                });
                if let Ok(appended) = &mut outcome {
                    // Positions follow the batch's order, which is log order.
                    appended.positions.sort_unstable();
                }
                outcome
            })
            .collect())
    }
}

/// Expected version as the SQL side takes it: NULL for any, 0 for no stream.
fn expected_param(expected: Expected) -> Option<i64> {
    match expected {
        Expected::Any => None,
        Expected::NoStream => Some(0),
        Expected::Exact(version) => Some(version as i64),
    }
}

/// The per-event columns of a group, as arrays for `unnest`.
struct EventColumns<'a> {
    id: Vec<Uuid>,
    event_type: Vec<&'a str>,
    occurred: Vec<Option<SystemTime>>,
    correlation: Vec<Uuid>,
    causation: Vec<Option<Uuid>>,
    traceparent: Vec<&'a str>,
    tracestate: Vec<&'a str>,
    payload: Vec<&'a [u8]>,
}

impl<'a> EventColumns<'a> {
    fn of(events: impl Iterator<Item = &'a ValidEvent>) -> Self {
        let mut columns = Self {
            id: Vec::new(),
            event_type: Vec::new(),
            occurred: Vec::new(),
            correlation: Vec::new(),
            causation: Vec::new(),
            traceparent: Vec::new(),
            tracestate: Vec::new(),
            payload: Vec::new(),
        };
        for event in events {
            columns.id.push(event.event_id);
            columns.event_type.push(&event.event_type);
            columns.occurred.push(event.occurred_at);
            columns.correlation.push(event.correlation_id);
            columns.causation.push(event.causation_id);
            columns.traceparent.push(&event.traceparent);
            columns.tracestate.push(&event.tracestate);
            columns.payload.push(&event.payload);
        }
        columns
    }
}
