//! Inbound calls routed by call-router, end to end: the simulated PBX plays
//! whole calls (caller, keys pressed, who answers after how long) against
//! the router of a running system on real Postgres and NATS, with the
//! example scenarios of `infra/call-router/scenarios.toml`.

use std::collections::BTreeMap;
use std::time::Duration;

use callflow_e2e::Running;
use kit::events::decode;
use kit::proto::events::v1::{
    CallerIdentified, CallerKind, DialFinished, Escalated, Event, FallbackUsed, InboundCallEnded,
    RecordingAvailable, TargetRole,
};
use kit::proto::routing::v1::directory_client::DirectoryClient;
use kit::proto::routing::v1::masking_client::MaskingClient;
use kit::proto::routing::v1::routing_stats_client::RoutingStatsClient;
use kit::proto::routing::v1::{
    CloseSessionRequest, Courier, CourierLogRequest, DailyRequest, ExtendSessionRequest,
    GetSessionRequest, OpenSessionRequest, Order, Shop, UpsertRequest,
};
use provider_sim::pbx::{Answer, DialOutcome, PbxCall, PbxScript, ask_follow_me, play_call};

/// 08:00Z is 11:00 in Moscow: the office is open.
const MORNING: &str = "2026-11-24T08:00:00Z";

const MARKETPLACE: &str = "+74951110000";
const MASKING: &str = "+74951110001";
const OFFICE: &str = "+74951230000";
const CALL_CENTRE: &str = "+74957770000";
const OPERATOR: &str = "+74951230099";

const CLIENT: &str = "+79161110001";
const SHOP_PHONE: &str = "+74957001001";
const NIGHT_SHOP_PHONE: &str = "+74957001002";
const COURIER: &str = "+79162220002";
const STORE: &str = "+74957003003";

fn router_url(running: &Running) -> String {
    format!("http://{}/pbx/v1/calls", running.addresses.router_http)
}

fn grpc(running: &Running) -> String {
    format!("http://{}", running.addresses.router_grpc)
}

/// The marketplace's directory: a shop open 09–21 Moscow, one open at night
/// only, a client with an order at each, an external courier.
async fn fill_directory(running: &Running) {
    let mut directory = DirectoryClient::connect(grpc(running)).await.unwrap();
    directory
        .upsert(UpsertRequest {
            shops: vec![
                Shop {
                    shop_id: "books".into(),
                    name: "Книжный".into(),
                    phone: SHOP_PHONE.into(),
                    city: "Москва".into(),
                    open_hours: "09:00-21:00".into(),
                    time_zone: "Europe/Moscow".into(),
                },
                Shop {
                    shop_id: "owls".into(),
                    name: "Совы".into(),
                    phone: NIGHT_SHOP_PHONE.into(),
                    city: "Москва".into(),
                    open_hours: "22:00-23:59".into(),
                    time_zone: "Europe/Moscow".into(),
                },
            ],
            orders: vec![
                Order {
                    order_id: "A-1001".into(),
                    client_phone: CLIENT.into(),
                    client_name: "Анна".into(),
                    shop_id: "books".into(),
                    active: true,
                },
                Order {
                    order_id: "N-2002".into(),
                    client_phone: "+79163330003".into(),
                    client_name: "Олег".into(),
                    shop_id: "owls".into(),
                    active: true,
                },
                Order {
                    order_id: "OLD-1".into(),
                    client_phone: "+79164440004".into(),
                    client_name: "Ира".into(),
                    shop_id: "books".into(),
                    active: false,
                },
            ],
            couriers: vec![Courier {
                courier_id: "c-7".into(),
                name: "Пётр".into(),
                phone: COURIER.into(),
                external: true,
                store_phone: STORE.into(),
                active: true,
            }],
        })
        .await
        .unwrap();
}

fn script(call_id: &str, from: &str, to: &str) -> PbxScript {
    let mut script = PbxScript::new(call_id, from, to);
    script.started_at = Some(MORNING.parse().unwrap());
    script
}

fn human(after_ms: u64) -> Answer {
    Answer::Human { after_ms }
}

async fn play(running: &Running, script: &PbxScript) -> PbxCall {
    let call = play_call(&reqwest::Client::new(), &router_url(running), script)
        .await
        .expect("the router keeps to the protocol");
    assert!(call.violations.is_empty(), "{:?}", call.violations);
    call
}

