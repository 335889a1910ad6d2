//! Injected faults, in each provider's own shape, and the `/_sim` control
//! API over HTTP.

mod common;

use std::time::{Duration, Instant};

use common::{EXOLVE_KEY, Sim, json_of, start, start_default, text_of};
use provider_sim::{
    Fault, RecordedRequest, SentSms, SimConfig, SmsStatus, Target, TelegramMessage,
};
use serde_json::{Value, json};

fn sms_body() -> Value {
    json!({"number": "74951234567", "destination": "79991112233", "text": "hi"})
}

// ---------------------------------------------------------- server errors

#[tokio::test]
async fn server_errors_take_each_providers_shape_and_are_consumed() {
    let sim = start_default().await;
    let h = &sim.handle;
    h.inject(Target::ExolveSendSms, Fault::server_error(503), 1);
    h.inject(Target::Telegram, Fault::server_error(502), 1);
    h.inject(Target::Slack, Fault::server_error(500), 1);
    h.inject(Target::BitrixLeadAdd, Fault::server_error(500), 1);
    h.inject(Target::Voximplant, Fault::server_error(500), 1);

    let (status, body) = json_of(sim.exolve("/messaging/v1/SendSMS", sms_body()).await).await;
    assert_eq!(status, 503);
    assert!(body["error"]["message"].is_string());
    assert!(
        sim.handle.sms().is_empty(),
        "a 5xx before accepting sends nothing"
    );

    let (status, body) = json_of(sim.telegram(json!({"chat_id": 1, "text": "hi"})).await).await;
    assert_eq!(status, 502);
    assert_eq!(body["ok"], json!(false));
    assert_eq!(body["error_code"], json!(502));

    assert_eq!(
        text_of(sim.slack(json!({"text": "hi"})).await).await,
        (500, None, "internal_error".to_owned())
    );

    let (status, body) = json_of(
        sim.bitrix("crm.lead.add.json", json!({"fields": {"TITLE": "x"}}))
            .await,
    )
    .await;
    assert_eq!(status, 500);
    assert_eq!(body["error"], json!("INTERNAL_SERVER_ERROR"));

    let (status, body) = json_of(sim.voximplant_form("rule_id=1").await).await;
    assert_eq!(status, 500);
    assert!(body["error"]["code"].is_number());

    // Each fault answered once; the next requests are normal.
    assert!(sim.handle.pending_faults().is_empty());
    assert_eq!(
        json_of(sim.exolve("/messaging/v1/SendSMS", sms_body()).await)
            .await
            .0,
        200
    );
    assert_eq!(
        json_of(sim.telegram(json!({"chat_id": 1, "text": "hi"})).await)
            .await
            .0,
        200
    );
    assert_eq!(text_of(sim.slack(json!({"text": "hi"})).await).await.0, 200);

    let statuses: Vec<Option<u16>> = sim
        .handle
        .requests_to(Target::ExolveSendSms)
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, vec![Some(503), Some(200)]);
}

#[tokio::test]
async fn company_lists_have_their_own_fault_queue() {
    let sim = start_default().await;
    let (status, _) = control(
        &sim,
        reqwest::Method::POST,
        "/_sim/faults",
        Some(json!({"target": "bitrix_company_list", "fault": {"kind": "server_error", "status": 503}})),
    )
    .await;
    assert_eq!(status, 200);
    // A lead list is another target: it answers normally.
    let (status, _) = json_of(sim.bitrix("crm.lead.list.json", json!({})).await).await;
    assert_eq!(status, 200);
    let (status, body) = json_of(sim.bitrix("crm.company.list.json", json!({})).await).await;
    assert_eq!(status, 503);
    assert_eq!(body["error"], json!("INTERNAL_SERVER_ERROR"));
    let (status, _) = json_of(sim.bitrix("crm.company.list.json", json!({})).await).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn faults_queue_in_order_per_target() {
    let sim = start_default().await;
    sim.handle
        .inject(Target::ExolveGetList, Fault::server_error(500), 2);
    sim.handle
        .inject(Target::ExolveGetList, Fault::rate_limited(1), 1);
    // Another target's queue is its own.
    assert_eq!(
        json_of(sim.exolve("/messaging/v1/SendSMS", sms_body()).await)
            .await
            .0,
        200
    );
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(
            json_of(sim.exolve("/messaging/v1/GetList", json!({})).await)
                .await
                .0,
        );
    }
    assert_eq!(seen, vec![500, 500, 429, 200]);
}

