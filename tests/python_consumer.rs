//! Plays the other team: a subscriber written in Python with nats-py and
//! protobuf classes generated from `proto/` (tests/python/consumer.py, set
//! up by tests/python/setup.sh) reads what the relay published and must find
//! every appended event exactly once, with the same envelope and the same
//! payload fields, personal fields (phone numbers, a client's words) in
//! clear.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;

use event_store::testing::TestStore;
use kit::events::{new_event, to_proto_time};
use kit::proto::events::v1::{
    CallCompleted, CallDirection, CallStarted, ConsentAnalyzed, ConsentDecision, ContactOptedOut,
    DeadLettered, Event, MessageKind, ReminderScheduled, SmsSent, SpeakerRole, TranscriptReady,
    TranscriptTurn,
};
use kit::proto::eventstore::v1::NewEvent;
use kit::proto::prost_types;
use kit::store_client::{EventStoreClient, Expected};
use kit::testing::eventually;

/// The service name the test appends as (the store records it as producer).
const PRODUCER: &str = "python-interop";
/// The Python client's durable consumer.
const DURABLE: &str = "python-interop";

const CLIENT: &str = "+79161234567";
const BUSINESS: &str = "+74951234567";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lies in the repository")
        .to_path_buf()
}

/// The set-up's interpreter; fails (never skips) when it is missing.
fn python() -> PathBuf {
    let root = repo_root();
    let python = root.join(".local/python/bin/python");
    let classes = root.join(".local/python/gen/callflow/events/v1/events_pb2.py");
    for needed in [&python, &classes] {
        assert!(
            needed.is_file(),
            "the Python client is not set up ({} is missing): run tests/python/setup.sh \
             (`make test` runs it) to install nats-py and protobuf into .local/python and \
             generate the classes from proto/",
            needed.display()
        );
    }
    python
}

/// What the test appended, and where the store put it.
#[derive(Debug, Clone)]
struct Appended {
    new: NewEvent,
    stream: String,
    version: u64,
    position: u64,
}

fn at(text: &str) -> prost_types::Timestamp {
    to_proto_time(text.parse().unwrap())
}

fn seconds(seconds: i64, nanos: i32) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds, nanos })
}

/// A new event that happened at `occurred_at`, in the flow `correlation`,
/// caused by `cause`.
fn event<P: kit::events::Payload>(
    payload: &P,
    occurred_at: &str,
    correlation: &str,
    cause: &str,
) -> NewEvent {
    let mut event = new_event(Uuid::new_v4(), Some(occurred_at.parse().unwrap()), payload);
    event.correlation_id = correlation.to_owned();
    event.causation_id = cause.to_owned();
    event
}

async fn append(client: &EventStoreClient, stream: &str, events: Vec<NewEvent>) -> Vec<Appended> {
    let response = client
        .append(stream, Expected::NoStream, events.clone())
        .await
        .unwrap_or_else(|e| panic!("append to {stream}: {e}"));
    assert!(!response.duplicate);
    let first = response.stream_version + 1 - events.len() as u64;
    events
        .into_iter()
        .zip(response.positions)
        .enumerate()
        .map(|(n, (new, position))| Appended {
            new,
            stream: stream.to_owned(),
            version: first + n as u64,
            position,
        })
        .collect()
}

