//! Durable timers (`callflow.timers.v1.TimerService`) against a real event
//! store and Postgres: set idempotently, fired exactly once with the owner's
//! data (also by racing replicas, also late after downtime), cancelled, and
//! rebuilt from the log.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use jiff::SignedDuration;
use uuid::Uuid;

use event_store::testing::TestStore;
use kit::clock::TestClock;
use kit::events::{decode, from_proto_time, to_proto_time};
use kit::proto::events::v1::{TimerCancelled, TimerFired, TimerSet};
use kit::proto::eventstore::v1::Filter;
use kit::proto::reminders::v1::{ScheduleRequest, schedule_request::When};
use kit::proto::timers::v1::{
    CancelTimerRequest, GetTimerRequest, SetTimerRequest, Timer, TimerState,
};
use kit::testing::eventually;
use reminder_scheduler::timer_api::timer_id;

mod common;
use common::{PATIENCE, all_matching, all_of, at, read, start, start_with};

const OWNER: &str = "lead-dialer";
/// When every test starts.
const START: &str = "2026-11-24T09:00:00Z";

/// A request to wake the lead dialer at `due` for `key`.
fn request(key: &str, due: &str, data: &str) -> SetTimerRequest {
    SetTimerRequest {
        owner: OWNER.into(),
        key: key.into(),
        purpose: "dial".into(),
        subject: "lead-0001".into(),
        due_at: Some(to_proto_time(at(due))),
        data: data.into(),
        correlation_id: String::new(),
        requested_by: String::new(),
    }
}

fn stream(timer: &Timer) -> String {
    format!("timer-{}", timer.timer_id)
}

fn state(timer: &Timer) -> TimerState {
    TimerState::try_from(timer.state).unwrap()
}

