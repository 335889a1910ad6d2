//! Event store throughput, against raw Postgres in the same run.
//!
//! - Append: events/s through the gRPC API at batch sizes 1, 10, 100 with 1,
//!   8 and 32 concurrent writers, and raw `INSERT`s of the same rows into a
//!   plain table with the same indexes (`LIKE eventlog.events INCLUDING
//!   ALL`, no triggers), with the same batching, through tokio-postgres.
//!   Target: append ≥ 0.5 × raw in every cell.
//! - Replay: events/s of reading 1,000,000 events through `ReadAll` versus
//!   `COPY (SELECT …) TO STDOUT` of the same table. Target: ≥ 0.5 × COPY.
//!
//! Each cell alternates three rounds of raw and append and keeps the best of
//! each. Writes `target/bench/event_store.json`. Settings:
//! `BENCH_CELL_SECONDS` per round (default 1), `BENCH_REPLAY_EVENTS`
//! (default 1000000). The store runs in
//! this process with its relay off, on a throw-away database of the server
//! in `CALLFLOW_TEST_DATABASE_URL`.
//!
//! `cargo bench -p event-store --bench event_store` (or `make bench BENCH=event_store`)

use kit::bench::env_number;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use prost::Message as _;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use event_store::schema::EVENT_COLUMNS;
use event_store::testing::TestStore;
use kit::bench::{BenchResult, report};
use kit::events::new_event;
use kit::proto::events::v1::{CallCompleted, CallDirection};
use kit::proto::eventstore::v1::{NewEvent, ReadAllRequest};
use kit::store_client::Expected;

const BENCH: &str = "event_store";
/// Rounds per cell, alternating raw and append.
const ROUNDS: usize = 3;

/// A realistic payload (~150 bytes).
fn payload() -> Vec<u8> {
    CallCompleted {
        provider: "exolve".into(),
        call_id: "439166538239448536".into(),
        direction: CallDirection::Inbound as i32,
        from: "+79161234567".into(),
        to: "+74951234567".into(),
        started_at: Some(prost_types::Timestamp {
            seconds: 1_795_000_000,
            nanos: 0,
        }),
        duration: Some(prost_types::Duration {
            seconds: 125,
            nanos: 0,
        }),
        manager_id: "manager-17".into(),
        recording_url: "https://api.exolve.ru/records/439166538239448536.mp3".into(),
        client_phone: "+79161234567".into(),
    }
    .encode_to_vec()
}

fn events(n: usize, payload: &[u8]) -> Vec<NewEvent> {
    (0..n)
        .map(|_| {
            let mut event = new_event(Uuid::new_v4(), None, &CallCompleted::default());
            event.payload = payload.to_vec();
            event
        })
        .collect()
}

