//! The scheduler against a real event store, JetStream and Postgres: from a
//! consent to a reminder at a decent hour, fired exactly once, cancelled by
//! an opt-out, and its API.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use event_store::testing::TestStore;
use kit::clock::TestClock;
use kit::events::{decode, from_proto_time, new_event, to_proto_time};
use kit::proto::events::v1::{
    ConsentAnalyzed, ConsentDecision, ContactOptedOut, ContactProfileUpdated, ReminderDue,
    ReminderScheduled,
};
use kit::proto::reminders::v1::{
    CancelRequest, GetRequest, ListRequest, ReminderState, RescheduleRequest, ScheduleRequest,
    schedule_request::When,
};
use kit::store_client::Expected;
use kit::testing::eventually;

mod common;
use common::{PATIENCE, all_of, at, read, start};

/// The stream of a contact, as the services name it.
fn contact(store: &TestStore, phone: &str) -> String {
    kit::contacts::contact_stream(
        &store.common.contact_salt,
        &kit::phone::PhoneNumber::parse(phone, Default::default()).unwrap(),
    )
}

async fn consent(
    store: &TestStore,
    call: &str,
    phone: &str,
    decision: ConsentDecision,
    remind_after: &str,
    called_at: Timestamp,
) {
    let payload = ConsentAnalyzed {
        provider: "exolve".into(),
        call_id: call.into(),
        decision: decision as i32,
        remind_after: remind_after.into(),
        client_phone: phone.into(),
        call_started_at: Some(to_proto_time(called_at)),
        ..Default::default()
    };
    store
        .client
        .append(
            &format!("call-exolve-{call}"),
            Expected::Any,
            vec![new_event(uuid::Uuid::new_v4(), None, &payload)],
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agreed_consent_becomes_a_reminder_in_the_clients_morning_and_fires_once() {
    let store = TestStore::start(true).await;
    let clock = TestClock::new(at("2026-11-24T19:30:00Z"));
    let scheduler = start(&store, clock.clone()).await;

    // 22:00 in Moscow, "in two weeks": the due time is quiet, so it moves to
    // the next morning, spread over its first half hour.
    consent(
        &store,
        "c1",
        "+79161234567",
        ConsentDecision::Agreed,
        "P14D",
        at("2026-11-24T19:00:00Z"),
    )
    .await;
    consent(
        &store,
        "c2",
        "+79161234568",
        ConsentDecision::Declined,
        "",
        at("2026-11-24T19:00:00Z"),
    )
    .await;
    let scheduled = eventually("a reminder", PATIENCE, || async {
        all_of(&store, "ReminderScheduled").await.into_iter().next()
    })
    .await;
    let reminder: ReminderScheduled = decode(&scheduled).unwrap();
    let due = from_proto_time(reminder.due_at.as_ref().unwrap()).unwrap();
    assert!(
        due >= at("2026-12-09T06:00:00Z") && due < at("2026-12-09T06:30:00Z"),
        "due {due}"
    );
    assert_eq!(reminder.time_zone, "Europe/Moscow");
    assert_eq!(reminder.phone, "+79161234567");
    assert_eq!(reminder.call_id, "c1");

    // The projection serves it through the API.
    let mut api = scheduler.api.clone();
    let listed = eventually("the projection", PATIENCE, || {
        let mut api = api.clone();
        async move {
            let page = api
                .list(ListRequest {
                    phone: "89161234567".into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            (!page.reminders.is_empty()).then_some(page)
        }
    })
    .await;
    assert_eq!(listed.reminders[0].state, ReminderState::Pending as i32);

    // Nothing fires before its time; at its time, exactly once.
    clock.set(at("2026-12-09T05:59:00Z"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(all_of(&store, "ReminderDue").await.is_empty());
    clock.set(at("2026-12-09T06:31:00Z"));
    let due_event = eventually("the reminder to fire", PATIENCE, || async {
        all_of(&store, "ReminderDue").await.into_iter().next()
    })
    .await;
    let fired: ReminderDue = decode(&due_event).unwrap();
    assert_eq!(fired.attempt, 1);
    assert_eq!(fired.reminder_id, reminder.reminder_id);
    assert_eq!(
        due_event.correlation_id, scheduled.correlation_id,
        "the SMS will belong to the call's flow"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(all_of(&store, "ReminderDue").await.len(), 1);
    assert_eq!(
        all_of(&store, "ReminderScheduled").await.len(),
        1,
        "a declined consent schedules nothing"
    );
    let got = api
        .get(GetRequest {
            reminder_id: reminder.reminder_id,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.state, ReminderState::Due as i32);
    scheduler.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_and_a_crash_fire_every_reminder_exactly_once() {
    let store = TestStore::start(true).await;
    let clock = TestClock::new(at("2026-11-24T09:00:00Z"));
    let first = start(&store, clock.clone()).await;
    let second = start(&store, clock.clone()).await;
    let mut api = first.api.clone();
    let mut ids = Vec::new();
    for n in 0..120 {
        let reminder = api
            .schedule(ScheduleRequest {
                request_id: format!("crm-{n}"),
                phone: format!("+7916{:07}", 1_000_000 + n),
                when: Some(When::RemindAfter("PT1H".into())),
                requested_by: "crm".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        ids.push(reminder.reminder_id);
    }
    // Everything comes due at once; one replica is killed while firing.
    clock.advance(SignedDuration::from_hours(2));
    eventually("some reminders fired", PATIENCE, || async {
        (!all_of(&store, "ReminderDue").await.is_empty()).then_some(())
    })
    .await;
    first.stop.cancel();
    first.task.abort();
    let fired = eventually("every reminder fired", PATIENCE, || async {
        let fired = all_of(&store, "ReminderDue").await;
        (fired.len() >= ids.len()).then_some(fired)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fired_again = all_of(&store, "ReminderDue").await;
    assert_eq!(fired_again.len(), fired.len());
    let mut per_reminder: std::collections::HashMap<String, usize> = Default::default();
    for event in &fired_again {
        *per_reminder
            .entry(decode::<ReminderDue>(event).unwrap().reminder_id)
            .or_default() += 1;
    }
    assert_eq!(per_reminder.len(), ids.len(), "every reminder fired");
    assert!(per_reminder.values().all(|n| *n == 1), "none fired twice");
    second.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opt_out_cancels_every_pending_reminder_of_the_contact() {
    let store = TestStore::start(true).await;
    let clock = TestClock::new(at("2026-11-24T09:00:00Z"));
    let scheduler = start(&store, clock.clone()).await;
    let mut api = scheduler.api.clone();
    for n in 0..2 {
        api.schedule(ScheduleRequest {
            request_id: format!("opt-{n}"),
            phone: "+79161112233".into(),
            when: Some(When::RemindAfter(format!("P{}D", n + 1))),
            requested_by: "crm".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let other = api
        .schedule(ScheduleRequest {
            request_id: "other".into(),
            phone: "+79169998877".into(),
            when: Some(When::RemindAfter("P1D".into())),
            requested_by: "crm".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let opt_out = ContactOptedOut {
        phone: "+79161112233".into(),
        channel: "call".into(),
        ..Default::default()
    };
    store
        .client
        .append(
            &contact(&store, "+79161112233"),
            Expected::Any,
            vec![new_event(uuid::Uuid::new_v4(), None, &opt_out)],
        )
        .await
        .unwrap();
    eventually("both cancelled", PATIENCE, || {
        let mut api = api.clone();
        async move {
            let page = api
                .list(ListRequest {
                    phone: "+79161112233".into(),
                    states: vec![ReminderState::Cancelled as i32],
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            (page.reminders.len() == 2).then_some(())
        }
    })
    .await;
    clock.advance(SignedDuration::from_hours(24 * 3));
    let fired = eventually("the other contact's reminder", PATIENCE, || async {
        let fired = all_of(&store, "ReminderDue").await;
        (!fired.is_empty()).then_some(fired)
    })
    .await;
    assert_eq!(fired.len(), 1);
    assert_eq!(
        decode::<ReminderDue>(&fired[0]).unwrap().reminder_id,
        other.reminder_id
    );
    scheduler.stop.cancel();
}

#[tokio::test]
async fn the_contacts_own_time_zone_wins_and_old_reminders_expire_at_start_up() {
    let store = TestStore::start(true).await;
    let profile = ContactProfileUpdated {
        phone: "+79161234567".into(),
        time_zone: "Asia/Yekaterinburg".into(),
        name: String::new(),
    };
    store
        .client
        .append(
            &contact(&store, "+79161234567"),
            Expected::Any,
            vec![new_event(uuid::Uuid::new_v4(), None, &profile)],
        )
        .await
        .unwrap();
    let clock = TestClock::new(at("2026-11-24T10:00:00Z"));
    let scheduler = start(&store, clock.clone()).await;
    let mut api = scheduler.api.clone();
    // 07:00 UTC is 12:00 in Yekaterinburg (open) but 10:00 in Moscow: either
    // way open; 03:00 UTC is 08:00 in Yekaterinburg (quiet) → 09:00 there.
    let reminder = api
        .schedule(ScheduleRequest {
            request_id: "tz".into(),
            phone: "+79161234567".into(),
            when: Some(When::DueAt(to_proto_time(at("2026-11-26T03:00:00Z")))),
            requested_by: "crm".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reminder.time_zone, "Asia/Yekaterinburg");
    let due = from_proto_time(reminder.due_at.as_ref().unwrap()).unwrap();
    assert!(
        due >= at("2026-11-26T04:00:00Z") && due < at("2026-11-26T04:30:00Z"),
        "due {due}"
    );
    scheduler.stop.cancel();
    let _ = scheduler.task.await;

    // The service was down for a week: the reminder is too old to send.
    clock.set(at("2026-12-03T10:00:00Z"));
    let restarted = start(&store, clock.clone()).await;
    let expired = eventually("expiry", PATIENCE, || async {
        read(&store, &format!("reminder-{}", reminder.reminder_id))
            .await
            .into_iter()
            .find(|e| e.r#type == "ReminderExpired")
    })
    .await;
    assert_eq!(expired.version, 2);
    assert!(all_of(&store, "ReminderDue").await.is_empty());
    restarted.stop.cancel();
}

#[tokio::test]
async fn the_api_is_idempotent_refuses_bad_input_and_pages() {
    let store = TestStore::start(true).await;
    let clock = TestClock::new(at("2026-11-24T10:00:00Z"));
    let scheduler = start(&store, clock.clone()).await;
    let mut api = scheduler.api.clone();
    let request = ScheduleRequest {
        request_id: "same".into(),
        phone: "+79161234567".into(),
        when: Some(When::RemindAfter("P1D".into())),
        text: "Перезвоните нам".into(),
        requested_by: "operator:anna".into(),
        ..Default::default()
    };
    let first = api.schedule(request.clone()).await.unwrap().into_inner();
    let again = api.schedule(request.clone()).await.unwrap().into_inner();
    assert_eq!(first, again);
    assert_eq!(
        read(&store, &format!("reminder-{}", first.reminder_id))
            .await
            .len(),
        1
    );

    let bad = [
        ScheduleRequest {
            request_id: String::new(),
            ..request.clone()
        },
        ScheduleRequest {
            phone: "nope".into(),
            request_id: "x1".into(),
            ..request.clone()
        },
        ScheduleRequest {
            when: Some(When::RemindAfter("soon".into())),
            request_id: "x2".into(),
            ..request.clone()
        },
        ScheduleRequest {
            when: Some(When::DueAt(to_proto_time(at("2020-01-01T00:00:00Z")))),
            request_id: "x3".into(),
            ..request.clone()
        },
        ScheduleRequest {
            when: None,
            request_id: "x4".into(),
            ..request.clone()
        },
        ScheduleRequest {
            time_zone: "Mars/Olympus".into(),
            request_id: "x5".into(),
            ..request.clone()
        },
        ScheduleRequest {
            requested_by: String::new(),
            request_id: "x6".into(),
            ..request.clone()
        },
    ];
    for request in bad {
        let status = api.schedule(request.clone()).await.unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{request:?}: {status:?}"
        );
    }
    assert_eq!(
        api.get(GetRequest {
            reminder_id: uuid::Uuid::new_v4().to_string()
        })
        .await
        .unwrap_err()
        .code(),
        tonic::Code::NotFound
    );
    assert_eq!(
        api.get(GetRequest {
            reminder_id: "x".into()
        })
        .await
        .unwrap_err()
        .code(),
        tonic::Code::InvalidArgument
    );

    let moved = api
        .reschedule(RescheduleRequest {
            reminder_id: first.reminder_id.clone(),
            due_at: Some(to_proto_time(at("2026-11-30T10:00:00Z"))),
            requested_by: "operator:anna".into(),
            reason: "client asked".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        moved.due_at,
        Some(to_proto_time(at("2026-11-30T10:00:00Z")))
    );
    let cancelled = api
        .cancel(CancelRequest {
            reminder_id: first.reminder_id.clone(),
            requested_by: "operator:anna".into(),
            reason: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.state, ReminderState::Cancelled as i32);
    let again = api
        .cancel(CancelRequest {
            reminder_id: first.reminder_id.clone(),
            requested_by: "operator:anna".into(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);

    for n in 0..7 {
        api.schedule(ScheduleRequest {
            request_id: format!("page-{n}"),
            when: Some(When::RemindAfter(format!("P{}D", n + 1))),
            ..request.clone()
        })
        .await
        .unwrap();
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = api
            .list(ListRequest {
                states: vec![ReminderState::Pending as i32],
                page_size: 3,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.reminders.iter().map(|r| r.due_at.unwrap().seconds));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 7);
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "in due order");
    scheduler.stop.cancel();
}

/// The reminders projection as comparable text, and the checkpoint.
async fn projection_state(store: &TestStore) -> (Vec<String>, i64) {
    (
        common::rows(store, "reminders", "reminder_id").await,
        common::checkpoint(store).await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_gives_exactly_the_state_the_live_service_had() {
    let store = TestStore::start(true).await;
    let clock = TestClock::new(at("2026-11-24T09:00:00Z"));
    let scheduler = start(&store, clock.clone()).await;
    let mut api = scheduler.api.clone();
    // Every kind of history: pending, rescheduled, cancelled, fired and a
    // forgotten contact's.
    let mut ids = Vec::new();
    for (n, phone) in [
        "+79161112233",
        "+79162223344",
        "+79163334455",
        "+79164445566",
    ]
    .into_iter()
    .enumerate()
    {
        let scheduled = api
            .schedule(ScheduleRequest {
                request_id: format!("rebuild-{n}"),
                phone: phone.into(),
                when: Some(When::RemindAfter(format!("P{}D", n + 1))),
                requested_by: "crm".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        ids.push(scheduled.reminder_id);
    }
    api.reschedule(RescheduleRequest {
        reminder_id: ids[3].clone(),
        due_at: Some(to_proto_time(at("2027-01-15T10:00:00Z"))),
        requested_by: "crm".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    api.cancel(CancelRequest {
        reminder_id: ids[2].clone(),
        requested_by: "crm".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    clock.advance(SignedDuration::from_hours(36));
    eventually("the first reminder fired", PATIENCE, || async {
        (!all_of(&store, "ReminderDue").await.is_empty()).then_some(())
    })
    .await;
    store
        .client
        .grpc()
        .forget_contact(kit::proto::eventstore::v1::ForgetContactRequest {
            phone: "+79162223344".into(),
            requested_by: "dpo".into(),
            reason: "request 17".into(),
            contact_stream: contact(&store, "+79162223344"),
        })
        .await
        .unwrap();
    let head = common::head(&store).await;
    let live = eventually("the live projection caught up", PATIENCE, || async {
        let state = projection_state(&store).await;
        (state.1 >= head).then_some(state)
    })
    .await;
    assert_eq!(live.0.len(), 4);
    assert!(live.0.iter().any(|row| row.contains(r#""state": "due""#)));
    assert!(
        live.0
            .iter()
            .any(|row| row.contains(r#""state": "cancelled""#))
    );
    assert!(
        live.0
            .iter()
            .any(|row| row.contains(kit::contacts::FORGOTTEN)),
        "{live:#?}"
    );

    // State that the log does not hold must not survive a rebuild.
    let db = store.db.connect().await;
    db.execute(
        "INSERT INTO scheduler.reminders (reminder_id, phone, due_at, time_zone, text, state, correlation_id, version)
         VALUES (gen_random_uuid(), '+70000000000', now(), 'UTC', 'stray', 'pending', gen_random_uuid(), 1)",
        &[],
    )
    .await
    .unwrap();

    // While the live service keeps running.
    let mut common = store.common.clone();
    common.event_store_url = store.url();
    let rebuilt = reminder_scheduler::rebuild(&common).await.unwrap();
    assert_eq!(rebuilt.position as i64, head);
    assert!(rebuilt.events >= 8, "{rebuilt:?}");
    assert_eq!(projection_state(&store).await, live);

    // And the live service goes on from the rebuilt state.
    let more = api
        .schedule(ScheduleRequest {
            request_id: "after-rebuild".into(),
            phone: "+79165556677".into(),
            when: Some(When::RemindAfter("P5D".into())),
            requested_by: "crm".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let got = api
        .get(GetRequest {
            reminder_id: more.reminder_id,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.state, ReminderState::Pending as i32);
    scheduler.stop.cancel();
    scheduler.task.await.unwrap().unwrap();
}