/// Lets the timers loop run a few rounds (it polls every 50 ms).
async fn a_few_rounds() {
    tokio::time::sleep(Duration::from_millis(500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_fires_once_at_its_time_with_the_owners_data() {
    let store = TestStore::start(true).await;
    let clock = TestClock::new(at(START));
    let scheduler = start(&store, clock.clone()).await;
    let mut timers = scheduler.timers.clone();
    let correlation = Uuid::new_v4();
    let timer = timers
        .set(SetTimerRequest {
            correlation_id: correlation.to_string(),
            requested_by: "lead-dialer/worker-1".into(),
            ..request(
                "lead/0001/dial/1",
                "2026-11-24T10:00:00Z",
                r#"{"attempt":1}"#,
            )
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        timer.timer_id,
        timer_id(OWNER, "lead/0001/dial/1").to_string()
    );
    assert_eq!(state(&timer), TimerState::Pending);
    assert_eq!(timer.version, 1);
    let set = read(&store, &stream(&timer)).await;
    assert_eq!(set.len(), 1);
    assert_eq!(set[0].correlation_id, correlation.to_string());
    let set: TimerSet = decode(&set[0]).unwrap();
    assert_eq!(set.requested_by, "lead-dialer/worker-1");
    assert_eq!(set.key, "lead/0001/dial/1");

    // Not a second early; then exactly once.
    clock.set(at("2026-11-24T09:59:59Z"));
    a_few_rounds().await;
    assert!(all_of(&store, "TimerFired").await.is_empty());
    clock.set(at("2026-11-24T10:00:00Z"));
    let event = eventually("the timer to fire", PATIENCE, || async {
        all_of(&store, "TimerFired").await.into_iter().next()
    })
    .await;
    assert_eq!(event.stream, stream(&timer));
    assert_eq!(event.version, 2);
    assert_eq!(
        event.correlation_id,
        correlation.to_string(),
        "what the owner does next belongs to its flow"
    );
    let fired: TimerFired = decode(&event).unwrap();
    assert_eq!(
        fired,
        TimerFired {
            timer_id: timer.timer_id.clone(),
            owner: OWNER.into(),
            purpose: "dial".into(),
            subject: "lead-0001".into(),
            due_at: Some(to_proto_time(at("2026-11-24T10:00:00Z"))),
            data: r#"{"attempt":1}"#.into(),
        }
    );
    a_few_rounds().await;
    assert_eq!(all_of(&store, "TimerFired").await.len(), 1);
    let got = eventually("the view to show it fired", PATIENCE, || {
        let mut timers = timers.clone();
        let id = timer.timer_id.clone();
        async move {
            let got = timers
                .get(GetTimerRequest { timer_id: id })
                .await
                .unwrap()
                .into_inner();
            (state(&got) == TimerState::Fired).then_some(got)
        }
    })
    .await;
    assert_eq!(got.version, 2);
    assert_eq!(got.data, r#"{"attempt":1}"#);
    scheduler.stop.cancel();
}

#[tokio::test]
async fn setting_the_same_key_again_returns_the_timer_unmoved() {
    let store = TestStore::start(true).await;
    let clock = TestClock::new(at(START));
    let scheduler = start(&store, clock.clone()).await;
    let mut timers = scheduler.timers.clone();
    let first = timers
        .set(request("lead/0001/deadline", "2026-11-24T10:00:00Z", "a"))
        .await
        .unwrap()
        .into_inner();
    let again = timers
        .set(request("lead/0001/deadline", "2026-11-24T10:00:00Z", "a"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, first);
    // Another time and data under the same key: still the first timer.
    let moved = timers
        .set(request("lead/0001/deadline", "2026-11-25T12:00:00Z", "b"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved, first);
    assert_eq!(
        moved.due_at,
        Some(to_proto_time(at("2026-11-24T10:00:00Z")))
    );
    assert_eq!(read(&store, &stream(&first)).await.len(), 1, "one TimerSet");
    // The key is the owner's own: another owner's same key is another timer.
    let other = timers
        .set(SetTimerRequest {
            owner: "inbound-router".into(),
            ..request("lead/0001/deadline", "2026-11-24T10:00:00Z", "a")
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(other.timer_id, first.timer_id);
    assert_eq!(all_of(&store, "TimerSet").await.len(), 2);
    scheduler.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_cancelled_before_its_time_never_fires() {
    let store = TestStore::start(true).await;
    let clock = TestClock::new(at(START));
    let scheduler = start(&store, clock.clone()).await;
    let mut timers = scheduler.timers.clone();
    let timer = timers
        .set(request("lead/0001/dial/1", "2026-11-24T10:00:00Z", ""))
        .await
        .unwrap()
        .into_inner();
    let cancel = CancelTimerRequest {
        timer_id: timer.timer_id.clone(),
        requested_by: String::new(),
    };
    let cancelled = timers.cancel(cancel.clone()).await.unwrap().into_inner();
    assert_eq!(state(&cancelled), TimerState::Cancelled);
    assert_eq!(cancelled.version, 2);
    let events = read(&store, &stream(&timer)).await;
    assert_eq!(events.len(), 2);
    let event: TimerCancelled = decode(&events[1]).unwrap();
    assert_eq!(event.cancelled_by, OWNER, "the owner, when nobody is named");
    assert_eq!(events[1].correlation_id, events[0].correlation_id);
    // Cancelling again is harmless and appends nothing.
    let again = timers.cancel(cancel).await.unwrap().into_inner();
    assert_eq!(again, cancelled);
    assert_eq!(read(&store, &stream(&timer)).await.len(), 2);

    clock.advance(SignedDuration::from_hours(2));
    a_few_rounds().await;
    assert!(all_of(&store, "TimerFired").await.is_empty());
    let got = timers
        .get(GetTimerRequest {
            timer_id: timer.timer_id,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state(&got), TimerState::Cancelled);
    scheduler.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fired_timer_cannot_be_cancelled_and_unknown_ones_are_not_found() {
    let store = TestStore::start(true).await;
    let clock = TestClock::new(at(START));
    let scheduler = start(&store, clock.clone()).await;
    let mut timers = scheduler.timers.clone();
    // Due a minute ago: fires at once, without the clock moving.
    let timer = timers
        .set(request("lead/0001/dial/1", "2026-11-24T08:59:00Z", ""))
        .await
        .unwrap()
        .into_inner();
    eventually("the timer to fire", PATIENCE, || {
        let mut timers = timers.clone();
        let id = timer.timer_id.clone();
        async move {
            let got = timers
                .get(GetTimerRequest { timer_id: id })
                .await
                .unwrap()
                .into_inner();
            (state(&got) == TimerState::Fired).then_some(())
        }
    })
    .await;
    let status = timers
        .cancel(CancelTimerRequest {
            timer_id: timer.timer_id.clone(),
            requested_by: "operator:anna".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert!(all_of(&store, "TimerCancelled").await.is_empty());

    let unknown = Uuid::new_v4().to_string();
    let status = timers
        .cancel(CancelTimerRequest {
            timer_id: unknown.clone(),
            requested_by: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    let status = timers
        .get(GetTimerRequest { timer_id: unknown })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    let status = timers
        .get(GetTimerRequest {
            timer_id: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().starts_with("timer_id:"), "{status:?}");
    scheduler.stop.cancel();
}

#[tokio::test]
async fn invalid_requests_are_refused_naming_the_field_and_append_nothing() {
    let store = TestStore::start(true).await;
    let clock = TestClock::new(at(START));
    let scheduler = start(&store, clock.clone()).await;
    let mut timers = scheduler.timers.clone();
    let valid = request("lead/0001/dial/1", "2026-11-24T10:00:00Z", "{}");
    let bad = [
        (
            "owner",
            SetTimerRequest {
                owner: String::new(),
                ..valid.clone()
            },
        ),
        (
            "owner",
            SetTimerRequest {
                owner: "Lead_Dialer".into(),
                ..valid.clone()
            },
        ),
        (
            "owner",
            SetTimerRequest {
                owner: "a".repeat(51),
                ..valid.clone()
            },
        ),
        (
            "key",
            SetTimerRequest {
                key: String::new(),
                ..valid.clone()
            },
        ),
        (
            "key",
            SetTimerRequest {
                key: "k".repeat(201),
                ..valid.clone()
            },
        ),
        (
            "purpose",
            SetTimerRequest {
                purpose: " ".into(),
                ..valid.clone()
            },
        ),
        (
            "subject",
            SetTimerRequest {
                subject: "s".repeat(201),
                ..valid.clone()
            },
        ),
        (
            "due_at",
            SetTimerRequest {
                due_at: None,
                ..valid.clone()
            },
        ),
        // 1001 bytes; and 501 characters of two bytes each, which are 1002
        // bytes: the limit is in bytes.
        (
            "data",
            SetTimerRequest {
                data: "x".repeat(1001),
                ..valid.clone()
            },
        ),
        (
            "data",
            SetTimerRequest {
                data: "я".repeat(501),
                ..valid.clone()
            },
        ),
        (
            "correlation_id",
            SetTimerRequest {
                correlation_id: "flow-1".into(),
                ..valid.clone()
            },
        ),
        (
            "requested_by",
            SetTimerRequest {
                requested_by: "r".repeat(101),
                ..valid.clone()
            },
        ),
    ];
    for (field, request) in bad {
        let status = timers.set(request.clone()).await.unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{request:?}: {status:?}"
        );
        assert!(
            status.message().starts_with(&format!("{field}:")),
            "{field}: {status:?}"
        );
    }
    let timer_streams = Filter {
        categories: vec!["timer".into()],
        ..Default::default()
    };
    assert!(all_matching(&store, timer_streams.clone()).await.is_empty());
    // At the limits, accepted.
    timers
        .set(SetTimerRequest {
            data: "x".repeat(1000),
            subject: "s".repeat(200),
            ..valid
        })
        .await
        .unwrap();
    assert_eq!(all_matching(&store, timer_streams).await.len(), 1);
    scheduler.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_racing_on_200_due_timers_fire_each_exactly_once() {
    const TIMERS: usize = 200;
    let store = TestStore::start(true).await;
    let clock = TestClock::new(at(START));
    let first = start(&store, clock.clone()).await;
    let second = start(&store, clock.clone()).await;
    // Set through both replicas; all due at the same instant.
    let clients = [first.timers.clone(), second.timers.clone()];
    let ids: Vec<String> = futures::stream::iter(0..TIMERS)
        .map(|n| {
            let mut timers = clients[n % 2].clone();
            async move {
                timers
                    .set(request(
                        &format!("lead/{n:04}/dial/1"),
                        "2026-11-24T10:00:00Z",
                        &format!("{n}"),
                    ))
                    .await
                    .unwrap()
                    .into_inner()
                    .timer_id
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(all_of(&store, "TimerFired").await.is_empty());

    clock.set(at("2026-11-24T10:00:01Z"));
    eventually("every timer fired", PATIENCE, || async {
        (all_of(&store, "TimerFired").await.len() >= TIMERS).then_some(())
    })
    .await;
    a_few_rounds().await;
    let mut per_timer: HashMap<String, Vec<TimerFired>> = HashMap::new();
    for event in all_of(&store, "TimerFired").await {
        let fired: TimerFired = decode(&event).unwrap();
        per_timer
            .entry(fired.timer_id.clone())
            .or_default()
            .push(fired);
    }
    assert_eq!(per_timer.len(), TIMERS, "every timer fired");
    assert!(per_timer.values().all(|f| f.len() == 1), "none fired twice");
    for id in &ids {
        let fired = &per_timer[id][0];
        assert_eq!(
            timer_id(
                OWNER,
                &format!("lead/{:04}/dial/1", fired.data.parse::<usize>().unwrap())
            )
            .to_string(),
            *id,
            "each with its own data"
        );
    }
    let db = store.db.connect().await;
    let fired_rows: i64 = eventually("the view to show them fired", PATIENCE, || async {
        let n: i64 = db
            .query_one(
                "SELECT count(*) FROM scheduler.timers WHERE state = 'fired'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        (n == TIMERS as i64).then_some(n)
    })
    .await;
    assert_eq!(fired_rows, TIMERS as i64);
    first.stop.cancel();
    second.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_due_before_start_up_fires_late_where_a_reminder_expires() {
    let store = TestStore::start(true).await;
    let clock = TestClock::new(at(START));
    // Reminders an hour late expire here; timers never do.
    let config = reminder_scheduler::Config {
        max_lateness: Duration::from_secs(30 * 60),
        ..common::config()
    };
    let scheduler = start_with(&store, clock.clone(), config.clone()).await;
    let mut timers = scheduler.timers.clone();
    let timer = timers
        .set(request(
            "lead/0001/deadline",
            "2026-11-24T10:00:00Z",
            "late",
        ))
        .await
        .unwrap()
        .into_inner();
    // 10:00 UTC is 13:00 in Moscow, inside the send window: due as asked.
    let reminder = scheduler
        .api
        .clone()
        .schedule(ScheduleRequest {
            request_id: "late".into(),
            phone: "+79161234567".into(),
            when: Some(When::DueAt(to_proto_time(at("2026-11-24T10:00:00Z")))),
            requested_by: "crm".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    scheduler.stop.cancel();
    let _ = scheduler.task.await;

    // The scheduler was down while they came due, and starts an hour later.
    clock.set(at("2026-11-24T11:00:00Z"));
    let restarted = start_with(&store, clock.clone(), config).await;
    let fired = eventually("the late timer to fire", PATIENCE, || async {
        read(&store, &stream(&timer))
            .await
            .into_iter()
            .find(|e| e.r#type == "TimerFired")
    })
    .await;
    let fired: TimerFired = decode(&fired).unwrap();
    assert_eq!(fired.data, "late");
    assert_eq!(
        fired.due_at.as_ref().and_then(from_proto_time),
        Some(at("2026-11-24T10:00:00Z")),
        "the owner can tell how late it is"
    );
    eventually("the reminder to expire", PATIENCE, || async {
        read(&store, &format!("reminder-{}", reminder.reminder_id))
            .await
            .into_iter()
            .find(|e| e.r#type == "ReminderExpired")
    })
    .await;
    restarted.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_gives_the_timers_the_live_service_had() {
    let store = TestStore::start(true).await;
    let clock = TestClock::new(at(START));
    let scheduler = start(&store, clock.clone()).await;
    let mut timers = scheduler.timers.clone();
    // Fired, cancelled and pending.
    let fires = timers
        .set(SetTimerRequest {
            correlation_id: Uuid::new_v4().to_string(),
            ..request("lead/0001/dial/1", "2026-11-24T10:00:00Z", "1")
        })
        .await
        .unwrap()
        .into_inner();
    let cancelled = timers
        .set(request("lead/0002/dial/1", "2026-11-24T10:30:00Z", "2"))
        .await
        .unwrap()
        .into_inner();
    timers
        .set(request("lead/0003/dial/1", "2026-11-25T10:00:00Z", "3"))
        .await
        .unwrap();
    timers
        .cancel(CancelTimerRequest {
            timer_id: cancelled.timer_id,
            requested_by: "operator:anna".into(),
        })
        .await
        .unwrap();
    clock.set(at("2026-11-24T12:00:00Z"));
    eventually("the first timer fired", PATIENCE, || async {
        read(&store, &stream(&fires))
            .await
            .iter()
            .any(|e| e.r#type == "TimerFired")
            .then_some(())
    })
    .await;
    let head = common::head(&store).await;
    let live = eventually("the live projection caught up", PATIENCE, || async {
        let rows = common::rows(&store, "timers", "timer_id").await;
        (common::checkpoint(&store).await >= head).then_some(rows)
    })
    .await;
    assert_eq!(live.len(), 3);
    for state in ["pending", "fired", "cancelled"] {
        assert!(
            live.iter()
                .any(|row| row.contains(&format!(r#""state": "{state}""#))),
            "{state}: {live:#?}"
        );
    }

    // State that the log does not hold must not survive a rebuild.
    let db = store.db.connect().await;
    db.execute(
        "INSERT INTO scheduler.timers (timer_id, owner, key, purpose, due_at, state, correlation_id, version)
         VALUES (gen_random_uuid(), 'stray', 'stray', 'stray', now(), 'pending', gen_random_uuid(), 1)",
        &[],
    )
    .await
    .unwrap();

    let mut settings = store.common.clone();
    settings.event_store_url = store.url();
    let rebuilt = reminder_scheduler::rebuild(&settings).await.unwrap();
    assert_eq!(rebuilt.position as i64, head);
    assert_eq!(common::rows(&store, "timers", "timer_id").await, live);
    // And the live service goes on from the rebuilt state.
    let got = timers
        .get(GetTimerRequest {
            timer_id: fires.timer_id,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state(&got), TimerState::Fired);
    scheduler.stop.cancel();
    scheduler.task.await.unwrap().unwrap();
}
