//! What the scheduler's integration tests share: a scheduler started against
//! a test event store, with clients of both its gRPC APIs, and reads of the
//! log.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio_util::sync::CancellationToken;

use event_store::testing::TestStore;
use kit::clock::TestClock;
use kit::proto::events::v1::Event;
use kit::proto::eventstore::v1::{Filter, ReadAllRequest, ReadStreamRequest};
use kit::proto::reminders::v1::reminder_service_client::ReminderServiceClient;
use kit::proto::timers::v1::timer_service_client::TimerServiceClient;
use kit::testing::eventually;

pub const PATIENCE: Duration = Duration::from_secs(60);

pub fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

pub fn config() -> reminder_scheduler::Config {
    reminder_scheduler::Config {
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        send_window: Default::default(),
        default_time_zone: "Europe/Moscow".into(),
        jitter: Duration::from_secs(30 * 60),
        max_lateness: Duration::from_secs(72 * 3600),
        text: "Напоминаем о нашем разговоре.".into(),
        text_en: "A reminder about our conversation.".into(),
        timer_batch: 50,
        fire_concurrency: 8,
        poll: Duration::from_millis(50),
    }
}

/// A running scheduler ("replica").
pub struct Instance {
    pub api: ReminderServiceClient<tonic::transport::Channel>,
    pub timers: TimerServiceClient<tonic::transport::Channel>,
    pub stop: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), reminder_scheduler::Error>>,
}

/// A scheduler with the tests' [`config`].
pub async fn start(store: &TestStore, clock: Arc<TestClock>) -> Instance {
    start_with(store, clock, config()).await
}

/// A scheduler with `config`, once its API answers.
pub async fn start_with(
    store: &TestStore,
    clock: Arc<TestClock>,
    config: reminder_scheduler::Config,
) -> Instance {
    let mut common = store.common.clone();
    common.event_store_url = store.url();
    let scheduler = reminder_scheduler::Scheduler::build(common, config, clock)
        .await
        .unwrap();
    let url = format!("http://{}", scheduler.grpc_addr());
    let stop = CancellationToken::new();
    let task = tokio::spawn(scheduler.run(stop.clone()));
    let api = eventually("the API", PATIENCE, || {
        let url = url.clone();
        async move { ReminderServiceClient::connect(url).await.ok() }
    })
    .await;
    // The same server serves both services.
    let timers = TimerServiceClient::connect(url).await.unwrap();
    Instance {
        api,
        timers,
        stop,
        task,
    }
}

/// Every event of `stream`.
pub async fn read(store: &TestStore, stream: &str) -> Vec<Event> {
    store
        .client
        .grpc()
        .read_stream(ReadStreamRequest {
            stream: stream.into(),
            from_version: 1,
            max_count: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .events
}

/// Every event of `event_type` in the log.
pub async fn all_of(store: &TestStore, event_type: &str) -> Vec<Event> {
    all_matching(
        store,
        Filter {
            types: vec![event_type.into()],
            ..Default::default()
        },
    )
    .await
}

/// Every event `filter` matches.
pub async fn all_matching(store: &TestStore, filter: Filter) -> Vec<Event> {
    let mut stream = store
        .client
        .grpc()
        .read_all(ReadAllRequest {
            filter: Some(filter),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    while let Some(page) = stream.message().await.unwrap() {
        events.extend(page.events);
    }
    events
}

/// Rows of a projection table as comparable text, in key order: every
/// column but `updated_at` (the wall-clock time of the write, not a fact of
/// the log).
pub async fn rows(store: &TestStore, table: &str, key: &str) -> Vec<String> {
    let db = store.db.connect().await;
    db.query(
        &format!(
            "SELECT (row_to_json(r)::jsonb - 'updated_at')::text FROM scheduler.{table} r ORDER BY {key}"
        ),
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// The projection's checkpoint.
pub async fn checkpoint(store: &TestStore) -> i64 {
    store
        .db
        .connect()
        .await
        .query_one(
            "SELECT coalesce((SELECT position FROM scheduler.projection_checkpoint), 0)",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// The log's head position.
pub async fn head(store: &TestStore) -> i64 {
    store
        .client
        .grpc()
        .head(())
        .await
        .unwrap()
        .into_inner()
        .position as i64
}
