//! The timers under a thundering herd: 1,000,000 pending reminders, of which
//! 100,000 come due at the same instant. Measures fires/s and lateness, and
//! checks that every due reminder fired exactly once and no other did.
//!
//! Set-up, on a throw-away database and JetStream stream: the event store
//! (production defaults, relay on) and the scheduler's schema, then
//! - the 900,000 reminders that never come due (due between 30 and 395 days
//!   after the herd) are written straight into the projection
//!   `scheduler.reminders` with `COPY`: the timers only ever read the
//!   projection, so what these rows contribute to the measurement — a large
//!   table and pending index to claim from — is the same as if they had been
//!   projected from the log, and appending 900,000 events one stream each
//!   would add minutes to every run and change nothing the timers see. They
//!   have no stream in the log, which also makes a stray fire of one of them
//!   impossible to miss;
//! - the 100,000 that fire go through the event store: one
//!   `ReminderScheduled` per `reminder-<id>` stream, appended concurrently
//!   (`Expected::NoStream`), and projected by the scheduler's own projector,
//!   so their rows and stream versions are exactly what the service makes.
//!   Their append rate is the baseline: the store's rate for the same number
//!   of single-event appends to distinct streams, with as many in flight as
//!   the timers use (`fire concurrency × replicas`).
//!
//! Once the projection and the relay have caught up and the table is
//! analysed, the clock (a `TestClock`) is moved one second past the due
//! instant, and the bench waits until 100,000 `ReminderDue` are in the log.
//! Fires/s = 100,000 / (last `ReminderDue`'s `recorded_at` − the moment the
//! clock moved); lateness of a reminder = its `ReminderDue`'s `recorded_at`
//! − that moment (both the same host's clock). Exactly once: in the log,
//! exactly one `ReminderDue` per due reminder, none in any other stream, no
//! `ReminderExpired`; in the projection, 100,000 `due` and 900,000 still
//! `pending`.
//!
//! Targets: ≥ 5,000 fires/s (issue); fired exactly once (issue); lateness
//! p99 ≤ 20 s, the target we derived: at 5,000 fires/s the 99,000th of a
//! herd of 100,000 fires 19.8 s after the instant.
//!
//! Settings: `BENCH_SCHEDULER_PENDING` (default 1000000),
//! `BENCH_SCHEDULER_DUE` (default 100000), `BENCH_SCHEDULER_TIMER_BATCH`
//! and `BENCH_SCHEDULER_FIRE_CONCURRENCY` (default: the service's defaults),
//! `BENCH_SCHEDULER_REPLICAS` (default 1; more replicas claim from the same
//! table with `SKIP LOCKED`, which the exactly-once check then covers too).
//! Writes `target/bench/scheduler.json`.
//!
//! `cargo bench -p reminder-scheduler --bench scheduler` (or `make bench BENCH=scheduler`)

use kit::bench::{env_number, millis};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use jiff::{SignedDuration, Timestamp};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use kit::bench::{BenchResult, report};
use kit::clock::TestClock;
use kit::events::{new_event, to_proto_time};
use kit::proto::events::v1::ReminderScheduled;
use kit::store_client::{EventStoreClient, Expected};
use kit::testing::{TestBus, TestDb, common};

const BENCH: &str = "scheduler";
/// When the herd is due.
const DUE: &str = "2026-12-24T09:00:00Z";
const TEXT: &str = "Здравствуйте! Как договаривались, напоминаем о нашем разговоре.";

/// The event store's and the scheduler's settings: their defaults (as
/// `--help` shows them), on ephemeral ports.
fn configs() -> (event_store::Config, reminder_scheduler::Config) {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Args {
        #[command(flatten)]
        store: event_store::Config,
        #[command(flatten)]
        scheduler: reminder_scheduler::Config,
    }
    let any = "127.0.0.1:0";
    let args = Args::try_parse_from([
        "bench",
        "--event-store-grpc-addr",
        any,
        "--event-store-http-addr",
        any,
        "--reminder-grpc-addr",
        any,
        "--reminder-http-addr",
        any,
    ])
    .expect("bench configuration parses");
    (args.store, args.scheduler)
}

