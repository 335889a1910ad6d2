//! kit's JetStream consumer helper against a real event store and NATS:
//! outputs appended once whatever the redeliveries, failing messages retried
//! with backoff then parked with a `DeadLettered` event, trace continued;
//! a parked message retried when an operator asks, the outcome recorded once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use event_store::testing::TestStore;
use kit::consumer::{self, ConsumerConfig, HandleError, Handler, Input, Output};
use kit::dead_letters;
use kit::events::{decode, derive_event_id, new_event};
use kit::proto::events::v1::{
    DeadLetterRetried, DeadLetterRetryRequested, DeadLettered, Event, NotificationSent,
    TraceContext,
};
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
    /// Fail in a way that never passes (until the test sets `fixed`).
    Reject,
}

struct TestHandler {
    behaviour: Behaviour,
    calls: AtomicU64,
    /// The bug is fixed: `Reject` succeeds from now on.
    fixed: AtomicBool,
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
            Behaviour::Reject if !self.fixed.load(Ordering::SeqCst) => {
                return Err(HandleError::Reject("malformed input".into()));
            }
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
    task: tokio::task::JoinHandle<()>,
}

async fn setup(behaviour: Behaviour) -> Setup {
    let store = TestStore::start(true).await;
    let handler = Arc::new(TestHandler {
        behaviour,
        calls: AtomicU64::new(0),
        fixed: AtomicBool::new(false),
    });
    let (stop, task) = start(&store, &handler).await;
    Setup {
        store,
        handler,
        stop,
        task,
    }
}

