//! End-to-end throughput and latency of the whole system in one process
//! (`callflow up` with the provider simulator), on this machine's Postgres
//! and NATS: pushed transcript → `TranscriptReady` → `ConsentAnalyzed` →
//! `ReminderScheduled`.
//!
//! Each call is one `POST /webhooks/transcripts` (bearer token of the
//! generic webhook) with a short dialog in which the client agrees to a
//! reminder, so it costs one webhook, one consent analysis and one scheduled
//! reminder, through the event store, the relay and two JetStream consumers.
//!
//! Load: open loop at a fixed rate (`BENCH_PIPELINE_RATE` calls/s, default
//! 510) for `BENCH_PIPELINE_SECONDS` (default 60), at most
//! `BENCH_PIPELINE_IN_FLIGHT` webhooks outstanding (default 2000); then the
//! tail drains (at most `BENCH_PIPELINE_DRAIN_SECONDS`, default 120, and
//! never longer than 30 s without progress). The rate offered is 2% above
//! the target so that the calls still on their way when the window closes
//! (a few hundred milliseconds' worth) do not count against a system that
//! keeps up. Before the window, `BENCH_PIPELINE_WARMUP_SECONDS` (default 5)
//! at the same rate, not measured, let the connection pools and caches grow,
//! so the window measures the steady state rather than a cold start.
//!
//! Latency of a call is the `recorded_at` of its event in the log (Postgres
//! time, the same host clock) minus the instant the schedule meant to send
//! its webhook. Measuring from the intended instant rather than the actual
//! send keeps a saturated system from hiding its queueing by slowing the
//! generator down (coordinated omission). A call that never completed
//! counts with the time it had been waiting when the drain gave up (a lower
//! bound), so losses show in the percentiles.
//!
//! Results (targets from the issue: ≥ 500 calls/s sustained for 60 s with
//! p99 < 500 ms):
//! - calls/s to `ConsentAnalyzed` and to `ReminderScheduled`: calls whose
//!   event was recorded within the load window, per second of the window;
//!   baseline: transcripts/s call-ingest alone accepts (event store with its
//!   relay and call-ingest, nothing consuming; 64 clients in a closed loop
//!   for `BENCH_PIPELINE_BASELINE_SECONDS`, default 10, on a database of its
//!   own), the ceiling of the pipeline on this machine;
//! - p50 and p99 latency to each; baseline: the webhook's own round trip
//!   (POST until 200, `TranscriptReady` committed) in the same run.
//!
//! Every service runs with its default settings (consent-analyzer 8
//! transcripts at once, the scheduler's consent consumer 16); only listen
//! addresses and the webhook token are set. Writes
//! `target/bench/pipeline.json`.
//!
//! `BENCH_PIPELINE_TIMELINE=1` also prints the tail per second of the run.
//!
//! `cargo bench -p callflow --bench pipeline` (or `make bench BENCH=pipeline`)

use kit::bench::{env_number, millis, quantile};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use callflow::{System, UpConfig};
use kit::bench::{BenchResult, report};
use kit::events::derive_event_id;
use kit::testing::{TestBus, TestDb, common};

const BENCH: &str = "pipeline";
const TOKEN: &str = "bench-generic-token";
const PROVIDER: &str = "bench";
const BUSINESS_NUMBER: &str = "+74951234567";

/// Every service with its defaults, on ephemeral ports, with the generic
/// webhook token set.
fn config(db: &TestDb, bus: &TestBus) -> UpConfig {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Args {
        #[command(flatten)]
        up: UpConfig,
    }
    let any = "127.0.0.1:0";
    let args = Args::try_parse_from([
        "bench",
        "--provider-sim-addr",
        any,
        "--event-store-grpc-addr",
        any,
        "--event-store-http-addr",
        any,
        "--call-ingest-http-addr",
        any,
        "--call-ingest-business-numbers",
        BUSINESS_NUMBER,
        "--call-ingest-generic-token",
        TOKEN,
        "--reminder-grpc-addr",
        any,
        "--reminder-http-addr",
        any,
        "--sms-http-addr",
        any,
        "--notifier-http-addr",
        any,
        "--consent-analyzer-http-addr",
        any,
        "--transcription-http-addr",
        any,
        "--analytics-http-addr",
        any,
        "--router-http-addr",
        any,
        "--router-grpc-addr",
        any,
        "--console-http-addr",
        any,
    ])
    .expect("bench configuration parses");
    let mut up = args.up.with_repository_files();
    up.common = common(&db.url, bus);
    up
}

fn call_id(n: u64) -> String {
    format!("pipe-{n}")
}