fn phone(n: u64) -> String {
    format!("+7916{:07}", n % 10_000_000)
}

/// Writes `count` pending reminders due far after `due` straight into the
/// projection, with `COPY`.
async fn copy_far_future(db: &tokio_postgres::Client, count: u64, due: Timestamp) {
    let sink = db
        .copy_in(
            "COPY scheduler.reminders (reminder_id, phone, due_at, time_zone, text, state, source,
                                       scheduled_by, correlation_id, version) FROM STDIN",
        )
        .await
        .unwrap();
    let mut sink = std::pin::pin!(sink);
    let year = 365 * 24 * 3600;
    let mut chunk = String::with_capacity(4 << 20);
    for n in 0..count {
        let at = due + SignedDuration::from_secs(30 * 24 * 3600 + (n as i64 * 7919) % year);
        chunk.push_str(&format!(
            "{}\t{}\t{at}\tEurope/Moscow\t{TEXT}\tpending\tbench\tbench\t{}\t1\n",
            Uuid::new_v4(),
            phone(n),
            Uuid::new_v4(),
        ));
        if chunk.len() > (4 << 20) - 1024 {
            sink.send(Bytes::from(std::mem::take(&mut chunk)))
                .await
                .unwrap();
        }
    }
    sink.send(Bytes::from(chunk)).await.unwrap();
    sink.as_mut().finish().await.unwrap();
}

/// Appends one `ReminderScheduled` per reminder, due at `due`, with
/// `in_flight` appends outstanding. Returns the appends per second.
async fn schedule_due(
    store: &EventStoreClient,
    ids: &[Uuid],
    due: Timestamp,
    in_flight: usize,
) -> f64 {
    let started = Instant::now();
    futures::stream::iter(ids.iter().enumerate())
        .map(|(n, id)| async move {
            let payload = ReminderScheduled {
                reminder_id: id.to_string(),
                phone: phone(n as u64 + 5_000_000),
                due_at: Some(to_proto_time(due)),
                time_zone: "Europe/Moscow".into(),
                text: TEXT.into(),
                source: "bench".into(),
                scheduled_by: "bench".into(),
                ..Default::default()
            };
            store
                .append(
                    &format!("reminder-{id}"),
                    Expected::NoStream,
                    vec![new_event(Uuid::new_v4(), None, &payload)],
                )
                .await
                .expect("append ReminderScheduled");
        })
        .buffer_unordered(in_flight)
        .collect::<()>()
        .await;
    ids.len() as f64 / started.elapsed().as_secs_f64()
}

async fn scalar(db: &tokio_postgres::Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).await.unwrap().get(0)
}

/// Waits until `sql` (a count) reaches `expected`.
async fn wait_for(db: &tokio_postgres::Client, what: &str, sql: &str, expected: i64) {
    kit::testing::eventually(what, Duration::from_secs(600), || async {
        (scalar(db, sql).await >= expected).then_some(())
    })
    .await;
}

