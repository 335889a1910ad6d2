//! Each provider's normal answers and refusals, over real HTTP.

mod common;

use std::time::Duration;

use common::{BITRIX_SECRET, EXOLVE_KEY, json_of, start, start_default, text_of, with_test_clock};
use jiff::SignedDuration;
use provider_sim::{SimConfig, SmsStatus, Target, exolve::codes};
use serde_json::{Value, json};

// ---------------------------------------------------------------- Exolve

#[tokio::test]
async fn exolve_send_sms_is_accepted_recorded_and_listed() {
    let sim = start_default().await;
    let (status, body) = json_of(
        sim.exolve(
            "/messaging/v1/SendSMS",
            json!({"number": "74951234567", "destination": "79991112233", "text": "Напоминаем о записи"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    let message_id = body["message_id"]
        .as_str()
        .expect("message_id is a string")
        .to_owned();
    assert!(message_id.len() >= 10 && message_id.bytes().all(|b| b.is_ascii_digit()));

    let sent = sim.handle.sms();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].message_id, message_id);
    assert_eq!(sent[0].destination, "79991112233");
    assert_eq!(sent[0].segments, 1);
    // No delivery delay: delivered as soon as anyone looks.
    assert_eq!(sent[0].status, SmsStatus::Delivered);

    let recorded = sim.handle.requests_to(Target::ExolveSendSms);
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].method, "POST");
    assert_eq!(recorded[0].path, "/messaging/v1/SendSMS");
    assert_eq!(
        recorded[0].authorization(),
        Some(format!("Bearer {EXOLVE_KEY}").as_str())
    );
    assert_eq!(recorded[0].body["destination"], json!("79991112233"));
    assert_eq!(recorded[0].status, Some(200));

    // An empty GetList body lists everything.
    let response = sim
        .http
        .post(sim.url("/messaging/v1/GetList"))
        .bearer_auth(EXOLVE_KEY)
        .send()
        .await
        .unwrap();
    let (status, list) = json_of(response).await;
    assert_eq!(status, 200);
    let messages = list["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1);
    let listed = &messages[0];
    assert_eq!(listed["message_id"], json!(message_id));
    assert_eq!(listed["sender"], json!("74951234567"));
    assert_eq!(listed["number"], json!("74951234567"));
    assert_eq!(listed["receiver"], json!("79991112233"));
    assert_eq!(listed["text"], json!("Напоминаем о записи"));
    assert_eq!(listed["direction"], json!(codes::DIRECTION_OUTGOING));
    assert_eq!(listed["delivery_status"], json!(codes::DELIVERY_DELIVERED));
    assert_eq!(listed["status"], json!(codes::STATUS_DELIVERED));
    assert_eq!(listed["segments_count"], json!(1));
    assert!(
        listed["date"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .is_ok()
    );
    assert!(listed["application_uuid"].is_string());
}

#[tokio::test]
async fn exolve_refuses_wrong_keys_and_bad_input_in_its_error_shape() {
    let sim = start_default().await;
    let sms = json!({"number": "74951234567", "destination": "79991112233", "text": "hi"});

    let wrong_key = sim
        .http
        .post(sim.url("/messaging/v1/SendSMS"))
        .bearer_auth("not-the-key")
        .json(&sms)
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(wrong_key).await;
    assert_eq!(status, 401);
    assert!(body["error"]["message"].is_string());

    let no_key = sim
        .http
        .post(sim.url("/messaging/v1/SendSMS"))
        .json(&sms)
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(no_key).await.0, 401);

    for destination in [
        "7999111223",
        "+79991112233",
        "7999111223a",
        "1234567890123456",
    ] {
        let (status, body) = json_of(
            sim.exolve(
                "/messaging/v1/SendSMS",
                json!({"number": "74951234567", "destination": destination, "text": "hi"}),
            )
            .await,
        )
        .await;
        assert_eq!(status, 400, "{destination}");
        assert_eq!(body, json!({"error": {"message": "invalid destination"}}));
    }

    let bad_json = sim
        .http
        .post(sim.url("/messaging/v1/SendSMS"))
        .bearer_auth(EXOLVE_KEY)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(bad_json).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("invalid JSON")
    );

    assert!(sim.handle.sms().is_empty(), "nothing refused is stored");
}

