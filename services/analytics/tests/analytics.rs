//! The analysts' read model against a real event store and Postgres: a day
//! of calls becomes one row per call, reminder and SMS, the funnel counts
//! them, nothing personal is copied, a bad event is passed over, and
//! `rebuild` gives exactly the state the live projector had.

use std::time::Duration;

use jiff::Timestamp;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use event_store::testing::TestStore;
use kit::events::{new_event, to_proto_time};
use kit::proto::events::v1::{
    CallCompleted, CallStarted, ConsentAnalyzed, ConsentDecision, ReminderCancelled, ReminderDue,
    ReminderScheduled, SmsAttempted, SmsDelivered, SmsRequested, SmsSent, TranscriptReady,
    TranscriptTurn, TranscriptionFailed,
};
use kit::store_client::Expected;
use kit::testing::eventually;

const PATIENCE: Duration = Duration::from_secs(60);
const PHONE: &str = "+79161234567";

fn at(s: &str) -> Option<prost_types::Timestamp> {
    Some(to_proto_time(s.parse::<Timestamp>().unwrap()))
}

async fn append<P: kit::events::Payload>(store: &TestStore, stream: &str, payload: P) {
    store
        .client
        .append(
            stream,
            Expected::Any,
            vec![new_event(Uuid::new_v4(), None, &payload)],
        )
        .await
        .unwrap();
}

fn started(call: &str, time: &str) -> CallStarted {
    CallStarted {
        provider: "exolve".into(),
        call_id: call.into(),
        from: PHONE.into(),
        to: "+74951234567".into(),
        started_at: at(time),
        client_phone: PHONE.into(),
        ..Default::default()
    }
}

fn transcript(call: &str, time: &str) -> TranscriptReady {
    TranscriptReady {
        provider: "exolve".into(),
        call_id: call.into(),
        turns: vec![TranscriptTurn {
            text: "Да, напомните через месяц".into(),
            ..Default::default()
        }],
        language: "ru".into(),
        client_phone: PHONE.into(),
        call_started_at: at(time),
    }
}

fn consent(call: &str, decision: ConsentDecision) -> ConsentAnalyzed {
    ConsentAnalyzed {
        provider: "exolve".into(),
        call_id: call.into(),
        decision: decision as i32,
        remind_after: if decision == ConsentDecision::Agreed {
            "P1M".into()
        } else {
            String::new()
        },
        confidence: 0.9,
        evidence: vec!["Да, напомните через месяц".into()],
        analyzer_version: "test".into(),
        client_phone: PHONE.into(),
        ..Default::default()
    }
}