// ------------------------------------------------------------ rate limits

#[tokio::test]
async fn rate_limits_carry_each_providers_retry_after() {
    let sim = start_default().await;
    let h = &sim.handle;
    h.inject(Target::Telegram, Fault::rate_limited(7), 1);
    h.inject(Target::Slack, Fault::rate_limited(5), 1);
    h.inject(Target::ExolveSendSms, Fault::rate_limited(3), 1);
    h.inject(Target::BitrixLeadAdd, Fault::rate_limited(9), 1);
    h.inject(Target::Voximplant, Fault::rate_limited(4), 1);

    let (status, body) = json_of(sim.telegram(json!({"chat_id": 1, "text": "hi"})).await).await;
    assert_eq!(status, 429);
    assert_eq!(
        body,
        json!({
            "ok": false,
            "error_code": 429,
            "description": "Too Many Requests: retry after 7",
            "parameters": {"retry_after": 7},
        })
    );

    assert_eq!(
        text_of(sim.slack(json!({"text": "hi"})).await).await,
        (429, Some("5".to_owned()), "rate_limited".to_owned())
    );

    let response = sim.exolve("/messaging/v1/SendSMS", sms_body()).await;
    assert_eq!(response.headers()["retry-after"], "3");
    let (status, body) = json_of(response).await;
    assert_eq!(status, 429);
    assert!(body["error"]["message"].is_string());

    let (status, body) = json_of(
        sim.bitrix("crm.lead.add.json", json!({"fields": {"TITLE": "x"}}))
            .await,
    )
    .await;
    assert_eq!(status, 503);
    assert_eq!(body["error"], json!("QUERY_LIMIT_EXCEEDED"));

    let response = sim.voximplant_form("rule_id=1").await;
    assert_eq!(response.headers()["retry-after"], "4");
    assert_eq!(response.status().as_u16(), 429);

    assert!(sim.handle.sms().is_empty());
    assert!(sim.handle.telegram_messages().is_empty());
    assert!(sim.handle.bitrix_leads().is_empty());
}

// ---------------------------------------------------------------- timeouts

/// A client that gives up long before the simulator's hang ends.
fn impatient() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap()
}

async fn send_sms_impatiently(sim: &Sim) -> reqwest::Error {
    impatient()
        .post(sim.url("/messaging/v1/SendSMS"))
        .bearer_auth(EXOLVE_KEY)
        .json(&sms_body())
        .send()
        .await
        .expect_err("the simulator hangs")
}

#[tokio::test]
async fn a_timeout_before_accepting_sends_nothing() {
    let sim = start_default().await;
    sim.handle
        .inject(Target::ExolveSendSms, Fault::timeout(), 1);
    assert!(send_sms_impatiently(&sim).await.is_timeout());
    assert!(sim.handle.sms().is_empty());
    let (_, list) = json_of(sim.exolve("/messaging/v1/GetList", json!({})).await).await;
    assert_eq!(list["messages"], json!([]));
    // It was received, and is still unanswered.
    let recorded = sim.handle.requests_to(Target::ExolveSendSms);
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].status, None);
}

#[tokio::test]
async fn a_timeout_after_accepting_leaves_an_sms_the_caller_never_heard_of() {
    let sim = start_default().await;
    sim.handle
        .inject(Target::ExolveSendSms, Fault::timeout_after_accepting(), 1);
    assert!(send_sms_impatiently(&sim).await.is_timeout());
    let sent = sim.handle.sms();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].destination, "79991112233");
    let (_, list) = json_of(
        sim.exolve("/messaging/v1/GetList", json!({"receiver": "79991112233"}))
            .await,
    )
    .await;
    assert_eq!(list["messages"][0]["message_id"], json!(sent[0].message_id));
}

