//! The relay publishes every event to JetStream in log order, once, and
//! recovers from being stopped, from NATS going away, and from losing its
//! leadership.

use std::collections::HashSet;
use std::process::Stdio;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use event_store::relay::{self, RelayConfig};
use event_store::testing::{TestStore as Store, call_event, jetstream_events};
use kit::health::Health;
use kit::store_client::Expected;
use kit::testing::{TestBus, TestDb, eventually};

/// Appends `n` events over a few streams and returns their ids in order.
async fn append_events(store: &Store, n: usize, tag: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let event = call_event(tag);
        ids.push(event.event_id.clone());
        store
            .client
            .append(&format!("call-{tag}-{}", i % 4), Expected::Any, vec![event])
            .await
            .unwrap();
    }
    ids
}

/// Checks the stream holds exactly `ids`, in order, each with its id as
/// `Nats-Msg-Id`, with strictly increasing positions.
async fn assert_stream_holds(store: &Store, ids: &[String]) {
    let bus = store.bus.connect().await;
    let messages = jetstream_events(&bus, ids.len()).await;
    let got: Vec<&str> = messages
        .iter()
        .map(|(_, _, e)| e.event_id.as_str())
        .collect();
    let want: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(got, want, "JetStream holds the log in order");
    assert!(
        messages
            .iter()
            .all(|(_, msg_id, e)| msg_id.as_deref() == Some(e.event_id.as_str()))
    );
    assert!(
        messages
            .windows(2)
            .all(|w| w[0].2.position < w[1].2.position)
    );
    let info = bus.ensure_stream().await.unwrap().get_info().await.unwrap();
    assert_eq!(
        info.state.messages,
        ids.len() as u64,
        "no event published twice"
    );
}

async fn start_relay(store: &Store) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let shutdown = CancellationToken::new();
    let bus = kit::bus::Bus::connect(&store.common, "relay-test")
        .await
        .unwrap();
    let reader = event_store::testing::reader(&store.db.url);
    let (wake, wake_rx) = event_store::notify::channel();
    tokio::spawn(event_store::notify::watch_head(
        reader.clone(),
        wake,
        shutdown.clone(),
    ));
    let task = tokio::spawn(relay::run(
        store.db.url.clone(),
        RelayConfig {
            name: store.common.jetstream_stream.clone(),
            batch: 25,
        },
        bus,
        reader,
        wake_rx,
        Health::new(),
        shutdown.clone(),
    ));
    (shutdown, task)
}

async fn checkpoint(store: &Store) -> i64 {
    let client = store.db.connect().await;
    client
        .query_opt("SELECT position FROM eventlog.relay_checkpoint", &[])
        .await
        .unwrap()
        .map_or(0, |row| row.get(0))
}

#[tokio::test]
async fn every_event_reaches_jetstream_in_order_with_its_id() {
    let store = Store::start(true).await;
    let ids = append_events(&store, 120, "a").await;
    assert_stream_holds(&store, &ids).await;
    let bus = store.bus.connect().await;
    let first = &jetstream_events(&bus, 1).await[0].2;
    assert_eq!(first.category, "call");
    assert_eq!(first.r#type, "CallCompleted");
}

#[tokio::test]
async fn a_stopped_relay_resumes_without_losing_or_repeating_events() {
    let store = Store::start(false).await;
    let mut ids = append_events(&store, 150, "b").await;

    let (stop, task) = start_relay(&store).await;
    eventually("some events relayed", Duration::from_secs(60), || async {
        (checkpoint(&store).await > 0).then_some(())
    })
    .await;
    stop.cancel();
    task.await.unwrap();

    // More events while no relay runs.
    ids.extend(append_events(&store, 50, "b").await);
    let (stop, task) = start_relay(&store).await;
    assert_stream_holds(&store, &ids).await;
    stop.cancel();
    task.await.unwrap();

    // A crash between publishing and saving the checkpoint: the checkpoint
    // is behind what JetStream has. The relay resumes from the stream's last
    // message, so nothing is published twice, even outside the duplicate
    // window.
    store
        .db
        .connect()
        .await
        .execute("UPDATE eventlog.relay_checkpoint SET position = 3", &[])
        .await
        .unwrap();
    ids.extend(append_events(&store, 10, "b").await);
    let (stop, task) = start_relay(&store).await;
    assert_stream_holds(&store, &ids).await;
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn only_one_relay_publishes_and_a_standby_takes_over() {
    let store = Store::start(false).await;
    let (stop_a, task_a) = start_relay(&store).await;
    // Let A take the lease before B starts.
    eventually("relay a leads", Duration::from_secs(30), || async {
        let client = store.db.connect().await;
        let held: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        (held > 0).then_some(())
    })
    .await;
    let (stop_b, task_b) = start_relay(&store).await;
    let mut ids = append_events(&store, 100, "c").await;
    eventually("relayed by a", Duration::from_secs(60), || async {
        let last = checkpoint(&store).await;
        (last >= 100).then_some(())
    })
    .await;
    stop_a.cancel();
    task_a.await.unwrap();
    ids.extend(append_events(&store, 100, "c").await);
    assert_stream_holds(&store, &ids).await;
    stop_b.cancel();
    task_b.await.unwrap();
}

/// A NATS server of the test's own, so the test can kill and restart it.
struct NatsProcess {
    child: tokio::process::Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl NatsProcess {
    fn binary() -> String {
        if let Ok(bin) = std::env::var("NATS_SERVER_BIN") {
            return bin;
        }
        for candidate in [
            "/usr/sbin/nats-server",
            "/usr/bin/nats-server",
            "/usr/local/bin/nats-server",
        ] {
            if std::path::Path::new(candidate).exists() {
                return candidate.into();
            }
        }
        "nats-server".into()
    }

    async fn start(port: u16, dir: std::path::PathBuf) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        let child = tokio::process::Command::new(Self::binary())
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("nats-server runs (make test installs it)");
        eventually(
            "nats-server listening",
            Duration::from_secs(30),
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await;
        Self { child, port, dir }
    }

    async fn kill(mut self) -> (u16, std::path::PathBuf) {
        self.child.kill().await.unwrap();
        let _ = self.child.wait().await;
        (self.port, self.dir.clone())
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_appended_while_nats_is_down_arrive_once_it_is_back() {
    let dir = std::env::temp_dir().join(format!("cftest-nats-{:08x}", rand::random::<u32>()));
    let port = free_port();
    let nats = NatsProcess::start(port, dir.clone()).await;
    let url = format!("nats://127.0.0.1:{port}");
    let store = Store::start_on(TestDb::create().await, TestBus::on(&url), true).await;

    let mut ids = append_events(&store, 60, "d").await;
    eventually("first events relayed", Duration::from_secs(60), || async {
        (checkpoint(&store).await > 0).then_some(())
    })
    .await;

    // NATS dies mid-stream; the log keeps taking events.
    let (port, dir) = nats.kill().await;
    ids.extend(append_events(&store, 60, "d").await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let nats = NatsProcess::start(port, dir.clone()).await;
    ids.extend(append_events(&store, 30, "d").await);

    assert_stream_holds(&store, &ids).await;
    drop(store);
    drop(nats);
    let _ = std::fs::remove_dir_all(dir);
    let unique: HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len());
}