/// A day: a call that went all the way to a delivered SMS, a declined one,
/// one whose transcription failed, and a pushed transcript whose reminder
/// was cancelled.
async fn play_a_day(store: &TestStore) {
    let a = "call-exolve-a";
    append(store, a, started("a", "2026-11-24T09:00:00Z")).await;
    append(
        store,
        a,
        CallCompleted {
            provider: "exolve".into(),
            call_id: "a".into(),
            from: PHONE.into(),
            started_at: at("2026-11-24T09:00:00Z"),
            duration: Some(prost_types::Duration {
                seconds: 125,
                nanos: 0,
            }),
            manager_id: "m-7".into(),
            client_phone: PHONE.into(),
            ..Default::default()
        },
    )
    .await;
    append(store, a, transcript("a", "2026-11-24T09:00:00Z")).await;
    append(store, a, consent("a", ConsentDecision::Agreed)).await;
    let r1 = "reminder-11111111-1111-1111-1111-111111111111";
    append(
        store,
        r1,
        ReminderScheduled {
            reminder_id: "11111111-1111-1111-1111-111111111111".into(),
            phone: PHONE.into(),
            due_at: at("2026-12-24T09:00:00Z"),
            time_zone: "Europe/Moscow".into(),
            text: "Напоминаем".into(),
            source: "consent".into(),
            provider: "exolve".into(),
            call_id: "a".into(),
            scheduled_by: "reminder-scheduler".into(),
        },
    )
    .await;
    append(
        store,
        r1,
        ReminderDue {
            reminder_id: "11111111-1111-1111-1111-111111111111".into(),
            phone: PHONE.into(),
            text: "Напоминаем".into(),
            due_at: at("2026-12-24T09:00:00Z"),
            attempt: 1,
        },
    )
    .await;
    let s1 = "sms-22222222-2222-2222-2222-222222222222";
    let sms_id = "22222222-2222-2222-2222-222222222222";
    append(
        store,
        s1,
        SmsRequested {
            sms_id: sms_id.into(),
            phone: PHONE.into(),
            text: "Напоминаем".into(),
            parts: 1,
            reminder_id: "11111111-1111-1111-1111-111111111111".into(),
            ..Default::default()
        },
    )
    .await;
    append(
        store,
        s1,
        SmsAttempted {
            sms_id: sms_id.into(),
            attempt: 1,
            provider: "exolve".into(),
        },
    )
    .await;
    append(
        store,
        s1,
        SmsSent {
            sms_id: sms_id.into(),
            phone: PHONE.into(),
            text: "Напоминаем".into(),
            provider: "exolve".into(),
            provider_message_id: "m1".into(),
            parts: 1,
            attempt: 1,
            ..Default::default()
        },
    )
    .await;
    append(
        store,
        s1,
        SmsDelivered {
            sms_id: sms_id.into(),
            provider: "exolve".into(),
            provider_message_id: "m1".into(),
        },
    )
    .await;

    let b = "call-exolve-b";
    append(store, b, started("b", "2026-11-24T10:00:00Z")).await;
    append(store, b, transcript("b", "2026-11-24T10:00:00Z")).await;
    append(store, b, consent("b", ConsentDecision::Declined)).await;

    let c = "call-exolve-c";
    append(store, c, started("c", "2026-11-24T11:00:00Z")).await;
    append(
        store,
        c,
        TranscriptionFailed {
            provider: "exolve".into(),
            call_id: "c".into(),
            reason: "no recording".into(),
            attempts: 5,
        },
    )
    .await;

    // Pushed: no CallStarted, the start time comes with the transcript.
    let d = "call-exolve-d";
    append(store, d, transcript("d", "2026-11-24T12:00:00Z")).await;
    append(store, d, consent("d", ConsentDecision::Agreed)).await;
    let r2 = "reminder-33333333-3333-3333-3333-333333333333";
    append(
        store,
        r2,
        ReminderScheduled {
            reminder_id: "33333333-3333-3333-3333-333333333333".into(),
            phone: PHONE.into(),
            due_at: at("2026-12-24T12:00:00Z"),
            time_zone: "Europe/Moscow".into(),
            text: "Напоминаем".into(),
            source: "consent".into(),
            provider: "exolve".into(),
            call_id: "d".into(),
            ..Default::default()
        },
    )
    .await;
    append(
        store,
        r2,
        ReminderCancelled {
            reminder_id: "33333333-3333-3333-3333-333333333333".into(),
            cancelled_by: "crm".into(),
            reason: "client called back".into(),
        },
    )
    .await;
    // Unusable: a consent without a call id is passed over, not fatal.
    append(store, "call-exolve-e", consent("", ConsentDecision::Agreed)).await;
}