#[tokio::test]
async fn a_timeout_after_accepting_works_for_any_side_effect() {
    let sim = start_default().await;
    sim.handle
        .inject(Target::BitrixLeadAdd, Fault::timeout_after_accepting(), 1);
    let error = impatient()
        .post(sim.url("/rest/1/sim-bitrix-secret/crm.lead.add.json"))
        .json(&json!({"fields": {"TITLE": "x"}}))
        .send()
        .await
        .expect_err("hangs");
    assert!(error.is_timeout());
    assert_eq!(sim.handle.bitrix_leads().len(), 1);
}

/// callflow's ambiguous case: crm.lead.add is carried out but its answer
/// never comes; the lead must already be findable by the keys callflow
/// reconciles on, while the request still hangs.
#[tokio::test]
async fn a_lead_added_before_a_lost_answer_is_found_by_its_origin_while_hanging() {
    let sim = start_default().await;
    sim.handle
        .inject(Target::BitrixLeadAdd, Fault::timeout_after_accepting(), 1);
    let request = {
        let http = sim.http.clone();
        let url = sim.url("/rest/1/sim-bitrix-secret/crm.lead.add.json");
        tokio::spawn(async move {
            http.post(url)
                .json(&json!({"fields": {
                    "TITLE": "Заявка с сайта", "ORIGINATOR_ID": "callflow", "ORIGIN_ID": "cf-lead-42",
                }}))
                .send()
                .await
        })
    };
    for _ in 0..400 {
        if !sim.handle.bitrix_leads().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let leads = sim.handle.bitrix_leads();
    assert_eq!(leads.len(), 1, "the lead exists before any answer");
    let adds = sim.handle.requests_to(Target::BitrixLeadAdd);
    assert_eq!(adds.len(), 1);
    assert_eq!(adds[0].status, None, "the add is still unanswered");
    assert!(!request.is_finished());

    let (status, found) = json_of(
        sim.bitrix(
            "crm.lead.list.json",
            json!({"filter": {"ORIGINATOR_ID": "callflow", "ORIGIN_ID": "cf-lead-42"}}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(found["total"], json!(1));
    assert_eq!(found["result"][0]["ID"], json!(leads[0].id.to_string()));
    request.abort();
}

#[tokio::test]
async fn hung_requests_are_released_when_the_server_shuts_down() {
    let mut sim = start(SimConfig::default()).await;
    sim.handle.inject(Target::Telegram, Fault::timeout(), 1);
    let request = {
        let http = sim.http.clone();
        let url = sim.url("/botsim-telegram-token/sendMessage");
        tokio::spawn(async move {
            http.post(url)
                .json(&json!({"chat_id": 1, "text": "hi"}))
                .send()
                .await
        })
    };
    // Wait until the simulator holds the request.
    for _ in 0..400 {
        if !sim.handle.requests_to(Target::Telegram).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(sim.handle.requests_to(Target::Telegram).len(), 1);
    sim.shutdown.cancel();
    let answered = request.await.unwrap().expect("answered at shutdown");
    assert_eq!(answered.status().as_u16(), 504);
    let (_, body) = json_of(answered).await;
    assert_eq!(body["ok"], json!(false));
    sim.task
        .take()
        .unwrap()
        .await
        .unwrap()
        .expect("server stops cleanly");
}

#[tokio::test]
async fn a_slow_answer_is_the_normal_answer_late() {
    let sim = start_default().await;
    sim.handle
        .inject(Target::Slack, Fault::slow(Duration::from_millis(300)), 1);
    let started = Instant::now();
    assert_eq!(
        text_of(sim.slack(json!({"text": "hi"})).await).await,
        (200, None, "ok".to_owned())
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(sim.handle.slack_messages().len(), 1);
}

// ------------------------------------------------------- the control API

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
async fn the_control_api_scripts_transcripts_and_injects_faults() {
    let sim = start_default().await;
    let (status, _) = control(
        &sim,
        reqwest::Method::POST,
        "/_sim/exolve/transcripts",
        Some(json!({
            "uid": 777, "not_ready_polls": 1,
            "chunks": [{"channel_tag": "1", "text": "Напомнить?"}, {"channel_tag": "2", "text": "Да"}],
            "calling_number": "79995554433",
        })),
    )
    .await;
    assert_eq!(status, 200);
    let poll = || {
        sim.exolve(
            "/statistics/call-record/v1/GetTranscribation",
            json!({"uid": 777}),
        )
    };
    assert_eq!(json_of(poll().await).await.0, 404);
    let (status, body) = json_of(poll().await).await;
    assert_eq!(status, 200);
    assert_eq!(body["calling_number"], json!("79995554433"));
    assert_eq!(body["transcribation"][0]["chunks"][1]["text"], json!("Да"));

    // A whole body, as is, under a string uid.
    control(
        &sim,
        reqwest::Method::POST,
        "/_sim/exolve/transcripts",
        Some(json!({"uid": "778", "body": {"uid": 778, "transcribation": []}})),
    )
    .await;
    let (_, body) = json_of(
        sim.exolve(
            "/statistics/call-record/v1/GetTranscribation",
            json!({"uid": 778}),
        )
        .await,
    )
    .await;
    assert_eq!(body, json!({"uid": 778, "transcribation": []}));

    let (status, queued) = control(
        &sim,
        reqwest::Method::POST,
        "/_sim/faults",
        Some(json!({"target": "telegram", "fault": {"kind": "rate_limited", "retry_after_secs": 2}, "times": 2})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(queued["queued"], json!(2));
    let (_, pending) = control(&sim, reqwest::Method::GET, "/_sim/faults", None).await;
    assert_eq!(pending["telegram"].as_array().unwrap().len(), 2);
    let (status, body) = json_of(sim.telegram(json!({"chat_id": 1, "text": "hi"})).await).await;
    assert_eq!(status, 429);
    assert_eq!(body["parameters"]["retry_after"], json!(2));
    control(&sim, reqwest::Method::DELETE, "/_sim/faults", None).await;
    assert_eq!(
        json_of(sim.telegram(json!({"chat_id": 1, "text": "hi"})).await)
            .await
            .0,
        200
    );

    control(
        &sim,
        reqwest::Method::POST,
        "/_sim/faults",
        Some(json!({"target": "exolve_send_sms", "fault": {"kind": "timeout", "accepted": true}})),
    )
    .await;
    assert_eq!(
        sim.handle.pending_faults()[&Target::ExolveSendSms],
        vec![Fault::timeout_after_accepting()]
    );
}

#[tokio::test]
async fn the_control_api_reads_back_what_the_providers_hold() {
    let sim = start_default().await;
    let (status, _) = control(
        &sim,
        reqwest::Method::POST,
        "/_sim/exolve/undeliverable",
        Some(json!({"destination": "79990000009"})),
    )
    .await;
    assert_eq!(status, 200);
    sim.exolve(
        "/messaging/v1/SendSMS",
        json!({"number": "74951234567", "destination": "79990000009", "text": "hi"}),
    )
    .await;
    sim.exolve(
        "/number/v1/SetCallTranscribationState",
        json!({"number_code": 74951234567_u64, "call_transcribation": true}),
    )
    .await;
    sim.telegram(json!({"chat_id": 42, "text": "Новый лид"}))
        .await;
    sim.slack(json!({"text": "hi"})).await;
    sim.bitrix("crm.lead.add.json", json!({"fields": {"TITLE": "x"}}))
        .await;
    sim.voximplant_form("rule_id=5").await;

    let (_, sms) = control(&sim, reqwest::Method::GET, "/_sim/sms", None).await;
    let sms: Vec<SentSms> = serde_json::from_value(sms).unwrap();
    assert_eq!(sms.len(), 1);
    assert_eq!(sms[0].status, SmsStatus::Undelivered);

    let (_, requests) = control(
        &sim,
        reqwest::Method::GET,
        "/_sim/requests?target=telegram",
        None,
    )
    .await;
    let requests: Vec<RecordedRequest> = serde_json::from_value(requests).unwrap();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].target, Target::Telegram);
    assert_eq!(requests[0].path, "/botsim-telegram-token/sendMessage");
    assert_eq!(requests[0].body["text"], json!("Новый лид"));
    assert_eq!(requests[0].status, Some(200));
    assert_eq!(requests[0].header("Content-Type"), Some("application/json"));

    let (_, all) = control(&sim, reqwest::Method::GET, "/_sim/requests", None).await;
    let all: Vec<RecordedRequest> = serde_json::from_value(all).unwrap();
    assert_eq!(all.len(), 6);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(
        all[5].body,
        json!({"rule_id": "5"}),
        "forms are recorded as objects"
    );

    let (_, states) = control(
        &sim,
        reqwest::Method::GET,
        "/_sim/exolve/transcription-states",
        None,
    )
    .await;
    assert_eq!(states, json!({"74951234567": true}));
    let (_, telegram) = control(&sim, reqwest::Method::GET, "/_sim/telegram/messages", None).await;
    let telegram: Vec<TelegramMessage> = serde_json::from_value(telegram).unwrap();
    assert_eq!(telegram[0].chat_id, json!(42));
    for (path, expected) in [
        ("/_sim/slack/messages", 1),
        ("/_sim/bitrix/leads", 1),
        ("/_sim/voximplant/calls", 1),
        ("/_sim/exolve/voice-messages", 0),
    ] {
        let (status, list) = control(&sim, reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(list.as_array().unwrap().len(), expected, "{path}");
    }
    let (_, amd) = control(&sim, reqwest::Method::GET, "/_sim/exolve/amd-states", None).await;
    assert_eq!(amd, json!({}));

    let (status, _) = control(&sim, reqwest::Method::POST, "/_sim/reset", None).await;
    assert_eq!(status, 200);
    assert!(sim.handle.requests().is_empty());
    assert!(sim.handle.sms().is_empty());
    assert!(sim.handle.telegram_messages().is_empty());
    assert!(sim.handle.bitrix_leads().is_empty());
    assert!(sim.handle.transcription_states().is_empty());
}

#[tokio::test]
async fn the_control_api_refuses_bad_requests() {
    let sim = start_default().await;
    for (path, body) in [
        (
            "/_sim/faults",
            json!({"target": "nope", "fault": {"kind": "timeout"}}),
        ),
        (
            "/_sim/faults",
            json!({"target": "slack", "fault": {"kind": "server_error", "status": 404}}),
        ),
        (
            "/_sim/faults",
            json!({"target": "slack", "fault": {"kind": "explode"}}),
        ),
        (
            "/_sim/faults",
            json!({"target": "slack", "fault": {"kind": "timeout"}, "times": 0}),
        ),
        ("/_sim/exolve/transcripts", json!({"uid": 1})),
        ("/_sim/exolve/transcripts", json!({"uid": "", "chunks": []})),
        ("/_sim/exolve/undeliverable", json!({})),
    ] {
        let (status, answer) = control(&sim, reqwest::Method::POST, path, Some(body.clone())).await;
        assert_eq!(status, 400, "{path} {body}");
        assert!(answer["error"].is_string());
    }
    let (status, answer) = control(
        &sim,
        reqwest::Method::GET,
        "/_sim/requests?target=nope",
        None,
    )
    .await;
    assert_eq!(status, 400);
    assert!(answer["error"].as_str().unwrap().contains("nope"));
    assert!(sim.handle.pending_faults().is_empty());

    let health = sim.http.get(sim.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
}
