//! What analysts wait for: decoded export to JSON Lines, and what
//! encrypting personal fields costs a replay.
//!
//! Set-up: an event store (privacy on, relay off) on a throw-away database,
//! loaded through gRPC `Append` with `BENCH_REPLAY_EVENTS` (default 200,000)
//! events of a call's flow — `CallCompleted`, `TranscriptReady` with six
//! turns of text, `ConsentAnalyzed`, `ReminderScheduled` — for 2,000
//! distinct clients, so every event carries personal fields sealed under one
//! of 2,000 contact keys. A second database holds the very same events
//! (read back decrypted from the first, same streams, versions, types and
//! payloads) written in plaintext, as events written before encryption
//! existed are; a second store serves it.
//!
//! Cases, each the best of three alternating rounds:
//! - export: `callflow events export --format jsonl` (the CLI's own code,
//!   [`callflow::events::export`]) of the whole log to a file, events/s;
//!   target ≥ 100,000 events/s (issue). Baseline: `ReadAll` of the same log
//!   without decoding or writing, to show what the JSON costs.
//! - decryption overhead: `ReadAll` of the encrypted log against `ReadAll`
//!   of the plaintext one; ratio = time encrypted / time plaintext, target
//!   ≤ 1.3 (issue). The same for the export.
//!
//! Writes `target/bench/replay.json`.
//! `cargo bench -p callflow --bench replay` (or `make bench BENCH=replay`)

use kit::bench::env_number;
use std::path::{Path, PathBuf};
use std::time::Instant;

use prost::Message;
use uuid::Uuid;

use callflow::events::{FilterArgs, Format, RangeArgs, export};
use event_store::testing::TestStore;
use kit::bench::{BenchResult, report};
use kit::events::new_event;
use kit::proto::events::v1::{
    CallCompleted, ConsentAnalyzed, ConsentDecision, Event, ReminderScheduled, SpeakerRole,
    TranscriptReady, TranscriptTurn,
};
use kit::proto::eventstore::v1::{NewEvent, ReadAllRequest};
use kit::store_client::Expected;
use kit::testing::{TestBus, TestDb};

const BENCH: &str = "replay";
const ROUNDS: usize = 3;
const CLIENTS: u64 = 2_000;