async fn append_cell(
    store: &TestStore,
    batch: usize,
    writers: usize,
    duration: Duration,
    payload: Arc<Vec<u8>>,
    cell: &str,
) -> f64 {
    let written = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let client = store.client.clone();
            let written = written.clone();
            let payload = payload.clone();
            let stream = format!("bench-{cell}-{w}");
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    client
                        .append(&stream, Expected::Any, events(batch, &payload))
                        .await
                        .expect("append");
                    written.fetch_add(batch as u64, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("writer");
    }
    written.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

const RAW_COLUMNS: &str = "event_id, stream, version, category, type, occurred_at, correlation_id, causation_id, traceparent, tracestate, producer, payload";

async fn raw_cell(
    url: &str,
    batch: usize,
    writers: usize,
    duration: Duration,
    payload: Arc<Vec<u8>>,
    cell: &str,
) -> f64 {
    let written = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let mut clients = Vec::new();
    for _ in 0..writers {
        clients.push(kit::db::connect(url).await.expect("connect"));
    }
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(w, client)| {
            let written = written.clone();
            let payload = payload.clone();
            let stream = format!("raw-{cell}-{w}");
            tokio::spawn(async move {
                let single = client
                    .prepare(&format!("INSERT INTO bench.raw_events ({RAW_COLUMNS}) VALUES ($1, $2, $3, 'raw', 'CallCompleted', $4, $1, NULL, '', '', 'bench', $5)"))
                    .await
                    .unwrap();
                let many = client
                    .prepare(&format!(
                        "INSERT INTO bench.raw_events ({RAW_COLUMNS})
                         SELECT u.id, $2, u.version, 'raw', 'CallCompleted', $4, u.id, NULL, '', '', 'bench', $5
                         FROM unnest($1::uuid[], $3::int8[]) AS u(id, version)"
                    ))
                    .await
                    .unwrap();
                let mut version: i64 = 0;
                while Instant::now() < deadline {
                    let now = SystemTime::now();
                    if batch == 1 {
                        version += 1;
                        let params: [&(dyn ToSql + Sync); 5] = [&Uuid::new_v4(), &stream, &version, &now, &*payload];
                        client.execute(&single, &params).await.unwrap();
                    } else {
                        let ids: Vec<Uuid> = (0..batch).map(|_| Uuid::new_v4()).collect();
                        let versions: Vec<i64> = (1..=batch as i64).map(|v| version + v).collect();
                        version += batch as i64;
                        let params: [&(dyn ToSql + Sync); 5] = [&ids, &stream, &versions, &now, &*payload];
                        client.batch_execute("BEGIN").await.unwrap();
                        client.execute(&many, &params).await.unwrap();
                        client.batch_execute("COMMIT").await.unwrap();
                    }
                    written.fetch_add(batch as u64, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("writer");
    }
    written.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// Fills the store with `n` events, 1000 per append, 4 writers.
async fn load(store: &TestStore, n: u64, payload: Arc<Vec<u8>>) {
    let next = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..4)
        .map(|w| {
            let client = store.client.clone();
            let next = next.clone();
            let payload = payload.clone();
            tokio::spawn(async move {
                loop {
                    let start = next.fetch_add(1000, Ordering::Relaxed);
                    if start >= n {
                        break;
                    }
                    let size = (n - start).min(1000) as usize;
                    client
                        .append(
                            &format!("call-load-{w}"),
                            Expected::Any,
                            events(size, &payload),
                        )
                        .await
                        .expect("load");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

async fn replay_read_all(store: &TestStore) -> (u64, f64) {
    let started = Instant::now();
    let mut stream = store
        .client
        .grpc()
        .read_all(ReadAllRequest {
            after_position: 0,
            to_position: 0,
            filter: None,
            batch_size: 1000,
        })
        .await
        .unwrap()
        .into_inner();
    let mut count = 0u64;
    while let Some(response) = stream.message().await.unwrap() {
        count += response.events.len() as u64;
    }
    (count, count as f64 / started.elapsed().as_secs_f64())
}

async fn replay_copy(url: &str) -> (u64, f64) {
    let client = kit::db::connect(url).await.unwrap();
    let started = Instant::now();
    let copy = client
        .copy_out(&format!(
            "COPY (SELECT {EVENT_COLUMNS} FROM eventlog.events ORDER BY position) TO STDOUT"
        ))
        .await
        .unwrap();
    let mut copy = std::pin::pin!(copy);
    let mut rows = 0u64;
    while let Some(chunk) = copy.next().await {
        rows += chunk.unwrap().iter().filter(|b| **b == b'\n').count() as u64;
    }
    (rows, rows as f64 / started.elapsed().as_secs_f64())
}

fn cell_result(case: String, append: f64, raw: f64) -> BenchResult {
    let ratio = append / raw;
    BenchResult {
        bench: BENCH.into(),
        case,
        value: append,
        unit: "events/s".into(),
        baseline: Some("raw INSERT, same rows, indexes and batching".into()),
        baseline_value: Some(raw),
        ratio: Some(ratio),
        target: "ratio >= 0.5".into(),
        met: ratio >= 0.5,
    }
}

#[tokio::main]
async fn main() {
    let duration = Duration::from_secs(env_number("BENCH_CELL_SECONDS", 1));
    let replay_events = env_number("BENCH_REPLAY_EVENTS", 1_000_000);
    let payload = Arc::new(payload());

    let mut results = Vec::new();
    {
        let store = TestStore::start(false).await;
        let admin = store.db.connect().await;
        admin
            .batch_execute("CREATE SCHEMA bench; CREATE TABLE bench.raw_events (LIKE eventlog.events INCLUDING ALL);")
            .await
            .unwrap();
        for batch in [1usize, 10, 100] {
            for writers in [1usize, 8, 32] {
                // Alternate short rounds and keep the best of each, so that a
                // checkpoint or autovacuum hitting one round does not decide.
                let (mut raw, mut append) = (0f64, 0f64);
                for round in 0..ROUNDS {
                    let cell = format!("b{batch}w{writers}r{round}");
                    raw = raw.max(
                        raw_cell(
                            &store.db.url,
                            batch,
                            writers,
                            duration,
                            payload.clone(),
                            &cell,
                        )
                        .await,
                    );
                    append = append.max(
                        append_cell(&store, batch, writers, duration, payload.clone(), &cell).await,
                    );
                }
                let result = cell_result(
                    format!("append, batch {batch}, {writers} writers"),
                    append,
                    raw,
                );
                eprintln!(
                    "{}: append {append:.0}/s, raw {raw:.0}/s, ratio {:.2}",
                    result.case,
                    result.ratio.unwrap()
                );
                results.push(result);
            }
        }
    }

    {
        let store = TestStore::start(false).await;
        eprintln!("loading {replay_events} events for the replay…");
        load(&store, replay_events, payload.clone()).await;
        let admin = store.db.connect().await;
        admin
            .batch_execute("VACUUM ANALYZE eventlog.events")
            .await
            .unwrap();
        // Warm the cache once, then take the best of two for each.
        let _ = replay_copy(&store.db.url).await;
        let mut copy_best = 0f64;
        let mut read_best = 0f64;
        for _ in 0..2 {
            let (rows, copy) = replay_copy(&store.db.url).await;
            assert_eq!(rows, replay_events);
            let (count, read) = replay_read_all(&store).await;
            assert_eq!(count, replay_events);
            copy_best = copy_best.max(copy);
            read_best = read_best.max(read);
        }
        let ratio = read_best / copy_best;
        eprintln!("replay: ReadAll {read_best:.0}/s, COPY {copy_best:.0}/s, ratio {ratio:.2}");
        results.push(BenchResult {
            bench: BENCH.into(),
            case: format!("replay {replay_events} events through ReadAll"),
            value: read_best,
            unit: "events/s".into(),
            baseline: Some("COPY (SELECT …) TO STDOUT of the same table".into()),
            baseline_value: Some(copy_best),
            ratio: Some(ratio),
            target: "ratio >= 0.5".into(),
            met: ratio >= 0.5,
        });
    }

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    report(&root, BENCH, &results).expect("write report");
}
