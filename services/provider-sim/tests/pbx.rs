//! The simulated PBX driving a stand-in call-control server through whole
//! calls, and the dynamic forwarding (follow me) client.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use common::{json_of, start_default};
use provider_sim::pbx::{
    self, Answer, DialAttempt, DialOutcome, DialResult, HangupBy, PbxError, PbxResult, PbxScript,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const CALLER: &str = "+79161234567";
const OFFICE: &str = "+74951110000";
const LINE_A: &str = "+74951110001";
const LINE_B: &str = "+74951110002";
const LINE_C: &str = "+74951110003";
const GREETING: &str = "Здравствуйте! Нажмите 1, чтобы поговорить с менеджером";
const ANNOUNCE: &str = "Звонок с линии продаж";

/// One request as the stand-in router got it.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    authorization: Option<String>,
    body: Value,
}

struct Shared {
    base: String,
    seen: Mutex<Vec<Seen>>,
}

/// A tiny call-control server playing a fixed script, on a free port,
/// stopped when dropped. `POST /pbx/<variant>` starts calls (and takes
/// reports the answers send there), `POST /pbx/<variant>/reports` takes the
/// rest. The state token is `n=<steps answered>`.
struct StandIn {
    base: String,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl StandIn {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            base: base.clone(),
            seen: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/pbx/{variant}", post(call_control))
            .route("/pbx/{variant}/reports", post(call_control))
            .route("/followme", post(follow_me))
            .with_state(shared.clone());
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
                .unwrap();
        });
        Self {
            base,
            shared,
            shutdown,
        }
    }

    fn url(&self, variant: &str) -> String {
        format!("{}/pbx/{variant}", self.base)
    }

    fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }
}

fn say(text: &str) -> Value {
    json!({"say": {"text": text, "voice": "alena", "language": "ru-RU"}})
}

fn gather() -> Value {
    json!({"gather": {"max_digits": 1, "finish_key": "#", "timeout_ms": 5000}})
}

fn dial(mode: &str, record: bool) -> Value {
    json!({"dial": {
        "targets": [
            {"number": LINE_A, "timeout_ms": 10000},
            {"number": LINE_B, "timeout_ms": 10000},
            {"number": LINE_C, "timeout_ms": 15000},
        ],
        "mode": mode, "caller_id": OFFICE, "record": record, "announce": ANNOUNCE,
    }})
}

/// The stand-in router's script. Variants change the first answer (or an
/// answer's framing) and otherwise play the main one.
async fn call_control(
    State(shared): State<Arc<Shared>>,
    Path(variant): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    Json(step): Json<Value>,
) -> Response {
    shared.seen.lock().unwrap().push(Seen {
        path: uri.path().to_owned(),
        authorization: headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned()),
        body: step.clone(),
    });
    // The counter in the state token; the PBX must send the last one back.
    let counter: u32 = match step.get("state") {
        None => 0,
        Some(state) => match state.as_str().and_then(|s| s.strip_prefix("n=")) {
            Some(n) => n.parse().unwrap(),
            None => return (StatusCode::BAD_REQUEST, "bad state").into_response(),
        },
    };
    let result = step.get("result");
    if (counter == 0) != result.is_none() {
        return (StatusCode::BAD_REQUEST, "state and result go together").into_response();
    }
    let start = result.is_none();
    let mut fallback = false;
    let instructions = match variant.as_str() {
        "error" => return (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
        // A waiting instruction with something after it.
        "malformed" if start => json!([gather(), say("и ещё")]),
        "empty" if start => json!([]),
        "loop" => json!([gather()]),
        "fallback" if start => {
            fallback = true;
            json!([say("Соединяем с офисом"), dial("sequence", false)])
        }
        "slow" if start => {
            tokio::time::sleep(Duration::from_millis(250)).await;
            main_flow(result)
        }
        "chatty" if is(result, "hangup") => json!([say("Ещё слово"), {"hangup": {}}]),
        _ => main_flow(result),
    };
    if is(result, "recording") {
        // No state needed: nothing follows.
        return Json(json!({"instructions": []})).into_response();
    }
    Json(json!({
        "state": format!("n={}", counter + 1),
        "report_url": format!("{}/pbx/{variant}/reports", shared.base),
        "fallback": fallback,
        "instructions": instructions,
    }))
    .into_response()
}