#[tokio::test]
async fn sms_stay_sent_until_the_delay_passes_then_deliver_or_fail() {
    let (mut config, clock) = with_test_clock();
    config.sms_delivery_delay = Duration::from_secs(60);
    let sim = start(config).await;
    let send = |destination: &'static str| {
        sim.exolve(
            "/messaging/v1/SendSMS",
            json!({"number": "CallflowAlpha", "destination": destination, "text": "Привет"}),
        )
    };
    let (_, reachable) = json_of(send("79990000001").await).await;
    let (_, unreachable) = json_of(send("79990000002").await).await;
    sim.handle.mark_undeliverable("+7 999 000-00-02");

    let list = |filter: Value| sim.exolve("/messaging/v1/GetList", filter);
    let (_, before) = json_of(list(json!({})).await).await;
    let codes_before: Vec<&Value> = before["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["delivery_status"])
        .collect();
    assert_eq!(
        codes_before,
        vec![&json!(codes::DELIVERY_SENT), &json!(codes::DELIVERY_SENT)]
    );
    assert!(sim.handle.sms().iter().all(|s| s.status == SmsStatus::Sent));

    clock.advance(SignedDuration::from_secs(60));

    // By id, given as a string or as a number.
    let (_, one) = json_of(list(json!({"message_id": reachable["message_id"]})).await).await;
    assert_eq!(one["messages"].as_array().unwrap().len(), 1);
    assert_eq!(
        one["messages"][0]["delivery_status"],
        json!(codes::DELIVERY_DELIVERED)
    );
    let numeric: u64 = unreachable["message_id"].as_str().unwrap().parse().unwrap();
    let (_, other) = json_of(list(json!({"message_id": numeric})).await).await;
    assert_eq!(
        other["messages"][0]["delivery_status"],
        json!(codes::DELIVERY_UNDELIVERED)
    );
    assert_eq!(
        other["messages"][0]["status"],
        json!(codes::STATUS_UNDELIVERED)
    );

    // By status, as one code or an array.
    let (_, failed) =
        json_of(list(json!({"delivery_status": [codes::DELIVERY_UNDELIVERED]})).await).await;
    assert_eq!(failed["messages"].as_array().unwrap().len(), 1);
    let (_, delivered) = json_of(list(json!({"status": codes::STATUS_DELIVERED})).await).await;
    assert_eq!(delivered["messages"][0]["receiver"], json!("79990000001"));

    let statuses: Vec<SmsStatus> = sim.handle.sms().iter().map(|s| s.status).collect();
    assert_eq!(statuses, vec![SmsStatus::Delivered, SmsStatus::Undelivered]);
    assert!(sim.handle.sms()[1].final_at.is_some());
}

