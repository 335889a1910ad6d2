//! The events of each decision are made durable here, in the router's own
//! table, before the PBX gets its answer, and a forwarder appends them to
//! the event log behind it. A decision thus costs one insert (batched with
//! the decisions made at the same moment) instead of a round trip through
//! the event store, and a slow or absent event store never slows a call
//! down: nothing answered is lost, it only reaches the log later.
//!
//! Order: one forwarder at a time (a transaction-level advisory lock, so any
//! replica may run it) appends in insertion order, so a call's events reach
//! its stream in the order they were decided. Appends are idempotent on
//! event ids, so a forwarder that dies between append and delete only
//! repeats appends the store ignores.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use futures::StreamExt;
use prost::Message;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use kit::proto::eventstore::v1::NewEvent;
use kit::store_client::{EventStoreClient, Expected};

/// An arbitrary constant naming the forwarder's advisory lock.
const FORWARDER_LOCK: i64 = 0x6361_6c6c_726f_7574; // "callrout"
/// Rows forwarded per round.
const BATCH: i64 = 1_000;
/// Decisions written together at most.
const WRITE_BATCH: usize = 512;
/// Batches being written at once.
const WRITERS: usize = 3;

struct Job {
    stream: String,
    events: Vec<Vec<u8>>,
    /// When the answer these events record is given up for: the write must
    /// commit before, or not at all (the PBX then gets the fallback, whose
    /// own events tell what happened).
    deadline: Option<Instant>,
    done: oneshot::Sender<Result<(), String>>,
}

/// Kept free of a deadline for the commit itself and the way back.
const COMMIT_MARGIN: Duration = Duration::from_millis(25);

/// Writes decisions' events durably; cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    jobs: mpsc::Sender<Job>,
    wake: Arc<Notify>,
}

#[derive(Debug, thiserror::Error)]
#[error("outbox: {0}")]
pub struct OutboxError(String);

impl Outbox {
    /// Starts the writer (it stops when every clone is dropped).
    pub fn start(pool: Pool) -> Self {
        let (jobs, receiver) = mpsc::channel(4 * WRITE_BATCH);
        let wake = Arc::new(Notify::new());
        // A few writers: while one batch waits for its commit (the WAL
        // flush), the next is already on its way, and Postgres flushes
        // their commits together.
        let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
        for _ in 0..WRITERS {
            tokio::spawn(write_loop(pool.clone(), receiver.clone(), wake.clone()));
        }
        Self { jobs, wake }
    }

    /// Writes `events` of `stream`; returns once they are committed. With a
    /// `deadline`, they are committed before it or not at all.
    pub async fn write(
        &self,
        stream: &str,
        events: &[NewEvent],
        deadline: Option<Instant>,
    ) -> Result<(), OutboxError> {
        if events.is_empty() {
            return Ok(());
        }
        let (done, result) = oneshot::channel();
        let job = Job {
            stream: stream.to_owned(),
            events: events.iter().map(|e| e.encode_to_vec()).collect(),
            deadline,
            done,
        };
        self.jobs
            .send(job)
            .await
            .map_err(|_| OutboxError("the writer has stopped".into()))?;
        result
            .await
            .map_err(|_| OutboxError("the writer has stopped".into()))?
            .map_err(OutboxError)
    }

