//! Web leads, end to end: the shop's form → call-ingest → lead-dialer →
//! CRM (Bitrix24), calls (Voximplant or Exolve) with scripted outcomes,
//! SMS, the reminder-scheduler's timers, the notifier and the partner
//! dashboard (with operators marking leads of its manual queue handled), on
//! real Postgres and NATS with the provider simulator.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use callflow_e2e::Running;
use kit::events::{decode, from_proto_time};
use kit::proto::events::v1::{
    CallAttemptScheduled, Event, LeadClosed, LeadCreatedInCrm, LeadManuallyHandled,
    LeadNeedsManualProcessing, LeadUpdatedInCrm, NightSmsSent,
};
use kit::proto::leads::v1::MarkHandledRequest;
use kit::proto::leads::v1::lead_dashboard_client::LeadDashboardClient;
use provider_sim::{CallOutcome as Sim, Fault, Target};

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// Posts a lead; its id.
async fn lead(system: &Running, reference: &str, phone: &str, zone: &str) -> String {
    let (status, answer) = system
        .post_lead(&json!({
            "ref": reference, "site": "shop.example", "name": "Анна", "phone": phone,
            "city": "Москва", "time_zone": zone, "partner_id": "cpa-net-7",
            "order_id": format!("order-{reference}"), "amount": "1990.50",
        }))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "received", "{answer}");
    answer["lead_id"].as_str().unwrap().to_owned()
}

fn of_type<'a>(events: &'a [Event], event_type: &str) -> Vec<&'a Event> {
    events.iter().filter(|e| e.r#type == event_type).collect()
}