fn is(result: Option<&Value>, kind: &str) -> bool {
    result.is_some_and(|r| r.get(kind).is_some())
}

fn main_flow(result: Option<&Value>) -> Value {
    let Some(result) = result else {
        return json!([say(GREETING), gather()]);
    };
    if let Some(gathered) = result.get("gather") {
        return match gathered["digits"].as_str().unwrap() {
            "1" => json!([say("Соединяю"), dial("sequence", true)]),
            "3" => json!([dial("parallel", false)]),
            // The string form of hangup.
            "" => json!([say("До свидания"), "hangup"]),
            _ => json!([say("Нет такого пункта"), gather()]),
        };
    }
    if result.get("dial").is_some() || result.get("record").is_some() {
        // The null form of hangup.
        return json!([{"hangup": null}]);
    }
    // hangup and recording reports.
    json!([])
}

fn scripted(call_id: &str, digits: &[&str], answers: &[(&str, Answer)]) -> PbxScript {
    PbxScript {
        digits: digits.iter().map(|d| d.to_string()).collect(),
        answers: answers
            .iter()
            .map(|(number, answer)| (number.to_string(), *answer))
            .collect(),
        started_at: Some("2026-11-24T10:00:00Z".parse().unwrap()),
        ..PbxScript::new(call_id, CALLER, OFFICE)
    }
}

fn human(after_ms: u64) -> Answer {
    Answer::Human { after_ms }
}

fn attempt(number: &str, outcome: DialOutcome, record: bool) -> DialAttempt {
    DialAttempt {
        number: number.into(),
        outcome,
        caller_id: Some(OFFICE.into()),
        record,
    }
}

#[tokio::test]
async fn pressing_1_rings_the_lines_in_turn_and_the_third_one_answers() {
    let router = StandIn::start().await;
    let script = PbxScript {
        talk_ms: 61_000,
        token: Some("pbx-token".into()),
        // Typed "17": one digit is gathered.
        ..scripted(
            "pbx-8f2c1",
            &["17"],
            &[
                (LINE_A, Answer::Busy),
                (LINE_B, Answer::NoAnswer),
                (LINE_C, human(3_000)),
            ],
        )
    };
    let call = pbx::play_call(&reqwest::Client::new(), &router.url("main"), &script)
        .await
        .unwrap();

    assert_eq!(call.gathered, ["1"]);
    assert_eq!(call.said, [GREETING, "Соединяю", ANNOUNCE]);
    assert_eq!(
        call.dials,
        [
            attempt(LINE_A, DialOutcome::Busy, true),
            attempt(LINE_B, DialOutcome::NoAnswer, true),
            attempt(LINE_C, DialOutcome::Answered, true),
        ]
    );
    let recording = "http://sim/recordings/pbx-8f2c1-1.wav".to_owned();
    let results: Vec<_> = call.results().cloned().collect();
    assert_eq!(
        results,
        [
            PbxResult::Gather { digits: "1".into() },
            // Busy costs nothing, no answer its whole 10 s timeout.
            PbxResult::Dial(DialResult {
                outcome: DialOutcome::Answered,
                number: LINE_C.into(),
                answered_after_ms: Some(13_000),
                talk_ms: Some(61_000),
            }),
            PbxResult::Hangup {
                by: HangupBy::Pbx,
                duration_ms: 74_000,
            },
            // The recording comes after the hangup.
            PbxResult::Recording {
                url: recording.clone(),
                duration_ms: 61_000,
            },
        ]
    );
    assert_eq!(call.answered_by.as_deref(), Some(LINE_C));
    assert_eq!(call.ended_by, HangupBy::Pbx);
    assert_eq!(call.duration_ms, 74_000);
    assert_eq!(call.recordings, [recording]);
    assert!(call.violations.is_empty());
    assert!(!call.fallback_used);
    assert_eq!(call.late_answers, 0);
    assert!(call.steps.iter().all(|s| s.latency_ms > 0.0 && !s.late));

    // What the router saw: the start at the URL, the rest at report_url,
    // each with the state it handed out last (the recording with the
    // hangup answer's), the bearer every time.
    let seen = router.seen();
    let paths: Vec<_> = seen.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/pbx/main",
            "/pbx/main/reports",
            "/pbx/main/reports",
            "/pbx/main/reports",
            "/pbx/main/reports",
        ]
    );
    let states: Vec<_> = seen.iter().map(|s| s.body.get("state").cloned()).collect();
    assert_eq!(
        states,
        [
            None,
            Some(json!("n=1")),
            Some(json!("n=2")),
            Some(json!("n=3")),
            Some(json!("n=4")),
        ]
    );
    assert!(
        seen.iter()
            .all(|s| s.authorization.as_deref() == Some("Bearer pbx-token"))
    );
    let first = &seen[0].body;
    assert_eq!(first["call_id"], "pbx-8f2c1");
    assert_eq!(first["numa"], CALLER);
    assert_eq!(first["numb"], OFFICE);
    assert_eq!(first["started_at"], "2026-11-24T10:00:00Z");
    assert!(first.get("result").is_none());
    assert_eq!(
        seen[2].body["result"],
        json!({"dial": {"outcome": "answered", "number": LINE_C,
                        "answered_after_ms": 13000, "talk_ms": 61000}})
    );
    assert_eq!(
        call.steps[1].url,
        format!("{}/pbx/main/reports", router.base)
    );
}

