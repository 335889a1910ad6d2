//! call-ingest against a real event store: webhooks are recorded once,
//! refused ones change nothing, and the answer comes after the commit.

use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use call_ingest::auth::{SIGNATURE_HEADER, sign};
use event_store::testing::{TestStore, jetstream_events};
use kit::clock::TestClock;
use kit::events::decode;
use kit::proto::events::v1::{CallCompleted, CallDirection, LeadReceived, LeadRejected};
use kit::proto::eventstore::v1::ReadStreamRequest;

const TOKEN: &str = "exolve-test-token";
const SECRET: &str = "generic-test-secret";
const LEADS_TOKEN: &str = "shop-test-token";

struct Edge {
    store: TestStore,
    url: String,
    http: reqwest::Client,
    shutdown: CancellationToken,
}

impl Drop for Edge {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn config() -> call_ingest::Config {
    call_ingest::Config {
        http_addr: "127.0.0.1:0".parse().unwrap(),
        default_region: Default::default(),
        provider_time_zone: "Europe/Moscow".into(),
        business_numbers: vec!["+74951234567".into()],
        exolve_token: TOKEN.into(),
        exolve_hmac_secret: String::new(),
        generic_token: String::new(),
        generic_hmac_secret: SECRET.into(),
        leads_token: LEADS_TOKEN.into(),
        leads_hmac_secret: String::new(),
        max_body_bytes: 4096,
        request_timeout: Duration::from_secs(5),
    }
}

async fn edge(relay: bool) -> Edge {
    let store = TestStore::start(relay).await;
    let mut common = store.common.clone();
    common.event_store_url = store.url();
    let clock = TestClock::new("2026-11-24T09:00:00Z".parse().unwrap());
    let ingest = call_ingest::CallIngest::build(&common, &config(), clock)
        .await
        .unwrap();
    let url = format!("http://{}", ingest.http_addr());
    let shutdown = CancellationToken::new();
    tokio::spawn(ingest.run(shutdown.clone()));
    Edge {
        store,
        url,
        http: reqwest::Client::new(),
        shutdown,
    }
}

impl Edge {
    async fn exolve(&self, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}/webhooks/exolve/call-events", self.url))
            .bearer_auth(TOKEN)
            .json(body)
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    async fn generic(&self, body: &Value) -> (u16, Value) {
        let raw = serde_json::to_vec(body).unwrap();
        let response = self
            .http
            .post(format!("{}/webhooks/generic/call-completed", self.url))
            .header(SIGNATURE_HEADER, sign(SECRET, &raw))
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    async fn lead(&self, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}/webhooks/leads", self.url))
            .bearer_auth(LEADS_TOKEN)
            .json(body)
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    async fn rows(&self) -> i64 {
        let client = self.store.db.connect().await;
        client
            .query_one("SELECT count(*) FROM eventlog.events", &[])
            .await
            .unwrap()
            .get(0)
    }

    async fn stream(&self, stream: &str) -> Vec<kit::proto::events::v1::Event> {
        self.store
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
}

#[tokio::test]
async fn an_exolve_call_is_recorded_once_and_completed_from_its_earlier_webhooks() {
    let edge = edge(true).await;
    let begin = json!({"type": "b", "call_sid": 4412, "from": "89161234567", "to": "+7 495 123-45-67", "date_time": "2026-11-24T10:00:00+03:00"});
    let disconnected = json!({"type": "d", "call_sid": "4412", "duration": 125000, "wait_time": 5000, "talk_time": 120000, "cause_code": 16, "date_time": "2026-11-24 10:02:05"});
    let end = json!({"type": "e", "call_sid": "4412", "date_time": "2026-11-24T10:02:05+03:00", "unknown_field": [1, 2]});
    assert_eq!(edge.exolve(&begin).await.0, 200);
    assert_eq!(edge.exolve(&disconnected).await.0, 200);
    let (status, first) = edge.exolve(&end).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["stream"], "call-exolve-4412");
    assert_eq!(first["duplicate"], false);

    // Exolve retries: same answer, nothing new.
    let (status, again) = edge.exolve(&end).await;
    assert_eq!(status, 200);
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["event_id"], first["event_id"]);
    assert_eq!(again["position"], first["position"]);
    assert_eq!(edge.rows().await, 3);

