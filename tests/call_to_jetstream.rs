//! A webhook from the telephony provider becomes a fact in the log and on
//! JetStream, in one trace, and the system shuts down cleanly.

use serde_json::{Value, json};

use callflow_e2e::{EXOLVE_TOKEN, Running};
use kit::events::decode;
use kit::proto::events::v1::CallCompleted;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exolve_webhook_lands_in_postgres_and_on_jetstream() {
    let mut system = Running::start().await;
    let webhook = json!({"type": "e", "call_sid": "e2e-1", "from": "89161234567", "to": "+74951234567",
                         "date_time": "2026-11-24T10:02:05+03:00", "duration": 125000});
    let response = system
        .http
        .post(system.url("/webhooks/exolve/call-events"))
        .bearer_auth(EXOLVE_TOKEN)
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .json(&webhook)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let accepted: Value = response.json().await.unwrap();
    let event_id = accepted["event_id"].as_str().unwrap().to_owned();

    // In Postgres, committed before the answer.
    let client = system.db.connect().await;
    let row = client
        .query_one(
            "SELECT stream, type, producer FROM eventlog.events WHERE event_id = $1::text::uuid",
            &[&event_id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "call-exolve-e2e-1");
    assert_eq!(row.get::<_, String>(1), "CallCompleted");
    assert_eq!(row.get::<_, String>(2), "call-ingest");

    // On JetStream, on the call subject, with its id for deduplication and
    // the trace context of the operation that appended it.
    let published = system.published("call.*", 1).await;
    let (subject, headers, event) = &published[0];
    assert_eq!(
        subject,
        &format!("{}.call.CallCompleted", system.bus.prefix)
    );
    assert_eq!(
        headers.get("Nats-Msg-Id").map(|v| v.to_string()),
        Some(event_id.clone())
    );
    let traceparent = headers
        .get("traceparent")
        .expect("trace context travels with the event")
        .to_string();
    assert!(
        traceparent.contains("4bf92f3577b34da6a3ce929d0e0e4736"),
        "the event continues the webhook caller's trace: {traceparent}"
    );
    assert_eq!(event.event_id, event_id);
    let payload: CallCompleted = decode(event).unwrap();
    assert_eq!(payload.client_phone, "+79161234567");
    assert_eq!(payload.duration.unwrap().seconds, 125);

    system.stop().await.expect("every service stops cleanly");
}