#[tokio::test]
async fn when_nobody_answers_the_last_targets_outcome_is_reported() {
    let router = StandIn::start().await;
    let client = reqwest::Client::new();

    // B picks up too late (20 s against 10 s): no answer; C is unscripted.
    let script = scripted(
        "pbx-none",
        &["1"],
        &[(LINE_A, Answer::Busy), (LINE_B, human(20_000))],
    );
    let call = pbx::play_call(&client, &router.url("main"), &script)
        .await
        .unwrap();
    let outcomes: Vec<_> = call.dials.iter().map(|d| d.outcome).collect();
    assert_eq!(
        outcomes,
        [
            DialOutcome::Busy,
            DialOutcome::NoAnswer,
            DialOutcome::NoAnswer
        ]
    );
    assert_eq!(
        call.results().nth(1),
        Some(&PbxResult::Dial(DialResult {
            outcome: DialOutcome::NoAnswer,
            number: LINE_C.into(),
            answered_after_ms: None,
            talk_ms: None,
        }))
    );
    assert_eq!(call.duration_ms, 25_000);
    assert_eq!(call.answered_by, None);
    assert!(call.recordings.is_empty());
    assert_eq!(
        call.said,
        [GREETING, "Соединяю"],
        "no announcement unanswered"
    );
    assert_eq!(
        call.steps.len(),
        4,
        "start, gather, dial, hangup: no recording"
    );
    assert_eq!(
        router.seen()[2].body["result"],
        json!({"dial": {"outcome": "no_answer", "number": LINE_C}})
    );

    // The last line busy: the dial is busy, and only A's timeout counts.
    let script = scripted(
        "pbx-busy",
        &["1"],
        &[
            (LINE_A, Answer::NoAnswer),
            (LINE_B, Answer::Failed),
            (LINE_C, Answer::Busy),
        ],
    );
    let call = pbx::play_call(&client, &router.url("main"), &script)
        .await
        .unwrap();
    let Some(PbxResult::Dial(dial)) = call.results().nth(1) else {
        panic!("no dial in {call:?}");
    };
    assert_eq!(
        (dial.outcome, dial.number.as_str()),
        (DialOutcome::Busy, LINE_C)
    );
    assert_eq!(call.duration_ms, 10_000);
}

#[tokio::test]
async fn silence_times_the_gather_out_and_the_router_says_goodbye() {
    let router = StandIn::start().await;
    let call = pbx::play_call(
        &reqwest::Client::new(),
        &router.url("main"),
        &scripted("pbx-quiet", &[], &[]),
    )
    .await
    .unwrap();
    assert_eq!(call.gathered, [""]);
    assert_eq!(call.said, [GREETING, "До свидания"]);
    assert!(call.dials.is_empty());
    assert_eq!(call.ended_by, HangupBy::Pbx);
    assert_eq!(call.duration_ms, 5_000, "the gather's timeout");
    assert_eq!(call.steps.len(), 3);
}

