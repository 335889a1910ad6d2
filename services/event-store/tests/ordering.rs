//! Readers see every event exactly once, in one global order, while many
//! writers commit concurrently and out of order.

use std::collections::HashSet;
use std::time::Duration;

use rand::Rng;
use uuid::Uuid;

use event_store::testing::{TestStore as Store, call_event};
use kit::proto::eventstore::v1::{ReadAllRequest, SubscribeRequest};
use kit::store_client::Expected;

const GRPC_WRITERS: usize = 12;
const BATCHES_PER_WRITER: usize = 40;
const SQL_WRITERS: usize = 8;
const SQL_EVENTS_PER_WRITER: usize = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscriber_sees_every_event_once_in_order_under_concurrent_writers() {
    let store = Store::start(false).await;

    // The subscriber starts before the writers and reads while they write.
    let mut subscription = store
        .client
        .grpc()
        .subscribe(SubscribeRequest {
            after_position: 0,
            filter: None,
            batch_size: 7,
        })
        .await
        .unwrap()
        .into_inner();

    // Writers through the API: many small appends, grouped by the store.
    let mut writers = Vec::new();
    for writer in 0..GRPC_WRITERS {
        let client = store.client.clone();
        writers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for batch in 0..BATCHES_PER_WRITER {
                let size = rand::rng().random_range(1..=5);
                let events: Vec<_> = (0..size).map(|_| call_event("x")).collect();
                ids.extend(events.iter().map(|e| e.event_id.clone()));
                let stream = format!("call-w{writer}-{}", batch % 3);
                client.append(&stream, Expected::Any, events).await.unwrap();
            }
            ids
        }));
    }
    // Writers straight into Postgres, each holding its transaction open for
    // a random while after inserting: commits finish in an order unrelated
    // to when the inserts started. The database serialises them.
    for writer in 0..SQL_WRITERS {
        let url = store.db.url.clone();
        writers.push(tokio::spawn(async move {
            let mut client = kit::db::connect(&url).await.unwrap();
            let mut ids = Vec::new();
            for n in 0..SQL_EVENTS_PER_WRITER {
                let id = Uuid::new_v4();
                let tx = client.transaction().await.unwrap();
                tx.execute(
                    "INSERT INTO eventlog.events (event_id, stream, version, category, type, occurred_at, correlation_id, producer, payload)
                     VALUES ($1, $2, $3, 'sql', 'CallCompleted', now(), $1, 'sql-writer', '')",
                    &[&id, &format!("sql-{writer}"), &(n as i64 + 1)],
                )
                .await
                .unwrap();
                let pause = rand::rng().random_range(0..3);
                tokio::time::sleep(Duration::from_millis(pause)).await;
                if n % 10 == 9 {
                    // An aborted append leaves a gap in positions; readers must not care.
                    tx.rollback().await.unwrap();
                    let tx = client.transaction().await.unwrap();
                    tx.execute(
                        "INSERT INTO eventlog.events (event_id, stream, version, category, type, occurred_at, correlation_id, producer, payload)
                         VALUES ($1, $2, $3, 'sql', 'CallCompleted', now(), $1, 'sql-writer', '')",
                        &[&id, &format!("sql-{writer}"), &(n as i64 + 1)],
                    )
                    .await
                    .unwrap();
                    tx.commit().await.unwrap();
                } else {
                    tx.commit().await.unwrap();
                }
                ids.push(id.to_string());
            }
            ids
        }));
    }

    let mut appended = HashSet::new();
    for writer in writers {
        appended.extend(writer.await.unwrap());
    }

    let mut seen = Vec::new();
    while seen.len() < appended.len() {
        let message = tokio::time::timeout(Duration::from_secs(60), subscription.message())
            .await
            .expect("subscriber stalled")
            .unwrap()
            .expect("subscription open");
        seen.extend(message.events.into_iter().map(|e| (e.position, e.event_id)));
    }
    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "positions must strictly increase"
    );
    let ids: HashSet<String> = seen.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(ids.len(), seen.len(), "no event seen twice");
    assert_eq!(ids, appended, "every appended event seen");

    // A reader replaying afterwards sees the very same order.
    let mut replay = store
        .client
        .grpc()
        .read_all(ReadAllRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut replayed = Vec::new();
    while let Some(message) = replay.message().await.unwrap() {
        replayed.extend(message.events.into_iter().map(|e| (e.position, e.event_id)));
    }
    assert_eq!(replayed, seen);
}
