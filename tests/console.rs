//! The operations console on the demo day: the services run, the day is
//! played through them, then the console is checked over HTTP (sessions,
//! roles, refusals, what each change records) and in a real browser
//! (tests/browser/console.mjs in Debian's Chromium through playwright-core;
//! `make test` installs them with tests/browser/setup.sh). Screenshots of
//! every page land in target/screenshots/.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, ORIGIN, SET_COOKIE};
use serde_json::json;

use callflow::demo::Played;
use callflow_e2e::config;
use kit::events::{decode, new_event};
use kit::proto::events::v1::{ConsentAnalyzed, ConsentDecision, Event, LeadManuallyHandled};
use kit::proto::eventstore::v1::ReadStreamRequest;
use kit::proto::leads::v1::ManualQueueRequest;
use kit::proto::leads::v1::lead_dashboard_client::LeadDashboardClient;
use kit::proto::reminders::v1::reminder_service_client::ReminderServiceClient;
use kit::proto::reminders::v1::{GetRequest, ReminderState, ScheduleRequest, schedule_request};
use kit::proto::routing::v1::DailyRequest;
use kit::proto::routing::v1::routing_stats_client::RoutingStatsClient;
use kit::store_client::{EventStoreClient, Expected};
use kit::testing::{TestBus, TestDb};

/// The demo client whose call the browser looks up (call 1001), in the
/// spelling a manager might type.
const PHONE_TYPED: &str = "8 916 123-45-67";
const PHONE: &str = "+79161234567";
const CONSUMER: &str = "reminder-scheduler-consents";

struct Console {
    url: String,
    http: reqwest::Client,
}

impl Console {
    async fn sign_in(&self, name: &str, password: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/login", self.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("username={name}&password={password}&next=%2F"))
            .send()
            .await
            .unwrap()
    }

    /// The session cookie of `name`.
    async fn session(&self, name: &str, password: &str) -> String {
        let response = self.sign_in(name, password).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{name} signs in");
        let cookie = response.headers()[SET_COOKIE].to_str().unwrap().to_owned();
        assert!(
            cookie.contains("HttpOnly")
                && cookie.contains("SameSite=Strict")
                && cookie.contains("Secure")
        );
        cookie.split(';').next().unwrap().to_owned()
    }

    async fn get(&self, session: &str, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.url))
            .header(COOKIE, session)
            .send()
            .await
            .unwrap()
    }

    async fn page(&self, session: &str, path: &str) -> String {
        let response = self.get(session, path).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.text().await.unwrap()
    }

    async fn post(&self, session: &str, path: &str, body: &str) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.url))
            .header(COOKIE, session)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }
}

