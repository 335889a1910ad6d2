//! A running event store on a throw-away database and JetStream stream, for
//! the tests of this crate and of the services that append to it.

use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use prost::Message as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use kit::events::{new_event, to_proto_time};
use kit::proto::events::v1::{CallCompleted, Event};
use kit::proto::eventstore::v1::NewEvent;
use kit::store_client::EventStoreClient;
use kit::testing::{TestBus, TestDb, common};

pub struct TestStore {
    pub client: EventStoreClient,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: Option<JoinHandle<Result<(), crate::Error>>>,
    pub common: kit::config::Common,
    // Dropped last: the database outlives the store's connections.
    pub bus: TestBus,
    pub db: TestDb,
}

pub fn config(relay: bool) -> crate::Config {
    crate::Config {
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        relay,
        read_pool: 4,
        max_group_events: 5000,
        relay_batch: 100,
        master_key: "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff".into(),
    }
}

/// A reader of the log at `database_url`, with the test master key.
pub fn reader(database_url: &str) -> crate::read::Reader {
    let master = crate::privacy::parse_master_key(&config(false).master_key).expect("test key");
    let privacy =
        crate::privacy::Privacy::new(&master, kit::db::pool(database_url, 2).expect("pool"));
    crate::read::Reader::new(
        kit::db::pool(database_url, 2).expect("pool"),
        std::sync::Arc::new(privacy),
    )
}

impl TestStore {
    pub async fn start(relay: bool) -> Self {
        Self::start_on(TestDb::create().await, TestBus::new(), relay).await
    }

    pub async fn start_on(db: TestDb, bus: TestBus, relay: bool) -> Self {
        kit::telemetry::init_for_tests();
        let common = common(&db.url, &bus);
        let store = crate::EventStore::build(common.clone(), config(relay))
            .await
            .expect("event store builds");
        let (grpc_addr, http_addr) = (store.grpc_addr(), store.http_addr());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(store.run(shutdown.clone()));
        let client = EventStoreClient::connect_lazy(&format!("http://{grpc_addr}"), "test")
            .unwrap()
            .authenticated(&common.event_store_token_for("test"));
        Self {
            client,
            grpc_addr,
            http_addr,
            shutdown,
            task: Some(task),
            common,
            bus,
            db,
        }
    }

    /// The URL clients use.
    pub fn url(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    /// Stops the store and waits for it to drain.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await
                .expect("store task")
                .expect("store stops cleanly");
        }
    }

    pub async fn count_rows(&self) -> i64 {
        let client = self.db.connect().await;
        client
            .query_one("SELECT count(*) FROM eventlog.events", &[])
            .await
            .unwrap()
            .get(0)
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A `CallCompleted` event with a fresh id.
pub fn call_event(call_id: &str) -> NewEvent {
    let payload = CallCompleted {
        provider: "exolve".into(),
        call_id: call_id.into(),
        ..Default::default()
    };
    let mut event = new_event(Uuid::new_v4(), None, &payload);
    event.occurred_at = Some(to_proto_time(jiff::Timestamp::now()));
    event
}

/// Every message of the test's JetStream stream, decoded, in stream order.
pub async fn jetstream_events(
    bus: &kit::bus::Bus,
    expected: usize,
) -> Vec<(u64, Option<String>, Event)> {
    let stream = bus.ensure_stream().await.unwrap();
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut out = Vec::new();
    while out.len() < expected {
        let next = tokio::time::timeout(Duration::from_secs(60), messages.next()).await;
        let Ok(Some(Ok(message))) = next else {
            panic!("only {} of {expected} events reached JetStream", out.len());
        };
        let info = message.info().unwrap();
        let msg_id = message
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.to_string());
        out.push((
            info.stream_sequence,
            msg_id,
            Event::decode(message.payload.as_ref()).unwrap(),
        ));
    }
    out
}