    /// Writes `events` in the background, retrying until it succeeds: for
    /// the fallback's records, which must not wait for a stalled database.
    pub fn write_later(&self, stream: String, events: Vec<NewEvent>) {
        let outbox = self.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(100);
            loop {
                match outbox.write(&stream, &events, None).await {
                    Ok(()) => return,
                    Err(error) => {
                        tracing::warn!(%error, %stream, "fallback events not yet written; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            }
        });
    }

    /// Wakes the forwarder now (rows were written).
    pub fn notifier(&self) -> Arc<Notify> {
        self.wake.clone()
    }
}

/// Takes whatever decisions are waiting and writes them in one statement,
/// on a connection of its own.
async fn write_loop(
    pool: Pool,
    jobs: Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>,
    wake: Arc<Notify>,
) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    let mut connection: Option<deadpool_postgres::Object> = None;
    while jobs.lock().await.recv_many(&mut batch, WRITE_BATCH).await > 0 {
        // Decisions whose answer was already given up for are not written:
        // the PBX got the fallback instead.
        let now = Instant::now();
        let (late, live): (Vec<Job>, Vec<Job>) = batch.drain(..).partition(|job| {
            job.done.is_closed() || job.deadline.is_some_and(|d| d <= now + COMMIT_MARGIN)
        });
        for job in late {
            let _ = job.done.send(Err("too late".into()));
        }
        if live.is_empty() {
            continue;
        }
        // The statement may run only until the earliest deadline: a stalled
        // database must not commit, seconds later, a decision the PBX never
        // got.
        let limit = live.iter().filter_map(|job| job.deadline).min().map(|d| {
            d.saturating_duration_since(now + COMMIT_MARGIN)
                .max(Duration::from_millis(1))
        });
        let mut streams = Vec::new();
        let mut events = Vec::new();
        for job in &live {
            for event in &job.events {
                streams.push(job.stream.as_str());
                events.push(event.as_slice());
            }
        }
        let result = async {
            if connection.is_none() {
                connection = Some(pool.get().await.map_err(|e| e.to_string())?);
            }
            let client = connection.as_ref().expect("just connected");
            let timeout = limit.map_or(0, |d| d.as_millis().max(1));
            client
                .batch_execute(&format!("SET statement_timeout = {timeout}"))
                .await
                .map_err(|e| e.to_string())?;
            let sql = client
                .prepare_cached(
                    "INSERT INTO call_router.outbox (stream, event)
                     SELECT * FROM unnest($1::text[], $2::bytea[])",
                )
                .await
                .map_err(|e| e.to_string())?;
            client
                .execute(&sql, &[&streams, &events])
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        let result = result.map(|_| ());
        match &result {
            Ok(()) => wake.notify_one(),
            // A broken connection is replaced; a timeout leaves it usable.
            Err(_) => {
                if connection.as_ref().is_some_and(|c| c.is_closed()) {
                    connection = None;
                }
            }
        }
        for job in live {
            let _ = job.done.send(result.clone());
        }
    }
}

/// Appends what the outbox holds to the log until `shutdown`: each round
/// one `AppendBatch` of every stream it holds, so a round of a thousand
/// events from hundreds of calls costs one request, not hundreds.
pub async fn forward(
    pool: Pool,
    store: EventStoreClient,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match forward_round(&pool, &store).await {
            Ok(0) => {
                backoff = Duration::from_millis(100);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = wake.notified() => {}
                    // Rows other replicas wrote wake nobody here.
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
            Ok(_) => {
                backoff = Duration::from_millis(100);
                if shutdown.is_cancelled() {
                    return;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "outbox not forwarded; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Appends a stream's events one by one, in order: for a batch whose ids
/// are partly in the log already (a fallback's events travel in the call's
/// token and are also written in the background: whichever copy lands
/// first counts), which the store refuses whole; a duplicate alone is
/// accepted and writes nothing.
async fn append_in_order(
    store: &EventStoreClient,
    stream: &str,
    events: Vec<NewEvent>,
) -> Result<(), kit::store_client::AppendError> {
    for event in events {
        store.append(stream, Expected::Any, vec![event]).await?;
    }
    Ok(())
}

/// A stream's rows in a round: their ids, the distinct events, the event
/// ids seen.
type Pending = (Vec<i64>, Vec<NewEvent>, HashSet<String>);

/// One batch: append, delete what was appended. Returns the rows done.
async fn forward_round(pool: &Pool, store: &EventStoreClient) -> Result<usize, String> {
    let mut client = pool.get().await.map_err(|e| e.to_string())?;
    let tx = client.transaction().await.map_err(|e| e.to_string())?;
    let locked: bool = tx
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&FORWARDER_LOCK])
        .await
        .map_err(|e| e.to_string())?
        .get(0);
    if !locked {
        return Ok(0);
    }
    let rows = tx
        .query(
            "SELECT id, stream, event FROM call_router.outbox ORDER BY id LIMIT $1",
            &[&BATCH],
        )
        .await
        .map_err(|e| e.to_string())?;
    // Rows waiting (up to one batch: "at least this many").
    metrics::gauge!("call_router_outbox_rows").set(rows.len() as f64);
    if rows.is_empty() {
        return Ok(0);
    }
    // Per stream, in order; a decision the PBX made us take twice holds the
    // same event ids twice, which one append must not carry.
    let mut streams: BTreeMap<String, Pending> = BTreeMap::new();
    for row in &rows {
        let id: i64 = row.get(0);
        let stream: String = row.get(1);
        let bytes: Vec<u8> = row.get(2);
        let event = NewEvent::decode(bytes.as_slice()).map_err(|e| e.to_string())?;
        let entry = streams.entry(stream).or_default();
        entry.0.push(id);
        if entry.2.insert(event.event_id.clone()) {
            entry.1.push(event);
        }
    }
    // One request for the whole round; a stream whose ids are partly in
    // the log already goes again event by event.
    let (names, pending): (Vec<String>, Vec<Pending>) = streams.into_iter().unzip();
    let appends = names
        .iter()
        .zip(&pending)
        .map(|(stream, (_, events, _))| (stream.clone(), Expected::Any, events.clone()))
        .collect();
    let outcomes = store
        .append_batch(appends)
        .await
        .map_err(|e| e.to_string())?;
    let done: Vec<Vec<i64>> = futures::stream::iter(names.into_iter().zip(pending).zip(outcomes))
        .map(|((stream, (ids, events, _)), outcome)| async move {
            let outcome = match outcome {
                Err(kit::store_client::AppendError::Invalid(_)) if events.len() > 1 => {
                    append_in_order(store, &stream, events).await
                }
                other => other.map(|_| ()),
            };
            match outcome {
                Ok(()) => Some(ids),
                Err(error) => {
                    tracing::warn!(%error, %stream, "outbox append failed; kept for the next round");
                    None
                }
            }
        })
        .buffer_unordered(8)
        .filter_map(|ids| async move { ids })
        .collect()
        .await;
    let ids: Vec<i64> = done.into_iter().flatten().collect();
    tx.execute("DELETE FROM call_router.outbox WHERE id = ANY($1)", &[&ids])
        .await
        .map_err(|e| e.to_string())?;
    tx.commit().await.map_err(|e| e.to_string())?;
    if ids.len() < rows.len() {
        return Err(format!("{} rows not appended", rows.len() - ids.len()));
    }
    Ok(ids.len())
}