/// The body of call `n`: the client agrees to be reminded in a month.
fn body(n: u64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "provider": PROVIDER,
        "call_id": call_id(n),
        "language": "ru",
        "client_phone": format!("+7916{:07}", n % 10_000_000),
        "call_started_at": "2026-11-24T11:00:00+03:00",
        "turns": [
            {"speaker": "manager", "text": "Добрый день! Это Ольга из «Окна-Сервис». Напомнить вам о замере через месяц?", "start": 0.5, "end": 4.0},
            {"speaker": "client", "text": "Да, давайте, напомните.", "start": 4.5, "end": 6.0},
        ],
    }))
    .unwrap()
}

/// The correlation id call-ingest gives every event of call `n`.
fn correlation(n: u64) -> Uuid {
    derive_event_id(&format!("{PROVIDER}:{}", call_id(n)), "call")
}

fn http_client(connections: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn post(http: &reqwest::Client, url: &str, body: Vec<u8>) -> bool {
    match http
        .post(url)
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
    {
        Ok(response) => {
            let ok = response.status().is_success();
            let _ = response.bytes().await;
            ok
        }
        Err(_) => false,
    }
}

/// Transcripts/s that call-ingest with the event store (relay on) accepts
/// with nothing consuming: `clients` in a closed loop for `duration`.
async fn webhook_baseline(clients: usize, duration: Duration) -> f64 {
    let db = TestDb::create().await;
    let bus = TestBus::new();
    let mut up = config(&db, &bus);
    let shutdown = CancellationToken::new();
    let store = event_store::EventStore::build(up.common.clone(), up.event_store.clone())
        .await
        .unwrap();
    up.common.event_store_url = format!("http://{}", store.grpc_addr());
    let ingest = call_ingest::CallIngest::build(&up.common, &up.call_ingest, kit::clock::system())
        .await
        .unwrap();
    let url = format!("http://{}/webhooks/transcripts", ingest.http_addr());
    let store_task = tokio::spawn(store.run(shutdown.clone()));
    let ingest_task = tokio::spawn(ingest.run(shutdown.clone()));
    let http = http_client(clients);
    // Warm up connections and statements.
    for n in 0..100 {
        assert!(post(&http, &url, body(10_000_000 + n)).await);
    }
    let next = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (http, url, next, accepted) =
                (http.clone(), url.clone(), next.clone(), accepted.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if post(&http, &url, body(n)).await {
                        accepted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    let rate = accepted.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    shutdown.cancel();
    store_task.await.unwrap().unwrap();
    ingest_task.await.unwrap().unwrap();
    rate
}

/// One call of the load: when it was meant to go, when it went, when the
/// webhook was answered, and whether it was accepted.
#[derive(Debug, Clone, Copy)]
struct Sent {
    intended: SystemTime,
    answered: SystemTime,
    accepted: bool,
}

/// Sends the webhooks of `calls` at `rate` per second from now, at most
/// `in_flight` outstanding. Returns what happened to each and how many had
/// to wait for a free slot.
async fn open_loop(
    http: &reqwest::Client,
    url: &str,
    rate: f64,
    calls: std::ops::Range<u64>,
    in_flight: usize,
) -> (Vec<Sent>, SystemTime, u64) {
    let total = calls.end - calls.start;
    let slots = Arc::new(Semaphore::new(in_flight));
    let start_wall = SystemTime::now();
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    let mut waited = 0;
    for (i, n) in calls.enumerate() {
        let offset = Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(start + offset).await;
        let intended = start_wall + offset;
        let permit = match slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                waited += 1;
                slots.clone().acquire_owned().await.unwrap()
            }
        };
        let (http, url) = (http.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            let accepted = post(&http, &url, body(n)).await;
            drop(permit);
            Sent {
                intended,
                answered: SystemTime::now(),
                accepted,
            }
        }));
    }
    let mut sent = Vec::with_capacity(tasks.len());
    for task in tasks {
        sent.push(task.await.unwrap());
    }
    (sent, start_wall, waited)
}

async fn count(db: &tokio_postgres::Client, event_type: &str) -> i64 {
    db.query_one(
        "SELECT count(*) FROM eventlog.events WHERE type = $1",
        &[&event_type],
    )
    .await
    .unwrap()
    .get(0)
}