#[tokio::test]
async fn a_parallel_dial_takes_the_earliest_answer_within_its_timeout() {
    let router = StandIn::start().await;
    let script = scripted(
        "pbx-parallel",
        &["3"],
        &[
            (LINE_A, human(8_000)),
            (LINE_B, human(2_000)),
            (LINE_C, human(20_000)),
        ],
    );
    let call = pbx::play_call(&reqwest::Client::new(), &router.url("main"), &script)
        .await
        .unwrap();
    assert_eq!(
        call.dials,
        [
            attempt(LINE_A, DialOutcome::NoAnswer, false),
            attempt(LINE_B, DialOutcome::Answered, false),
            attempt(LINE_C, DialOutcome::NoAnswer, false),
        ]
    );
    let Some(PbxResult::Dial(dial)) = call.results().nth(1) else {
        panic!("no dial in {call:?}");
    };
    assert_eq!(dial.answered_after_ms, Some(2_000));
    assert_eq!(call.answered_by.as_deref(), Some(LINE_B));
    assert_eq!(call.duration_ms, 62_000);
    assert!(call.recordings.is_empty(), "not recorded");
}

#[tokio::test]
async fn the_caller_hangs_up_instead_of_performing_the_second_answer() {
    let router = StandIn::start().await;
    let script = PbxScript {
        hang_up_after: Some(2),
        ..scripted("pbx-gone", &["1"], &[(LINE_A, human(0))])
    };
    let call = pbx::play_call(&reqwest::Client::new(), &router.url("main"), &script)
        .await
        .unwrap();
    let results: Vec<_> = call.results().cloned().collect();
    assert_eq!(
        results,
        [
            PbxResult::Gather { digits: "1".into() },
            PbxResult::Hangup {
                by: HangupBy::Caller,
                duration_ms: 0,
            },
        ]
    );
    assert_eq!(call.said, [GREETING], "the second answer was not performed");
    assert!(call.dials.is_empty());
    assert_eq!(call.ended_by, HangupBy::Caller);
}

#[tokio::test]
async fn broken_answers_are_errors() {
    let router = StandIn::start().await;
    let client = reqwest::Client::new();
    let play = |variant: &'static str| {
        let url = router.url(variant);
        let client = client.clone();
        async move { pbx::play_call(&client, &url, &scripted("pbx-bad", &[], &[])).await }
    };

    match play("malformed").await {
        Err(PbxError::Protocol(message)) => {
            assert!(message.starts_with("step 1: "), "{message}");
            assert!(message.contains("`gather`"), "{message}");
            assert!(message.contains("и ещё"), "quotes the body: {message}");
        }
        other => panic!("expected a protocol violation, got {other:?}"),
    }
    match play("error").await {
        Err(PbxError::Status { step, status, body }) => {
            assert_eq!((step, status, body.as_str()), (1, 500, "boom"));
        }
        other => panic!("expected a status error, got {other:?}"),
    }
    match play("chatty").await {
        Err(PbxError::Protocol(message)) => {
            assert!(
                message.starts_with("step 3: instructions in the answer to a hangup"),
                "{message}"
            );
        }
        other => panic!("expected a protocol violation, got {other:?}"),
    }
    // Gathering nothing, forever.
    match play("loop").await {
        Err(PbxError::TooManySteps(64)) => {}
        other => panic!("expected a loop, got {other:?}"),
    }
    assert_eq!(
        router
            .seen()
            .iter()
            .filter(|s| s.path.starts_with("/pbx/loop"))
            .count(),
        64
    );
}

#[tokio::test]
async fn an_empty_list_makes_the_pbx_hang_up_and_log_the_violation() {
    let router = StandIn::start().await;
    let call = pbx::play_call(
        &reqwest::Client::new(),
        &router.url("empty"),
        &scripted("pbx-empty", &["1"], &[]),
    )
    .await
    .unwrap();
    assert_eq!(call.violations.len(), 1, "{:?}", call.violations);
    assert!(call.violations[0].starts_with("step 1: "));
    assert_eq!(call.ended_by, HangupBy::Pbx);
    assert_eq!(
        call.results().collect::<Vec<_>>(),
        [&PbxResult::Hangup {
            by: HangupBy::Pbx,
            duration_ms: 0
        }]
    );
    assert!(call.gathered.is_empty());
}