fn time(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

/// The four events of call `n`, in its stream.
fn call_flow(n: u64) -> (String, Vec<NewEvent>) {
    let call_id = format!("{}", 439_166_538_000_000_000 + n);
    let phone = format!("+7916{:07}", n % CLIENTS);
    let started = 1_795_000_000 + n as i64 * 7;
    let lines = [
        (
            SpeakerRole::Manager,
            "Добрый день, компания Ромашка, меня зовут Анна.",
        ),
        (
            SpeakerRole::Client,
            "Здравствуйте, я по поводу доставки заказа.",
        ),
        (
            SpeakerRole::Manager,
            "Заказ будет у вас в четверг. Напомнить вам о продлении договора?",
        ),
        (
            SpeakerRole::Client,
            "Да, напомните через месяц, пожалуйста.",
        ),
        (SpeakerRole::Manager, "Хорошо, запишу. Всего доброго!"),
        (SpeakerRole::Client, "Спасибо, до свидания."),
    ];
    let turns = lines
        .iter()
        .enumerate()
        .map(|(i, (role, text))| TranscriptTurn {
            role: *role as i32,
            text: (*text).into(),
            start: Some(prost_types::Duration {
                seconds: i as i64 * 5,
                nanos: 0,
            }),
            end: Some(prost_types::Duration {
                seconds: i as i64 * 5 + 4,
                nanos: 0,
            }),
        })
        .collect();
    let events = vec![
        new_event(
            Uuid::new_v4(),
            None,
            &CallCompleted {
                provider: "exolve".into(),
                call_id: call_id.clone(),
                from: phone.clone(),
                to: "+74951234567".into(),
                started_at: time(started),
                duration: Some(prost_types::Duration {
                    seconds: 125,
                    nanos: 0,
                }),
                manager_id: "manager-17".into(),
                recording_url: format!("https://api.exolve.ru/records/{call_id}.mp3"),
                client_phone: phone.clone(),
                ..Default::default()
            },
        ),
        new_event(
            Uuid::new_v4(),
            None,
            &TranscriptReady {
                provider: "exolve".into(),
                call_id: call_id.clone(),
                turns,
                language: "ru".into(),
                client_phone: phone.clone(),
                call_started_at: time(started),
            },
        ),
        new_event(
            Uuid::new_v4(),
            None,
            &ConsentAnalyzed {
                provider: "exolve".into(),
                call_id: call_id.clone(),
                decision: ConsentDecision::Agreed as i32,
                remind_after: "P1M".into(),
                confidence: 0.93,
                evidence: vec!["Да, напомните через месяц, пожалуйста.".into()],
                analyzer_version: "consent-1".into(),
                client_phone: phone.clone(),
                call_started_at: time(started),
                language: "ru".into(),
                ..Default::default()
            },
        ),
        new_event(
            Uuid::new_v4(),
            None,
            &ReminderScheduled {
                reminder_id: Uuid::new_v4().to_string(),
                phone,
                due_at: time(started + 30 * 86_400),
                time_zone: "Europe/Moscow".into(),
                text: "Напоминаем о продлении договора. Ромашка.".into(),
                source: "consent".into(),
                provider: "exolve".into(),
                call_id: call_id.clone(),
                scheduled_by: "reminder-scheduler".into(),
            },
        ),
    ];
    (format!("call-exolve-{call_id}"), events)
}

/// Loads `n` events (rounded up to whole calls), 250 calls per append.
async fn load(store: &TestStore, n: u64) {
    let calls = n.div_ceil(4);
    let writers = 4;
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let client = store.client.clone();
            tokio::spawn(async move {
                let mut call = w;
                while call < calls {
                    // One append per stream: a call's four events.
                    let mut batch = Vec::new();
                    while batch.len() < 250 && call < calls {
                        batch.push(call_flow(call));
                        call += writers;
                    }
                    let appends = batch.into_iter().map(|(stream, events)| {
                        let client = client.clone();
                        async move { client.append(&stream, Expected::NoStream, events).await }
                    });
                    for result in futures::future::join_all(appends).await {
                        result.expect("load");
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

/// Every event of `store`, decrypted, in log order.
async fn read_all(store: &TestStore) -> Vec<Event> {
    let mut pages = store
        .client
        .grpc()
        .read_all(ReadAllRequest {
            batch_size: 2000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    while let Some(page) = pages.message().await.unwrap() {
        events.extend(page.events);
    }
    events
}

/// Writes `events` into `db` with plain SQL, payloads as they are.
async fn copy_plaintext(db: &TestDb, events: &[Event]) {
    let client = db.connect().await;
    for chunk in events.chunks(5_000) {
        let ids: Vec<Uuid> = chunk.iter().map(|e| e.event_id.parse().unwrap()).collect();
        let streams: Vec<&str> = chunk.iter().map(|e| e.stream.as_str()).collect();
        let versions: Vec<i64> = chunk.iter().map(|e| e.version as i64).collect();
        let categories: Vec<&str> = chunk.iter().map(|e| e.category.as_str()).collect();
        let types: Vec<&str> = chunk.iter().map(|e| e.r#type.as_str()).collect();
        let producers: Vec<&str> = chunk.iter().map(|e| e.producer.as_str()).collect();
        let payloads: Vec<&[u8]> = chunk.iter().map(|e| e.payload.as_slice()).collect();
        client
            .execute(
                "INSERT INTO eventlog.events (event_id, stream, version, category, type, occurred_at, correlation_id,
                                              producer, payload)
                 SELECT id, stream, version, category, type, now(), id, producer, payload
                   FROM unnest($1::uuid[], $2::text[], $3::int8[], $4::text[], $5::text[], $6::text[], $7::bytea[])
                     AS u(id, stream, version, category, type, producer, payload)",
                &[&ids, &streams, &versions, &categories, &types, &producers, &payloads],
            )
            .await
            .unwrap();
    }
    client
        .batch_execute("VACUUM ANALYZE eventlog.events")
        .await
        .unwrap();
}

/// Events/s of a `ReadAll` of the whole log, payloads opened by the store.
async fn replay(store: &TestStore, expected: usize) -> f64 {
    let started = Instant::now();
    let count = read_all(store).await.len();
    assert_eq!(count, expected);
    count as f64 / started.elapsed().as_secs_f64()
}

/// Events/s of the CLI's JSON Lines export of the whole log to `file`.
async fn export_jsonl(store: &TestStore, file: &Path, expected: usize) -> f64 {
    let started = Instant::now();
    export(
        &store.client,
        &FilterArgs::default(),
        &RangeArgs::default(),
        &file.to_path_buf(),
        Format::Jsonl,
        false,
    )
    .await
    .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let lines = std::fs::read(file)
        .unwrap()
        .iter()
        .filter(|b| **b == b'\n')
        .count();
    assert_eq!(lines, expected);
    expected as f64 / seconds
}

fn result(
    case: &str,
    value: f64,
    unit: &str,
    (baseline, baseline_value): (&str, f64),
    ratio: f64,
    target: &str,
    met: bool,
) -> BenchResult {
    BenchResult {
        bench: BENCH.into(),
        case: case.into(),
        value,
        unit: unit.into(),
        baseline: Some(baseline.into()),
        baseline_value: Some(baseline_value),
        ratio: Some(ratio),
        target: target.into(),
        met,
    }
}

#[tokio::main]
async fn main() {
    let events = env_number("BENCH_REPLAY_EVENTS", 200_000);
    let encrypted = TestStore::start(false).await;
    eprintln!("loading {events} events (personal fields of {CLIENTS} clients sealed)…");
    let started = Instant::now();
    load(&encrypted, events).await;
    eprintln!("  {:.1} s", started.elapsed().as_secs_f64());
    let admin = encrypted.db.connect().await;
    admin
        .batch_execute("VACUUM ANALYZE eventlog.events")
        .await
        .unwrap();
    let log = read_all(&encrypted).await;
    let total = log.len();
    let sealed = TranscriptReady::decode(
        admin
            .query_one(
                "SELECT payload FROM eventlog.events WHERE type = 'TranscriptReady' LIMIT 1",
                &[],
            )
            .await
            .unwrap()
            .get::<_, Vec<u8>>(0)
            .as_slice(),
    )
    .unwrap();
    assert!(
        sealed.turns.is_empty() && sealed.client_phone.is_empty(),
        "personal fields are sealed at rest"
    );

    eprintln!("copying the same {total} events in plaintext…");
    let plain = TestStore::start_on(TestDb::create().await, TestBus::new(), false).await;
    copy_plaintext(&plain.db, &log).await;
    drop(log);

    let dir = kit::bench::target_dir(&workspace_root()).join("bench");
    std::fs::create_dir_all(&dir).unwrap();
    let (file_encrypted, file_plain) = (
        dir.join("replay-encrypted.jsonl"),
        dir.join("replay-plain.jsonl"),
    );
    // Warm both databases' caches before measuring.
    replay(&encrypted, total).await;
    replay(&plain, total).await;
    let (mut read_enc, mut read_plain, mut export_enc, mut export_plain) = (0f64, 0f64, 0f64, 0f64);
    for round in 0..ROUNDS {
        read_enc = read_enc.max(replay(&encrypted, total).await);
        read_plain = read_plain.max(replay(&plain, total).await);
        export_enc = export_enc.max(export_jsonl(&encrypted, &file_encrypted, total).await);
        export_plain = export_plain.max(export_jsonl(&plain, &file_plain, total).await);
        eprintln!(
            "round {round}: ReadAll {read_enc:.0}/s encrypted, {read_plain:.0}/s plaintext; export {export_enc:.0}/s encrypted, {export_plain:.0}/s plaintext"
        );
    }
    let _ = std::fs::remove_file(&file_encrypted);
    let _ = std::fs::remove_file(&file_plain);

    let read_overhead = read_plain / read_enc;
    let export_overhead = export_plain / export_enc;
    let results = [
        result(
            &format!("export {total} events to JSON Lines, payloads decoded (encrypted log)"),
            export_enc,
            "events/s",
            ("ReadAll of the same log, not decoded or written", read_enc),
            export_enc / read_enc,
            ">= 100000 events/s",
            export_enc >= 100_000.0,
        ),
        result(
            &format!(
                "decryption overhead on replay: ReadAll of {total} events, time encrypted / plaintext"
            ),
            read_overhead,
            "x",
            (
                "ReadAll of the same events stored in plaintext (events/s)",
                read_plain,
            ),
            read_overhead,
            "<= 1.3",
            read_overhead <= 1.3,
        ),
        result(
            &format!(
                "decryption overhead on export: {total} events to JSON Lines, time encrypted / plaintext"
            ),
            export_overhead,
            "x",
            (
                "export of the same events stored in plaintext (events/s)",
                export_plain,
            ),
            export_overhead,
            "<= 1.3",
            export_overhead <= 1.3,
        ),
    ];
    report(&workspace_root(), BENCH, &results).unwrap();
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