/// Every row of the read model as text, and the checkpoint.
async fn read_model(db: &tokio_postgres::Client) -> (Vec<String>, i64) {
    let rows = db
        .query(
            "SELECT 'calls ' || row_to_json(c)::text FROM analytics.calls c
             UNION ALL SELECT 'reminders ' || row_to_json(r)::text FROM analytics.reminders r
             UNION ALL SELECT 'sms ' || row_to_json(s)::text FROM analytics.sms s
             ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let checkpoint = db
        .query_one(
            "SELECT coalesce((SELECT position FROM analytics.projection_checkpoint), 0)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    (rows.iter().map(|r| r.get(0)).collect(), checkpoint)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_becomes_rows_and_a_funnel_and_rebuilds_to_the_same_state() {
    let store = TestStore::start(false).await;
    let mut common = store.common.clone();
    common.event_store_url = store.url();
    let config = analytics::Config {
        http_addr: "127.0.0.1:0".parse().unwrap(),
    };
    // The schema exists before anything reads it (run migrates too, but
    // in its own task).
    analytics::migrate(&common).await.unwrap();
    let stop = CancellationToken::new();
    let projector = tokio::spawn(analytics::run(common.clone(), config, stop.clone()));
    play_a_day(&store).await;

    let head = store
        .client
        .grpc()
        .head(())
        .await
        .unwrap()
        .into_inner()
        .position as i64;
    let db = store.db.connect().await;
    let live = eventually("the projector caught up", PATIENCE, || async {
        let state = read_model(&db).await;
        (state.1 >= head).then_some(state)
    })
    .await;

    let funnel = db
        .query_one(
            "SELECT day::text, calls, transcribed, agreed, reminded, sms_delivered FROM analytics.funnel",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(funnel.get::<_, String>(0), "2026-11-24");
    let counts: Vec<i64> = (1..6).map(|i| funnel.get(i)).collect();
    assert_eq!(
        counts,
        [4, 3, 2, 1, 1],
        "calls → transcribed → agreed → reminded → delivered"
    );

    let a = db
        .query_one(
            "SELECT consent_decision, remind_after, duration_seconds, manager_id, language, opted_out
             FROM analytics.calls WHERE provider = 'exolve' AND call_id = 'a'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(a.get::<_, Option<String>>(0).as_deref(), Some("agreed"));
    assert_eq!(a.get::<_, Option<String>>(1).as_deref(), Some("P1M"));
    assert_eq!(a.get::<_, Option<f64>>(2), Some(125.0));
    assert_eq!(a.get::<_, Option<String>>(3).as_deref(), Some("m-7"));
    assert_eq!(a.get::<_, Option<String>>(4).as_deref(), Some("ru"));
    assert!(!a.get::<_, bool>(5));
    let c = db
        .query_one(
            "SELECT transcription_failure FROM analytics.calls WHERE call_id = 'c'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        c.get::<_, Option<String>>(0).as_deref(),
        Some("no recording")
    );
    let states: Vec<(String, String)> = db
        .query(
            "SELECT reminder_id, state FROM analytics.reminders ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        states,
        [
            (
                "11111111-1111-1111-1111-111111111111".to_owned(),
                "due".to_owned()
            ),
            (
                "33333333-3333-3333-3333-333333333333".to_owned(),
                "cancelled".to_owned()
            ),
        ]
    );
    let sms = db
        .query_one("SELECT status, attempts, parts FROM analytics.sms", &[])
        .await
        .unwrap();
    assert_eq!(sms.get::<_, String>(0), "delivered");
    assert_eq!(sms.get::<_, i32>(1), 1);
    assert_eq!(sms.get::<_, Option<i32>>(2), Some(1));
    // The bad consent made no row; the projector went on past it.
    assert_eq!(live.0.iter().filter(|r| r.starts_with("calls ")).count(), 4);
    // Nothing personal in the read model.
    for row in &live.0 {
        assert!(
            !row.contains("9161234567")
                && !row.contains("Напоминаем")
                && !row.contains("напомните"),
            "{row}"
        );
    }

    // Rows the log does not hold do not survive a rebuild; the rebuilt state
    // is the live one, with the projector still running.
    db.execute(
        "INSERT INTO analytics.calls (provider, call_id) VALUES ('stray', 'x')",
        &[],
    )
    .await
    .unwrap();
    let rebuilt = analytics::rebuild(&common).await.unwrap();
    assert_eq!(rebuilt.position as i64, head);
    assert_eq!(read_model(&db).await, live);

    stop.cancel();
    projector.await.unwrap().unwrap();
}
