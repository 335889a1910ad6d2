//! kit's JetStream consumer helper against a real event store and NATS:
//! outputs appended once whatever the redeliveries, failing messages retried
//! with backoff then parked with a `DeadLettered` event, trace continued.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use event_store::testing::TestStore;
use kit::consumer::{self, ConsumerConfig, HandleError, Handler, Input, Output};
use kit::events::{decode, new_event};
use kit::proto::events::v1::{DeadLettered, Event, NotificationSent, TraceContext};
use kit::proto::eventstore::v1::ReadStreamRequest;
use kit::store_client::Expected;
use kit::testing::eventually;

/// What the test handler does.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Succeed, but the first delivery takes longer than the ack wait, so the
    /// message is delivered again while the first attempt still runs.
    SlowFirst,
    /// Fail this many deliveries, then succeed.
    FailFirst(u64),
    /// Always fail in a way that may pass later.
    AlwaysRetry,
    /// Fail in a way that never passes.
    Reject,
}

struct TestHandler {
    behaviour: Behaviour,
    calls: AtomicU64,
}

impl Handler for TestHandler {
    async fn handle(&self, input: &Input) -> Result<Vec<Output>, HandleError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        match self.behaviour {
            Behaviour::SlowFirst if call == 1 => {
                tokio::time::sleep(Duration::from_millis(2500)).await
            }
            Behaviour::FailFirst(n) if input.delivered <= n => {
                return Err(HandleError::Retry(format!("attempt {call} fails")));
            }
            Behaviour::AlwaysRetry => return Err(HandleError::Retry("provider down".into())),
            Behaviour::Reject => return Err(HandleError::Reject("malformed input".into())),
            _ => {}
        }
        let output = NotificationSent {
            notification_id: input.event.event_id.clone(),
            text: "handled".into(),
            ..Default::default()
        };
        Ok(vec![Output::new(
            format!("notification-{}", input.event.stream),
            "notified",
            &output,
        )])
    }
}

struct Setup {
    store: TestStore,
    handler: Arc<TestHandler>,
    stop: CancellationToken,
}

async fn setup(behaviour: Behaviour) -> Setup {
    let store = TestStore::start(true).await;
    let handler = Arc::new(TestHandler {
        behaviour,
        calls: AtomicU64::new(0),
    });
    let bus = store.bus.connect().await;
    let config = ConsumerConfig {
        concurrency: 4,
        max_deliveries: 3,
        ack_wait: Duration::from_secs(1),
        backoff_base: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        ..ConsumerConfig::new("test-consumer", bus.subject("call", "CallCompleted"))
    };
    let stop = CancellationToken::new();
    tokio::spawn(consumer::run(
        bus,
        store.client.clone(),
        config,
        handler.clone(),
        stop.clone(),
    ));
    Setup {
        store,
        handler,
        stop,
    }
}

async fn stream(store: &TestStore, name: &str) -> Vec<Event> {
    store
        .client
        .grpc()
        .read_stream(ReadStreamRequest {
            stream: name.into(),
            from_version: 1,
            max_count: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .events
}

/// Appends one input event with a known trace context; returns its id.
async fn input(store: &TestStore, stream: &str) -> String {
    let mut event = new_event(
        uuid::Uuid::new_v4(),
        None,
        &kit::proto::events::v1::CallCompleted::default(),
    );
    event.trace = Some(TraceContext {
        traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        tracestate: String::new(),
    });
    let id = event.event_id.clone();
    store
        .client
        .append(stream, Expected::Any, vec![event])
        .await
        .unwrap();
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_handled_twice_appends_its_output_once_in_the_same_trace() {
    let setup = setup(Behaviour::SlowFirst).await;
    let cause = input(&setup.store, "call-x-1").await;
    eventually(
        "both deliveries handled",
        Duration::from_secs(60),
        || async { (setup.handler.calls.load(Ordering::SeqCst) >= 2).then_some(()) },
    )
    .await;
    let outputs = eventually("the output", Duration::from_secs(60), || async {
        let events = stream(&setup.store, "notification-call-x-1").await;
        (!events.is_empty()).then_some(events)
    })
    .await;
    // Let the slow first attempt finish and append too.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let outputs_after = stream(&setup.store, "notification-call-x-1").await;
    assert_eq!(outputs_after.len(), 1, "redelivery appended nothing new");
    let output = &outputs[0];
    assert_eq!(output.causation_id, cause);
    assert_eq!(
        output.correlation_id, cause,
        "a new flow correlates to its first event"
    );
    let trace = output.trace.as_ref().unwrap();
    assert!(
        trace
            .traceparent
            .contains("0af7651916cd43dd8448eb211c80319c"),
        "{trace:?}"
    );
    let _: NotificationSent = decode(output).unwrap();
    setup.stop.cancel();
}

#[tokio::test]
async fn a_handler_that_recovers_gets_its_output_once_and_nothing_is_parked() {
    let setup = setup(Behaviour::FailFirst(2)).await;
    input(&setup.store, "call-x-2").await;
    eventually("the output", Duration::from_secs(60), || async {
        (!stream(&setup.store, "notification-call-x-2")
            .await
            .is_empty())
        .then_some(())
    })
    .await;
    assert_eq!(setup.handler.calls.load(Ordering::SeqCst), 3);
    assert!(
        stream(&setup.store, "deadletter-test-consumer")
            .await
            .is_empty()
    );
    setup.stop.cancel();
}

#[tokio::test]
async fn a_message_that_keeps_failing_is_parked_with_its_reason_and_not_redelivered() {
    let setup = setup(Behaviour::AlwaysRetry).await;
    let cause = input(&setup.store, "call-x-3").await;
    let dead = eventually("a dead letter", Duration::from_secs(60), || async {
        stream(&setup.store, "deadletter-test-consumer")
            .await
            .into_iter()
            .next()
    })
    .await;
    let parked: DeadLettered = decode(&dead).unwrap();
    assert_eq!(parked.event_id, cause);
    assert_eq!(parked.deliveries, 3);
    assert_eq!(parked.reason, "provider down");
    assert_eq!(parked.consumer, "test-consumer");
    assert_eq!(dead.causation_id, cause);
    // Parked means parked: no further deliveries.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(setup.handler.calls.load(Ordering::SeqCst), 3);
    assert!(
        stream(&setup.store, "notification-call-x-3")
            .await
            .is_empty()
    );
    setup.stop.cancel();
}

#[tokio::test]
async fn a_rejected_message_is_parked_at_once() {
    let setup = setup(Behaviour::Reject).await;
    let cause = input(&setup.store, "call-x-4").await;
    let dead = eventually("a dead letter", Duration::from_secs(60), || async {
        stream(&setup.store, "deadletter-test-consumer")
            .await
            .into_iter()
            .next()
    })
    .await;
    let parked: DeadLettered = decode(&dead).unwrap();
    assert_eq!(
        (parked.event_id.as_str(), parked.deliveries),
        (cause.as_str(), 1)
    );
    assert_eq!(setup.handler.calls.load(Ordering::SeqCst), 1);
    setup.stop.cancel();
}