#[tokio::test]
async fn a_slow_answer_is_late_but_performed() {
    let router = StandIn::start().await;
    let script = PbxScript {
        deadline_ms: 100,
        ..scripted("pbx-slow", &[], &[])
    };
    let call = pbx::play_call(&reqwest::Client::new(), &router.url("slow"), &script)
        .await
        .unwrap();
    assert_eq!(call.late_answers, 1);
    assert!(call.steps[0].late);
    assert!(call.steps[0].latency_ms >= 250.0);
    assert!(call.max_latency_ms() >= 250.0);
    assert!(call.steps[1..].iter().all(|s| !s.late));
    assert_eq!(call.said, [GREETING, "До свидания"], "performed anyway");
}

#[tokio::test]
async fn a_fallback_answer_is_noticed() {
    let router = StandIn::start().await;
    let script = scripted("pbx-fallback", &[], &[(LINE_A, human(1_000))]);
    let call = pbx::play_call(&reqwest::Client::new(), &router.url("fallback"), &script)
        .await
        .unwrap();
    assert!(call.fallback_used);
    assert!(call.steps[0].fallback);
    assert!(!call.steps[1].fallback);
    assert_eq!(call.answered_by.as_deref(), Some(LINE_A));
    assert_eq!(call.said, ["Соединяем с офисом", ANNOUNCE]);
}

#[tokio::test]
async fn the_simulator_plays_calls_over_http() {
    let router = StandIn::start().await;
    let sim = start_default().await;
    let script = json!({
        "call_id": "demo-1", "numa": CALLER, "numb": OFFICE, "digits": ["1"],
        "answers": {LINE_A: {"human": {"after_ms": 3000}}},
    });
    let response = sim
        .http
        .post(sim.url("/_sim/pbx/calls"))
        .json(&json!({"url": router.url("main"), "script": script}))
        .send()
        .await
        .unwrap();
    let (status, call) = json_of(response).await;
    assert_eq!(status, 200, "{call}");
    assert_eq!(call["answered_by"], LINE_A);
    assert_eq!(call["ended_by"], "pbx");
    assert_eq!(call["duration_ms"], 63_000);
    assert_eq!(
        call["recordings"],
        json!(["http://sim/recordings/demo-1-1.wav"])
    );
    assert_eq!(call["steps"].as_array().unwrap().len(), 5);
    assert_eq!(
        call["steps"][1]["result"],
        json!({"gather": {"digits": "1"}})
    );
    // The simulator's clock dated the call.
    assert!(
        router.seen()[0].body["started_at"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .is_ok()
    );

    let response = sim
        .http
        .post(sim.url("/_sim/pbx/calls"))
        .json(&json!({"url": router.url("malformed"), "script": script}))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(response).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("protocol violation: step 1"),
        "{body}"
    );

    for bad in [
        json!({"url": "not a url", "script": script}),
        json!({"url": router.url("main"), "script": {"call_id": "x"}}),
        json!({"url": router.url("main"), "script": script, "extra": 1}),
    ] {
        let response = sim
            .http
            .post(sim.url("/_sim/pbx/calls"))
            .json(&bad)
            .send()
            .await
            .unwrap();
        let (status, body) = json_of(response).await;
        assert_eq!(status, 400, "{bad} → {body}");
    }
}

