//! From call to reminder SMS, end to end: webhook → transcript → consent →
//! reminder → (clock moved) → SMS → delivery report → notification, on real
//! Postgres and NATS with the provider simulator.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::json;

use callflow_e2e::{BUSINESS_NUMBER, Running};
use kit::events::{decode, from_proto_time};
use kit::proto::events::v1::{
    ConsentAnalyzed, ConsentDecision, ReminderScheduled, SmsFailed, SmsSent,
};
use kit::proto::reminders::v1::reminder_service_client::ReminderServiceClient;
use kit::proto::reminders::v1::{
    ListRequest, ReminderState, ScheduleRequest, schedule_request::When,
};
use provider_sim::{Fault, Target};

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// Plays one call: scripts its transcript at the simulator, then posts the
/// Exolve webhooks of a call from `client` to the business number.
async fn call(
    system: &Running,
    call_id: &str,
    client: &str,
    lines: &[(&str, &str)],
    started: &str,
) {
    // Inbound: channel 1 is the caller (the client), 2 the manager.
    let chunks: Vec<(&str, &str)> = lines
        .iter()
        .map(|(who, text)| (if *who == "client" { "1" } else { "2" }, *text))
        .collect();
    system.sim.script_transcript_chunks(call_id, 1, &chunks);
    for (kind, extra) in [
        ("b", json!({})),
        ("d", json!({"duration": 95000, "talk_time": 90000})),
        ("e", json!({})),
    ] {
        let mut body = json!({"type": kind, "call_sid": call_id, "from": client, "to": BUSINESS_NUMBER, "date_time": started});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (status, answer) = system.exolve_webhook(&body).await;
        assert_eq!(status, 200, "{answer}");
    }
}

