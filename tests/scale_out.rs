//! Scale-out: two replicas of every service (event store and relay,
//! call-ingest, transcription, consent-analyzer, reminder-scheduler,
//! sms-sender, notifier, lead-dialer, analytics, call-router, console) on the
//! same Postgres, NATS stream and providers, with the work arriving at both.
//! Every effect happens once: one transcript, one consent, one reminder and
//! one SMS per call, one chat message per consent, one call and one CRM
//! lead per web lead. Either console serves a person signed in on the other.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::json;

use callflow_e2e::{BUSINESS_NUMBER, EXOLVE_TOKEN, LEADS_TOKEN, Running};
use provider_sim::CallOutcome;

const CALLS: usize = 6;
const LEADS: usize = 4;

fn count<T: Ord>(items: impl IntoIterator<Item = T>) -> BTreeMap<T, usize> {
    let mut counts = BTreeMap::new();
    for item in items {
        *counts.entry(item).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_of_every_service_do_each_thing_once() {
    let mut first = Running::start_at("2026-11-24T08:00:00Z").await;
    first.enable_transcription().await;
    let (second, stop_second) = first.replica().await;
    let ingest = [
        first.addresses.call_ingest_http,
        second.addresses.call_ingest_http,
    ];
    let http = reqwest::Client::new();

    // Calls arrive at both replicas of call-ingest, alternately.
    for i in 0..CALLS {
        let call_id = format!("81{i:02}");
        let client = format!("+7916555{i:04}");
        first.sim.script_transcript_chunks(
            &call_id,
            1,
            &[
                ("2", "Добрый день! Напомнить вам о замере через месяц?"),
                ("1", "Да, давайте, напомните."),
            ],
        );
        for kind in ["b", "e"] {
            let body = json!({"type": kind, "call_sid": call_id, "from": client,
                "to": BUSINESS_NUMBER, "date_time": "2026-11-24T11:00:00+03:00"});
            let response = http
                .post(format!(
                    "http://{}/webhooks/exolve/call-events",
                    ingest[i % 2]
                ))
                .bearer_auth(EXOLVE_TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        }
    }
    first.wait_for("ReminderScheduled", CALLS).await;
    first
        .clock
        .set("2026-12-24T08:05:00Z".parse::<Timestamp>().unwrap());
    first.wait_for("SmsDelivered", CALLS).await;

    // Web leads arrive at both too; every client answers the robot.
    for i in 0..LEADS {
        let phone = format!("+7916777{i:04}");
        first
            .sim
            .script_calls(&phone, &[CallOutcome::Human], Duration::ZERO);
        let response = http
            .post(format!("http://{}/webhooks/leads", ingest[i % 2]))
            .bearer_auth(LEADS_TOKEN)
            .json(
                &json!({"ref": format!("so-{i}"), "site": "shop.example", "name": "Анна",
                "phone": phone, "city": "Москва", "time_zone": "Europe/Moscow",
                "partner_id": "cpa-net-7", "order_id": format!("o-{i}"), "amount": "100.00"}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    first.wait_for("LeadConfirmed", LEADS).await;
    first.wait_for("LeadUpdatedInCrm", LEADS).await;
    let telegram = kit::testing::eventually(
        "every consent reaches the chat",
        Duration::from_secs(60),
        || async {
            let texts: Vec<String> = first
                .sim
                .telegram_messages()
                .into_iter()
                .map(|m| m.text)
                .collect();
            let consents = texts.iter().filter(|t| t.contains("agreed")).count();
            (consents >= CALLS).then_some(texts)
        },
    )
    .await;

    // Whatever was still in flight has had its chance to be repeated.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for event_type in [
        "CallCompleted",
        "TranscriptReady",
        "ConsentAnalyzed",
        "ReminderScheduled",
        "ReminderDue",
    ] {
        assert_eq!(
            first.all_of(event_type).await.len(),
            CALLS,
            "{event_type}: once per call"
        );
    }
    // One reminder per call, one confirmation per lead.
    assert_eq!(first.all_of("SmsSent").await.len(), CALLS + LEADS);
    let sms = count(first.sim.sms().into_iter().map(|s| s.destination));
    assert_eq!(sms.len(), CALLS + LEADS, "{sms:?}");
    assert!(sms.values().all(|&n| n == 1), "one SMS per client: {sms:?}");
    let consent_messages = count(
        telegram
            .iter()
            .filter(|t| t.contains("agreed"))
            .map(|t| t.split_whitespace().nth(1).unwrap_or("").to_owned()),
    );
    assert!(
        consent_messages.values().all(|&n| n == 1),
        "one chat message per consent: {consent_messages:?}"
    );
    for event_type in [
        "LeadReceived",
        "LeadCreatedInCrm",
        "CallAttemptStarted",
        "LeadConfirmed",
    ] {
        assert_eq!(
            first.all_of(event_type).await.len(),
            LEADS,
            "{event_type}: once per lead"
        );
    }
    let calls = count(first.sim.calls().into_iter().map(|c| c.phone));
    assert!(
        calls.values().all(|&n| n == 1),
        "one call per lead: {calls:?}"
    );
    assert_eq!(
        first.sim.bitrix_leads().len(),
        LEADS,
        "one CRM lead per lead"
    );

    // Both consoles are ready, and a sign-in on one is a session on the
    // other: sessions are in Postgres, so the ingress may send a person to
    // either replica.
    let consoles = [first.addresses.console_http, second.addresses.console_http];
    for console in consoles {
        kit::testing::eventually("the console is ready", Duration::from_secs(30), || async {
            let response = http
                .get(format!("http://{console}/readyz"))
                .send()
                .await
                .ok()?;
            (response.status() == 200).then_some(())
        })
        .await;
    }
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let signed_in = browser
        .post(format!("http://{}/login", consoles[0]))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("username=operator&password=operator-dev-password&next=%2Freminders")
        .send()
        .await
        .unwrap();
    assert_eq!(
        signed_in.status(),
        303,
        "the operator signs in on one console"
    );
    let session = signed_in.headers()[SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let reminders = format!("http://{}/reminders", consoles[1]);
    let anonymous = browser.get(&reminders).send().await.unwrap();
    assert_eq!(
        anonymous.status(),
        303,
        "the other asks strangers to sign in"
    );
    assert!(
        anonymous.headers()[LOCATION]
            .to_str()
            .unwrap()
            .starts_with("/login")
    );
    let page = browser
        .get(&reminders)
        .header(COOKIE, &session)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200, "the other console knows the session");

    stop_second.cancel();
    second.wait().await.unwrap();
    first.stop().await.unwrap();
}