    let events = edge.stream("call-exolve-4412").await;
    let types: Vec<&str> = events.iter().map(|e| e.r#type.as_str()).collect();
    assert_eq!(types, ["CallStarted", "CallDisconnected", "CallCompleted"]);
    assert!(
        events
            .iter()
            .all(|e| e.correlation_id == events[0].correlation_id),
        "one flow, one correlation id"
    );
    let completed: CallCompleted = decode(&events[2]).unwrap();
    assert_eq!(completed.from, "+79161234567");
    assert_eq!(completed.to, "+74951234567");
    assert_eq!(
        completed.direction,
        CallDirection::Inbound as i32,
        "to a business number"
    );
    assert_eq!(completed.client_phone, "+79161234567");
    assert_eq!(completed.duration.unwrap().seconds, 125);
    assert_eq!(
        completed.started_at.unwrap().seconds,
        "2026-11-24T07:00:00Z"
            .parse::<jiff::Timestamp>()
            .unwrap()
            .as_second()
    );

    // And it is on JetStream, on the call subject.
    let bus = edge.store.bus.connect().await;
    let published = jetstream_events(&bus, 3).await;
    assert_eq!(published[2].2.event_id, first["event_id"].as_str().unwrap());
}

#[tokio::test]
async fn russian_eight_hundred_numbers_survive_the_edge() {
    let edge = edge(false).await;
    let (status, body) = edge
        .exolve(
            &json!({"type": "b", "call_sid": "800", "from": "88005553535", "to": "+78005553535"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let events = edge.stream("call-exolve-800").await;
    let started: kit::proto::events::v1::CallStarted = decode(&events[0]).unwrap();
    assert_eq!(
        (started.from.as_str(), started.to.as_str()),
        ("+78005553535", "+78005553535")
    );
}

#[tokio::test]
async fn requests_without_valid_credentials_get_401_and_change_nothing() {
    let edge = edge(false).await;
    let body = json!({"type": "b", "call_sid": "1", "from": "+79161234567", "to": "+74951234567"});
    let url = format!("{}/webhooks/exolve/call-events", edge.url);
    let none = edge.http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(none.status(), 401);
    let error: Value = none.json().await.unwrap();
    assert_eq!(error["error"]["code"], "unauthorized");
    let wrong = edge
        .http
        .post(&url)
        .bearer_auth("guess")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    // Exolve has no HMAC secret configured: a signature is not enough.
    let raw = serde_json::to_vec(&body).unwrap();
    let signed = edge
        .http
        .post(&url)
        .header(SIGNATURE_HEADER, sign("anything", &raw))
        .body(raw.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), 401);
    // The generic webhook takes only a correct signature of this very body.
    let generic_url = format!("{}/webhooks/generic/call-completed", edge.url);
    let forged = edge
        .http
        .post(&generic_url)
        .header(SIGNATURE_HEADER, sign(SECRET, b"other body"))
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    let bearer = edge
        .http
        .post(&generic_url)
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 401);
    assert_eq!(edge.rows().await, 0);
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_naming_the_field_and_changes_nothing() {
    let edge = edge(false).await;
    let cases = [
        (
            json!({"type": "b", "call_sid": "1", "from": "not a phone", "to": "+74951234567"}),
            422,
            Some("from"),
        ),
        (
            json!({"type": "b", "call_sid": "1", "from": "+7 000 000", "to": "+74951234567"}),
            422,
            Some("from"),
        ),
        (
            json!({"type": "b", "from": "+79161234567"}),
            422,
            Some("call_sid"),
        ),
        (json!({"type": "x", "call_sid": "1"}), 422, Some("type")),
        (json!({"call_sid": "1"}), 422, Some("type")),
        (
            json!({"type": "b", "call_sid": "a/b"}),
            422,
            Some("call_sid"),
        ),
        (
            json!({"type": "d", "call_sid": "1", "duration": -5}),
            422,
            Some("duration"),
        ),
        (
            json!({"type": "b", "call_sid": "1", "date_time": "soon"}),
            422,
            Some("date_time"),
        ),
        (json!({"type": "crr", "call_sid": "1"}), 422, Some("path")),
        (json!([1, 2, 3]), 400, None),
    ];
    for (body, status, field) in cases {
        let (got, error) = edge.exolve(&body).await;
        assert_eq!(got, status, "{body} → {error}");
        assert!(
            error["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{error}"
        );
        assert_eq!(error["error"]["field"].as_str(), field, "{body} → {error}");
    }
    let url = format!("{}/webhooks/exolve/call-events", edge.url);
    let broken = edge
        .http
        .post(&url)
        .bearer_auth(TOKEN)
        .body("{\"type\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(broken.status(), 400);
    assert_eq!(
        broken.json::<Value>().await.unwrap()["error"]["code"],
        "malformed_body"
    );
    let huge = edge
        .http
        .post(&url)
        .bearer_auth(TOKEN)
        .body(vec![b' '; 10_000])
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);
    assert_eq!(
        huge.json::<Value>().await.unwrap()["error"]["code"],
        "body_too_large"
    );
    let missing = edge
        .http
        .post(format!("{}/webhooks/nope", edge.url))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.json::<Value>().await.unwrap()["error"]["code"],
        "not_found"
    );

    let generic_cases = [
        (
            json!({"provider": "asterisk", "from": "+79161234567", "to": "+74951234567", "started_at": "2026-11-24T10:00:00Z"}),
            Some("call_uid"),
        ),
        (
            json!({"call_uid": "1", "provider": "Bad Name", "from": "+79161234567", "to": "+74951234567", "started_at": "2026-11-24T10:00:00Z"}),
            Some("provider"),
        ),
        (
            json!({"call_uid": "1", "provider": "asterisk", "direction": "sideways", "from": "+79161234567", "to": "+74951234567", "started_at": "2026-11-24T10:00:00Z"}),
            Some("direction"),
        ),
        (
            json!({"call_uid": "1", "provider": "asterisk", "from": "+79161234567", "to": "+74951234567"}),
            Some("started_at"),
        ),
        (
            json!({"call_uid": "1", "provider": "asterisk", "from": "+79161234567", "to": "+74951234567", "started_at": "2026-11-24T10:00:00Z", "recording_url": "ftp://x"}),
            Some("recording_url"),
        ),
    ];
    for (body, field) in generic_cases {
        let (got, error) = edge.generic(&body).await;
        assert_eq!(got, 422, "{body} → {error}");
        assert_eq!(error["error"]["field"].as_str(), field, "{body} → {error}");
    }
    assert_eq!(edge.rows().await, 0);
}

#[tokio::test]
async fn the_generic_webhook_records_a_completed_call() {
    let edge = edge(false).await;
    let body = json!({"call_uid": "8f2c1", "provider": "asterisk", "direction": "outbound", "from": "+74951234567", "to": "8 916 123-45-67",
                      "started_at": "2026-11-24T10:15:00+03:00", "duration_seconds": 125, "manager_id": "m-17",
                      "recording_url": "https://pbx.example/rec/8f2c1.mp3"});
    let (status, accepted) = edge.generic(&body).await;
    assert_eq!(status, 200, "{accepted}");
    assert_eq!(edge.generic(&body).await.1["duplicate"], true);
    let events = edge.stream("call-asterisk-8f2c1").await;
    assert_eq!(events.len(), 1);
    let completed: CallCompleted = decode(&events[0]).unwrap();
    assert_eq!(completed.client_phone, "+79161234567");
    assert_eq!(completed.manager_id, "m-17");
    assert_eq!(completed.direction, CallDirection::Outbound as i32);
    assert_eq!(
        events[0].occurred_at.unwrap().seconds,
        "2026-11-24T07:17:05Z"
            .parse::<jiff::Timestamp>()
            .unwrap()
            .as_second()
    );
}

#[tokio::test]
async fn when_the_log_is_down_the_answer_is_503_and_retrying_later_records_once() {
    let mut edge = edge(false).await;
    let grpc_addr = edge.store.grpc_addr;
    edge.store.stop().await;
    let body = json!({"type": "s", "call_sid": "77", "date_time": "2026-11-24T10:00:00Z"});
    let response = edge
        .http
        .post(format!("{}/webhooks/exolve/call-events", edge.url))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(edge.rows().await, 0);

    // The store comes back on the same address; the provider's retry lands.
    let mut config = event_store::testing::config(false);
    config.grpc_addr = grpc_addr;
    let store = event_store::EventStore::build(edge.store.common.clone(), config)
        .await
        .unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(store.run(stop.clone()));
    let (status, _) = edge.exolve(&body).await;
    assert_eq!(status, 200);
    assert_eq!(edge.exolve(&body).await.1["duplicate"], true);
    assert_eq!(edge.rows().await, 1);
    stop.cancel();
}

#[tokio::test]
async fn a_pushed_transcript_is_recorded_once_per_call() {
    let edge = edge(false).await;
    let body = json!({
        "provider": "exolve", "call_id": "t-1", "language": "ru", "client_phone": "89161234567",
        "call_started_at": "2026-11-24T10:00:00+03:00",
        "turns": [
            {"speaker": "manager", "text": "Напомнить вам через месяц?", "start": 1.5, "end": 3.0},
            {"speaker": "client", "text": "Да, давайте"}
        ]
    });
    let post = |body: Value| {
        let raw = serde_json::to_vec(&body).unwrap();
        edge.http
            .post(format!("{}/webhooks/transcripts", edge.url))
            .header(SIGNATURE_HEADER, sign(SECRET, &raw))
            .body(raw)
            .send()
    };
    let first = post(body.clone()).await.unwrap();
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();
    let again: Value = post(body.clone()).await.unwrap().json().await.unwrap();
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["event_id"], first["event_id"]);
    let events = edge.stream("call-exolve-t-1").await;
    assert_eq!(events.len(), 1);
    let transcript: kit::proto::events::v1::TranscriptReady = decode(&events[0]).unwrap();
    assert_eq!(transcript.client_phone, "+79161234567");
    assert_eq!(transcript.turns.len(), 2);
    assert_eq!(transcript.turns[0].start.unwrap().nanos, 500_000_000);

    for (bad, field) in [
        (json!({"provider": "exolve", "call_id": "t-2"}), "turns"),
        (
            json!({"provider": "exolve", "call_id": "t-2", "turns": [{"speaker": "robot", "text": "hi"}]}),
            "turns[0].speaker",
        ),
        (
            json!({"provider": "exolve", "call_id": "t-2", "turns": [{"speaker": "client", "text": 5}]}),
            "turns[0].text",
        ),
        (
            json!({"provider": "exolve", "call_id": "t-2", "turns": [{"speaker": "client", "text": "a", "start": -1}]}),
            "turns[0].start",
        ),
        (json!({"provider": "exolve", "turns": []}), "call_id"),
    ] {
        let response = post(bad.clone()).await.unwrap();
        assert_eq!(response.status(), 422, "{bad}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["field"], field, "{bad}: {error}");
    }
    let unsigned = edge
        .http
        .post(format!("{}/webhooks/transcripts", edge.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    assert_eq!(edge.rows().await, 1);
}

#[tokio::test]
async fn a_web_lead_is_recorded_once_per_ref_while_in_progress() {
    let edge = edge(false).await;
    let lead = json!({"ref": "c-8812", "site": "shop.example", "name": "Анна", "phone": "8 (916) 123-45-67",
                      "city": "Владивосток", "time_zone": "Asia/Vladivostok", "partner_id": "cpa-net-7",
                      "order_id": "100234", "amount": "1990.50"});
    let (status, first) = edge.lead(&lead).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["status"], "received");
    assert_eq!(first["duplicate"], false);
    let stream = first["stream"].as_str().unwrap().to_owned();
    let events = edge.stream(&stream).await;
    assert_eq!(events.len(), 1);
    let received: LeadReceived = decode(&events[0]).unwrap();
    assert_eq!(received.phone, "+79161234567");
    assert_eq!(received.phone_as_sent, "8 (916) 123-45-67");
    assert_eq!(received.amount_minor, 199_050);
    assert_eq!(received.currency, "RUB");
    assert_eq!(received.time_zone, "Asia/Vladivostok");
    assert_eq!(received.partner_id, "cpa-net-7");
    assert_eq!(received.lead_id, first["lead_id"].as_str().unwrap());
    assert_eq!(events[0].correlation_id, received.lead_id);

    // The same ref again, even with other fields: the lead in progress.
    let rows = edge.rows().await;
    let mut again = lead.clone();
    again["name"] = json!("Анна Петровна");
    let (status, second) = edge.lead(&again).await;
    assert_eq!(status, 200);
    assert_eq!(second["lead_id"], first["lead_id"]);
    assert_eq!(second["status"], "in_progress");
    assert_eq!(second["duplicate"], true);
    assert_eq!(edge.rows().await, rows, "nothing appended");

    // Another site may use the same ref for its own lead.
    let mut other_site = lead.clone();
    other_site["site"] = json!("other.example");
    let (_, other) = edge.lead(&other_site).await;
    assert_ne!(other["lead_id"], first["lead_id"]);
}

#[tokio::test]
async fn a_lead_whose_number_cannot_be_called_ends_rejected_and_its_ref_can_start_again() {
    let edge = edge(false).await;
    for (phone, reason) in [
        ("8916123456789", "phone_too_long"),
        ("12345", "phone_invalid"),
        ("8 800 555-35-35", "phone_not_callable"),
    ] {
        let body = json!({"ref": format!("r-{reason}"), "site": "shop.example", "name": "Иван", "phone": phone});
        let (status, answer) = edge.lead(&body).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["status"], "rejected");
        assert_eq!(answer["reason"], reason);
        let events = edge.stream(answer["stream"].as_str().unwrap()).await;
        let types: Vec<&str> = events.iter().map(|e| e.r#type.as_str()).collect();
        assert_eq!(types, ["LeadReceived", "LeadRejected"]);
        let received: LeadReceived = decode(&events[0]).unwrap();
        assert_eq!(received.phone, "", "no callable number");
        assert_eq!(received.phone_as_sent, phone);
        let rejected: LeadRejected = decode(&events[1]).unwrap();
        assert_eq!(rejected.reason, reason);

        // The rejected lead is over: the ref starts a new lead.
        let (_, again) = edge.lead(&body).await;
        assert_eq!(again["status"], "rejected");
        assert_eq!(again["duplicate"], false);
        assert_ne!(again["lead_id"], answer["lead_id"]);
    }
}

#[tokio::test]
async fn a_bad_lead_gets_a_4xx_and_changes_nothing() {
    let edge = edge(false).await;
    for (body, field) in [
        (
            json!({"site": "shop.example", "phone": "89161234567"}),
            "ref",
        ),
        (json!({"ref": "r1", "phone": "89161234567"}), "site"),
        (json!({"ref": "r1", "site": "shop.example"}), "phone"),
        (
            json!({"ref": "r1", "site": "shop.example", "phone": "89161234567", "time_zone": "Moon/Base"}),
            "time_zone",
        ),
        (
            json!({"ref": "r1", "site": "shop.example", "phone": "89161234567", "amount": "-3"}),
            "amount",
        ),
    ] {
        let (status, answer) = edge.lead(&body).await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{body}");
    }
    let unauthenticated = edge
        .http
        .post(format!("{}/webhooks/leads", edge.url))
        .json(&json!({"ref": "r1", "site": "shop.example", "phone": "89161234567"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
    assert_eq!(edge.rows().await, 0);
}