async fn scheduler(system: &Running) -> ReminderServiceClient<tonic::transport::Channel> {
    ReminderServiceClient::connect(format!("http://{}", system.addresses.reminder_grpc))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promise_made_in_a_call_is_kept_by_one_sms_a_month_later() {
    let mut system = Running::start_at("2026-11-24T08:00:00Z").await;
    system.enable_transcription().await;
    call(
        &system,
        "7001",
        "89161234567",
        &[
            (
                "manager",
                "Добрый день! Это Ольга из «Окна-Сервис». Напомнить вам о замере через месяц?",
            ),
            ("client", "Да, давайте, напомните."),
        ],
        "2026-11-24T11:00:00+03:00",
    )
    .await;
    // Exolve delivers the end of the call twice.
    let (_, again) = system
        .exolve_webhook(
            &json!({"type": "e", "call_sid": "7001", "from": "89161234567", "to": BUSINESS_NUMBER}),
        )
        .await;
    assert_eq!(again["duplicate"], true);

    let consent = &system.wait_for("ConsentAnalyzed", 1).await[0];
    let analyzed: ConsentAnalyzed = decode(consent).unwrap();
    assert_eq!(analyzed.decision, ConsentDecision::Agreed as i32);
    assert_eq!(analyzed.remind_after, "P1M");
    let scheduled = &system.wait_for("ReminderScheduled", 1).await[0];
    let reminder: ReminderScheduled = decode(scheduled).unwrap();
    let due = from_proto_time(reminder.due_at.as_ref().unwrap()).unwrap();
    assert_eq!(
        due,
        at("2026-12-24T08:00:00Z"),
        "11:00 Moscow a month later: inside the window, no jitter"
    );
    assert_eq!(
        scheduled.correlation_id, consent.correlation_id,
        "one flow from webhook to reminder"
    );

    // Nothing is sent before its time.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(system.sim.sms().is_empty());

    // A month later.
    system.clock.set(at("2026-12-24T08:05:00Z"));
    let sent = &system.wait_for("SmsSent", 1).await[0];
    let sms: SmsSent = decode(sent).unwrap();
    assert_eq!(sms.phone, "+79161234567");
    assert_eq!(sms.parts, 2, "Cyrillic: UCS-2, 70 per part");
    system.wait_for("SmsDelivered", 1).await;
    assert_eq!(
        sent.correlation_id, consent.correlation_id,
        "the SMS belongs to the call's flow"
    );
    let at_provider = system.sim.sms();
    assert_eq!(at_provider.len(), 1, "exactly one SMS");
    assert_eq!(at_provider[0].destination, "79161234567");

    // The managers' chat heard about the consent.
    kit::testing::eventually("a Telegram message", Duration::from_secs(60), || async {
        system
            .sim
            .telegram_messages()
            .into_iter()
            .find(|m| m.text.contains("7001") && m.text.contains("agreed"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(system.all_of("SmsSent").await.len(), 1);
    assert_eq!(system.sim.sms().len(), 1);
    system.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_schedules_nothing_and_an_opt_out_cancels_and_silences() {
    let mut system = Running::start_at("2026-11-24T08:00:00Z").await;
    system.enable_transcription().await;
    // A reminder set by hand earlier for the client who will opt out.
    let mut api = scheduler(&system).await;
    api.schedule(ScheduleRequest {
        request_id: "crm-1".into(),
        phone: "+79167654321".into(),
        when: Some(When::RemindAfter("P3D".into())),
        requested_by: "crm".into(),
        ..Default::default()
    })
    .await
    .unwrap();

    call(
        &system,
        "7101",
        "+79161112233",
        &[
            ("manager", "Can I give you a reminder call in two weeks?"),
            ("client", "No, thank you, not interested."),
        ],
        "2026-11-24T11:00:00+03:00",
    )
    .await;
    call(
        &system,
        "7102",
        "+79167654321",
        &[
            ("manager", "Напомнить вам через неделю?"),
            ("client", "Нет. Больше не звоните мне, удалите мой номер."),
        ],
        "2026-11-24T11:05:00+03:00",
    )
    .await;
    let consents = system.wait_for("ConsentAnalyzed", 2).await;
    let decisions: Vec<i32> = consents
        .iter()
        .map(|e| decode::<ConsentAnalyzed>(e).unwrap().decision)
        .collect();
    assert!(
        decisions
            .iter()
            .all(|d| *d == ConsentDecision::Declined as i32),
        "{decisions:?}"
    );
    system.wait_for("ContactOptedOut", 1).await;
    kit::testing::eventually(
        "the manual reminder cancelled",
        Duration::from_secs(60),
        || {
            let mut api = api.clone();
            async move {
                let page = api
                    .list(ListRequest {
                        phone: "+79167654321".into(),
                        states: vec![ReminderState::Cancelled as i32],
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                (page.reminders.len() == 1).then_some(())
            }
        },
    )
    .await;
    system.clock.advance(SignedDuration::from_hours(24 * 40));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(system.all_of("ReminderDue").await.is_empty());
    assert!(system.sim.sms().is_empty(), "no SMS to anyone");
    system.stop().await.unwrap();
}

/// Schedules a manual reminder due in an hour and moves the clock past it.
async fn due_reminder(system: &Running, request_id: &str, phone: &str) {
    let mut api = scheduler(system).await;
    api.schedule(ScheduleRequest {
        request_id: request_id.into(),
        phone: phone.into(),
        when: Some(When::RemindAfter("PT1H".into())),
        text: "Reminder: call us back when it suits you.".into(),
        requested_by: "crm".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    system.clock.advance(SignedDuration::from_hours(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_5xx_then_success_sends_one_sms() {
    let mut system = Running::start_at("2026-11-24T08:00:00Z").await;
    system
        .sim
        .inject(Target::ExolveSendSms, Fault::server_error(503), 2);
    due_reminder(&system, "5xx", "+79161234567").await;
    let sent = &system.wait_for("SmsSent", 1).await[0];
    assert_eq!(decode::<SmsSent>(sent).unwrap().attempt, 3);
    assert_eq!(system.all_of("SmsAttemptFailed").await.len(), 2);
    assert_eq!(system.sim.sms().len(), 1);
    assert_eq!(
        decode::<SmsSent>(sent).unwrap().parts,
        1,
        "Latin text: GSM-7"
    );
    system.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sms_whose_answer_was_lost_is_found_not_sent_again() {
    let mut system = Running::start_at("2026-11-24T08:00:00Z").await;
    // Exolve takes the SMS, then never answers.
    system
        .sim
        .inject(Target::ExolveSendSms, Fault::timeout_after_accepting(), 1);
    due_reminder(&system, "lost", "+79161234567").await;
    let sent = &system.wait_for("SmsSent", 1).await[0];
    let sms: SmsSent = decode(sent).unwrap();
    assert_eq!(sms.attempt, 1, "the first attempt did go through");
    assert_eq!(system.sim.sms().len(), 1, "not sent twice");
    assert_eq!(sms.provider_message_id, system.sim.sms()[0].message_id);
    system.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_destination_fails_once_and_tells_the_managers() {
    let mut system = Running::start_at("2026-11-24T08:00:00Z").await;
    // A valid Danish number that the provider refuses as a destination.
    due_reminder(&system, "refused", "+4520123456").await;
    let failed = &system.wait_for("SmsFailed", 1).await[0];
    assert!(!decode::<SmsFailed>(failed).unwrap().retryable);
    kit::testing::eventually("the managers told", Duration::from_secs(60), || async {
        system
            .sim
            .telegram_messages()
            .into_iter()
            .find(|m| m.text.contains("SMS to +4520123456 failed"))
    })
    .await;
    assert!(system.sim.sms().is_empty());
    system.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_hours_move_the_sms_to_the_next_local_morning_across_a_dst_change() {
    // New York, Saturday 2026-03-07 20:00 EST; clocks go forward on Sunday.
    let mut system = Running::start_at("2026-03-08T01:00:00Z").await;
    let mut api = scheduler(&system).await;
    // "In two hours": 22:00 local, quiet; the next morning is Sunday 09:00
    // EDT (13:00 UTC), spread over half an hour.
    let reminder = api
        .schedule(ScheduleRequest {
            request_id: "ny".into(),
            phone: "+12125550123".into(),
            when: Some(When::RemindAfter("PT2H".into())),
            text: "Hi, a reminder as promised.".into(),
            requested_by: "crm".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reminder.time_zone, "America/New_York");
    let due = from_proto_time(reminder.due_at.as_ref().unwrap()).unwrap();
    assert!(
        due >= at("2026-03-08T13:00:00Z") && due < at("2026-03-08T13:30:00Z"),
        "due {due}"
    );

    // At 08:30 local (EDT) nothing is sent.
    system.clock.set(at("2026-03-08T12:30:00Z"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(system.sim.sms().is_empty());
    system.clock.set(at("2026-03-08T13:31:00Z"));
    let sent = &system.wait_for("SmsSent", 1).await[0];
    let sent_at = from_proto_time(sent.occurred_at.as_ref().unwrap()).unwrap();
    assert!(
        sent_at >= at("2026-03-08T13:00:00Z"),
        "sent at {sent_at}, after 09:00 EDT"
    );
    system.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transcript_that_never_comes_fails_at_the_deadline() {
    let mut system = Running::start_at("2026-11-24T08:00:00Z").await;
    system.enable_transcription().await;
    // Exolve keeps answering "not found" for this call.
    system
        .sim
        .script_transcript_chunks("7301", u32::MAX, &[("1", "never ready")]);
    for kind in ["b", "e"] {
        let body = json!({"type": kind, "call_sid": "7301", "from": "+79161234567", "to": BUSINESS_NUMBER,
                          "date_time": "2026-11-24T11:00:00+03:00"});
        assert_eq!(system.exolve_webhook(&body).await.0, 200);
    }
    kit::testing::eventually("a few polls", Duration::from_secs(60), || async {
        (system.sim.transcript_polls("7301") >= 2).then_some(())
    })
    .await;
    assert!(
        system.all_of("TranscriptionFailed").await.is_empty(),
        "not before the deadline"
    );
    system.clock.advance(SignedDuration::from_mins(31));
    let failed = &system.wait_for("TranscriptionFailed", 1).await[0];
    let failure: kit::proto::events::v1::TranscriptionFailed = decode(failed).unwrap();
    assert_eq!(failure.call_id, "7301");
    assert!(failure.reason.contains("deadline"), "{}", failure.reason);
    assert!(system.all_of("ConsentAnalyzed").await.is_empty());
    system.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opt_out_recorded_after_scheduling_still_stops_the_sms() {
    let mut system = Running::start_at("2026-11-24T08:00:00Z").await;
    // The reminder fires, but the client opted out in the meantime (the
    // sender checks the contact when it sends, not when it was scheduled).
    let due = kit::proto::events::v1::ReminderDue {
        reminder_id: uuid::Uuid::new_v4().to_string(),
        phone: "+79161234567".into(),
        text: "Reminder".into(),
        attempt: 1,
        ..Default::default()
    };
    let opt_out = kit::proto::events::v1::ContactOptedOut {
        phone: "+79161234567".into(),
        channel: "sms".into(),
        ..Default::default()
    };
    system
        .store
        .append(
            &kit::contacts::contact_stream(
                &system.config.common.contact_salt,
                &kit::phone::PhoneNumber::parse("+79161234567", Default::default()).unwrap(),
            ),
            kit::store_client::Expected::Any,
            vec![kit::events::new_event(uuid::Uuid::new_v4(), None, &opt_out)],
        )
        .await
        .unwrap();
    system
        .store
        .append(
            &format!("reminder-{}", due.reminder_id),
            kit::store_client::Expected::Any,
            vec![kit::events::new_event(uuid::Uuid::new_v4(), None, &due)],
        )
        .await
        .unwrap();
    let failed = &system.wait_for("SmsFailed", 1).await[0];
    assert!(
        decode::<SmsFailed>(failed)
            .unwrap()
            .reason
            .contains("opted out")
    );
    assert!(system.sim.sms().is_empty());
    system.stop().await.unwrap();
}
