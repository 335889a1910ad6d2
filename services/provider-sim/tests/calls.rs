//! Calls placed through Voximplant and Exolve, played from scripts and
//! reported to a webhook receiver run by the test.

mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::post;
use common::{Sim, json_of, start_default};
use provider_sim::{CallOutcome, CallProvider, PlacedCall};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const PHONE: &str = "+79161234567";
const TOKEN: &str = "sim-call-events-token";

/// One report as the receiver got it.
#[derive(Clone, Debug)]
struct Report {
    path: String,
    authorization: Option<String>,
    body: Value,
}

#[derive(Default)]
struct Inbox {
    reports: Mutex<Vec<Report>>,
    /// Statuses to answer, in order; 200 once they are used up.
    statuses: Mutex<VecDeque<u16>>,
}

/// A tiny webhook receiver on a free port, stopped when dropped.
struct Receiver {
    base: String,
    inbox: Arc<Inbox>,
    shutdown: CancellationToken,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Receiver {
    async fn start(statuses: &[u16]) -> Self {
        async fn receive(
            State(inbox): State<Arc<Inbox>>,
            uri: Uri,
            headers: HeaderMap,
            body: Bytes,
        ) -> StatusCode {
            inbox.reports.lock().unwrap().push(Report {
                path: uri.path().to_owned(),
                authorization: headers
                    .get("authorization")
                    .map(|v| v.to_str().unwrap().to_owned()),
                body: serde_json::from_slice(&body).expect("reports are JSON"),
            });
            let status = inbox.statuses.lock().unwrap().pop_front().unwrap_or(200);
            StatusCode::from_u16(status).unwrap()
        }
        let inbox = Arc::new(Inbox {
            statuses: Mutex::new(statuses.iter().copied().collect()),
            ..Inbox::default()
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new()
            .route("/{*path}", post(receive))
            .with_state(inbox.clone());
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        });
        Self {
            base,
            inbox,
            shutdown,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn reports(&self) -> Vec<Report> {
        self.inbox.reports.lock().unwrap().clone()
    }

    /// Waits until `count` reports have arrived.
    async fn wait_for(&self, count: usize) -> Vec<Report> {
        wait_until(&format!("{count} reports"), || {
            self.reports().len() >= count
        })
        .await;
        self.reports()
    }
}

/// Polls `done` until it holds, for at most 10 s.
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

/// callflow's custom data for a call to `phone`.
fn custom_data(phone: &str, reference: &str) -> String {
    json!({ "phone": phone, "ref": reference }).to_string()
}

/// Starts a Voximplant scenario; returns its `call_session_history_id`.
async fn start_scenario(sim: &Sim, custom_data: &str) -> u64 {
    let response = sim
        .http
        .post(sim.url("/platform_api/StartScenarios"))
        .bearer_auth("a.jwt.token")
        .json(&json!({"rule_id": 1, "script_custom_data": custom_data}))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(response).await;
    assert_eq!(status, 200);
    body["call_session_history_id"]
        .as_u64()
        .unwrap_or_else(|| panic!("scenario not started: {body}"))
}

/// Places an Exolve voice message; returns its `call_id`.
async fn voice_message(sim: &Sim, source: &str, destination: &str) -> u64 {
    let (status, body) = json_of(
        sim.exolve(
            "/call/v1/MakeVoiceMessage",
            json!({
                "source": source, "destination": destination, "service_id": 7,
                "tts": {"text": "Здравствуйте! Вы оставляли заявку.", "voice": "alena"},
            }),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["call_id"].as_u64().expect("numeric call_id")
}

fn sorted_by(mut reports: Vec<Report>, key: &str) -> Vec<Report> {
    reports.sort_by_key(|r| r.body[key].to_string());
    reports
}

// ------------------------------------------------------------- Voximplant

#[tokio::test]
async fn voximplant_calls_play_the_script_and_report_each_outcome() {
    let sim = start_default().await;
    let receiver = Receiver::start(&[]).await;
    sim.handle.set_call_events(
        Some(receiver.url("/hooks/voximplant")),
        None,
        Some(TOKEN.into()),
    );
    sim.handle.script_calls(
        PHONE,
        &[
            CallOutcome::NoAnswer,
            CallOutcome::NoAnswer,
            CallOutcome::Human,
        ],
        Duration::ZERO,
    );

    // The script matches on digits, whichever way the number is written.
    let mut sessions = Vec::new();
    let mut sent_data = Vec::new();
    for (i, phone) in ["+79161234567", "79161234567", "+7 916 123-45-67"]
        .into_iter()
        .enumerate()
    {
        let data = custom_data(phone, &format!("lead-0190-attempt-{i}"));
        sessions.push(start_scenario(&sim, &data).await);
        sent_data.push(data);
    }
    let reports = sorted_by(receiver.wait_for(3).await, "call_session_history_id");
    assert_eq!(reports.len(), 3);
    for (i, report) in reports.iter().enumerate() {
        assert_eq!(report.path, "/hooks/voximplant");
        assert_eq!(
            report.authorization.as_deref(),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        assert_eq!(report.body["call_session_history_id"], json!(sessions[i]));
        assert_eq!(report.body["custom_data"], json!(sent_data[i]));
    }
    for report in &reports[..2] {
        assert_eq!(
            report.body,
            json!({
                "call_session_history_id": report.body["call_session_history_id"],
                "custom_data": report.body["custom_data"],
                "result": "Failed", "code": 487, "result_class": "",
                "confidence": 0, "duration": 0,
            })
        );
    }
    assert_eq!(reports[2].body["result"], json!("Connected"));
    assert_eq!(reports[2].body["code"], json!(0));
    assert_eq!(reports[2].body["result_class"], json!("HUMAN"));
    assert_eq!(reports[2].body["confidence"], json!(92));
    assert_eq!(reports[2].body["duration"], json!(25));

    // The script is used up: its last outcome repeats.
    start_scenario(&sim, &custom_data(PHONE, "lead-0190-attempt-3")).await;
    let reports = receiver.wait_for(4).await;
    assert!(
        reports
            .iter()
            .filter(|r| r.body["result_class"] == json!("HUMAN"))
            .count()
            == 2
    );

    let calls = sim.handle.calls();
    assert_eq!(calls.len(), 4);
    assert_eq!(
        calls.iter().map(|c| c.outcome).collect::<Vec<_>>(),
        [
            CallOutcome::NoAnswer,
            CallOutcome::NoAnswer,
            CallOutcome::Human,
            CallOutcome::Human
        ]
    );
    wait_until("every call delivered", || {
        sim.handle.calls().iter().all(|c| c.delivered)
    })
    .await;
    for (call, session) in sim.handle.calls().iter().zip(&sessions) {
        assert_eq!(call.provider, CallProvider::Voximplant);
        assert_eq!(call.call_id, session.to_string());
        assert_eq!(call.phone, "79161234567");
        assert_eq!(call.delivery_attempts, 1);
        assert_eq!(call.delivery_error, None);
        assert!(call.placed_at.parse::<jiff::Timestamp>().is_ok());
    }
}

#[tokio::test]
async fn other_custom_data_starts_a_scenario_that_plays_nothing() {
    let sim = start_default().await;
    let receiver = Receiver::start(&[]).await;
    sim.handle
        .set_call_events(Some(receiver.url("/v")), None, None);
    start_scenario(&sim, "lead:42").await;
    start_scenario(&sim, r#"{"ref": "no phone"}"#).await;
    assert_eq!(sim.handle.voximplant_calls().len(), 2);
    assert!(sim.handle.calls().is_empty());

    // An unscripted number answers `human` at once; no token, no header.
    start_scenario(&sim, &custom_data("79990001122", "r")).await;
    let reports = receiver.wait_for(1).await;
    assert_eq!(reports[0].body["result_class"], json!("HUMAN"));
    assert_eq!(reports[0].authorization, None);
    assert_eq!(sim.handle.calls().len(), 1);
}

// ----------------------------------------------------------------- Exolve

#[tokio::test]
async fn exolve_reports_machines_as_such_only_with_amd_on() {
    let sim = start_default().await;
    let receiver = Receiver::start(&[]).await;
    sim.handle.set_call_events(
        None,
        Some(receiver.url("/hooks/exolve")),
        Some(TOKEN.into()),
    );
    sim.handle
        .script_calls(PHONE, &[CallOutcome::Machine], Duration::ZERO);
    let (status, _) = json_of(
        sim.exolve(
            "/number/v1/SetAmdState",
            json!({"number_code": 74951110000_u64, "amd": true}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);

    let with_amd = voice_message(&sim, "74951110000", "+79161234567").await;
    let reports = receiver.wait_for(1).await;
    assert_eq!(reports[0].path, "/hooks/exolve");
    assert_eq!(
        reports[0].authorization.as_deref(),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(
        reports[0].body,
        json!({
            "call_id": with_amd.to_string(), "event": "call_finished",
            "status": "answered", "amd_result": "machine", "duration": 12,
            "source": "74951110000", "destination": "+79161234567",
        })
    );

    // Another line without detection: a machine is just an answered call.
    let without_amd = voice_message(&sim, "74952220000", "79161234567").await;
    let reports = receiver.wait_for(2).await;
    assert_eq!(reports[1].body["call_id"], json!(without_amd.to_string()));
    assert_eq!(reports[1].body["status"], json!("answered"));
    assert_eq!(reports[1].body["amd_result"], json!(""));

    // And a person, with detection on, is a human.
    sim.handle
        .script_calls(PHONE, &[CallOutcome::Human], Duration::ZERO);
    voice_message(&sim, "74951110000", PHONE).await;
    let reports = receiver.wait_for(3).await;
    assert_eq!(reports[2].body["amd_result"], json!("human"));
    assert_eq!(reports[2].body["duration"], json!(25));

    let calls = sim.handle.calls();
    assert_eq!(calls.len(), 3);
    assert!(calls.iter().all(|c| c.provider == CallProvider::Exolve));
    assert_eq!(calls[0].call_id, with_amd.to_string());
}

#[tokio::test]
async fn exolve_failures_map_to_their_statuses() {
    let sim = start_default().await;
    let receiver = Receiver::start(&[]).await;
    sim.handle
        .set_call_events(None, Some(receiver.url("/e")), None);
    let outcomes = [
        (CallOutcome::NoAnswer, "no_answer"),
        (CallOutcome::Busy, "busy"),
        (CallOutcome::Unavailable, "unavailable"),
        (CallOutcome::WrongNumber, "invalid_number"),
        (CallOutcome::Failed, "failed"),
    ];
    sim.handle
        .script_calls(PHONE, &outcomes.map(|(outcome, _)| outcome), Duration::ZERO);
    let mut ids = Vec::new();
    for _ in outcomes {
        ids.push(voice_message(&sim, "74951110000", PHONE).await);
    }
    let reports = receiver.wait_for(outcomes.len()).await;
    for ((_, status), id) in outcomes.iter().zip(ids) {
        let report = reports
            .iter()
            .find(|r| r.body["call_id"] == json!(id.to_string()))
            .expect("reported");
        assert_eq!(report.body["status"], json!(status));
        assert_eq!(report.body["duration"], json!(0));
        assert_eq!(report.body["amd_result"], json!(""));
    }
}

// ------------------------------------------------ silence and retries

#[tokio::test]
async fn silent_calls_are_placed_but_never_reported() {
    let sim = start_default().await;
    let receiver = Receiver::start(&[]).await;
    sim.handle
        .set_call_events(Some(receiver.url("/v")), Some(receiver.url("/e")), None);
    sim.handle
        .script_calls(PHONE, &[CallOutcome::Silent], Duration::ZERO);
    start_scenario(&sim, &custom_data(PHONE, "silent-1")).await;
    voice_message(&sim, "74951110000", PHONE).await;
    // A call placed after them is reported: by then theirs would have been.
    start_scenario(&sim, &custom_data("79990001122", "heard")).await;
    let reports = receiver.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.reports().len(), 1);
    assert_eq!(
        reports[0].body["custom_data"],
        json!(custom_data("79990001122", "heard"))
    );

    let silent: Vec<PlacedCall> = sim
        .handle
        .calls()
        .into_iter()
        .filter(|c| c.outcome == CallOutcome::Silent)
        .collect();
    assert_eq!(silent.len(), 2);
    for call in silent {
        assert_eq!(call.report, None);
        assert!(!call.delivered);
        assert_eq!(call.delivery_attempts, 0);
    }
}

#[tokio::test]
async fn a_report_the_receiver_does_not_know_yet_is_retried_until_accepted() {
    let sim = start_default().await;
    // The dialer has not recorded the call id yet: 404, 404, then 200.
    let receiver = Receiver::start(&[404, 404]).await;
    sim.handle
        .set_call_events(Some(receiver.url("/v")), None, Some(TOKEN.into()));
    let session = start_scenario(&sim, &custom_data(PHONE, "racy")).await;
    let reports = receiver.wait_for(3).await;
    assert_eq!(reports.len(), 3);
    for report in &reports {
        assert_eq!(
            report.body, reports[0].body,
            "every try sends the same report"
        );
        assert_eq!(report.body["call_session_history_id"], json!(session));
    }
    wait_until("delivered", || sim.handle.calls()[0].delivered).await;
    let call = &sim.handle.calls()[0];
    assert_eq!(call.delivery_attempts, 3);
    assert_eq!(call.delivery_error, None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.reports().len(), 3, "nothing after the 2xx");
}

#[tokio::test]
async fn an_unreachable_receiver_is_retried_and_the_failure_recorded() {
    let sim = start_default().await;
    // A port nobody listens on: bind one, then let it go.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    sim.handle
        .set_call_events(Some(format!("http://{closed}/v")), None, None);
    start_scenario(&sim, &custom_data(PHONE, "nobody-home")).await;
    wait_until("two failed tries", || {
        sim.handle.calls()[0].delivery_attempts >= 2
    })
    .await;
    let call = &sim.handle.calls()[0];
    assert!(!call.delivered);
    assert!(call.delivery_error.is_some());
}

#[tokio::test]
async fn without_a_url_calls_are_recorded_and_not_reported() {
    let sim = start_default().await;
    start_scenario(&sim, &custom_data(PHONE, "nowhere")).await;
    voice_message(&sim, "74951110000", PHONE).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let calls = sim.handle.calls();
    assert_eq!(calls.len(), 2);
    for call in calls {
        assert_eq!(call.outcome, CallOutcome::Human);
        assert!(call.report.is_some());
        assert!(!call.delivered);
        assert_eq!(call.delivery_attempts, 0);
    }
}

// -------------------------------------------------------- the control API

async fn control(
    sim: &Sim,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = sim.http.request(method, sim.url(path));
    if let Some(body) = body {
        request = request.json(&body);
    }
    json_of(request.send().await.unwrap()).await
}

#[tokio::test]
async fn the_control_api_scripts_calls_sets_webhooks_and_resets() {
    let sim = start_default().await;
    let receiver = Receiver::start(&[]).await;
    let (status, answer) = control(
        &sim,
        reqwest::Method::POST,
        "/_sim/calls/webhooks",
        Some(
            json!({"voximplant": receiver.url("/v"), "exolve": receiver.url("/e"), "token": TOKEN}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["token"], json!(true), "the token is not echoed");
    let (status, answer) = control(
        &sim,
        reqwest::Method::POST,
        "/_sim/calls/scripts",
        Some(json!({"phone": PHONE, "outcomes": ["busy", "human"], "delay_ms": 200})),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["phone"], json!("79161234567"));

    let placed = Instant::now();
    let call_id = voice_message(&sim, "74951110000", "79161234567").await;
    let reports = receiver.wait_for(1).await;
    assert!(
        placed.elapsed() >= Duration::from_millis(200),
        "the delay holds the report back"
    );
    assert_eq!(reports[0].path, "/e");
    assert_eq!(reports[0].body["status"], json!("busy"));
    assert_eq!(
        reports[0].authorization.as_deref(),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    wait_until("delivered", || sim.handle.calls()[0].delivered).await;

    let (status, calls) = control(&sim, reqwest::Method::GET, "/_sim/calls", None).await;
    assert_eq!(status, 200);
    let calls: Vec<PlacedCall> = serde_json::from_value(calls).unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].call_id, call_id.to_string());
    assert_eq!(calls[0].outcome, CallOutcome::Busy);
    assert_eq!(calls[0].delay_ms, 200);
    assert!(calls[0].delivered);

    // A report still waiting at reset is dropped with the call; the
    // script is forgotten too, so the next call is an unscripted human.
    // (A longer delay, so that a busy machine still resets in time.)
    sim.handle
        .script_calls(PHONE, &[CallOutcome::Human], Duration::from_secs(1));
    voice_message(&sim, "74951110000", PHONE).await;
    let (status, _) = control(&sim, reqwest::Method::POST, "/_sim/reset", None).await;
    assert_eq!(status, 200);
    assert!(sim.handle.calls().is_empty());
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(
        receiver.reports().len(),
        1,
        "the pending report was stopped"
    );
    voice_message(&sim, "74951110000", PHONE).await;
    let reports = receiver.wait_for(2).await;
    assert_eq!(reports[1].body["status"], json!("answered"));
    assert_eq!(sim.handle.calls()[0].outcome, CallOutcome::Human);
    assert_eq!(sim.handle.calls()[0].delay_ms, 0);

    // The URLs outlive the reset; nulls switch reporting off.
    let (status, _) = control(
        &sim,
        reqwest::Method::POST,
        "/_sim/calls/webhooks",
        Some(json!({"voximplant": null, "exolve": null, "token": null})),
    )
    .await;
    assert_eq!(status, 200);
    voice_message(&sim, "74951110000", PHONE).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(receiver.reports().len(), 2);
}

#[tokio::test]
async fn the_control_api_refuses_bad_call_scripts_and_webhooks() {
    let sim = start_default().await;
    for (path, body) in [
        (
            "/_sim/calls/scripts",
            json!({"phone": PHONE, "outcomes": []}),
        ),
        (
            "/_sim/calls/scripts",
            json!({"phone": PHONE, "outcomes": ["hangs_up"]}),
        ),
        (
            "/_sim/calls/scripts",
            json!({"phone": PHONE, "outcomes": "human"}),
        ),
        (
            "/_sim/calls/scripts",
            json!({"phone": "12345", "outcomes": ["human"]}),
        ),
        (
            "/_sim/calls/scripts",
            json!({"phone": "not a number", "outcomes": ["human"]}),
        ),
        ("/_sim/calls/scripts", json!({"outcomes": ["human"]})),
        (
            "/_sim/calls/scripts",
            json!({"phone": PHONE, "outcomes": ["human"], "delay_ms": -1}),
        ),
        (
            "/_sim/calls/scripts",
            json!({"phone": PHONE, "outcomes": ["human"], "delay_ms": 3_600_001}),
        ),
        (
            "/_sim/calls/scripts",
            json!({"phone": PHONE, "outcome": ["human"]}),
        ),
        ("/_sim/calls/webhooks", json!({"voximplant": "not a url"})),
        ("/_sim/calls/webhooks", json!({"exolve": "/relative/path"})),
        ("/_sim/calls/webhooks", json!({"exolve": "ftp://host/x"})),
        (
            "/_sim/calls/webhooks",
            json!({"exolve_url": "http://localhost/x"}),
        ),
        ("/_sim/calls/webhooks", json!({"token": ""})),
        ("/_sim/calls/webhooks", json!({"token": 42})),
        ("/_sim/bitrix/companies", json!({})),
        ("/_sim/bitrix/companies", json!(["TITLE"])),
    ] {
        let (status, answer) = control(&sim, reqwest::Method::POST, path, Some(body.clone())).await;
        assert_eq!(status, 400, "{path} {body}");
        assert!(answer["error"].is_string(), "{path} {body}: {answer}");
    }
    let not_json = sim
        .http
        .post(sim.url("/_sim/calls/scripts"))
        .body("phone=1")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status().as_u16(), 400);
    assert!(sim.handle.bitrix_companies().is_empty());

    // Nothing was scripted: a call is an unscripted human.
    voice_message(&sim, "74951110000", PHONE).await;
    assert_eq!(sim.handle.calls()[0].outcome, CallOutcome::Human);
}