#[tokio::test]
async fn sms_deliver_on_the_real_clock_after_the_delay() {
    let sim = start(SimConfig {
        sms_delivery_delay: Duration::from_millis(200),
        ..SimConfig::default()
    })
    .await;
    sim.exolve(
        "/messaging/v1/SendSMS",
        json!({"number": "74951234567", "destination": "79991112233", "text": "hi"}),
    )
    .await;
    // A generous bound: this waits for the transition, it does not time it.
    let mut status = SmsStatus::Sent;
    for _ in 0..200 {
        status = sim.handle.sms()[0].status;
        if status != SmsStatus::Sent {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, SmsStatus::Delivered);
}

#[tokio::test]
async fn get_list_filters_by_number_dates_and_pages() {
    let (config, clock) = with_test_clock();
    let sim = start(config).await;
    for (destination, minutes) in [("79990000001", 0), ("79990000002", 10), ("79990000001", 20)] {
        clock.advance(SignedDuration::from_mins(minutes));
        sim.exolve(
            "/messaging/v1/SendSMS",
            json!({"number": "74951234567", "destination": destination, "text": "hi"}),
        )
        .await;
    }
    let count = |body: Value| async {
        let (status, list) = json_of(sim.exolve("/messaging/v1/GetList", body).await).await;
        assert_eq!(status, 200);
        list["messages"].as_array().unwrap().len()
    };
    assert_eq!(count(json!({"number": "79990000001"})).await, 2);
    assert_eq!(count(json!({"receiver": "79990000002"})).await, 1);
    assert_eq!(count(json!({"number": "74951234567"})).await, 3);
    assert_eq!(count(json!({"date_gte": "2026-03-02T09:05:00Z"})).await, 2);
    assert_eq!(
        count(json!({"date_from": "2026-03-02T09:05:00Z", "date_to": "2026-03-02T09:15:00Z"}))
            .await,
        1
    );
    assert_eq!(count(json!({"limit": 2})).await, 2);
    assert_eq!(count(json!({"limit": 2, "offset": 2})).await, 1);
    assert_eq!(
        count(json!({"direction": [codes::DIRECTION_INCOMING]})).await,
        0
    );
    let (status, body) = json_of(
        sim.exolve("/messaging/v1/GetList", json!({"date_gte": "yesterday"}))
            .await,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("date_gte")
    );
}

#[tokio::test]
async fn transcripts_are_not_found_until_ready() {
    let sim = start_default().await;
    sim.handle.script_transcript_chunks(
        987654321,
        2,
        &[("1", "Напомнить через месяц?"), ("2", "Да, напомните")],
    );
    let poll = |uid: Value| {
        sim.exolve(
            "/statistics/call-record/v1/GetTranscribation",
            json!({ "uid": uid }),
        )
    };

    for _ in 0..2 {
        let (status, body) = json_of(poll(json!(987654321)).await).await;
        assert_eq!(status, 404);
        assert_eq!(body, json!({"error": {"message": "not found"}}));
    }
    // The uid may come as a string too.
    let (status, body) = json_of(poll(json!("987654321")).await).await;
    assert_eq!(status, 200);
    assert_eq!(body["uid"], json!(987654321));
    assert!(
        body["date_time"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .is_ok()
    );
    assert!(body["called_number"].is_string() && body["calling_number"].is_string());
    assert!(body["duration"].is_u64());
    let chunks = body["transcribation"][0]["chunks"].as_array().unwrap();
    assert_eq!(chunks[0]["channel_tag"], json!("1"));
    assert_eq!(chunks[1]["text"], json!("Да, напомните"));
    assert!(chunks[1]["start_time"].is_number() && chunks[1]["end_time"].is_number());
    assert_eq!(sim.handle.transcript_polls(987654321), 3);

    // Ready stays ready.
    assert_eq!(json_of(poll(json!(987654321)).await).await.0, 200);

    for _ in 0..3 {
        assert_eq!(
            json_of(poll(json!(1)).await).await.0,
            404,
            "unscripted uids are never found"
        );
    }
    assert_eq!(json_of(poll(Value::Null).await).await.0, 400);
}

#[tokio::test]
async fn a_scripted_body_is_answered_as_is() {
    let sim = start_default().await;
    let body = json!({"uid": 5, "transcribation": [{"chunks": [{"channel_tag": "2", "text": "ок", "start_time": "0.5s", "end_time": "1.1s"}]}]});
    sim.handle.script_transcript("5", 0, body.clone());
    let (status, answered) = json_of(
        sim.exolve(
            "/statistics/call-record/v1/GetTranscribation",
            json!({"uid": 5}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(answered, body);
}

#[tokio::test]
async fn transcription_and_amd_switches_are_remembered_per_number() {
    let sim = start_default().await;
    let (status, body) = json_of(
        sim.exolve(
            "/number/v1/SetCallTranscribationState",
            json!({"number_code": 74951234567_u64, "call_transcribation": true}),
        )
        .await,
    )
    .await;
    assert_eq!((status, body), (200, json!({})));
    sim.exolve(
        "/number/v1/SetCallTranscribationState",
        json!({"number_code": "74951230000", "call_transcribation": false}),
    )
    .await;
    assert_eq!(sim.handle.transcription_state(74951234567_u64), Some(true));
    assert_eq!(sim.handle.transcription_state("74951230000"), Some(false));
    assert_eq!(sim.handle.transcription_state("70000000000"), None);

    let (status, body) = json_of(
        sim.exolve(
            "/number/v1/SetCallTranscribationState",
            json!({"number_code": "abc", "call_transcribation": true}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["message"], json!("invalid number_code"));

    let (status, _) = json_of(
        sim.exolve(
            "/number/v1/SetAmdState",
            json!({"number_code": 74951234567_u64, "amd": true}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(sim.handle.amd_states().get("74951234567"), Some(&true));
}

#[tokio::test]
async fn voice_messages_get_a_numeric_call_id() {
    let sim = start_default().await;
    let (status, body) = json_of(
        sim.exolve(
            "/call/v1/MakeVoiceMessage",
            json!({"source": "74951234567", "destination": "79991112233", "tts": {"text": "Ваш заказ готов", "voice": "alena"}}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    let call_id = body["call_id"].as_u64().expect("numeric call_id");
    let messages = sim.handle.voice_messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].call_id, call_id);
    assert_eq!(messages[0].voice.as_deref(), Some("alena"));

    let (status, body) = json_of(
        sim.exolve(
            "/call/v1/MakeVoiceMessage",
            json!({"source": "74951234567", "destination": "79991112233", "tts": {"text": ""}}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"].is_string());
}

// -------------------------------------------------------------- Telegram

#[tokio::test]
async fn telegram_send_message_answers_like_the_bot_api() {
    let sim = start_default().await;
    let (status, body) = json_of(
        sim.telegram(
            json!({"chat_id": 123456789, "text": "<b>Новый лид</b>", "parse_mode": "HTML"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["ok"], json!(true));
    assert_eq!(body["result"]["chat"]["id"], json!(123456789));
    assert_eq!(body["result"]["text"], json!("<b>Новый лид</b>"));
    assert!(body["result"]["message_id"].is_u64());
    assert!(body["result"]["date"].is_i64());

    // A numeric chat id sent as a string comes back as a number.
    let (_, body) = json_of(
        sim.telegram(json!({"chat_id": "-100200300", "text": "hi"}))
            .await,
    )
    .await;
    assert_eq!(body["result"]["chat"]["id"], json!(-100200300));

    let messages = sim.handle.telegram_messages();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0].parse_mode.as_deref(), Some("HTML"));
    assert_eq!(messages[1].chat_id, json!("-100200300"));
}

#[tokio::test]
async fn telegram_refusals_have_its_shape() {
    let sim = start_default().await;
    let wrong = sim
        .http
        .post(sim.url("/botnot-the-token/sendMessage"))
        .json(&json!({"chat_id": 1, "text": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_of(wrong).await,
        (
            401,
            json!({"ok": false, "error_code": 401, "description": "Unauthorized"})
        )
    );

    let empty = json_of(sim.telegram(json!({"chat_id": 1, "text": "  "})).await).await;
    assert_eq!(
        empty,
        (
            400,
            json!({"ok": false, "error_code": 400, "description": "Bad Request: message text is empty"})
        )
    );

    // 4096 characters (not bytes) is the limit.
    let longest = "я".repeat(4096);
    assert_eq!(
        json_of(sim.telegram(json!({"chat_id": 1, "text": longest})).await)
            .await
            .0,
        200
    );
    let too_long = json_of(
        sim.telegram(json!({"chat_id": 1, "text": "я".repeat(4097)}))
            .await,
    )
    .await;
    assert_eq!(
        too_long,
        (
            400,
            json!({"ok": false, "error_code": 400, "description": "Bad Request: message is too long"})
        )
    );

    let (status, body) = json_of(sim.telegram(json!({"text": "hi"})).await).await;
    assert_eq!(status, 400);
    assert_eq!(body["ok"], json!(false));
    let (status, _) = json_of(
        sim.telegram(json!({"chat_id": 1, "text": "hi", "parse_mode": "BBCode"}))
            .await,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(sim.handle.telegram_messages().len(), 1);
}

// ----------------------------------------------------------------- Slack

#[tokio::test]
async fn slack_webhooks_answer_ok_in_plain_text() {
    let sim = start_default().await;
    let response = sim.slack(json!({"text": "Новый лид"})).await;
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/plain; charset=utf-8"
    );
    assert_eq!(text_of(response).await, (200, None, "ok".to_owned()));

    let blocks = json!([{"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}]);
    assert_eq!(
        text_of(sim.slack(json!({"blocks": blocks})).await).await.0,
        200
    );

    // Slack also takes a form with the JSON in `payload`.
    let form = sim
        .http
        .post(sim.url("/services/T9/B9/zzz"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("payload=%7B%22text%22%3A%22from+a+form%22%7D")
        .send()
        .await
        .unwrap();
    assert_eq!(text_of(form).await.0, 200);

    let messages = sim.handle.slack_messages();
    assert_eq!(messages.len(), 3);
    assert_eq!(messages[0].path, "/services/T0001/B0001/abcdefsecret");
    assert_eq!(messages[1].blocks.as_ref(), Some(&blocks));
    assert_eq!(messages[2].text.as_deref(), Some("from a form"));
    assert_eq!(messages[2].path, "/services/T9/B9/zzz");
}

#[tokio::test]
async fn slack_refuses_messages_without_text_or_blocks() {
    let sim = start_default().await;
    for body in [
        json!({}),
        json!({"text": ""}),
        json!({"blocks": []}),
        json!({"text": 5}),
    ] {
        assert_eq!(
            text_of(sim.slack(body.clone()).await).await,
            (400, None, "invalid_payload".to_owned()),
            "{body}"
        );
    }
    let garbage = sim
        .http
        .post(sim.url("/services/T/B/x"))
        .body("{{")
        .send()
        .await
        .unwrap();
    assert_eq!(text_of(garbage).await.2, "invalid_payload");
    assert!(sim.handle.slack_messages().is_empty());
}

// --------------------------------------------------------------- Bitrix24

#[tokio::test]
async fn bitrix_leads_are_added_updated_and_listed() {
    let sim = start_default().await;
    let fields = json!({
        "TITLE": "Заявка с сайта", "NAME": "Анна",
        "PHONE": [{"VALUE": "+79991112233", "VALUE_TYPE": "WORK"}],
        "SOURCE_ID": "WEB", "UTM_SOURCE": "google",
    });
    let (status, added) = json_of(
        sim.bitrix(
            "crm.lead.add.json",
            json!({"fields": fields, "params": {"REGISTER_SONET_EVENT": "Y"}}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    let id = added["result"].as_u64().expect("numeric id");
    assert!(added["time"]["start"].is_number());
    assert!(added["time"]["date_start"].is_string());

    let (status, updated) = json_of(
        sim.bitrix(
            "crm.lead.update.json",
            json!({"id": id.to_string(), "fields": {"STATUS_ID": "IN_PROCESS"}}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(updated["result"], json!(true));

    let leads = sim.handle.bitrix_leads();
    assert_eq!(leads.len(), 1);
    assert_eq!(leads[0].id, id);
    assert_eq!(leads[0].fields["NAME"], json!("Анна"));
    assert_eq!(leads[0].fields["STATUS_ID"], json!("IN_PROCESS"));
    assert_eq!(leads[0].updates, 1);
    assert_eq!(leads[0].params, Some(json!({"REGISTER_SONET_EVENT": "Y"})));

    let (_, found) = json_of(
        sim.bitrix("crm.lead.list", json!({"filter": {"PHONE": "79991112233"}}))
            .await,
    )
    .await;
    assert_eq!(found["total"], json!(1));
    assert_eq!(found["result"][0]["ID"], json!(id.to_string()));
    let (_, none) = json_of(
        sim.bitrix(
            "crm.lead.list.json",
            json!({"filter": {"PHONE": "70000000000"}}),
        )
        .await,
    )
    .await;
    assert_eq!(none["total"], json!(0));

    let (status, missing) = json_of(
        sim.bitrix(
            "crm.lead.update.json",
            json!({"id": id + 1000, "fields": {}}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(missing["error_description"], json!("Not found"));
}

#[tokio::test]
async fn bitrix_refuses_wrong_secrets_and_unknown_methods() {
    let sim = start_default().await;
    let wrong = sim
        .http
        .post(sim.url("/rest/1/wrong-secret/crm.lead.add.json"))
        .json(&json!({"fields": {"TITLE": "x"}}))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(wrong).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], json!("INVALID_CREDENTIALS"));
    assert!(body["error_description"].is_string());

    let (status, body) = json_of(sim.bitrix("crm.deal.add.json", json!({})).await).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], json!("ERROR_METHOD_NOT_FOUND"));
    assert_eq!(sim.handle.requests_to(Target::BitrixOther).len(), 1);

    let (status, _) = json_of(
        sim.bitrix("crm.lead.add.json", json!({"fields": "nope"}))
            .await,
    )
    .await;
    assert_eq!(status, 400);
    assert!(sim.handle.bitrix_leads().is_empty());
}

#[tokio::test]
async fn bitrix_bucket_overflows_with_query_limit_exceeded_and_drains() {
    let (mut config, clock) = with_test_clock();
    config.bitrix_bucket_size = 3;
    config.bitrix_refill_per_second = 1.0;
    let sim = start(config).await;
    let add = || sim.bitrix("crm.lead.add.json", json!({"fields": {"TITLE": "x"}}));
    for _ in 0..3 {
        assert_eq!(json_of(add().await).await.0, 200);
    }
    let (status, body) = json_of(add().await).await;
    assert_eq!(status, 503);
    assert_eq!(
        body,
        json!({"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"})
    );
    assert_eq!(
        sim.handle.bitrix_leads().len(),
        3,
        "an overflowing call does nothing"
    );

    // Every method counts, the wrong secret included.
    let wrong = sim
        .http
        .post(sim.url("/rest/1/wrong/crm.lead.list"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 503);

    clock.advance(SignedDuration::from_secs(1));
    assert_eq!(json_of(add().await).await.0, 200);
    assert_eq!(json_of(add().await).await.0, 503);
    let _ = BITRIX_SECRET;
}

#[tokio::test]
async fn bitrix_lead_list_finds_callflows_leads_by_originator_and_origin_id() {
    let sim = start_default().await;
    let mut ids = Vec::new();
    for origin in ["cf-lead-12345", "cf-lead-67890"] {
        let (status, added) = json_of(
            sim.bitrix(
                "crm.lead.add.json",
                json!({"fields": {
                    "TITLE": "Заявка с сайта", "ORIGINATOR_ID": "callflow", "ORIGIN_ID": origin,
                }}),
            )
            .await,
        )
        .await;
        assert_eq!(status, 200);
        ids.push(added["result"].as_u64().unwrap());
    }
    let list = |filter: Value| sim.bitrix("crm.lead.list.json", json!({ "filter": filter }));

    let (status, found) =
        json_of(list(json!({"ORIGINATOR_ID": "callflow", "ORIGIN_ID": "cf-lead-67890"})).await)
            .await;
    assert_eq!(status, 200);
    assert_eq!(found["total"], json!(1));
    assert_eq!(found["result"][0]["ID"], json!(ids[1].to_string()));
    assert_eq!(found["result"][0]["ORIGIN_ID"], json!("cf-lead-67890"));

    // `=FIELD` is the same filter; both leads share the originator.
    let (_, both) = json_of(list(json!({"=ORIGINATOR_ID": "callflow"})).await).await;
    assert_eq!(both["total"], json!(2));
    // Ids are not phone numbers: the same digits under another prefix, or
    // another originator, find nothing.
    for filter in [
        json!({"ORIGIN_ID": "other-12345"}),
        json!({"ORIGINATOR_ID": "someone-else", "ORIGIN_ID": "cf-lead-12345"}),
    ] {
        let (_, none) = json_of(list(filter.clone()).await).await;
        assert_eq!(none["total"], json!(0), "{filter}");
    }
}

#[tokio::test]
async fn bitrix_company_list_filters_seeded_companies_and_pages() {
    let sim = start_default().await;
    let mut fields = serde_json::Map::new();
    fields.insert("TITLE".into(), json!("CPA Net"));
    fields.insert("UF_CRM_PARTNER_CODE".into(), json!("cpa-net-7"));
    let cpa = sim.handle.add_company(fields);
    let response = sim
        .http
        .post(sim.url("/_sim/bitrix/companies"))
        .json(&json!({"TITLE": "Leadgen", "UF_CRM_PARTNER_CODE": "leadgen-1"}))
        .send()
        .await
        .unwrap();
    let (status, seeded) = json_of(response).await;
    assert_eq!(status, 200);
    let leadgen = seeded["id"].as_u64().expect("numeric id");
    assert_ne!(cpa, leadgen);
    assert_eq!(sim.handle.bitrix_companies().len(), 2);

    let (status, found) = json_of(
        sim.bitrix(
            "crm.company.list.json",
            json!({"filter": {"UF_CRM_PARTNER_CODE": "cpa-net-7"}, "select": ["ID", "TITLE"]}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(found["total"], json!(1));
    assert_eq!(found["result"][0]["ID"], json!(cpa.to_string()));
    assert_eq!(found["result"][0]["TITLE"], json!("CPA Net"));
    assert!(found["time"]["start"].is_number());
    assert_eq!(sim.handle.requests_to(Target::BitrixCompanyList).len(), 1);

    let (_, none) = json_of(
        sim.bitrix(
            "crm.company.list",
            json!({"filter": {"UF_CRM_PARTNER_CODE": "cpa-net-8"}}),
        )
        .await,
    )
    .await;
    assert_eq!(none["total"], json!(0));
    assert_eq!(none["result"], json!([]));
    let (_, by_id) = json_of(
        sim.bitrix("crm.company.list", json!({"filter": {"ID": leadgen}}))
            .await,
    )
    .await;
    assert_eq!(by_id["result"][0]["TITLE"], json!("Leadgen"));

    // Pages of 50, as crm.lead.list.
    for i in 0..60 {
        let mut fields = serde_json::Map::new();
        fields.insert("TITLE".into(), json!(format!("Partner {i}")));
        fields.insert("INDUSTRY".into(), json!("ADVERTISING"));
        sim.handle.add_company(fields);
    }
    let filter = json!({"INDUSTRY": "ADVERTISING"});
    let (_, first) = json_of(
        sim.bitrix("crm.company.list", json!({"filter": filter}))
            .await,
    )
    .await;
    assert_eq!(first["total"], json!(60));
    assert_eq!(first["result"].as_array().unwrap().len(), 50);
    assert_eq!(first["next"], json!(50));
    let (_, second) = json_of(
        sim.bitrix("crm.company.list", json!({"filter": filter, "start": 50}))
            .await,
    )
    .await;
    assert_eq!(second["result"].as_array().unwrap().len(), 10);
    assert!(second.get("next").is_none());

    // Leads and companies are apart.
    let (_, leads) = json_of(sim.bitrix("crm.lead.list", json!({})).await).await;
    assert_eq!(leads["total"], json!(0));
}

// ------------------------------------------------------------- Voximplant

#[tokio::test]
async fn voximplant_starts_scenarios_from_form_or_json_parameters() {
    let sim = start_default().await;
    let (status, body) = json_of(
        sim.voximplant_form("rule_id=3141&script_custom_data=lead%3A42")
            .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["result"], json!(1));
    let session = body["call_session_history_id"]
        .as_u64()
        .expect("numeric session id");
    assert!(
        body["media_session_access_url"]
            .as_str()
            .unwrap()
            .starts_with("http")
    );

    let json_call = sim
        .http
        .post(sim.url("/platform_api/StartScenarios"))
        .bearer_auth("a.jwt.token")
        .json(&json!({"rule_name": "callback", "script_custom_data": "lead:43"}))
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(json_call).await.1["result"], json!(1));

    let calls = sim.handle.voximplant_calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].call_session_history_id, session);
    assert_eq!(calls[0].rule_id, Some(3141));
    assert_eq!(calls[0].script_custom_data.as_deref(), Some("lead:42"));
    assert_eq!(calls[1].rule_name.as_deref(), Some("callback"));
}

#[tokio::test]
async fn voximplant_reports_bad_parameters_with_http_200() {
    let sim = start_default().await;
    let long = "x".repeat(201);
    let (status, body) = json_of(
        sim.voximplant_form(&format!("rule_id=1&script_custom_data={long}"))
            .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["error"]["code"], json!(100));
    assert!(body["error"]["msg"].is_string());
    // 200 bytes is still fine, even when fewer characters.
    let (_, ok) = json_of(
        sim.voximplant_form(&format!(
            "rule_id=1&script_custom_data={}",
            "%D1%8F".repeat(100)
        ))
        .await,
    )
    .await;
    assert_eq!(ok["result"], json!(1));

    let (status, body) = json_of(sim.voximplant_form("script_custom_data=x").await).await;
    assert_eq!(status, 200);
    assert_eq!(body["error"]["code"], json!(100));

    let anonymous = sim
        .http
        .post(sim.url("/platform_api/StartScenarios"))
        .json(&json!({"rule_id": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    assert_eq!(sim.handle.voximplant_calls().len(), 1);
}

#[tokio::test]
async fn unknown_paths_get_a_json_404() {
    let sim = start_default().await;
    let (status, body) = json_of(
        sim.http
            .post(sim.url("/nowhere/at/all"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("/nowhere/at/all"));
}
