//! The service against a real event store and JetStream: a transcript in
//! the log gets its verdict in the log, once.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use consent_analyzer::service::{self, Config};
use event_store::testing::TestStore;
use kit::events::{decode, new_event};
use kit::proto::events::v1::{
    ConsentAnalyzed, ConsentDecision, ContactOptedOut, Event, SpeakerRole, TranscriptReady,
    TranscriptTurn,
};
use kit::proto::eventstore::v1::ReadStreamRequest;
use kit::store_client::Expected;
use kit::testing::eventually;

fn transcript(call_id: &str, phone: &str, lines: &[(SpeakerRole, &str)]) -> TranscriptReady {
    TranscriptReady {
        provider: "exolve".into(),
        call_id: call_id.into(),
        client_phone: phone.into(),
        language: "ru".into(),
        turns: lines
            .iter()
            .map(|(role, text)| TranscriptTurn {
                role: *role as i32,
                text: (*text).into(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
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

async fn start(store: &TestStore) -> CancellationToken {
    let mut common = store.common.clone();
    common.event_store_url = store.url();
    let shutdown = CancellationToken::new();
    let config = Config {
        http_addr: "127.0.0.1:0".parse().unwrap(),
        concurrency: 4,
        max_deliveries: 3,
    };
    tokio::spawn(service::run(common, config, shutdown.clone()));
    shutdown
}

#[tokio::test]
async fn a_transcript_gets_its_verdict_and_an_opt_out_reaches_the_contact() {
    let store = TestStore::start(true).await;
    let stop = start(&store).await;

    let agreed = transcript(
        "a1",
        "+79161234567",
        &[
            (
                SpeakerRole::Manager,
                "Добрый день! Напомнить вам о предложении через месяц?",
            ),
            (
                SpeakerRole::Client,
                "Да, давайте, только лучше через две недели.",
            ),
        ],
    );
    let input = new_event(uuid::Uuid::new_v4(), None, &agreed);
    let input_id = input.event_id.clone();
    store
        .client
        .append("call-exolve-a1", Expected::Any, vec![input])
        .await
        .unwrap();

    let verdict = eventually("a verdict", Duration::from_secs(60), || async {
        stream(&store, "call-exolve-a1")
            .await
            .into_iter()
            .find(|e| e.r#type == "ConsentAnalyzed")
    })
    .await;
    let analyzed: ConsentAnalyzed = decode(&verdict).unwrap();
    assert_eq!(analyzed.decision, ConsentDecision::Agreed as i32);
    assert_eq!(analyzed.remind_after, "P14D");
    assert!(!analyzed.opt_out);
    assert!(
        analyzed.evidence.iter().any(|e| e.contains("две недели")),
        "{:?}",
        analyzed.evidence
    );
    assert_eq!(
        analyzed.analyzer_version,
        consent_analyzer::ANALYZER_VERSION
    );
    assert_eq!(
        verdict.causation_id, input_id,
        "the verdict names its cause"
    );
    assert_eq!(verdict.producer, "consent-analyzer");

    let refused = transcript(
        "a2",
        "+79167654321",
        &[
            (
                SpeakerRole::Manager,
                "Can I call you back in a week about the offer?",
            ),
            (
                SpeakerRole::Client,
                "No. Stop calling me and delete my number.",
            ),
        ],
    );
    store
        .client
        .append(
            "call-exolve-a2",
            Expected::Any,
            vec![new_event(uuid::Uuid::new_v4(), None, &refused)],
        )
        .await
        .unwrap();
    let opted_out = eventually("an opt-out", Duration::from_secs(60), || async {
        stream(
            &store,
            &kit::contacts::contact_stream(
                &store.common.contact_salt,
                &kit::phone::PhoneNumber::parse("+79167654321", Default::default()).unwrap(),
            ),
        )
        .await
        .into_iter()
        .next()
    })
    .await;
    let opt_out: ContactOptedOut = decode(&opted_out).unwrap();
    assert_eq!(opt_out.phone, "+79167654321");
    assert_eq!(opt_out.call_id, "a2");
    let call = stream(&store, "call-exolve-a2").await;
    let analyzed: ConsentAnalyzed =
        decode(call.iter().find(|e| e.r#type == "ConsentAnalyzed").unwrap()).unwrap();
    assert_eq!(analyzed.decision, ConsentDecision::Declined as i32);
    assert!(analyzed.opt_out);

    // An empty transcript is unclear with a reason, not a failure.
    let silent = transcript("a3", "", &[]);
    store
        .client
        .append(
            "call-exolve-a3",
            Expected::Any,
            vec![new_event(uuid::Uuid::new_v4(), None, &silent)],
        )
        .await
        .unwrap();
    let verdict = eventually("a verdict on silence", Duration::from_secs(60), || async {
        stream(&store, "call-exolve-a3")
            .await
            .into_iter()
            .find(|e| e.r#type == "ConsentAnalyzed")
    })
    .await;
    let analyzed: ConsentAnalyzed = decode(&verdict).unwrap();
    assert_eq!(analyzed.decision, ConsentDecision::Unclear as i32);
    assert_eq!(analyzed.reason, "no_client_turns");
    stop.cancel();
}

#[tokio::test]
async fn a_restarted_service_does_not_decide_twice() {
    let store = TestStore::start(true).await;
    let stop = start(&store).await;
    let call = transcript(
        "b1",
        "+79161234567",
        &[
            (SpeakerRole::Manager, "Напомнить через неделю?"),
            (SpeakerRole::Client, "Угу, напомните."),
        ],
    );
    store
        .client
        .append(
            "call-exolve-b1",
            Expected::Any,
            vec![new_event(uuid::Uuid::new_v4(), None, &call)],
        )
        .await
        .unwrap();
    eventually("a verdict", Duration::from_secs(60), || async {
        (stream(&store, "call-exolve-b1").await.len() == 2).then_some(())
    })
    .await;
    stop.cancel();

    // The durable consumer is deleted, as if acknowledgements had been lost:
    // a new instance gets every transcript again.
    let bus = store.bus.connect().await;
    let js_stream = bus.ensure_stream().await.unwrap();
    eventually(
        "the first instance to stop",
        Duration::from_secs(30),
        || async {
            js_stream
                .delete_consumer(service::NAME)
                .await
                .ok()
                .map(|_| ())
        },
    )
    .await;
    let stop = start(&store).await;
    let other = transcript("b2", "+79161234567", &[(SpeakerRole::Client, "нет")]);
    store
        .client
        .append(
            "call-exolve-b2",
            Expected::Any,
            vec![new_event(uuid::Uuid::new_v4(), None, &other)],
        )
        .await
        .unwrap();
    eventually(
        "the second instance caught up",
        Duration::from_secs(60),
        || async { (stream(&store, "call-exolve-b2").await.len() == 2).then_some(()) },
    )
    .await;
    assert_eq!(
        stream(&store, "call-exolve-b1").await.len(),
        2,
        "the first call still has exactly one verdict"
    );
    stop.cancel();
}