/// The `q` quantile (0..1) of sorted `values`, nearest rank.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[tokio::main]
async fn main() {
    kit::telemetry::init_for_tests();
    let pending = env_number("BENCH_SCHEDULER_PENDING", 1_000_000);
    let due_count = env_number("BENCH_SCHEDULER_DUE", 100_000).min(pending);
    let replicas = env_number("BENCH_SCHEDULER_REPLICAS", 1).max(1) as usize;
    let (store_config, mut config) = configs();
    config.timer_batch =
        env_number("BENCH_SCHEDULER_TIMER_BATCH", config.timer_batch as u64) as i64;
    config.fire_concurrency = env_number(
        "BENCH_SCHEDULER_FIRE_CONCURRENCY",
        config.fire_concurrency as u64,
    ) as usize;
    let settings = format!(
        "timer batch {}, fire concurrency {}, poll {:?}, {replicas} replica{}",
        config.timer_batch,
        config.fire_concurrency,
        config.poll,
        if replicas == 1 { "" } else { "s" }
    );
    eprintln!("settings: {settings}");

    let db = TestDb::create().await;
    let bus = TestBus::new();
    let mut common = common(&db.url, &bus);
    let shutdown = CancellationToken::new();
    let store = event_store::EventStore::build(common.clone(), store_config)
        .await
        .unwrap();
    common.event_store_url = format!("http://{}", store.grpc_addr());
    let store_task = tokio::spawn(store.run(shutdown.clone()));
    let client = common.event_store("bench").unwrap();

    let due: Timestamp = DUE.parse().unwrap();
    let clock = TestClock::new(due - SignedDuration::from_hours(1));
    let mut schedulers = Vec::new();
    for _ in 0..replicas {
        // Builds migrate the scheduler's schema; nothing runs yet.
        schedulers.push(
            reminder_scheduler::Scheduler::build(common.clone(), config.clone(), clock.clone())
                .await
                .unwrap(),
        );
    }
    let admin = db.connect().await;

    let far = pending - due_count;
    eprintln!("COPY {far} reminders due far later…");
    let started = Instant::now();
    copy_far_future(&admin, far, due).await;
    eprintln!("  {:.1} s", started.elapsed().as_secs_f64());

    let in_flight = config.fire_concurrency * replicas;
    eprintln!("appending {due_count} ReminderScheduled due at {due}, {in_flight} in flight…");
    let ids: Vec<Uuid> = (0..due_count).map(|_| Uuid::new_v4()).collect();
    let append_rate = schedule_due(&client, &ids, due, in_flight).await;
    eprintln!("  {append_rate:.0} appends/s");

    let tasks: Vec<_> = schedulers
        .into_iter()
        .map(|scheduler| tokio::spawn(scheduler.run(shutdown.clone())))
        .collect();
    let started = Instant::now();
    wait_for(
        &admin,
        "the projection of the due reminders",
        "SELECT count(*) FROM scheduler.reminders WHERE state = 'pending'",
        pending as i64,
    )
    .await;
    wait_for(
        &admin,
        "the relay",
        "SELECT coalesce((SELECT position FROM eventlog.relay_checkpoint), 0)
              - coalesce((SELECT max(position) FROM eventlog.events), 0) + 1",
        1,
    )
    .await;
    eprintln!(
        "projected and relayed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // One statement per call: VACUUM refuses the implicit transaction of a
    // multi-statement query.
    for table in ["scheduler.reminders", "eventlog.events"] {
        admin
            .batch_execute(&format!("VACUUM ANALYZE {table}"))
            .await
            .unwrap();
    }
    let before = scalar(
        &admin,
        "SELECT coalesce(max(position), 0) FROM eventlog.events",
    )
    .await;

    eprintln!("moving the clock past the due instant…");
    let moved = SystemTime::now();
    clock.set(due + SignedDuration::from_secs(1));
    // Counts new ReminderDue by position, a cheap index range scan, so the
    // watching costs the measured system little.
    let mut seen = before;
    let mut fired = 0i64;
    let deadline = Instant::now() + Duration::from_secs(1200);
    while fired < due_count as i64 {
        assert!(
            Instant::now() < deadline,
            "only {fired} of {due_count} fired in 20 minutes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let row = admin
            .query_one(
                "SELECT count(*) FILTER (WHERE type = 'ReminderDue'), coalesce(max(position), $1)
                   FROM eventlog.events WHERE position > $1",
                &[&seen],
            )
            .await
            .unwrap();
        fired += row.get::<_, i64>(0);
        seen = row.get(1);
    }
    let waited = moved.elapsed().unwrap();
    // Anything fired twice would come now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    wait_for(
        &admin,
        "the projection of the fires",
        "SELECT count(*) FROM scheduler.reminders WHERE state = 'due'",
        due_count as i64,
    )
    .await;

    let mut lateness: Vec<f64> = admin
        .query(
            "SELECT recorded_at FROM eventlog.events WHERE type = 'ReminderDue'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| millis(moved, row.get(0)))
        .collect();
    lateness.sort_by(f64::total_cmp);
    let last = lateness.last().copied().unwrap_or(f64::NAN);
    let fires = due_count as f64 / (last / 1000.0);
    let (p50, p99) = (quantile(&lateness, 0.5), quantile(&lateness, 0.99));
    eprintln!(
        "{} ReminderDue; first {:.0} ms, p50 {p50:.0} ms, p99 {p99:.0} ms, last {last:.0} ms after the clock moved (seen after {:.1} s)",
        lateness.len(),
        lateness.first().copied().unwrap_or(f64::NAN),
        waited.as_secs_f64()
    );

    // Exactly once.
    let due_events = scalar(
        &admin,
        "SELECT count(*) FROM eventlog.events WHERE type = 'ReminderDue'",
    )
    .await;
    let due_streams = scalar(
        &admin,
        "SELECT count(DISTINCT stream) FROM eventlog.events WHERE type = 'ReminderDue'",
    )
    .await;
    let strays = scalar(
        &admin,
        "SELECT count(*) FROM eventlog.events d WHERE d.type = 'ReminderDue' AND NOT EXISTS
           (SELECT 1 FROM eventlog.events s WHERE s.stream = d.stream AND s.type = 'ReminderScheduled'
              AND s.version = 1 AND d.version = 2)",
    )
    .await;
    let expired = scalar(
        &admin,
        "SELECT count(*) FROM eventlog.events WHERE type = 'ReminderExpired'",
    )
    .await;
    let projected_due = scalar(
        &admin,
        "SELECT count(*) FROM scheduler.reminders WHERE state = 'due'",
    )
    .await;
    let still_pending = scalar(
        &admin,
        "SELECT count(*) FROM scheduler.reminders WHERE state = 'pending'",
    )
    .await;
    let exactly_once = due_events == due_count as i64
        && due_streams == due_count as i64
        && strays == 0
        && expired == 0
        && projected_due == due_count as i64
        && still_pending == far as i64;
    eprintln!(
        "exactly once: {due_events} ReminderDue in {due_streams} streams, {strays} not after the reminder's ReminderScheduled, {expired} expired; projection {projected_due} due, {still_pending} pending"
    );

    shutdown.cancel();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    store_task.await.unwrap().unwrap();

    let results = vec![
        BenchResult {
            bench: BENCH.into(),
            case: format!("fire {due_count} due at once of {pending} pending ({settings})"),
            value: fires,
            unit: "fires/s".into(),
            baseline: Some(format!(
                "event store: {due_count} single-event appends to new streams, {in_flight} in flight"
            )),
            baseline_value: Some(append_rate),
            ratio: Some(fires / append_rate),
            target: ">= 5000 fires/s".into(),
            met: fires >= 5000.0,
        },
        BenchResult {
            bench: BENCH.into(),
            case: format!(
                "lateness p99 (ReminderDue recorded_at − clock moved; p50 {:.1} s, last {:.1} s)",
                p50 / 1000.0,
                last / 1000.0
            ),
            value: p99,
            unit: "ms".into(),
            baseline: None,
            baseline_value: None,
            ratio: None,
            target: "p99 <= 20 s (what 5000 fires/s implies for a herd of 100000)".into(),
            met: p99 <= 20_000.0,
        },
        BenchResult {
            bench: BENCH.into(),
            case: format!(
                "fired exactly once ({due_events} ReminderDue in {due_streams} streams, {strays} stray, {expired} expired, {still_pending} still pending)"
            ),
            value: if exactly_once { 1.0 } else { 0.0 },
            unit: "bool".into(),
            baseline: None,
            baseline_value: None,
            ratio: None,
            target: format!("each of the {due_count} once, none of the other {far}"),
            met: exactly_once,
        },
    ];
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    report(&root, BENCH, &results).expect("write report");
}