/// Waits until `expected` calls reached `ReminderScheduled` (and
/// `ConsentAnalyzed`), at most `patience`, giving up after 30 s without
/// progress. Returns when it stopped waiting.
async fn drain(db: &tokio_postgres::Client, expected: i64, patience: Duration) -> SystemTime {
    let deadline = Instant::now() + patience;
    let mut last = (-1, -1);
    let mut last_progress = Instant::now();
    loop {
        let now = (
            count(db, "ConsentAnalyzed").await,
            count(db, "ReminderScheduled").await,
        );
        if now.0 >= expected && now.1 >= expected {
            return SystemTime::now();
        }
        if now != last {
            last = now;
            last_progress = Instant::now();
        }
        if Instant::now() > deadline || last_progress.elapsed() > Duration::from_secs(30) {
            eprintln!(
                "drain gave up: {} ConsentAnalyzed, {} ReminderScheduled of {expected}",
                now.0, now.1
            );
            return SystemTime::now();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `recorded_at` of every event of `event_type`, by correlation id.
async fn recorded(db: &tokio_postgres::Client, event_type: &str) -> HashMap<Uuid, SystemTime> {
    db.query(
        "SELECT correlation_id, recorded_at FROM eventlog.events WHERE type = $1",
        &[&event_type],
    )
    .await
    .unwrap()
    .iter()
    .map(|row| (row.get(0), row.get(1)))
    .collect()
}

/// What the log says about the accepted calls for one event type.
struct Stage {
    /// Calls whose event was recorded within the load window.
    in_window: usize,
    /// Calls whose event was recorded at all.
    completed: usize,
    /// Latency of every accepted call, ms (a lower bound for the missing).
    latencies: Vec<f64>,
}

fn stage(
    sent: &[Sent],
    recorded: &HashMap<Uuid, SystemTime>,
    window_end: SystemTime,
    gave_up: SystemTime,
) -> Stage {
    let mut stage = Stage {
        in_window: 0,
        completed: 0,
        latencies: Vec::with_capacity(sent.len()),
    };
    for (n, call) in sent.iter().enumerate() {
        if !call.accepted {
            continue;
        }
        match recorded.get(&correlation(n as u64)) {
            Some(at) => {
                stage.completed += 1;
                if *at <= window_end {
                    stage.in_window += 1;
                }
                stage.latencies.push(millis(call.intended, *at));
            }
            None => stage.latencies.push(millis(call.intended, gave_up)),
        }
    }
    stage
}

/// Prints, per second of the schedule, the p99 and the worst of the webhook
/// round trip and of the latency to `ReminderScheduled`: where in the run
/// the tail comes from (`BENCH_PIPELINE_TIMELINE=1`).
fn timeline(sent: &[Sent], reminders: &HashMap<Uuid, SystemTime>, rate: f64) {
    let per_second = rate.max(1.0) as usize;
    eprintln!("second  webhook p99  webhook max  reminder p99  reminder max (ms)");
    for (second, calls) in sent.chunks(per_second).enumerate() {
        let first = second * per_second;
        let mut webhook: Vec<f64> = calls
            .iter()
            .map(|c| millis(c.intended, c.answered))
            .collect();
        let mut reminder: Vec<f64> = calls
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                reminders
                    .get(&correlation((first + i) as u64))
                    .map(|at| millis(c.intended, *at))
            })
            .collect();
        let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
        eprintln!(
            "{second:>6}  {:>11.0}  {:>11.0}  {:>12.0}  {:>12.0}",
            quantile(&mut webhook, 0.99),
            max(&webhook),
            quantile(&mut reminder, 0.99),
            max(&reminder)
        );
    }
}

#[tokio::main]
async fn main() {
    kit::telemetry::init_for_tests();
    let seconds = env_number("BENCH_PIPELINE_SECONDS", 60);
    let rate = env_number("BENCH_PIPELINE_RATE", 510) as f64;
    let warmup_seconds = env_number("BENCH_PIPELINE_WARMUP_SECONDS", 5);
    let in_flight = env_number("BENCH_PIPELINE_IN_FLIGHT", 2000) as usize;
    let drain_patience = Duration::from_secs(env_number("BENCH_PIPELINE_DRAIN_SECONDS", 120));
    let baseline_seconds = env_number("BENCH_PIPELINE_BASELINE_SECONDS", 10);
    let total = (rate * seconds as f64).round() as u64;

    eprintln!("baseline: call-ingest alone, 64 clients, {baseline_seconds} s…");
    let accept_rate = webhook_baseline(64, Duration::from_secs(baseline_seconds)).await;
    eprintln!("baseline: {accept_rate:.0} transcripts/s accepted");

    let db = TestDb::create().await;
    let bus = TestBus::new();
    let shutdown = CancellationToken::new();
    let system = System::start(config(&db, &bus), kit::clock::system(), shutdown.clone())
        .await
        .expect("system starts");
    let url = format!(
        "http://{}/webhooks/transcripts",
        system.addresses.call_ingest_http
    );
    let admin = db.connect().await;
    // Warm up: the consumers are created and every path has run once, then
    // a few seconds at the full rate grow the connection pools and caches,
    // so the window measures the steady state rather than a cold start.
    let http = http_client(in_flight);
    {
        for n in 0..50 {
            assert!(post(&http, &url, body(20_000_000 + n)).await);
        }
        kit::testing::eventually("warm-up calls scheduled", Duration::from_secs(60), || {
            let admin = &admin;
            async move { (count(admin, "ReminderScheduled").await >= 50).then_some(()) }
        })
        .await;
        let warm_calls = (rate * warmup_seconds as f64) as u64;
        eprintln!("warm-up: {rate} calls/s for {warmup_seconds} s, not measured…");
        let first = 21_000_000;
        let (warm_sent, _, _) =
            open_loop(&http, &url, rate, first..first + warm_calls, in_flight).await;
        let expected = 50 + warm_sent.iter().filter(|s| s.accepted).count() as i64;
        drain(&admin, expected, drain_patience).await;
    }
    let warm = count(&admin, "ReminderScheduled").await;

    eprintln!(
        "load: {rate} calls/s for {seconds} s ({total} calls), at most {in_flight} in flight…"
    );
    let (sent, start, waited) = open_loop(&http, &url, rate, 0..total, in_flight).await;
    let window_end = start + Duration::from_secs(seconds);
    let accepted = sent.iter().filter(|s| s.accepted).count();
    let refused = sent.len() - accepted;
    let sent_in = millis(start, sent.last().map_or(start, |s| s.intended)) / 1000.0;
    eprintln!(
        "sent {} calls in {sent_in:.1} s ({waited} waited for a free slot), {accepted} accepted, {refused} refused",
        sent.len()
    );
    let gave_up = drain(&admin, accepted as i64 + warm, drain_patience).await;
    eprintln!(
        "drained {:.1} s after the window",
        millis(window_end, gave_up) / 1000.0
    );

    let consents = recorded(&admin, "ConsentAnalyzed").await;
    let reminders = recorded(&admin, "ReminderScheduled").await;
    let transcripts = recorded(&admin, "TranscriptReady").await;
    shutdown.cancel();
    system.wait().await.expect("system stops cleanly");

    let mut round_trips: Vec<f64> = sent
        .iter()
        .filter(|s| s.accepted)
        .map(|s| millis(s.intended, s.answered))
        .collect();
    let rt_p50 = quantile(&mut round_trips, 0.50);
    let rt_p99 = quantile(&mut round_trips, 0.99);
    let mut transcript_stage = stage(&sent, &transcripts, window_end, gave_up);
    eprintln!(
        "TranscriptReady: {} in the log, commit p50 {:.1} ms, p99 {:.1} ms; webhook round trip p50 {rt_p50:.1} ms, p99 {rt_p99:.1} ms",
        transcript_stage.completed,
        quantile(&mut transcript_stage.latencies, 0.5),
        quantile(&mut transcript_stage.latencies, 0.99)
    );

    if std::env::var_os("BENCH_PIPELINE_TIMELINE").is_some() {
        timeline(&sent, &reminders, rate);
    }

    let window = seconds as f64;
    let mut results = Vec::new();
    for (event_type, recorded) in [
        ("ConsentAnalyzed", &consents),
        ("ReminderScheduled", &reminders),
    ] {
        let mut stage = stage(&sent, recorded, window_end, gave_up);
        let throughput = stage.in_window as f64 / window;
        let p50 = quantile(&mut stage.latencies, 0.50);
        let p99 = quantile(&mut stage.latencies, 0.99);
        eprintln!(
            "{event_type}: {} of {accepted} accepted calls completed, {} within the window",
            stage.completed, stage.in_window
        );
        let missing = accepted - stage.completed;
        let lost = if missing > 0 {
            format!(", {missing} calls never completed (counted as a lower bound)")
        } else {
            String::new()
        };
        results.push(BenchResult {
            bench: BENCH.into(),
            case: format!(
                "webhook → {event_type}, calls/s within {seconds} s at {rate} offered{lost}"
            ),
            value: throughput,
            unit: "calls/s".into(),
            baseline: Some("call-ingest alone: transcripts/s accepted, 64 clients closed loop, nothing consuming".into()),
            baseline_value: Some(accept_rate),
            ratio: Some(throughput / accept_rate),
            target: ">= 500 calls/s".into(),
            met: throughput >= 500.0,
        });
        let latency =
            |name: &str, value: f64, baseline: f64, target: &str, met: bool| BenchResult {
                bench: BENCH.into(),
                case: format!("webhook → {event_type}, {name} latency{lost}"),
                value,
                unit: "ms".into(),
                baseline: Some(format!(
                    "webhook round trip (POST → 200, TranscriptReady committed), {name}"
                )),
                baseline_value: Some(baseline),
                ratio: Some(value / baseline),
                target: target.into(),
                met,
            };
        results.push(latency("p50", p50, rt_p50, "report only", true));
        results.push(latency("p99", p99, rt_p99, "p99 < 500 ms", p99 < 500.0));
    }

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    report(&root, BENCH, &results).expect("write report");
}