async fn stream(store: &EventStoreClient, name: &str) -> Vec<Event> {
    store
        .grpc()
        .read_stream(ReadStreamRequest {
            stream: name.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events
}

/// A consent the reminder scheduler cannot take (the number is not one):
/// it parks it, and a retry fails again, naming why.
async fn poison(store: &EventStoreClient, call: &str) -> String {
    let consent = ConsentAnalyzed {
        provider: "e2e".into(),
        call_id: call.into(),
        decision: ConsentDecision::Agreed as i32,
        remind_after: "P1M".into(),
        client_phone: "not a phone".into(),
        ..Default::default()
    };
    let id = uuid::Uuid::new_v4();
    store
        .append(
            &format!("call-e2e-{call}"),
            Expected::Any,
            vec![new_event(id, None, &consent)],
        )
        .await
        .unwrap();
    id.to_string()
}

async fn pending_reminder(
    reminders: &mut ReminderServiceClient<tonic::transport::Channel>,
    key: &str,
) -> String {
    reminders
        .schedule(ScheduleRequest {
            request_id: key.into(),
            phone: "+79031234589".into(),
            when: Some(schedule_request::When::RemindAfter("P14D".into())),
            requested_by: "e2e".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .reminder_id
}

async fn reminder_state(
    reminders: &mut ReminderServiceClient<tonic::transport::Channel>,
    id: &str,
) -> i32 {
    reminders
        .get(GetRequest {
            reminder_id: id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .state
}

/// Waits for the console's index to list the dead letter.
async fn parked(db: &tokio_postgres::Client, event_id: &str) {
    for _ in 0..600 {
        let n = db
            .query_one(
                "SELECT count(*) FROM console.dead_letters WHERE event_id = $1",
                &[&event_id],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
        if n == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("dead letter {event_id} never listed");
}

async fn checks(played: &Played, token: String) {
    let a = &played.system.addresses;
    let console = Console {
        url: format!("http://{}", a.console_http),
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
    };
    let store =
        EventStoreClient::connect_lazy(&format!("http://{}", a.event_store_grpc), "callflow-demo")
            .unwrap()
            .authenticated(&token);
    let mut reminders = ReminderServiceClient::connect(format!("http://{}", a.reminder_grpc))
        .await
        .unwrap();
    let mut leads = LeadDashboardClient::connect(format!("http://{}", a.lead_grpc))
        .await
        .unwrap();
    let (db, connection) = tokio_postgres::connect(&played.database_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);

    // What the pages must show: the read models' own figures.
    let funnel = db
        .query_one(
            "SELECT day::text, calls, transcribed, agreed, reminded, sms_delivered
               FROM analytics.funnel ORDER BY calls DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    let leads_day: String = db
        .query_one(
            "SELECT min(day)::text FROM lead_dialer.dashboard_leads",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let inbound_day = RoutingStatsClient::connect(format!("http://{}", a.router_grpc))
        .await
        .unwrap()
        .daily(DailyRequest {
            from_day: "2026-01-01".into(),
            to_day: "2027-12-31".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .days
        .into_iter()
        .find(|d| d.calls > 0)
        .expect("the demo's inbound calls are counted")
        .day;
    let browser_reminder = pending_reminder(&mut reminders, "console-browser").await;
    let viewer_reminder = pending_reminder(&mut reminders, "console-viewer").await;
    let http_reminder = pending_reminder(&mut reminders, "console-http").await;
    let browser_dead = poison(&store, "poison-browser").await;
    let http_dead = poison(&store, "poison-http").await;
    parked(&db, &browser_dead).await;
    parked(&db, &http_dead).await;

    // --- over HTTP: sessions and refusals -------------------------------------
    let unsigned = console.get("", "/reminders").await;
    assert_eq!(unsigned.status(), StatusCode::SEE_OTHER);
    assert_eq!(unsigned.headers()[LOCATION], "/login?next=%2Freminders");
    let refused = console.sign_in("operator", "wrong").await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(refused.headers().get(SET_COOKIE).is_none());
    assert_eq!(
        console
            .sign_in("nobody", "operator-dev-password")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let operator = console.session("operator", "operator-dev-password").await;
    let viewer = console.session("viewer", "viewer-dev-password").await;

    // A viewer changes nothing; the reminder stays pending.
    let path = format!("/reminders/{http_reminder}/cancel");
    let response = console.post(&viewer, &path, "reason=viewer").await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("viewers cannot change anything")
    );
    let response = console
        .post(
            &viewer,
            &format!("/dead-letters/{CONSUMER}/{http_dead}/retry"),
            "",
        )
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        reminder_state(&mut reminders, &http_reminder).await,
        ReminderState::Pending as i32
    );
    // A change from another site is refused even with the operator's cookie.
    let response = console
        .http
        .post(format!("{}{path}", console.url))
        .header(COOKIE, &operator)
        .header(ORIGIN, "https://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("reason=csrf")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // Bad input: 4xx with the reason, nothing changed.
    for (path, status) in [
        ("/timeline/not-a-flow", StatusCode::BAD_REQUEST),
        ("/reminders?state=forgotten", StatusCode::BAD_REQUEST),
        ("/?day=yesterday", StatusCode::BAD_REQUEST),
        ("/dead-letters?view=everything", StatusCode::BAD_REQUEST),
        ("/live/events?correlation=nope", StatusCode::BAD_REQUEST),
        (
            "/timeline/00000000-0000-0000-0000-000000000001",
            StatusCode::NOT_FOUND,
        ),
    ] {
        assert_eq!(
            console.get(&operator, path).await.status(),
            status,
            "GET {path}"
        );
    }
    let response = console
        .post(
            &operator,
            &format!("/reminders/{http_reminder}/reschedule"),
            "due_at=next+week",
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        reminder_state(&mut reminders, &http_reminder).await,
        ReminderState::Pending as i32
    );
    let response = console
        .post(
            &operator,
            "/reminders/00000000-0000-0000-0000-000000000002/cancel",
            "",
        )
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    // The operator's changes are events naming them.
    let response = console
        .post(
            &operator,
            &format!("/reminders/{http_reminder}/reschedule"),
            "due_at=2027-02-01T10:00",
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let response = console
        .post(&operator, &path, "reason=asked+by+phone")
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(
        response.headers()[LOCATION]
            .to_str()
            .unwrap()
            .contains("done=")
    );
    assert_eq!(
        reminder_state(&mut reminders, &http_reminder).await,
        ReminderState::Cancelled as i32
    );
    let events = stream(&store, &format!("reminder-{http_reminder}")).await;
    let types: Vec<&str> = events.iter().map(|e| e.r#type.as_str()).collect();
    assert_eq!(
        types,
        [
            "ReminderScheduled",
            "ReminderRescheduled",
            "ReminderCancelled"
        ]
    );
    let cancelled = kit::json::payload(events.last().unwrap()).unwrap();
    assert_eq!(cancelled["cancelled_by"], "operator");
    // Cancelling twice is a conflict, not a second event.
    let response = console.post(&operator, &path, "").await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(
        stream(&store, &format!("reminder-{http_reminder}"))
            .await
            .len(),
        3
    );

    // Discarding a dead letter is recorded with who did it.
    let response = console
        .post(
            &operator,
            &format!("/dead-letters/{CONSUMER}/{http_dead}/discard"),
            "reason=test+data",
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let page = console
        .page(&operator, "/dead-letters?view=discarded")
        .await;
    assert!(page.contains(&format!(
        "data-dead-letter=\"{http_dead}\" data-state=\"discarded\""
    )));
    let record = stream(&store, &format!("deadletter-{CONSUMER}")).await;
    let discarded = record
        .iter()
        .find(|e| e.r#type == "DeadLetterDiscarded")
        .unwrap();
    let discarded = kit::json::payload(discarded).unwrap();
    assert_eq!(discarded["requested_by"], "operator");
    assert_eq!(discarded["reason"], "test data");
    assert_eq!(
        console
            .post(
                &operator,
                &format!("/dead-letters/{CONSUMER}/{http_dead}/retry"),
                ""
            )
            .await
            .status(),
        StatusCode::CONFLICT,
        "a discarded message is not retried"
    );

    // Viewers see numbers masked; operators in full.
    let timeline = console
        .get(&operator, &format!("/search?q={}", "%2B79161234567"))
        .await;
    let location = match timeline.status() {
        StatusCode::SEE_OTHER => timeline.headers()[LOCATION].to_str().unwrap().to_owned(),
        _ => {
            let page = timeline.text().await.unwrap();
            let start = page.find("/timeline/").expect("a flow of the number");
            page[start..start + 46].to_owned()
        }
    };
    assert!(console.page(&operator, &location).await.contains(PHONE));
    let masked = console.page(&viewer, &location).await;
    assert!(
        !masked.contains(PHONE),
        "the viewer's timeline shows the number"
    );
    assert!(masked.contains("+7 916 *** ** 67"));

    // --- in the browser ----------------------------------------------------------
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let expect = json!({
        "day": funnel.get::<_, String>(0),
        "funnel": {
            "calls": funnel.get::<_, i64>(1),
            "transcribed": funnel.get::<_, i64>(2),
            "agreed": funnel.get::<_, i64>(3),
            "reminded": funnel.get::<_, i64>(4),
            "sms_delivered": funnel.get::<_, i64>(5),
        },
        "leads_day": leads_day,
        "inbound_day": inbound_day,
        "phone": PHONE_TYPED,
        "phone_e164": PHONE,
        "reminder": browser_reminder,
        "viewer_reminder": viewer_reminder,
        "dead_letter": {"consumer": CONSUMER, "event_id": browser_dead},
    });
    let queued = leads
        .manual_queue(ManualQueueRequest::default())
        .await
        .unwrap()
        .into_inner()
        .leads;
    let script = format!("{root}/tests/browser/console.mjs");
    let node = tokio::process::Command::new("node")
        .arg(&script)
        .env("CONSOLE_URL", &console.url)
        .env("CONSOLE_EXPECT", expect.to_string())
        .env("SCREENSHOTS", format!("{root}/target/screenshots"))
        .kill_on_drop(true)
        .output()
        .await
        .expect("node runs (make test installs it: tests/browser/setup.sh)");
    let out = String::from_utf8_lossy(&node.stdout);
    let err = String::from_utf8_lossy(&node.stderr);
    assert!(
        node.status.success(),
        "browser checks failed (run tests/browser/setup.sh if playwright-core or chromium is missing):\n{out}\n{err}"
    );
    println!("{out}");

    // What the browser did is in the log, naming the operator.
    let cancelled = stream(&store, &format!("reminder-{browser_reminder}")).await;
    let last = kit::json::payload(cancelled.last().unwrap()).unwrap();
    assert_eq!(cancelled.last().unwrap().r#type, "ReminderCancelled");
    assert_eq!(last["cancelled_by"], "operator");
    assert_eq!(last["reason"], "client asked by phone");
    assert_eq!(
        reminder_state(&mut reminders, &viewer_reminder).await,
        ReminderState::Pending as i32,
        "the viewer's attempt changed nothing"
    );
    let record = stream(&store, &format!("deadletter-{CONSUMER}")).await;
    let asked = record
        .iter()
        .filter(|e| e.r#type == "DeadLetterRetryRequested")
        .map(|e| kit::json::payload(e).unwrap())
        .find(|p| p["event_id"] == browser_dead.as_str())
        .expect("the retry request is recorded");
    assert_eq!(asked["requested_by"], "operator");
    let retried = record
        .iter()
        .filter(|e| e.r#type == "DeadLetterRetried")
        .map(|e| kit::json::payload(e).unwrap())
        .find(|p| p["event_id"] == browser_dead.as_str())
        .expect("the consumer recorded how the retry went");
    assert_eq!(retried["succeeded"], false, "the number is still not one");
    assert!(retried["detail"].as_str().unwrap().contains("not a phone"));
    for lead in queued {
        let handled: Vec<LeadManuallyHandled> = stream(&store, &format!("lead-{}", lead.lead_id))
            .await
            .iter()
            .filter(|e| e.r#type == "LeadManuallyHandled")
            .map(|e| decode(e).unwrap())
            .collect();
        assert_eq!(handled.len(), 1, "lead {} handled once", lead.lead_id);
        assert_eq!(handled[0].handled_by, "operator");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managers_see_and_steer_the_demo_day_in_the_console() {
    kit::telemetry::init_for_tests();
    let db = TestDb::create().await;
    let bus = TestBus::new();
    let name = format!("cf_console_{:08x}", rand::random::<u32>());
    let config = config(&db, &bus);
    let token = config.common.event_store_token_for("callflow-demo");
    let played = callflow::demo::play_named(config, &name)
        .await
        .expect("the demo day plays");
    // Checks run in their own task so a failure still stops the system and
    // drops the database.
    let outcome = {
        let played = &played;
        let checks = checks(played, token);
        futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(checks)).await
    };
    let stopped = played.stop().await;
    let admin = db.connect().await;
    let _ = admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    stopped.expect("every service stopped cleanly");
}