/// The call's events once its end is in the log.
async fn call_events(running: &Running, call_id: &str) -> Vec<Event> {
    let stream = format!("inbound-{call_id}");
    kit::testing::eventually(
        &format!("{stream} ends in the log"),
        Duration::from_secs(60),
        || async {
            let events = running.stream(&stream).await;
            events
                .iter()
                .any(|e| e.r#type == "InboundCallEnded")
                .then_some(events)
        },
    )
    .await
}

fn types(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.r#type.as_str()).collect()
}

fn dialled(call: &PbxCall) -> Vec<(&str, DialOutcome)> {
    call.dials
        .iter()
        .map(|d| (d.number.as_str(), d.outcome))
        .collect()
}

fn ended(events: &[Event]) -> InboundCallEnded {
    decode(
        events
            .iter()
            .find(|e| e.r#type == "InboundCallEnded")
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_client_with_an_order_reaches_the_shop_and_every_step_is_recorded() {
    let mut running = Running::start_at(MORNING).await;
    fill_directory(&running).await;
    let mut s = script("mp-1", CLIENT, MARKETPLACE);
    s.digits = vec!["1".into()];
    s.answers.insert(SHOP_PHONE.into(), human(4_000));
    s.talk_ms = 90_000;
    let call = play(&running, &s).await;

    assert!(
        call.said[0].contains("Анна") && call.said[0].contains("A-1001"),
        "{:?}",
        call.said
    );
    assert_eq!(dialled(&call), vec![(SHOP_PHONE, DialOutcome::Answered)]);
    assert!(
        call.said
            .iter()
            .any(|t| t.contains("Звонит клиент Анна по заказу A-1001")),
        "the shop hears who calls about which order: {:?}",
        call.said
    );
    assert_eq!(call.dials[0].caller_id.as_deref(), Some(CLIENT));
    assert!(!call.fallback_used);

    let events = call_events(&running, "mp-1").await;
    assert_eq!(
        types(&events),
        [
            "InboundCallStarted",
            "CallerIdentified",
            "MenuChosen",
            "DialAttempted",
            "DialFinished",
            "InboundCallEnded"
        ]
    );
    let who: CallerIdentified = decode(&events[1]).unwrap();
    assert_eq!(who.kind, CallerKind::ClientWithOrder as i32);
    assert_eq!(
        (who.order_id.as_str(), who.shop_name.as_str()),
        ("A-1001", "Книжный")
    );
    let end = ended(&events);
    assert_eq!(end.answered_by, TargetRole::Shop as i32);
    assert_eq!(end.ended_by, "pbx");

    // The daily statistics see the call.
    let stats = RoutingStatsClient::connect(grpc(&running)).await.unwrap();
    let day = kit::testing::eventually("the call is counted", Duration::from_secs(30), || {
        let mut stats = stats.clone();
        async move {
            let days = stats
                .daily(DailyRequest::default())
                .await
                .unwrap()
                .into_inner()
                .days;
            // Counted once the call's end is in too (it brings the time
            // to answer).
            days.into_iter().find(|d| {
                d.calls == 1 && d.answered_by.contains_key("shop") && d.time_to_answer_max_ms > 0
            })
        }
    })
    .await;
    assert_eq!(day.day, "2026-11-24");
    assert_eq!(day.by_caller.get("client_with_order"), Some(&1));
    assert_eq!(day.escalations, 0);
    assert_eq!(day.time_to_answer_max_ms, 4_000);

    // The support channel followed the call.
    let said = kit::testing::eventually(
        "support hears of the call",
        Duration::from_secs(60),
        || async {
            let texts: Vec<String> = running
                .sim
                .slack_messages()
                .into_iter()
                .filter_map(|m| m.text)
                .collect();
            texts.iter().any(|t| t.contains("ended")).then_some(texts)
        },
    )
    .await;
    assert!(
        said.contains(&"Call mp-1: client Анна is calling about order A-1001 (Книжный)".to_owned()),
        "{said:?}"
    );
    assert!(
        said.contains(&"Call mp-1: order_shop (+74957001001) answered".to_owned()),
        "{said:?}"
    );
    assert!(
        said.contains(&"Call mp-1 ended after 94 s: answered by the shop after 4 s".to_owned()),
        "{said:?}"
    );
    running.stop().await.unwrap();
}

#[tokio::test]
async fn an_unanswered_shop_escalates_to_the_office_then_the_call_centre() {
    let mut running = Running::start_at(MORNING).await;
    fill_directory(&running).await;

    // The shop rings out (15 s), the office is busy, the call centre answers.
    let mut s = script("mp-2", CLIENT, MARKETPLACE);
    s.digits = vec!["1".into()];
    s.answers.insert(SHOP_PHONE.into(), human(16_000));
    s.answers.insert(OFFICE.into(), Answer::Busy);
    s.answers.insert(CALL_CENTRE.into(), human(2_000));
    let call = play(&running, &s).await;
    assert_eq!(
        dialled(&call),
        vec![
            (SHOP_PHONE, DialOutcome::NoAnswer),
            (OFFICE, DialOutcome::Busy),
            (CALL_CENTRE, DialOutcome::Answered)
        ]
    );
    let events = call_events(&running, "mp-2").await;
    let escalations: Vec<(String, String, String)> = events
        .iter()
        .filter(|e| e.r#type == "Escalated")
        .map(|e| {
            let e: Escalated = decode(e).unwrap();
            (e.from_target, e.to_target, e.reason)
        })
        .collect();
    assert_eq!(
        escalations,
        [
            ("order_shop".into(), "office".into(), "no_answer".into()),
            ("office".into(), "call_centre".into(), "busy".into())
        ]
    );
    assert_eq!(ended(&events).answered_by, TargetRole::CallCentre as i32);

    // Nobody at all: the caller hears an apology and the call ends.
    let mut s = script("mp-3", CLIENT, MARKETPLACE);
    s.digits = vec!["1".into()];
    let call = play(&running, &s).await;
    assert_eq!(call.dials.len(), 3);
    assert!(call.answered_by.is_none());
    assert!(
        call.said
            .last()
            .unwrap()
            .contains("никто не может ответить")
    );
    let end = ended(&call_events(&running, "mp-3").await);
    assert_eq!(end.answered_by, TargetRole::Unspecified as i32);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_closed_shop_goes_straight_to_the_call_centre() {
    let mut running = Running::start_at(MORNING).await;
    fill_directory(&running).await;
    let mut s = script("mp-4", "+79163330003", MARKETPLACE);
    s.digits = vec!["1".into()];
    s.answers.insert(CALL_CENTRE.into(), human(1_000));
    let call = play(&running, &s).await;
    assert_eq!(dialled(&call), vec![(CALL_CENTRE, DialOutcome::Answered)]);
    assert!(
        call.said.iter().any(|t| t.contains("закрыт")),
        "{:?}",
        call.said
    );
    let events = call_events(&running, "mp-4").await;
    let closed: Escalated =
        decode(events.iter().find(|e| e.r#type == "Escalated").unwrap()).unwrap();
    assert_eq!(
        (
            closed.from_target.as_str(),
            closed.to_target.as_str(),
            closed.reason.as_str()
        ),
        ("order_shop", "call_centre", "closed")
    );
    running.stop().await.unwrap();
}

#[tokio::test]
async fn support_unknown_callers_partner_shops_and_menu_retries() {
    let mut running = Running::start_at(MORNING).await;
    fill_directory(&running).await;

    // 2 → support: the office answers.
    let mut s = script("mp-5", CLIENT, MARKETPLACE);
    s.digits = vec!["2".into()];
    s.answers.insert(OFFICE.into(), human(3_000));
    assert_eq!(
        dialled(&play(&running, &s).await),
        vec![(OFFICE, DialOutcome::Answered)]
    );

    // A wrong key, then silence: the menu is repeated once, then support.
    let mut s = script("mp-6", CLIENT, MARKETPLACE);
    s.digits = vec!["7".into(), "".into()];
    s.answers.insert(OFFICE.into(), human(3_000));
    let call = play(&running, &s).await;
    assert_eq!(call.gathered.len(), 2);
    assert!(call.said.iter().any(|t| t == "Такой кнопки нет."));
    assert_eq!(dialled(&call), vec![(OFFICE, DialOutcome::Answered)]);

    // Someone without an order (or with a finished one): no menu, office.
    let mut s = script("mp-7", "+79164440004", MARKETPLACE);
    s.answers.insert(OFFICE.into(), human(1_000));
    let call = play(&running, &s).await;
    assert!(call.gathered.is_empty());
    assert_eq!(dialled(&call), vec![(OFFICE, DialOutcome::Answered)]);

    // A partner shop is sent to the support chat, and nobody is dialled.
    let call = play(&running, &script("mp-8", SHOP_PHONE, MARKETPLACE)).await;
    assert!(call.dials.is_empty());
    assert!(call.said[0].contains("чат поддержки"));
    let events = call_events(&running, "mp-8").await;
    let who: CallerIdentified = decode(&events[1]).unwrap();
    assert_eq!(who.kind, CallerKind::Shop as i32);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn an_external_courier_is_put_through_to_the_store_recorded_and_logged() {
    let mut running = Running::start_at(MORNING).await;
    fill_directory(&running).await;
    let mut s = script("cr-1", COURIER, MARKETPLACE);
    s.answers.insert(STORE.into(), human(2_000));
    s.talk_ms = 45_000;
    let call = play(&running, &s).await;
    assert_eq!(dialled(&call), vec![(STORE, DialOutcome::Answered)]);
    assert!(call.dials[0].record, "supervised calls are recorded");
    assert_eq!(call.recordings.len(), 1);

    let events = kit::testing::eventually(
        "the recording is in the log",
        Duration::from_secs(60),
        || async {
            let events = running.stream("inbound-cr-1").await;
            events
                .iter()
                .any(|e| e.r#type == "RecordingAvailable")
                .then_some(events)
        },
    )
    .await;
    let recording: RecordingAvailable = decode(
        events
            .iter()
            .find(|e| e.r#type == "RecordingAvailable")
            .unwrap(),
    )
    .unwrap();
    assert_eq!(recording.courier_id, "c-7");
    assert_eq!(recording.url, call.recordings[0]);

    let mut stats = RoutingStatsClient::connect(grpc(&running)).await.unwrap();
    let log = kit::testing::eventually("the courier's log", Duration::from_secs(30), || {
        let mut stats = stats.clone();
        async move {
            let log = stats
                .courier_log(CourierLogRequest {
                    courier_id: "c-7".into(),
                    limit: 10,
                })
                .await
                .unwrap()
                .into_inner();
            log.calls
                .first()
                .filter(|c| !c.recording_url.is_empty())
                .cloned()
        }
    })
    .await;
    assert_eq!(log.call_id, "cr-1");
    assert_eq!(log.store_phone, STORE);
    assert!(log.answered);
    assert!(
        stats
            .courier_log(CourierLogRequest::default())
            .await
            .is_err()
    );
    running.stop().await.unwrap();
}

async fn open_session(running: &Running, code: &str, ttl: Duration) {
    let mut masking = MaskingClient::connect(grpc(running)).await.unwrap();
    masking
        .open(OpenSessionRequest {
            order_code: code.into(),
            courier_phone: COURIER.into(),
            client_phone: CLIENT.into(),
            ttl: Some(ttl.try_into().unwrap()),
            order_id: "D-55".into(),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn masked_calls_bridge_courier_and_client_behind_the_neutral_number() {
    let mut running = Running::start_at(MORNING).await;
    open_session(&running, "12345", Duration::from_secs(3600)).await;

    // The courier calls: the client sees the neutral number.
    let mut s = script("mk-1", COURIER, MASKING);
    s.digits = vec!["12345".into()];
    s.answers.insert(CLIENT.into(), human(5_000));
    let call = play(&running, &s).await;
    assert_eq!(dialled(&call), vec![(CLIENT, DialOutcome::Answered)]);
    assert_eq!(call.dials[0].caller_id.as_deref(), Some(MASKING));
    assert!(
        call.said
            .iter()
            .any(|t| t == "Звонит курьер по заказу 12345.")
    );
    let end = ended(&call_events(&running, "mk-1").await);
    let summary = end.masking.unwrap();
    assert!(summary.order_found && summary.phone_found && summary.counterpart_reached);
    assert_eq!(summary.caller_role, "courier");

    // And the reverse.
    let mut s = script("mk-2", CLIENT, MASKING);
    s.digits = vec!["12345".into()];
    s.answers.insert(COURIER.into(), human(1_000));
    let call = play(&running, &s).await;
    assert_eq!(dialled(&call), vec![(COURIER, DialOutcome::Answered)]);
    assert!(
        call.said
            .iter()
            .any(|t| t == "Звонит клиент по заказу 12345.")
    );

    // A stranger with the right code is asked to call from the order's
    // number, a wrong code is asked again, then `#` reaches an operator.
    let mut s = script("mk-3", "+79165550005", MASKING);
    s.digits = vec!["12345".into(), "99999".into(), "#".into()];
    s.answers.insert(OPERATOR.into(), human(1_000));
    let call = play(&running, &s).await;
    assert!(
        call.said
            .iter()
            .any(|t| t.contains("с номера, указанного в заказе"))
    );
    assert!(call.said.iter().any(|t| t.contains("не найден")));
    assert_eq!(dialled(&call), vec![(OPERATOR, DialOutcome::Answered)]);
    let summary = ended(&call_events(&running, "mk-3").await).masking.unwrap();
    assert!(summary.order_found && !summary.phone_found && summary.operator_requested);

    // Silence three times: goodbye, nobody dialled.
    let call = play(&running, &script("mk-4", COURIER, MASKING)).await;
    assert_eq!(call.gathered.len(), 3);
    assert!(call.dials.is_empty());
    assert_eq!(call.said.last().unwrap(), "До свидания.");

    // Sessions expire by themselves; extended ones live on; closed ones end.
    let mut masking = MaskingClient::connect(grpc(&running)).await.unwrap();
    open_session(&running, "55555", Duration::from_secs(600)).await;
    masking
        .extend(ExtendSessionRequest {
            order_code: "12345".into(),
            ttl: Some(Duration::from_secs(7200).try_into().unwrap()),
        })
        .await
        .unwrap();
    running.clock.advance(jiff::SignedDuration::from_secs(3700));
    assert!(
        masking
            .get(GetSessionRequest {
                order_code: "12345".into()
            })
            .await
            .unwrap()
            .into_inner()
            .live
    );
    let expired = masking
        .get(GetSessionRequest {
            order_code: "55555".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(expired.code(), tonic::Code::NotFound);
    let mut s = script("mk-5", COURIER, MASKING);
    s.digits = vec!["55555".into(), "".into(), "".into()];
    let call = play(&running, &s).await;
    assert!(call.dials.is_empty(), "an expired session bridges nobody");
    masking
        .close(CloseSessionRequest {
            order_code: "12345".into(),
        })
        .await
        .unwrap();
    let mut s = script("mk-6", COURIER, MASKING);
    s.digits = vec!["12345".into(), "".into(), "".into()];
    assert!(play(&running, &s).await.dials.is_empty());

    // Bad requests change nothing.
    let bad = masking
        .open(OpenSessionRequest {
            order_code: "12a45".into(),
            courier_phone: COURIER.into(),
            client_phone: CLIENT.into(),
            ttl: Some(Duration::from_secs(60).try_into().unwrap()),
            order_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    let bad = masking
        .open(OpenSessionRequest {
            order_code: "77777".into(),
            courier_phone: COURIER.into(),
            client_phone: CLIENT.into(),
            ttl: None,
            order_id: String::new(),
        })
        .await
        .unwrap_err();
    assert!(bad.message().contains("ttl"));
    assert_eq!(
        running.all_of("MaskingSessionOpened").await.len(),
        2,
        "only the two good sessions were opened"
    );
    running.stop().await.unwrap();
}

#[tokio::test]
async fn the_router_falls_back_instead_of_failing() {
    let mut running = Running::start_at(MORNING).await;
    fill_directory(&running).await;
    let http = reqwest::Client::new();

    // A number with no line: the fallback (office, then call centre).
    let mut s = script("fb-1", CLIENT, "+74950000001");
    s.answers.insert(OFFICE.into(), human(1_000));
    let call = play(&running, &s).await;
    assert!(call.fallback_used);
    assert_eq!(call.said[0], "Соединяем с офисом.");
    assert_eq!(dialled(&call), vec![(OFFICE, DialOutcome::Answered)]);
    let events = call_events(&running, "fb-1").await;
    let used: FallbackUsed =
        decode(events.iter().find(|e| e.r#type == "FallbackUsed").unwrap()).unwrap();
    assert_eq!(used.reason, "no_line");
    let finished: DialFinished =
        decode(events.iter().find(|e| e.r#type == "DialFinished").unwrap()).unwrap();
    assert_eq!(finished.role, TargetRole::Fallback as i32);

    // A forged state token: the fallback, not a 5xx.
    let step = serde_json::json!({
        "call_id": "fb-2", "numa": CLIENT, "numb": MARKETPLACE,
        "started_at": MORNING, "state": "eyJmIjoxfQ.AAAA",
        "result": {"gather": {"digits": "1"}}
    });
    let answer: serde_json::Value = http
        .post(router_url(&running))
        .json(&step)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["fallback"], true);
    assert_eq!(
        answer["instructions"][1]["dial"]["targets"][0]["number"],
        OFFICE
    );

    // The database stalls (the directory is locked): the answer is the
    // fallback, well within the PBX's deadline, and the decision is
    // recorded once the database is back.
    let locker =
        tokio_postgres::connect(&running.config.common.database_url, tokio_postgres::NoTls)
            .await
            .unwrap();
    let (client, connection) = locker;
    tokio::spawn(connection);
    client
        .batch_execute("BEGIN; LOCK TABLE call_router.shops IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let mut s = script("fb-3", CLIENT, MARKETPLACE);
    s.answers.insert(OFFICE.into(), human(1_000));
    let call = play(&running, &s).await;
    assert!(call.fallback_used);
    assert_eq!(call.late_answers, 0, "answered within the deadline");
    assert_eq!(dialled(&call), vec![(OFFICE, DialOutcome::Answered)]);
    client.batch_execute("ROLLBACK").await.unwrap();
    let events = call_events(&running, "fb-3").await;
    let used: FallbackUsed =
        decode(events.iter().find(|e| e.r#type == "FallbackUsed").unwrap()).unwrap();
    assert_eq!(used.reason, "deadline");

    // The outbox itself stalls: every step is the fallback, and once the
    // database is back the log tells what the PBX was told — none of the
    // decisions it never got, and the call's end once.
    client
        .batch_execute("BEGIN; LOCK TABLE call_router.outbox IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let mut s = script("fb-4", CLIENT, MARKETPLACE);
    s.answers.insert(OFFICE.into(), human(1_000));
    let call = play(&running, &s).await;
    assert!(call.steps.iter().all(|step| step.fallback));
    assert_eq!(call.late_answers, 0);
    client.batch_execute("ROLLBACK").await.unwrap();
    let events = call_events(&running, "fb-4").await;
    assert_eq!(
        types(&events),
        [
            "InboundCallStarted",
            "FallbackUsed",
            "DialAttempted",
            "FallbackUsed",
            "FallbackUsed",
            "InboundCallEnded"
        ]
    );

    // Malformed steps: 400 with the reason; a wrong token where one is set
    // is tested in the router's own tests. Nothing is recorded for them.
    for (body, field) in [
        (
            serde_json::json!({"call_id": "bad id", "numa": CLIENT, "numb": MARKETPLACE, "started_at": MORNING}),
            "call_id",
        ),
        (
            serde_json::json!({"call_id": "bad-1", "numa": "x", "numb": MARKETPLACE, "started_at": MORNING}),
            "numa",
        ),
        (
            serde_json::json!({"call_id": "bad-2", "numa": CLIENT, "numb": MARKETPLACE}),
            "started_at",
        ),
    ] {
        let response = http
            .post(router_url(&running))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        let text = response.text().await.unwrap();
        assert!(text.contains(field), "{text}");
    }
    // A result that does not answer what the call waits for.
    let first: serde_json::Value = http
        .post(router_url(&running))
        .json(&serde_json::json!({"call_id": "bad-3", "numa": CLIENT, "numb": MARKETPLACE, "started_at": MORNING}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let response = http
        .post(router_url(&running))
        .json(&serde_json::json!({"call_id": "bad-3", "numa": CLIENT, "numb": MARKETPLACE, "started_at": MORNING,
            "state": first["state"], "result": {"dial": {"outcome": "answered"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    // Once the outbox has forwarded everything, only the accepted steps
    // are in the log.
    let (db, connection) =
        tokio_postgres::connect(&running.config.common.database_url, tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(connection);
    kit::testing::eventually("the outbox drains", Duration::from_secs(30), || async {
        let left: i64 = db
            .query_one("SELECT count(*) FROM call_router.outbox", &[])
            .await
            .unwrap()
            .get(0);
        (left == 0).then_some(())
    })
    .await;
    assert!(running.stream("inbound-bad-1").await.is_empty());
    assert_eq!(
        types(&running.stream("inbound-bad-3").await),
        ["InboundCallStarted", "CallerIdentified"],
        "the refused step added nothing"
    );
    running.stop().await.unwrap();
}

#[tokio::test]
async fn exolve_dynamic_forwarding_gets_the_route_as_a_follow_me_list() {
    let mut running = Running::start_at(MORNING).await;
    fill_directory(&running).await;
    let http = reqwest::Client::new();
    let url = |line: &str| format!("http://{}/pbx/exolve/{line}", running.addresses.router_http);

    let route = ask_follow_me(&http, &url(MARKETPLACE), "79161110001", "ex-1", "sip-1")
        .await
        .unwrap();
    let numbers: Vec<(&str, u64)> = route
        .targets
        .iter()
        .map(|t| (t.number.as_str(), t.timeout_s))
        .collect();
    assert_eq!(
        numbers,
        [
            ("74957001001", 15),
            ("74951230000", 20),
            ("74957770000", 60)
        ],
        "the client's shop, then the office, then the call centre"
    );
    assert_eq!(route.redirect_type, 2);

    let route = ask_follow_me(&http, &url(MARKETPLACE), "79169999999", "ex-2", "sip-1")
        .await
        .unwrap();
    assert_eq!(
        route.targets.len(),
        2,
        "unknown caller: office, call centre"
    );

    // The masking line needs a code, which Exolve cannot ask for: fallback.
    let route = ask_follow_me(&http, &url(MASKING), "79161110001", "ex-3", "sip-1")
        .await
        .unwrap();
    assert_eq!(route.targets[0].number, "74951230000");
    let fallback = kit::testing::eventually(
        "the fallback is recorded",
        Duration::from_secs(30),
        || async {
            let events = running.stream("inbound-ex-3").await;
            events.into_iter().find(|e| e.r#type == "FallbackUsed")
        },
    )
    .await;
    let used: FallbackUsed = decode(&fallback).unwrap();
    assert_eq!(used.reason, "no_route");

    let bad = http
        .post(url(MARKETPLACE))
        .json(&serde_json::json!({"id": 1, "jsonrpc": "2.0", "method": "somethingElse", "params": {"numberA": "7916", "call_sid": "x"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn the_directory_refuses_a_bad_import_whole() {
    let mut running = Running::start_at(MORNING).await;
    let mut directory = DirectoryClient::connect(grpc(&running)).await.unwrap();
    let refused = directory
        .upsert(UpsertRequest {
            orders: vec![
                Order {
                    order_id: "ok-1".into(),
                    client_phone: CLIENT.into(),
                    client_name: "Анна".into(),
                    shop_id: "books".into(),
                    active: true,
                },
                Order {
                    order_id: "bad-1".into(),
                    client_phone: "12".into(),
                    client_name: "?".into(),
                    shop_id: "books".into(),
                    active: true,
                },
            ],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().starts_with("orders[1].client_phone"),
        "{}",
        refused.message()
    );
    assert!(running.all_of("OrderUpserted").await.is_empty());

    fill_directory(&running).await;
    let who = directory
        .identify(kit::proto::routing::v1::IdentifyRequest {
            phone: "89161110001".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (who.kind.as_str(), who.order_id.as_str()),
        ("client_with_order", "A-1001")
    );
    let counts: BTreeMap<&str, usize> = [
        ("ShopUpserted", running.all_of("ShopUpserted").await.len()),
        ("OrderUpserted", running.all_of("OrderUpserted").await.len()),
        (
            "CourierUpserted",
            running.all_of("CourierUpserted").await.len(),
        ),
    ]
    .into();
    assert_eq!(
        counts,
        [
            ("CourierUpserted", 1),
            ("OrderUpserted", 3),
            ("ShopUpserted", 2)
        ]
        .into()
    );
    running.stop().await.unwrap();
}