/// Runs the test consumer over `store` until the token is cancelled.
async fn start(
    store: &TestStore,
    handler: &Arc<TestHandler>,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
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
    let task = tokio::spawn({
        let (store, handler, stop) = (store.client.clone(), handler.clone(), stop.clone());
        async move {
            consumer::run(bus, store, config, handler, stop)
                .await
                .unwrap()
        }
    });
    (stop, task)
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

/// Appends an operator's request to retry `event_id` of `consumer`; returns
/// the request's id.
async fn request_retry(store: &TestStore, consumer: &str, event_id: &str) -> String {
    let request = DeadLetterRetryRequested {
        consumer: consumer.into(),
        event_id: event_id.into(),
        requested_by: "olga".into(),
        reason: "the parser is fixed".into(),
    };
    let event = new_event(uuid::Uuid::new_v4(), None, &request);
    let id = event.event_id.clone();
    store
        .client
        .append(
            &dead_letters::stream_of(consumer),
            Expected::Any,
            vec![event],
        )
        .await
        .unwrap();
    id
}

/// The recorded outcomes of retries of `test-consumer`.
async fn retried(store: &TestStore) -> Vec<(Event, DeadLetterRetried)> {
    stream(store, "deadletter-test-consumer")
        .await
        .into_iter()
        .filter_map(|e| decode(&e).ok().map(|r| (e, r)))
        .collect()
}

/// Waits for the outcome of the request with id `request`.
async fn outcome_of(store: &TestStore, request: &str) -> (Event, DeadLetterRetried) {
    let id = dead_letters::retried_event_id("test-consumer", request).to_string();
    eventually(
        "the outcome of a retry",
        Duration::from_secs(60),
        || async {
            retried(store)
                .await
                .into_iter()
                .find(|(e, _)| e.event_id == id)
        },
    )
    .await
}

/// Parks one input (the handler rejects it); returns its id.
async fn parked_input(setup: &Setup, stream_name: &str) -> String {
    let cause = input(&setup.store, stream_name).await;
    eventually("a dead letter", Duration::from_secs(60), || async {
        stream(&setup.store, "deadletter-test-consumer")
            .await
            .iter()
            .any(|e| decode::<DeadLettered>(e).is_ok_and(|d| d.event_id == cause))
            .then_some(())
    })
    .await;
    cause
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_message_retried_by_an_operator_gets_its_output_and_one_outcome() {
    let mut setup = setup(Behaviour::Reject).await;
    let cause = parked_input(&setup, "call-x-5").await;
    setup.handler.fixed.store(true, Ordering::SeqCst);

    let request = request_retry(&setup.store, "test-consumer", &cause).await;
    let (outcome_event, outcome) = outcome_of(&setup.store, &request).await;
    assert_eq!(
        outcome,
        DeadLetterRetried {
            consumer: "test-consumer".into(),
            event_id: cause.clone(),
            succeeded: true,
            detail: String::new(),
            requested_by: "olga".into(),
        }
    );
    assert_eq!(outcome_event.causation_id, request);
    let outputs = stream(&setup.store, "notification-call-x-5").await;
    assert_eq!(
        outputs.len(),
        1,
        "the output is in the log when the outcome is"
    );
    assert_eq!(outputs[0].causation_id, cause);
    assert_eq!(
        outputs[0].event_id,
        derive_event_id(&cause, "test-consumer/notified").to_string(),
        "the id a normal delivery gives it"
    );
    assert_eq!(setup.handler.calls.load(Ordering::SeqCst), 2);

    // Every request delivered again (a new durable starts from the first):
    // the recorded one neither runs nor records again.
    setup.stop.cancel();
    (&mut setup.task).await.unwrap();
    let bus = setup.store.bus.connect().await;
    let jetstream_stream = bus.jetstream.get_stream(&bus.stream_name).await.unwrap();
    jetstream_stream
        .delete_consumer(&dead_letters::retry_consumer_name("test-consumer"))
        .await
        .unwrap();
    (setup.stop, setup.task) = start(&setup.store, &setup.handler).await;
    // A request for another consumer is left alone; one for an event never
    // parked fails. Requests are handled in order, so once the last outcome
    // is in, the earlier requests have been handled.
    request_retry(&setup.store, "other-consumer", &cause).await;
    let unknown = uuid::Uuid::new_v4().to_string();
    let last = request_retry(&setup.store, "test-consumer", &unknown).await;
    let (_, failed) = outcome_of(&setup.store, &last).await;
    assert!(!failed.succeeded);
    assert_eq!(failed.event_id, unknown);
    assert!(
        failed.detail.contains("no message") && failed.detail.contains(&unknown),
        "{}",
        failed.detail
    );

    assert_eq!(
        setup.handler.calls.load(Ordering::SeqCst),
        2,
        "not run again"
    );
    let outcomes = retried(&setup.store).await;
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    assert_eq!(stream(&setup.store, "notification-call-x-5").await.len(), 1);
    let other = stream(&setup.store, "deadletter-other-consumer").await;
    assert_eq!(other.len(), 1, "only the request itself: {other:?}");
    setup.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_that_fails_again_is_recorded_as_failed_and_not_parked_again() {
    let setup = setup(Behaviour::Reject).await;
    let cause = parked_input(&setup, "call-x-6").await;

    let request = request_retry(&setup.store, "test-consumer", &cause).await;
    let (_, outcome) = outcome_of(&setup.store, &request).await;
    assert!(!outcome.succeeded);
    assert_eq!(outcome.detail, "malformed input");
    assert_eq!(outcome.event_id, cause);
    assert_eq!(setup.handler.calls.load(Ordering::SeqCst), 2);
    let parked = stream(&setup.store, "deadletter-test-consumer")
        .await
        .iter()
        .filter(|e| decode::<DeadLettered>(e).is_ok())
        .count();
    assert_eq!(parked, 1, "a failed retry is recorded, not parked again");
    assert!(
        stream(&setup.store, "notification-call-x-6")
            .await
            .is_empty()
    );

    // A parked message that was not an event envelope has nothing to retry.
    let not_an_event = DeadLettered {
        consumer: "test-consumer".into(),
        event_id: "nats-CALLFLOW-42".into(),
        reason: "not an event envelope: bad wire type".into(),
        deliveries: 1,
        ..Default::default()
    };
    setup
        .store
        .client
        .append(
            "deadletter-test-consumer",
            Expected::Any,
            vec![new_event(uuid::Uuid::new_v4(), None, &not_an_event)],
        )
        .await
        .unwrap();
    let request = request_retry(&setup.store, "test-consumer", "nats-CALLFLOW-42").await;
    let (_, outcome) = outcome_of(&setup.store, &request).await;
    assert!(!outcome.succeeded);
    assert!(
        outcome.detail.contains("not an event envelope"),
        "{}",
        outcome.detail
    );
    assert_eq!(setup.handler.calls.load(Ordering::SeqCst), 2);
    setup.stop.cancel();
}