/// A call, its transcript and the consent decision; a reminder; an SMS; a
/// consumer's dead letter (64-bit numbers).
async fn append_day(client: &EventStoreClient, call_id: &str) -> Vec<Appended> {
    let mut appended = Vec::new();
    let started = CallStarted {
        provider: "exolve".into(),
        call_id: call_id.into(),
        from: CLIENT.into(),
        to: BUSINESS.into(),
        direction: CallDirection::Inbound as i32,
        started_at: Some(at("2026-11-24T07:00:00Z")),
        client_phone: CLIENT.into(),
    };
    let call_started = event(&started, "2026-11-24T07:00:00Z", "", "");
    let flow = call_started.event_id.clone();
    let completed = CallCompleted {
        provider: "exolve".into(),
        call_id: call_id.into(),
        direction: CallDirection::Inbound as i32,
        from: CLIENT.into(),
        to: BUSINESS.into(),
        started_at: Some(at("2026-11-24T07:00:00Z")),
        duration: seconds(125, 0),
        manager_id: "manager-17".into(),
        recording_url: format!("https://recordings.example/{call_id}.mp3"),
        client_phone: CLIENT.into(),
    };
    let call_completed = event(&completed, "2026-11-24T07:02:05.250Z", &flow, &flow);
    let transcript = TranscriptReady {
        provider: "exolve".into(),
        call_id: call_id.into(),
        turns: vec![
            TranscriptTurn {
                role: SpeakerRole::Manager as i32,
                text: "Здравствуйте! Напомнить вам о записи через месяц?".into(),
                start: seconds(0, 0),
                end: seconds(3, 500_000_000),
            },
            TranscriptTurn {
                role: SpeakerRole::Client as i32,
                text: "Да, напомните, пожалуйста, через месяц.".into(),
                start: seconds(4, 0),
                end: seconds(6, 120_000_000),
            },
        ],
        language: "ru".into(),
        client_phone: CLIENT.into(),
        call_started_at: Some(at("2026-11-24T07:00:00Z")),
    };
    let transcript_ready = event(
        &transcript,
        "2026-11-24T07:05:00Z",
        &flow,
        &call_completed.event_id,
    );
    let consent = ConsentAnalyzed {
        provider: "exolve".into(),
        call_id: call_id.into(),
        decision: ConsentDecision::Agreed as i32,
        remind_after: "P1M".into(),
        opt_out: false,
        confidence: 0.87,
        evidence: vec!["Да, напомните, пожалуйста, через месяц.".into()],
        analyzer_version: "1.4.0".into(),
        reason: "agreed".into(),
        client_phone: CLIENT.into(),
        call_started_at: Some(at("2026-11-24T07:00:00Z")),
        language: "ru".into(),
    };
    let consent_analyzed = event(
        &consent,
        "2026-11-24T07:05:01Z",
        &flow,
        &transcript_ready.event_id,
    );
    let consent_id = consent_analyzed.event_id.clone();
    appended.extend(
        append(
            client,
            &format!("call-exolve-{call_id}"),
            vec![
                call_started,
                call_completed,
                transcript_ready,
                consent_analyzed,
            ],
        )
        .await,
    );

    let reminder_id = Uuid::new_v4().to_string();
    let reminder = ReminderScheduled {
        reminder_id: reminder_id.clone(),
        phone: CLIENT.into(),
        due_at: Some(at("2026-12-24T07:00:00Z")),
        time_zone: "Europe/Moscow".into(),
        text: "Напоминаем о записи: позвоните нам, +7 495 123-45-67.".into(),
        source: "consent".into(),
        provider: "exolve".into(),
        call_id: call_id.into(),
        scheduled_by: "reminder-scheduler".into(),
    };
    appended.extend(
        append(
            client,
            &format!("reminder-{reminder_id}"),
            vec![event(&reminder, "2026-11-24T07:05:02Z", &flow, &consent_id)],
        )
        .await,
    );

    let sms_id = Uuid::new_v4().to_string();
    let sms = SmsSent {
        sms_id: sms_id.clone(),
        phone: CLIENT.into(),
        text: reminder.text.clone(),
        provider: "exolve".into(),
        provider_message_id: "551234".into(),
        kind: MessageKind::Service as i32,
        parts: 2,
        attempt: 1,
    };
    appended.extend(
        append(
            client,
            &format!("sms-{sms_id}"),
            vec![event(&sms, "2026-12-24T07:00:03Z", &flow, &consent_id)],
        )
        .await,
    );

    let dead = DeadLettered {
        consumer: "notifier".into(),
        event_id: consent_id.clone(),
        event_type: "ConsentAnalyzed".into(),
        event_stream: format!("call-exolve-{call_id}"),
        event_position: 9_007_199_254_740_993, // beyond a JSON double's integers
        subject: "callflow.evt.call.ConsentAnalyzed".into(),
        deliveries: 5,
        reason: "chat unreachable".into(),
    };
    appended.extend(
        append(
            client,
            &format!("deadletter-notifier-{call_id}"),
            vec![event(&dead, "2026-11-24T07:06:00Z", "", &consent_id)],
        )
        .await,
    );
    appended
}