#[test]
fn scripts_read_and_write_their_json() {
    let script: PbxScript = serde_json::from_value(json!({
        "call_id": "pbx-8f2c1", "numa": CALLER, "numb": OFFICE,
        "started_at": "2026-11-24T10:00:00Z", "digits": ["1"],
        "answers": {LINE_A: "busy", LINE_B: {"human": {"after_ms": 3000}},
                    LINE_C: "no_answer", OFFICE: "failed"},
    }))
    .unwrap();
    assert_eq!(script.answers[LINE_A], Answer::Busy);
    assert_eq!(script.answers[LINE_B], human(3_000));
    assert_eq!(script.answers[LINE_C], Answer::NoAnswer);
    assert_eq!(script.answers[OFFICE], Answer::Failed);
    assert_eq!(script.talk_ms, 60_000);
    assert_eq!(script.deadline_ms, 1_500);
    assert_eq!(script.hang_up_after, None);
    assert_eq!(script.token, None);
    let written = serde_json::to_value(&script).unwrap();
    assert_eq!(written["started_at"], "2026-11-24T10:00:00Z");
    assert_eq!(
        written["answers"][LINE_B],
        json!({"human": {"after_ms": 3000}})
    );
    assert_eq!(written["answers"][LINE_A], "busy");

    // Typos are refused rather than ignored.
    for bad in [
        json!({"call_id": "c", "numa": CALLER, "numb": OFFICE, "digit": ["1"]}),
        json!({"call_id": "c", "numa": CALLER, "numb": OFFICE, "answers": {LINE_A: "human"}}),
        json!({"call_id": "c", "numa": CALLER, "numb": OFFICE, "started_at": "yesterday"}),
    ] {
        assert!(
            serde_json::from_value::<PbxScript>(bad.clone()).is_err(),
            "{bad}"
        );
    }
}

/// A stand-in dynamic forwarding handler: an error for one caller, a
/// miscounted list for another, two office lines for everyone else.
async fn follow_me(Json(request): Json<Value>) -> Response {
    assert_eq!(request["jsonrpc"], "2.0");
    assert_eq!(request["method"], "getControlCallFollowMe");
    assert_eq!(request["params"]["sip_id"], "sip-100");
    assert_eq!(request["params"]["call_sid"], "sid-1");
    let id = request["id"].clone();
    assert!(id.is_u64());
    let line = |order: u32, active: &str, number: &str, timeout: u32| {
        json!({"I_FOLLOW_ORDER": order, "ACTIVE": active, "NAME": format!("Линия {order}"),
               "REDIRECT_NUMBER": number, "PERIOD": "always",
               "PERIOD_DESCRIPTION": "always", "TIMEOUT": timeout})
    };
    let lines = json!([
        line(1, "Y", "74951110001", 15),
        line(2, "N", "74951110002", 20)
    ]);
    let answer = match request["params"]["numberA"].as_str().unwrap() {
        "79990000000" => {
            json!({"id": id, "jsonrpc": "2.0", "error": {"code": -32000, "message": "no route"}})
        }
        "79990000002" => json!({"id": id, "jsonrpc": "2.0", "result": {
            "redirect_type": 1, "event_URL": "http://router/events", "masking": false,
            "followme_struct": [3, lines]}}),
        _ => json!({"id": id, "jsonrpc": "2.0", "result": {
            "redirect_type": 2, "event_URL": "http://router/events", "masking": true,
            "followme_struct": [2, lines]}}),
    };
    Json(answer).into_response()
}

#[tokio::test]
async fn follow_me_answers_are_read_and_checked() {
    let handler = StandIn::start().await;
    let url = format!("{}/followme", handler.base);
    let client = reqwest::Client::new();

    let forward = pbx::ask_follow_me(&client, &url, "+7 999 000-00-01", "sid-1", "sip-100")
        .await
        .unwrap();
    assert_eq!(forward.redirect_type, 2);
    assert!(forward.masking);
    assert_eq!(forward.event_url, "http://router/events");
    assert_eq!(forward.targets.len(), 2);
    let first = &forward.targets[0];
    assert_eq!(
        (
            first.order,
            first.active,
            first.number.as_str(),
            first.timeout_s
        ),
        (1, true, "74951110001", 15)
    );
    assert_eq!(first.name, "Линия 1");
    assert_eq!(first.period, "always");
    assert!(!forward.targets[1].active);

    match pbx::ask_follow_me(&client, &url, "79990000000", "sid-1", "sip-100").await {
        Err(PbxError::Rpc { code, message }) => {
            assert_eq!((code, message.as_str()), (-32000, "no route"));
        }
        other => panic!("expected an RPC error, got {other:?}"),
    }
    match pbx::ask_follow_me(&client, &url, "79990000002", "sid-1", "sip-100").await {
        Err(PbxError::Protocol(message)) => {
            assert!(message.contains("says 3 targets but lists 2"), "{message}");
        }
        other => panic!("expected a protocol violation, got {other:?}"),
    }
}