/// Waits until the lead's stream holds `n` events of `event_type`; returns
/// the whole stream.
async fn wait_lead(system: &Running, lead_id: &str, event_type: &str, n: usize) -> Vec<Event> {
    let give_up = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let events = system.stream(&format!("lead-{lead_id}")).await;
        if of_type(&events, event_type).len() >= n {
            return events;
        }
        if std::time::Instant::now() > give_up {
            let types: Vec<&str> = events.iter().map(|e| e.r#type.as_str()).collect();
            panic!("gave up waiting for {n} × {event_type} on lead {lead_id}; it has {types:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn calls_to(system: &Running, phone: &str) -> usize {
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    system
        .sim
        .calls()
        .iter()
        .filter(|c| c.phone == digits)
        .count()
}

fn sms_to(system: &Running, phone: &str) -> Vec<String> {
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    system
        .sim
        .sms()
        .into_iter()
        .filter(|s| s.destination == digits)
        .map(|s| s.text)
        .collect()
}

async fn eventually_sms(system: &Running, phone: &str, n: usize) -> Vec<String> {
    kit::testing::eventually(
        &format!("{n} SMS to {phone}"),
        Duration::from_secs(90),
        || async {
            let texts = sms_to(system, phone);
            (texts.len() >= n).then_some(texts)
        },
    )
    .await
}

fn bitrix_lead(system: &Running, lead_id: &str) -> Option<serde_json::Map<String, Value>> {
    system
        .sim
        .bitrix_leads()
        .into_iter()
        .find(|l| l.fields.get("ORIGIN_ID") == Some(&json!(lead_id)))
        .map(|l| l.fields)
}

async fn dashboard(system: &Running, path: &str) -> Value {
    let response = system
        .http
        .get(format!("http://{}{path}", system.addresses.lead_http))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

/// `POST /dashboard/manual-queue/{lead_id}/handled`: the status and JSON.
async fn mark_handled(system: &Running, lead_id: &str, body: Value) -> (u16, Value) {
    let response = system
        .http
        .post(format!(
            "http://{}/dashboard/manual-queue/{lead_id}/handled",
            system.addresses.lead_http
        ))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn move_clock(system: &Running, by: SignedDuration) {
    system
        .clock
        .set(system.clock_now().checked_add(by).unwrap());
}

trait Now {
    fn clock_now(&self) -> Timestamp;
}

impl Now for Running {
    fn clock_now(&self) -> Timestamp {
        use kit::clock::Clock;
        self.clock.now()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daytime_leads_take_every_branch_of_the_call_back() {
    // 12:00 in Moscow.
    let system = Running::start_at("2026-11-24T09:00:00Z").await;
    let partner = system.sim.add_company(
        json!({"TITLE": "CPA Net", "UF_CRM_PARTNER_CODE": "cpa-net-7"})
            .as_object()
            .unwrap()
            .clone(),
    );
    let (human, wrong, machine, third, silent, busy) = (
        "+79161000001",
        "+79161000002",
        "+79161000003",
        "+79161000004",
        "+79161000005",
        "+79161000006",
    );
    let none = Duration::ZERO;
    system.sim.script_calls(wrong, &[Sim::WrongNumber], none);
    system.sim.script_calls(machine, &[Sim::Machine], none);
    system
        .sim
        .script_calls(third, &[Sim::NoAnswer, Sim::NoAnswer, Sim::Human], none);
    system.sim.script_calls(silent, &[Sim::Silent], none);
    system.sim.script_calls(busy, &[Sim::Busy], none);
    let l_human = lead(&system, "d-1", human, "Europe/Moscow").await;
    let l_wrong = lead(&system, "d-2", wrong, "Europe/Moscow").await;
    let l_machine = lead(&system, "d-3", machine, "Europe/Moscow").await;
    let l_third = lead(&system, "d-4", third, "Europe/Moscow").await;
    let l_silent = lead(&system, "d-5", silent, "Europe/Moscow").await;
    let l_busy = lead(&system, "d-6", busy, "").await;

    // A person answers at once: confirmed, SMS, CRM lead with its partner.
    let events = wait_lead(&system, &l_human, "LeadConfirmed", 1).await;
    assert_eq!(of_type(&events, "CallAttemptStarted").len(), 1);
    let texts = eventually_sms(&system, human, 1).await;
    assert!(texts[0].contains("подтверждён"), "{texts:?}");
    let events = wait_lead(&system, &l_human, "LeadCreatedInCrm", 1).await;
    let created: LeadCreatedInCrm = decode(of_type(&events, "LeadCreatedInCrm")[0]).unwrap();
    assert_eq!(created.partner_crm_id, partner.to_string());
    let fields = bitrix_lead(&system, &l_human).expect("the lead is in the CRM");
    assert_eq!(fields["PHONE"][0]["VALUE"], human);
    assert_eq!(fields["UTM_SOURCE"], "cpa-net-7");
    assert_eq!(fields["OPPORTUNITY"], "1990.50");
    assert_eq!(fields["COMPANY_ID"], json!(partner.to_string()));
    kit::testing::eventually(
        "the CRM lead is processed",
        Duration::from_secs(60),
        || async {
            let fields = bitrix_lead(&system, &l_human)?;
            (fields["STATUS_ID"] == "PROCESSED").then_some(())
        },
    )
    .await;

    // A number that does not exist closes the lead, and the CRM calls it junk.
    let events = wait_lead(&system, &l_wrong, "LeadClosed", 1).await;
    let closed: LeadClosed = decode(of_type(&events, "LeadClosed")[0]).unwrap();
    assert_eq!(closed.reason, "wrong_number");
    kit::testing::eventually("the CRM lead is junk", Duration::from_secs(60), || async {
        let events = system.stream(&format!("lead-{l_wrong}")).await;
        of_type(&events, "LeadUpdatedInCrm")
            .iter()
            .map(|e| decode::<LeadUpdatedInCrm>(e).unwrap())
            .find(|u| u.status == "JUNK")
    })
    .await;

    // A machine: one SMS, the lead closed, no more calls.
    let events = wait_lead(&system, &l_machine, "LeadClosed", 1).await;
    let closed: LeadClosed = decode(of_type(&events, "LeadClosed")[0]).unwrap();
    assert_eq!(closed.reason, "answering_machine");
    let texts = eventually_sms(&system, machine, 1).await;
    assert!(texts[0].contains("не дозвонились"), "{texts:?}");

    // Unanswered: the next call is planned 30 minutes later.
    let events = wait_lead(&system, &l_third, "CallAttemptScheduled", 2).await;
    let second: CallAttemptScheduled = decode(of_type(&events, "CallAttemptScheduled")[1]).unwrap();
    assert_eq!(second.attempt, 2);
    assert_eq!(second.reason, "retry");
    assert_eq!(
        from_proto_time(second.due_at.as_ref().unwrap()).unwrap(),
        at("2026-11-24T09:30:00Z")
    );
    wait_lead(&system, &l_busy, "CallAttemptScheduled", 2).await;
    wait_lead(&system, &l_silent, "CallAttemptStarted", 1).await;

    // Half an hour later, four times: the timers bring the retries.
    for round in 2..=5u32 {
        // Each retry is planned from the time its predecessor finished: let
        // the plans be made before the clock moves on.
        wait_lead(&system, &l_busy, "CallAttemptScheduled", round as usize).await;
        if round == 3 {
            wait_lead(&system, &l_third, "CallAttemptScheduled", 3).await;
        }
        move_clock(&system, SignedDuration::from_mins(31));
        wait_lead(&system, &l_busy, "CallAttemptFinished", round as usize).await;
        if round == 2 {
            // No result for the silent call within 15 minutes: a person takes over.
            let events = wait_lead(&system, &l_silent, "LeadNeedsManualProcessing", 1).await;
            let manual: LeadNeedsManualProcessing =
                decode(of_type(&events, "LeadNeedsManualProcessing")[0]).unwrap();
            assert_eq!(manual.reason, "no_call_result");
            assert!(manual.calls_stopped);
        }
        if round == 3 {
            wait_lead(&system, &l_third, "LeadConfirmed", 1).await;
        }
    }
    let events = wait_lead(&system, &l_busy, "LeadNeedsManualProcessing", 1).await;
    let manual: LeadNeedsManualProcessing =
        decode(of_type(&events, "LeadNeedsManualProcessing")[0]).unwrap();
    assert_eq!(manual.reason, "not_reached");

    assert_eq!(calls_to(&system, human), 1);
    assert_eq!(calls_to(&system, wrong), 1);
    assert_eq!(calls_to(&system, machine), 1);
    assert_eq!(calls_to(&system, third), 3, "answered on the third call");
    assert_eq!(calls_to(&system, silent), 1);
    assert_eq!(calls_to(&system, busy), 5, "at most five calls");

    // The sellers hear of new leads, confirmations and leads needing them.
    kit::testing::eventually("the sellers are told", Duration::from_secs(90), || async {
        let texts: Vec<String> = system
            .sim
            .telegram_messages()
            .into_iter()
            .map(|m| m.text)
            .collect();
        let has = |needle: &str| texts.iter().any(|t| t.contains(needle));
        (has("New lead from shop.example")
            && has("confirmed by the client")
            && has("needs a person"))
        .then_some(())
    })
    .await;

    // The partner dashboard counts them.
    let summary = kit::testing::eventually("the dashboard", Duration::from_secs(60), || async {
        let summary = dashboard(
            &system,
            "/dashboard/summary?from_day=2026-11-24&to_day=2026-11-24",
        )
        .await;
        let partner = summary["partners"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["partner_id"] == "cpa-net-7"))
            .cloned()?;
        (partner["confirmed"] == 2 && partner["manual"] == 2).then_some(partner)
    })
    .await;
    assert_eq!(summary["leads"], 6);
    assert_eq!(summary["closed"], 2);
    let queue = dashboard(&system, "/dashboard/manual-queue").await;
    let waiting: Vec<&str> = queue["leads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["lead_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        waiting,
        vec![l_silent.as_str(), l_busy.as_str()],
        "oldest first"
    );

    // An operator called the silent client back and marks the lead handled
    // in the console: when the answer comes, the queue no longer shows it.
    let (status, answer) = mark_handled(
        &system,
        &l_silent,
        json!({"handled_by": "anna", "note": "called back, the order stands"}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["reason"], "no_call_result");
    assert_eq!(answer["repeated"], false);
    let queue = dashboard(&system, "/dashboard/manual-queue").await;
    assert_eq!(queue["leads"].as_array().unwrap().len(), 1, "{queue}");
    assert_eq!(queue["leads"][0]["lead_id"], l_busy.as_str());
    let events = system.stream(&format!("lead-{l_silent}")).await;
    let handled = of_type(&events, "LeadManuallyHandled");
    assert_eq!(handled.len(), 1);
    let payload: LeadManuallyHandled = decode(handled[0]).unwrap();
    assert_eq!(payload.handled_by, "anna");
    assert_eq!(payload.note, "called back, the order stands");
    assert_eq!(handled[0].event_id, answer["event_id"].as_str().unwrap());
    // The console sends it again (a lost answer): nothing new.
    let (status, again) = mark_handled(
        &system,
        &l_silent,
        json!({"handled_by": "anna", "note": "called back, the order stands"}),
    )
    .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["repeated"], true);
    let events = system.stream(&format!("lead-{l_silent}")).await;
    assert_eq!(of_type(&events, "LeadManuallyHandled").len(), 1);
    // Handling is a person's work, not a command: no call is made.
    assert_eq!(calls_to(&system, silent), 1);

    // The same over gRPC, for the busy one; and what is refused.
    let mut grpc = LeadDashboardClient::connect(format!("http://{}", system.addresses.lead_grpc))
        .await
        .unwrap();
    let request = |lead_id: &str, handled_by: &str| MarkHandledRequest {
        lead_id: lead_id.into(),
        handled_by: handled_by.into(),
        note: String::new(),
    };
    let answer = grpc
        .mark_handled(request(&l_busy, "boris"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.reason, "not_reached");
    let queue = dashboard(&system, "/dashboard/manual-queue").await;
    assert_eq!(queue["leads"].as_array().unwrap().len(), 0, "{queue}");
    for (lead_id, handled_by, code) in [
        (l_busy.as_str(), "anna", tonic::Code::FailedPrecondition),
        (l_human.as_str(), "anna", tonic::Code::FailedPrecondition),
        (
            "00000000-0000-4000-8000-000000000000",
            "anna",
            tonic::Code::NotFound,
        ),
        (l_human.as_str(), "", tonic::Code::InvalidArgument),
        ("d-1", "anna", tonic::Code::InvalidArgument),
    ] {
        let status = grpc
            .mark_handled(request(lead_id, handled_by))
            .await
            .unwrap_err();
        assert_eq!(status.code(), code, "{lead_id} {handled_by}: {status:?}");
    }
    let events = system.stream(&format!("lead-{l_human}")).await;
    assert!(of_type(&events, "LeadManuallyHandled").is_empty());

    // The sellers hear who took care of them.
    kit::testing::eventually(
        "the sellers hear of it",
        Duration::from_secs(90),
        || async {
            let texts: Vec<String> = system
                .sim
                .telegram_messages()
                .into_iter()
                .map(|m| m.text)
                .collect();
            let has = |needle: &str| texts.iter().any(|t| t.contains(needle));
            (has("was handled by anna: called back") && has("was handled by boris")).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_night_lead_gets_one_sms_and_its_call_at_nine_local() {
    // 23:30 in Vladivostok (UTC+10).
    let system = Running::start_at("2026-11-24T13:30:00Z").await;
    let phone = "+79241234567";
    let lead_id = lead(&system, "n-1", phone, "Asia/Vladivostok").await;
    let events = wait_lead(&system, &lead_id, "NightSmsSent", 1).await;
    let night: NightSmsSent = decode(of_type(&events, "NightSmsSent")[0]).unwrap();
    assert_eq!(
        from_proto_time(night.call_at.as_ref().unwrap()).unwrap(),
        at("2026-11-24T23:00:00Z"),
        "09:00 in Vladivostok"
    );
    // The SMS answers the client's own request: it goes now, at night.
    let texts = eventually_sms(&system, phone, 1).await;
    assert!(texts[0].contains("25.11 09:00"), "{texts:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(calls_to(&system, phone), 0, "nobody is called at night");

    // The same form sent again is the same lead: nothing new.
    let (status, again) = system
        .post_lead(&json!({"ref": "n-1", "site": "shop.example", "phone": phone}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(again["lead_id"], lead_id.as_str());
    assert_eq!(again["duplicate"], true);

    system.clock.set(at("2026-11-24T23:00:05Z"));
    wait_lead(&system, &lead_id, "LeadConfirmed", 1).await;
    assert_eq!(calls_to(&system, phone), 1);
    eventually_sms(&system, phone, 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        sms_to(&system, phone).len(),
        2,
        "the night SMS once, then the confirmation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crm_outage_sends_the_lead_to_a_person_and_the_call_goes_on() {
    let system = Running::start_at("2026-11-24T09:00:00Z").await;
    system
        .sim
        .inject(Target::BitrixLeadAdd, Fault::server_error(503), 20);
    let phone = "+79161000011";
    let lead_id = lead(&system, "c-1", phone, "Europe/Moscow").await;
    let events = wait_lead(&system, &lead_id, "LeadNeedsManualProcessing", 1).await;
    let manual: LeadNeedsManualProcessing =
        decode(of_type(&events, "LeadNeedsManualProcessing")[0]).unwrap();
    assert_eq!(manual.reason, "crm_failed");
    assert!(!manual.calls_stopped);
    wait_lead(&system, &lead_id, "LeadConfirmed", 1).await;
    kit::testing::eventually("the sellers are told", Duration::from_secs(90), || async {
        system
            .sim
            .telegram_messages()
            .into_iter()
            .find(|m| m.text.contains("Bitrix24 did not take the lead"))
    })
    .await;
    assert!(bitrix_lead(&system, &lead_id).is_none());
    // A person takes over the lead the CRM did not take (the seller puts
    // it in Bitrix24 by hand) and marks it handled. The call-back went on
    // meanwhile: if the client confirmed before the CRM gave up (the usual
    // order: the call is placed at once, the CRM is tried for seconds), the
    // lead waits for a person since the failure; if they confirmed after
    // it, the confirmation took it out of the queue.
    let events = system.stream(&format!("lead-{lead_id}")).await;
    let last = |event_type: &str| events.iter().rposition(|e| e.r#type == event_type);
    let waits = last("LeadNeedsManualProcessing") > last("LeadConfirmed");
    let body = json!({"handled_by": "anna", "note": "created in Bitrix24 by hand"});
    let (status, answer) = mark_handled(&system, &lead_id, body).await;
    if waits {
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["reason"], "crm_failed");
        let queue = dashboard(&system, "/dashboard/manual-queue").await;
        assert!(
            !queue["leads"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l["lead_id"] == lead_id.as_str()),
            "{queue}"
        );
    } else {
        assert_eq!(status, 409, "{answer}");
        assert_eq!(answer["error"]["code"], "not_in_manual_queue");
    }
    // Nothing more happens to the lead: one call, no second CRM try.
    assert_eq!(calls_to(&system, phone), 1);
    assert!(bitrix_lead(&system, &lead_id).is_none());

    // The CRM takes a lead but its answer is lost: found by its origin,
    // not added twice.
    system.sim.clear_faults();
    system
        .sim
        .inject(Target::BitrixLeadAdd, Fault::timeout_after_accepting(), 1);
    let lead_id = lead(&system, "c-2", "+79161000012", "Europe/Moscow").await;
    let events = wait_lead(&system, &lead_id, "LeadCreatedInCrm", 1).await;
    let created: LeadCreatedInCrm = decode(of_type(&events, "LeadCreatedInCrm")[0]).unwrap();
    assert!(created.reconciled);
    let copies = system
        .sim
        .bitrix_leads()
        .into_iter()
        .filter(|l| l.fields.get("ORIGIN_ID") == Some(&json!(lead_id)))
        .count();
    assert_eq!(copies, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exolve_places_the_call_and_its_event_names_only_the_call() {
    let system = Running::start_with("2026-11-24T09:00:00Z", |config| {
        config.lead_dialer.dialer = lead_dialer::DialerKind::Exolve;
        config.lead_dialer.webhook_token = "e2e-call-results".into();
    })
    .await;
    let (human, machine) = ("+79161000021", "+79161000022");
    system
        .sim
        .script_calls(machine, &[Sim::Machine], Duration::ZERO);
    let l_human = lead(&system, "x-1", human, "Europe/Moscow").await;
    let l_machine = lead(&system, "x-2", machine, "Europe/Moscow").await;
    wait_lead(&system, &l_human, "LeadConfirmed", 1).await;
    // Answering-machine detection is on for the calling number, so Exolve
    // tells a machine from a person.
    let events = wait_lead(&system, &l_machine, "LeadClosed", 1).await;
    let closed: LeadClosed = decode(of_type(&events, "LeadClosed")[0]).unwrap();
    assert_eq!(closed.reason, "answering_machine");
    assert_eq!(system.sim.voice_messages().len(), 2);

    // Reports without the token, or malformed, change nothing.
    let url = format!(
        "http://{}/webhooks/calls/exolve",
        system.addresses.lead_http
    );
    let body = json!({"call_id": "1", "event": "call_finished", "status": "answered"});
    let response = system.http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let response = system
        .http
        .post(&url)
        .bearer_auth("e2e-call-results")
        .json(&json!({"event": "call_finished"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let response = system
        .http
        .post(&url)
        .bearer_auth("e2e-call-results")
        .json(&json!({"call_id": "no-such-call", "event": "call_finished", "status": "busy"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}