/// The payload as the project's own JSON export writes it (prost-reflect,
/// proto field names, defaults included): what the Python classes must
/// decode from the same bytes.
fn rust_json(appended: &Appended) -> Value {
    kit::json::payload(&Event {
        r#type: appended.new.r#type.clone(),
        payload: appended.new.payload.clone(),
        ..Default::default()
    })
    .expect("a payload type of callflow.events.v1")
}

/// Runs the Python consumer until it has read `count` messages; its JSON lines.
async fn python_reads(store: &TestStore, count: usize) -> Vec<Value> {
    let root = repo_root();
    let mut command = tokio::process::Command::new(python());
    command
        .current_dir(&root)
        .arg(root.join("tests/python/consumer.py"))
        .args(["--nats-url", &store.bus.nats_url])
        .args(["--stream", &store.bus.stream])
        .args(["--subject-prefix", &store.bus.prefix])
        .args(["--durable", DURABLE])
        .args(["--count", &count.to_string()])
        .args(["--linger", "1.5", "--timeout", "60"])
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("the Python consumer finishes")
        .expect("the Python consumer starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the Python consumer failed ({}):\n--- stderr\n{stderr}\n--- stdout\n{stdout}",
        output.status
    );
    stdout
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}\n--- stderr\n{stderr}"))
        })
        .collect()
}

/// Checks that `received` (the Python consumer's lines) holds each of
/// `appended` exactly once, in log order, with everything as appended.
fn check(store: &TestStore, appended: &[Appended], received: &[Value]) {
    let ids: Vec<&str> = received
        .iter()
        .map(|line| line["event_id"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        received.len(),
        appended.len(),
        "each appended event arrives exactly once; received {ids:?}"
    );
    let by_id: HashMap<&str, &Value> = ids.iter().copied().zip(received).collect();
    assert_eq!(by_id.len(), received.len(), "no event twice: {ids:?}");

    // In log order, as the relay publishes.
    let positions: Vec<u64> = received
        .iter()
        .map(|line| line["position"].as_u64().unwrap())
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "received in log order: {positions:?}"
    );

    for expected in appended {
        let id = expected.new.event_id.as_str();
        let line = by_id
            .get(id)
            .unwrap_or_else(|| panic!("{} {id} did not reach Python", expected.new.r#type));
        let what = format!("{} {id}", expected.new.r#type);
        assert!(line.get("error").is_none(), "{what}: {}", line["error"]);
        let category = expected.stream.split('-').next().unwrap();
        assert_eq!(line["event_id"], id, "{what}");
        assert_eq!(line["stream"], expected.stream.as_str(), "{what}");
        assert_eq!(line["version"], expected.version, "{what}");
        assert_eq!(line["position"], expected.position, "{what}");
        assert_eq!(line["type"], expected.new.r#type.as_str(), "{what}");
        assert_eq!(line["category"], category, "{what}");
        assert_eq!(line["producer"], PRODUCER, "{what}");
        let correlation = if expected.new.correlation_id.is_empty() {
            id // a flow starts with its first event
        } else {
            &expected.new.correlation_id
        };
        assert_eq!(line["correlation_id"], correlation, "{what}");
        assert_eq!(
            line["causation_id"],
            expected.new.causation_id.as_str(),
            "{what}"
        );
        let occurred: jiff::Timestamp = line["occurred_at"].as_str().unwrap().parse().unwrap();
        let appended_at = expected.new.occurred_at.as_ref().unwrap();
        assert_eq!(
            (occurred.as_second(), occurred.subsec_nanosecond()),
            (appended_at.seconds, appended_at.nanos),
            "{what}: occurred_at"
        );
        assert!(line["recorded_at"].is_string(), "{what}: recorded_at");
        // The wire: subject, deduplication id, position header, one delivery.
        assert_eq!(
            line["subject"],
            format!("{}.{category}.{}", store.bus.prefix, expected.new.r#type),
            "{what}"
        );
        assert_eq!(line["headers"]["Nats-Msg-Id"], id, "{what}");
        assert_eq!(
            line["headers"]["Callflow-Position"],
            expected.position.to_string(),
            "{what}"
        );
        assert_eq!(line["delivered"], 1, "{what}");
        // The payload, field by field, as appended.
        assert_eq!(line["payload"], rust_json(expected), "{what}: payload");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_reads_every_event_as_appended() {
    python(); // before anything starts: fail at once when not set up
    let mut store = TestStore::start(true).await;
    let mut common = store.common.clone();
    common.event_store_url = store.url();
    let client = common.event_store(PRODUCER).unwrap();

    let call_id = format!("py-{:08x}", rand::random::<u32>());
    let appended = append_day(&client, &call_id).await;
    assert_eq!(appended.len(), 7);

    // The relay has published everything before Python starts reading.
    let bus = store.bus.connect().await;
    let stream = bus.ensure_stream().await.unwrap();
    eventually(
        "the relay publishes 7 events",
        Duration::from_secs(60),
        || async {
            let info = stream.get_info().await.ok()?;
            (info.state.messages >= 7).then_some(())
        },
    )
    .await;

    let received = python_reads(&store, appended.len()).await;
    check(&store, &appended, &received);

    // Spelled out, what another team reads: personal fields in clear,
    // enums by name, 64-bit integers as strings, protobuf JSON times.
    let by_type: HashMap<&str, &Value> = received
        .iter()
        .map(|line| (line["type"].as_str().unwrap(), &line["payload"]))
        .collect();
    let started = by_type["CallStarted"];
    assert_eq!(started["from"], CLIENT);
    assert_eq!(started["to"], BUSINESS);
    assert_eq!(started["client_phone"], CLIENT);
    assert_eq!(started["direction"], "CALL_DIRECTION_INBOUND");
    assert_eq!(started["started_at"], "2026-11-24T07:00:00Z");
    assert_eq!(by_type["CallCompleted"]["duration"], "125s");
    let turns = &by_type["TranscriptReady"]["turns"];
    assert_eq!(turns[1]["role"], "SPEAKER_ROLE_CLIENT");
    assert_eq!(turns[1]["text"], "Да, напомните, пожалуйста, через месяц.");
    assert_eq!(turns[1]["end"], "6.120s");
    let consent = by_type["ConsentAnalyzed"];
    assert_eq!(consent["decision"], "CONSENT_DECISION_AGREED");
    assert_eq!(consent["confidence"], 0.87);
    assert_eq!(consent["opt_out"], false, "defaults are there too");
    assert_eq!(
        consent["evidence"],
        json!(["Да, напомните, пожалуйста, через месяц."])
    );
    let reminder = by_type["ReminderScheduled"];
    assert_eq!(reminder["phone"], CLIENT);
    assert_eq!(reminder["due_at"], "2026-12-24T07:00:00Z");
    assert_eq!(by_type["SmsSent"]["kind"], "MESSAGE_KIND_SERVICE");
    assert_eq!(by_type["SmsSent"]["parts"], 2);
    assert_eq!(
        by_type["DeadLettered"]["event_position"],
        "9007199254740993"
    );

    // Its durable consumer acked everything, and a second run continues
    // after it: only what was appended since arrives.
    let consumer = stream.consumer_info(DURABLE).await.unwrap();
    assert_eq!(consumer.config.durable_name.as_deref(), Some(DURABLE));
    assert_eq!(
        consumer.config.ack_policy,
        async_nats::jetstream::consumer::AckPolicy::Explicit
    );
    assert_eq!(
        consumer.config.filter_subject,
        format!("{}.>", store.bus.prefix)
    );
    assert_eq!(consumer.num_ack_pending, 0, "every message acked");
    assert_eq!(consumer.num_pending, 0);
    assert_eq!(consumer.delivered.stream_sequence, 7);

    let opted_out = ContactOptedOut {
        phone: CLIENT.into(),
        channel: "sms".into(),
        evidence: vec!["СТОП".into()],
        ..Default::default()
    };
    let later = append(
        &client,
        &format!("contact-{}", &CLIENT[1..]),
        vec![event(&opted_out, "2026-12-24T08:00:00Z", "", "")],
    )
    .await;
    let again = python_reads(&store, 1).await;
    check(&store, &later, &again);
    assert_eq!(again[0]["payload"]["phone"], CLIENT);
    assert_eq!(again[0]["payload"]["evidence"], json!(["СТОП"]));

    store.stop().await;
}
