//! `callflow demo`: a realistic day played through the whole system, with
//! the provider simulator, on a clock the demo moves.
//!
//! Five calls in Russian and English reach call-ingest as Exolve webhooks
//! (agreed, declined, agreed with a counter-period, an opt-out, agreed by a
//! client in New York), one webhook is delivered twice, and Exolve answers
//! the first SMS with a 5xx. Then the clock moves through the next month,
//! stopping at each reminder, so "I'll remind you in a month" happens within
//! a minute, and the demo prints what
//! became of every call. Two days after the last reminder, web leads from
//! the shop's form are called back: one confirmed on the first call, one
//! sent at night (SMS at once, called at 09:00 in Vladivostok), one
//! answered on the third call, a wrong number, and one during a Bitrix24
//! outage; the partner dashboard sums them up. Then inbound calls
//! ([`routing`]): the marketplace's number routes clients to their shop,
//! escalating to the office and the call centre, a closed shop straight to
//! the call centre, partner shops to the chat, a courier to the store; the
//! neutral number bridges courier and client by order code; the support
//! Slack channel follows and the routing statistics sum up. It exits with
//! an error unless every expectation held.
//!
//! It runs on its own database (`callflow_demo`, recreated each run) and
//! JetStream stream (`CALLFLOW_DEMO`, subjects `callflow_demo.evt.>`), so it neither
//! disturbs nor is disturbed by `make run`; the data stays for a look
//! afterwards.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use kit::clock::TestClock;
use kit::events::{decode, from_proto_time};
use kit::proto::events::v1::{
    CallAttemptScheduled, ConsentAnalyzed, ConsentDecision, Event, LeadClosed,
    LeadNeedsManualProcessing, NightSmsSent, ReminderScheduled, SmsAttemptFailed, SmsRequested,
    SmsSent,
};
use kit::proto::eventstore::v1::{Filter, ReadAllRequest, ReadStreamRequest};
use kit::store_client::EventStoreClient;
use provider_sim::{CallOutcome, Fault, Target};

use crate::{System, UpConfig};

mod routing;

const BUSINESS_NUMBER: &str = "+74951234567";
const EXOLVE_TOKEN: &str = "demo-exolve-token";
const LEADS_TOKEN: &str = "demo-leads-token";

/// One call of the day.
struct Call {
    id: &'static str,
    client: &'static str,
    dialog: &'static [(&'static str, &'static str)],
    /// What the analyzer should decide, and when to remind.
    expect: (ConsentDecision, &'static str, bool),
}

const DAY: &[Call] = &[
    Call {
        id: "1001",
        client: "89161234567",
        dialog: &[
            (
                "manager",
                "Добрый день, Анна! Это Ольга из «Окна-Сервис». Замерщик освободится через месяц — напомнить вам?",
            ),
            ("client", "Да, давайте, напомните."),
        ],
        expect: (ConsentDecision::Agreed, "P1M", false),
    },
    Call {
        id: "1002",
        client: "+79162223344",
        dialog: &[
            (
                "manager",
                "Hi, it's Mark from FiberLink. Shall I call you back in a week about the upgrade?",
            ),
            ("client", "No thanks, I'm not interested."),
        ],
        expect: (ConsentDecision::Declined, "", false),
    },
    Call {
        id: "1003",
        client: "+79163334455",
        dialog: &[
            (
                "manager",
                "Здравствуйте! По поводу кухни: напомнить вам через месяц, когда придут образцы?",
            ),
            ("client", "Месяц — это долго. Лучше через две недели."),
        ],
        expect: (ConsentDecision::Agreed, "P14D", false),
    },
    Call {
        id: "1004",
        client: "+79164445566",
        dialog: &[
            ("manager", "Удобно будет, если я напомню вам через неделю?"),
            ("client", "Нет. И больше мне не звоните, удалите мой номер."),
        ],
        expect: (ConsentDecision::Declined, "", true),
    },
    Call {
        id: "1005",
        client: "+12125550123",
        dialog: &[
            (
                "manager",
                "Hi Sam, this is Lisa from Horizon Solar. Can I remind you about the incentive in three weeks?",
            ),
            ("client", "Sure, sounds good."),
        ],
        expect: (ConsentDecision::Agreed, "P21D", false),
    },
];

/// Where the demo's day starts: 10:30 in Moscow.
const START: &str = "2026-11-24T07:30:00Z";

/// When the web leads arrive: a month and two days after [`START`], past
/// the last reminder; 16:30 in Moscow, 23:30 in Vladivostok (UTC+10).
const LEADS_AT: &str = "2026-12-26T13:30:00Z";
/// 09:00 the next morning in Vladivostok.
const VLADIVOSTOK_NINE: &str = "2026-12-26T23:00:00Z";
/// The dashboard's days (Moscow) the leads fall in.
const LEAD_DAYS: (&str, &str) = ("2026-12-26", "2026-12-27");

/// `callflow demo`'s arguments.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    #[command(flatten)]
    pub config: UpConfig,
    /// After the day, keep every service running (the console shows the
    /// day) until Ctrl-C.
    #[arg(long)]
    pub serve: bool,
}

/// `callflow demo [--serve]`.
pub async fn run_cli(args: DemoArgs) -> anyhow::Result<()> {
    if !args.serve {
        return run(args.config).await;
    }
    let played = play(args.config, "callflow_demo", true).await?;
    println!(
        "\nThe demo day stays up: console http://{} (operator / operator-dev-password, viewer / viewer-dev-password). Ctrl-C stops it.",
        played.system.addresses.console_http
    );
    kit::shutdown::on_signal().cancelled().await;
    played.stop().await
}

/// Plays the day on database `callflow_demo` and stream `CALLFLOW_DEMO`;
/// `Ok` only when every expectation held.
pub async fn run(config: UpConfig) -> anyhow::Result<()> {
    run_named(config, "callflow_demo").await
}

/// Plays the day on database `name` and stream `name` in capitals (tests
/// use their own names).
pub async fn run_named(config: UpConfig, name: &str) -> anyhow::Result<()> {
    play_named(config, name).await?.stop().await
}

/// A system the demo day was played through, still running (to look at it
/// in the console, or to test the console on realistic data).
pub struct Played {
    pub system: System,
    pub clock: std::sync::Arc<TestClock>,
    /// The database the day was played on.
    pub database_url: String,
    shutdown: CancellationToken,
}

impl Played {
    /// Stops every service.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.system.wait().await
    }
}

/// Plays the day like [`run_named`] and leaves the system running; `Err`
/// (with the system stopped) unless every expectation held.
pub async fn play_named(config: UpConfig, name: &str) -> anyhow::Result<Played> {
    play(config, name, false).await
}

/// Every service binds an ephemeral port, except the console when
/// `keep_console` (people open it at its configured address).
async fn play(mut config: UpConfig, name: &str, keep_console: bool) -> anyhow::Result<Played> {
    let console = config.console.http_addr;
    prepare(&mut config, name).await?;
    if keep_console {
        config.console.http_addr = console;
    }
    let clock = TestClock::new(START.parse()?);
    let shutdown = CancellationToken::new();
    let token = config.common.event_store_token_for("callflow-demo");
    let database_url = config.common.database_url.clone();
    let system = System::start(config, clock.clone(), shutdown.clone()).await?;
    let played = Played {
        system,
        clock: clock.clone(),
        database_url,
        shutdown,
    };
    match play_day(&played.system, &clock, &token).await {
        Ok(()) => Ok(played),
        Err(error) => {
            let _ = played.stop().await;
            Err(error)
        }
    }
}

/// Ephemeral ports, demo tokens, a fresh database and stream.
async fn prepare(config: &mut UpConfig, name: &str) -> anyhow::Result<()> {
    let any: std::net::SocketAddr = "127.0.0.1:0".parse()?;
    config.simulator = true;
    config.provider_sim.addr = any;
    config.event_store.grpc_addr = any;
    config.event_store.http_addr = any;
    config.call_ingest.http_addr = any;
    config.call_ingest.business_numbers = vec![BUSINESS_NUMBER.into()];
    config.call_ingest.exolve_token = EXOLVE_TOKEN.into();
    config.call_ingest.leads_token = LEADS_TOKEN.into();
    config.lead_dialer.http_addr = any;
    config.lead_dialer.grpc_addr = any;
    config.call_router.http_addr = any;
    config.call_router.grpc_addr = any;
    config.reminder_scheduler.grpc_addr = any;
    config.reminder_scheduler.http_addr = any;
    config.reminder_scheduler.poll = Duration::from_millis(100);
    config.transcription.poll_first = Duration::from_millis(300);
    config.transcription.poll_max = Duration::from_secs(2);
    config.sms_sender.http_addr = any;
    config.sms_sender.retry_base = Duration::from_millis(300);
    config.sms_sender.retry_max = Duration::from_secs(2);
    config.sms_sender.quiet_recheck = Duration::from_millis(300);
    config.sms_sender.status_poll = Duration::from_millis(300);
    config.notifier.http_addr = any;
    config.consent_analyzer.http_addr = any;
    config.transcription.http_addr = any;
    config.analytics.http_addr = any;
    config.console.http_addr = any;
    // Run from elsewhere than the repository's root: this checkout's files.
    *config = config.clone().with_repository_files();
    config.common.jetstream_stream = name.to_uppercase();
    config.common.subject_prefix = format!("{name}.evt");

    let admin_url = std::env::var("CALLFLOW_TEST_DATABASE_URL")
        .unwrap_or_else(|_| config.common.database_url.clone());
    let admin = kit::db::connect(&kit::db::url_with_database(&admin_url, "postgres"))
        .await
        .context("connect to Postgres (run `make demo`, which starts it)")?;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await?;
    config.common.database_url = kit::db::url_with_database(&admin_url, name);
    let bus = kit::bus::Bus::connect(&config.common, "callflow-demo").await?;
    let _ = bus
        .jetstream
        .delete_stream(&config.common.jetstream_stream)
        .await;
    Ok(())
}

fn say(text: &str) {
    println!("\n▶ {text}");
}

async fn play_day(system: &System, clock: &TestClock, token: &str) -> anyhow::Result<()> {
    let sim = system.simulator.clone().context("the simulator runs")?;
    let a = &system.addresses;
    let store =
        EventStoreClient::connect_lazy(&format!("http://{}", a.event_store_grpc), "callflow-demo")?
            .authenticated(token);
    let http = reqwest::Client::new();
    let webhook = format!("http://{}/webhooks/exolve/call-events", a.call_ingest_http);
    let mut failures: Vec<String> = Vec::new();

    say(&format!(
        "Transcription switched on for the shop's number {BUSINESS_NUMBER}"
    ));
    let mut exolve = kit::exolve::ExolveConfig {
        url: sim.base_url().to_owned(),
        key: "sim-exolve-key".into(),
        timeout: Duration::from_secs(5),
    };
    exolve.url = sim.base_url().to_owned();
    let number = kit::phone::PhoneNumber::parse(BUSINESS_NUMBER, Default::default())?;
    transcription::numbers::switch(&exolve.client(), &store, &number, true, "demo").await?;

    say("Exolve will answer the first SMS with 503 Service Unavailable");
    sim.inject(Target::ExolveSendSms, Fault::server_error(503), 1);

    say("A morning of calls (Exolve webhooks b, d, e; transcripts ready after one poll)");
    for call in DAY {
        let chunks: Vec<(&str, &str)> = call
            .dialog
            .iter()
            .map(|(who, text)| (if *who == "client" { "1" } else { "2" }, *text))
            .collect();
        sim.script_transcript_chunks(call.id, 1, &chunks);
        for kind in ["b", "d", "e"] {
            let body = json!({"type": kind, "call_sid": call.id, "from": call.client, "to": BUSINESS_NUMBER,
                              "date_time": START, "duration": 64000});
            let response = http
                .post(&webhook)
                .bearer_auth(EXOLVE_TOKEN)
                .json(&body)
                .send()
                .await?;
            if !response.status().is_success() {
                bail!(
                    "webhook {kind} of call {} refused: {}",
                    call.id,
                    response.text().await?
                );
            }
        }
        println!("  call {} from {}", call.id, call.client);
    }
    let again = http
        .post(&webhook)
        .bearer_auth(EXOLVE_TOKEN)
        .json(&json!({"type": "e", "call_sid": "1001", "from": "89161234567", "to": BUSINESS_NUMBER, "date_time": START}))
        .send()
        .await?
        .json::<serde_json::Value>()
        .await?;
    println!(
        "  Exolve delivers the end of call 1001 again → duplicate: {}",
        again["duplicate"]
    );
    if again["duplicate"] != true {
        failures.push("the repeated webhook was not recognised".into());
    }

    let consents = wait_for(&store, "ConsentAnalyzed", DAY.len()).await?;
    let scheduled = wait_for(&store, "ReminderScheduled", 3).await?;
    // The clock moves through the next month, stopping just after each
    // reminder is due (each already placed in its client's daytime).
    let mut dues: Vec<Timestamp> = scheduled
        .iter()
        .filter_map(|e| decode::<ReminderScheduled>(e).ok())
        .filter_map(|r| r.due_at.as_ref().and_then(from_proto_time))
        .collect();
    dues.sort();
    let start: Timestamp = START.parse()?;
    for (n, due) in dues.iter().enumerate() {
        let at = due.checked_add(jiff::SignedDuration::from_mins(2))?;
        let days = at.duration_since(start).as_hours() / 24;
        say(&format!("The clock jumps {days} days ahead, to {at}"));
        clock.set(at);
        wait_for(&store, "SmsSent", n + 1).await?;
    }
    let sent = wait_for(&store, "SmsSent", 3).await?;
    wait_for(&store, "SmsDelivered", 3).await?;
    let requested = all_of(&store, "SmsRequested").await?;
    let attempt_failures = all_of(&store, "SmsAttemptFailed").await?;
    wait_until(|| sim.telegram_messages().len() >= DAY.len()).await;
    // Let anything that would go wrong (a second SMS) have its chance.
    tokio::time::sleep(Duration::from_secs(2)).await;

    say("What became of each call");
    let by_call: BTreeMap<String, &Event> = consents
        .iter()
        .map(|e| {
            (
                decode::<ConsentAnalyzed>(e)
                    .map(|c| c.call_id)
                    .unwrap_or_default(),
                e,
            )
        })
        .collect();
    for call in DAY {
        let Some(event) = by_call.get(call.id) else {
            failures.push(format!("call {}: no consent decision", call.id));
            continue;
        };
        let consent: ConsentAnalyzed = decode(event)?;
        let decision =
            ConsentDecision::try_from(consent.decision).unwrap_or(ConsentDecision::Unspecified);
        println!("\n  ☎ call {} — client {}", call.id, consent.client_phone);
        println!("    client said: «{}»", consent.evidence.join(" / "));
        println!(
            "    decision: {} {}{}",
            decision
                .as_str_name()
                .trim_start_matches("CONSENT_DECISION_")
                .to_lowercase(),
            if consent.remind_after.is_empty() {
                String::new()
            } else {
                format!("(remind after {}) ", consent.remind_after)
            },
            if consent.opt_out { "— OPTED OUT" } else { "" }
        );
        let (want, want_after, want_opt_out) = call.expect;
        if decision != want || consent.remind_after != want_after || consent.opt_out != want_opt_out
        {
            failures.push(format!(
                "call {}: expected {:?} {want_after} opt-out {want_opt_out}, got {:?} {} opt-out {}",
                call.id, want, decision, consent.remind_after, consent.opt_out
            ));
        }
        let reminder = scheduled
            .iter()
            .filter_map(|e| decode::<ReminderScheduled>(e).ok())
            .find(|r| r.call_id == call.id);
        match (&reminder, want) {
            (Some(r), _) => {
                let due = r
                    .due_at
                    .as_ref()
                    .and_then(from_proto_time)
                    .unwrap_or(Timestamp::UNIX_EPOCH);
                let zone = TimeZone::get(&r.time_zone).unwrap_or(TimeZone::UTC);
                println!(
                    "    reminder: due {} ({})",
                    zone.to_datetime(due).strftime("%Y-%m-%d %H:%M"),
                    r.time_zone
                );
                let sms = requested
                    .iter()
                    .filter_map(|e| decode::<SmsRequested>(e).ok())
                    .find(|s| s.reminder_id == r.reminder_id);
                match sms {
                    Some(sms) => {
                        let sent = sent
                            .iter()
                            .filter_map(|e| decode::<SmsSent>(e).ok())
                            .find(|s| s.sms_id == sms.sms_id);
                        let retries = attempt_failures
                            .iter()
                            .filter_map(|e| decode::<SmsAttemptFailed>(e).ok())
                            .filter(|f| f.sms_id == sms.sms_id)
                            .count();
                        println!("    SMS ({} part(s)): «{}»", sms.parts, sms.text);
                        match sent {
                            Some(sent) => println!(
                                "    sent on attempt {} (provider id {}), delivered{}",
                                sent.attempt,
                                sent.provider_message_id,
                                if retries > 0 {
                                    format!("; {retries} attempt(s) failed before with a 5xx")
                                } else {
                                    String::new()
                                }
                            ),
                            None => failures.push(format!("call {}: SMS not sent", call.id)),
                        }
                    }
                    None => failures.push(format!("call {}: no SMS for the reminder", call.id)),
                }
            }
            (None, ConsentDecision::Agreed) => {
                failures.push(format!("call {}: no reminder", call.id))
            }
            (None, _) => println!("    no reminder, no SMS"),
        }
    }

    say("At the provider (the simulator)");
    let at_provider = sim.sms();
    for sms in &at_provider {
        println!("  SMS to +{}: {:?}", sms.destination, sms.status);
    }
    if at_provider.len() != 3 {
        failures.push(format!(
            "expected exactly 3 SMS at the provider, got {}",
            at_provider.len()
        ));
    }
    if attempt_failures.len() != 1 {
        failures.push(format!(
            "expected one failed attempt (the 503), got {}",
            attempt_failures.len()
        ));
    }
    let chat = sim.telegram_messages();
    println!(
        "  managers' Telegram chat got {} message(s), for example:",
        chat.len()
    );
    for message in chat.iter().take(3) {
        println!("    {}", message.text);
    }
    if chat.len() < DAY.len() {
        failures.push(format!(
            "expected at least {} chat messages (one per consent), got {}",
            DAY.len(),
            chat.len()
        ));
    }

    play_leads(system, clock, &store, &http, &mut failures).await?;
    routing::play_routing(system, clock, &mut failures).await?;

    if failures.is_empty() {
        println!("\n✔ every expectation held");
        Ok(())
    } else {
        for failure in &failures {
            println!("✘ {failure}");
        }
        bail!("{} expectation(s) failed", failures.len())
    }
}

/// The web leads' call-back, after the month of reminders.
async fn play_leads(
    system: &System,
    clock: &TestClock,
    store: &EventStoreClient,
    http: &reqwest::Client,
    failures: &mut Vec<String>,
) -> anyhow::Result<()> {
    use kit::clock::Clock;

    let sim = system.simulator.clone().context("the simulator runs")?;
    let leads_at: Timestamp = LEADS_AT.parse()?;
    if clock.now() >= leads_at {
        bail!("the reminders ran past {LEADS_AT}, when the leads arrive");
    }
    let (daytime, night, third, wrong, outage) = (
        "+79161000101",
        "+79241000102",
        "+79161000103",
        "+79161000104",
        "+79161000105",
    );
    let moscow = TimeZone::get("Europe/Moscow")?;
    let vladivostok = TimeZone::get("Asia/Vladivostok")?;
    let local = |zone: &TimeZone, at: Timestamp| zone.to_datetime(at).strftime("%d.%m %H:%M");
    let post = |reference: &'static str, phone: &'static str, zone: &'static str| {
        let url = format!(
            "http://{}/webhooks/leads",
            system.addresses.call_ingest_http
        );
        let body = json!({
            "ref": reference, "site": "shop.example", "name": "Анна", "phone": phone,
            "city": "Москва", "time_zone": zone, "partner_id": "cpa-net-7",
            "order_id": format!("order-{reference}"), "amount": "1990.50",
        });
        async move {
            let response = http
                .post(&url)
                .bearer_auth(LEADS_TOKEN)
                .json(&body)
                .send()
                .await?;
            let status = response.status();
            let answer: serde_json::Value = response.json().await.unwrap_or_default();
            let Some(id) = answer["lead_id"].as_str().filter(|_| status.is_success()) else {
                bail!("lead {reference} refused: {status} {answer}");
            };
            println!("  lead {reference} from {phone} ({zone}) → lead {id}");
            anyhow::Ok(id.to_owned())
        }
    };

    say(&format!(
        "Two days later: the clock jumps to {LEADS_AT} ({} in Moscow, {} in Vladivostok), web leads arrive",
        local(&moscow, leads_at),
        local(&vladivostok, leads_at)
    ));
    clock.set(leads_at);
    sim.add_company(
        json!({"TITLE": "CPA Net", "UF_CRM_PARTNER_CODE": "cpa-net-7"})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    );

    say("Bitrix24 is down: it answers the next 20 crm.lead.add with 503");
    sim.inject(Target::BitrixLeadAdd, Fault::server_error(503), 20);
    let l_outage = post("web-5", outage, "Europe/Moscow").await?;
    let events = wait_lead(store, &l_outage, "LeadNeedsManualProcessing", 1).await?;
    match of_type(&events, "LeadNeedsManualProcessing").first() {
        Some(e) => {
            let manual: LeadNeedsManualProcessing = decode(e)?;
            println!(
                "  lead {l_outage} goes to a person: {} ({}), calls stopped: {}",
                manual.reason, manual.detail, manual.calls_stopped
            );
            if manual.reason != "crm_failed" || manual.calls_stopped {
                failures.push(format!(
                    "CRM outage: expected crm_failed with calls going on, got {} (calls stopped: {})",
                    manual.reason, manual.calls_stopped
                ));
            }
        }
        None => failures.push("CRM outage: the lead did not go to a person".into()),
    }
    wait_lead(store, &l_outage, "LeadConfirmed", 1).await?;
    println!("  … and its call went on: confirmed by the client");
    sim.clear_faults();
    say("Bitrix24 is back");

    say(
        "Four more leads: a person answers, a night in Vladivostok, two unanswered calls then a person, a wrong number",
    );
    sim.script_calls(
        third,
        &[
            CallOutcome::NoAnswer,
            CallOutcome::NoAnswer,
            CallOutcome::Human,
        ],
        Duration::ZERO,
    );
    sim.script_calls(wrong, &[CallOutcome::WrongNumber], Duration::ZERO);
    let l_daytime = post("web-1", daytime, "Europe/Moscow").await?;
    let l_night = post("web-2", night, "Asia/Vladivostok").await?;
    let l_third = post("web-3", third, "Europe/Moscow").await?;
    let l_wrong = post("web-4", wrong, "Europe/Moscow").await?;

    let events = wait_lead(store, &l_daytime, "LeadConfirmed", 1).await?;
    let calls = calls_to(&sim, daytime);
    println!(
        "  lead {l_daytime}: confirmed after {calls} call(s), {} attempt(s) started",
        of_type(&events, "CallAttemptStarted").len()
    );
    if calls != 1 {
        failures.push(format!("daytime lead: expected 1 call, got {calls}"));
    }

    let events = wait_lead(store, &l_wrong, "LeadClosed", 1).await?;
    if let Some(e) = of_type(&events, "LeadClosed").first() {
        let closed: LeadClosed = decode(e)?;
        println!(
            "  lead {l_wrong}: closed, {} ({})",
            closed.reason, closed.detail
        );
        if closed.reason != "wrong_number" {
            failures.push(format!(
                "wrong number: expected wrong_number, got {}",
                closed.reason
            ));
        }
    }

    let events = wait_lead(store, &l_night, "NightSmsSent", 1).await?;
    if let Some(e) = of_type(&events, "NightSmsSent").first() {
        let sms: NightSmsSent = decode(e)?;
        let call_at = sms
            .call_at
            .as_ref()
            .and_then(from_proto_time)
            .unwrap_or(Timestamp::UNIX_EPOCH);
        println!(
            "  lead {l_night}: night in {}, the call is planned for {} there",
            sms.time_zone,
            local(&vladivostok, call_at)
        );
        if call_at != VLADIVOSTOK_NINE.parse::<Timestamp>()? {
            failures.push(format!(
                "night lead: call planned at {call_at}, expected {VLADIVOSTOK_NINE}"
            ));
        }
    }
    wait_until(|| !sms_to(&sim, night).is_empty()).await;
    match sms_to(&sim, night).first() {
        Some(text) => println!("    SMS at once, at night: «{text}»"),
        None => failures.push("night lead: no SMS at once".into()),
    }

    say("Lead web-3: nobody answers; the next call is planned 30 minutes later");
    for attempt in 2..=3 {
        let events = wait_lead(store, &l_third, "CallAttemptScheduled", attempt).await?;
        if let Some(e) = of_type(&events, "CallAttemptScheduled").get(attempt - 1) {
            let next: CallAttemptScheduled = decode(e)?;
            let due = next
                .due_at
                .as_ref()
                .and_then(from_proto_time)
                .unwrap_or(Timestamp::UNIX_EPOCH);
            println!(
                "  call {} planned ({}) for {} in Moscow",
                next.attempt,
                next.reason,
                local(&moscow, due)
            );
        }
        let at = clock
            .now()
            .checked_add(jiff::SignedDuration::from_mins(31))?;
        println!("  the clock moves 31 minutes, to {}", local(&moscow, at));
        clock.set(at);
    }
    wait_lead(store, &l_third, "LeadConfirmed", 1).await?;
    let calls = calls_to(&sim, third);
    println!("  lead {l_third}: confirmed after {calls} call(s)");
    if calls != 3 {
        failures.push(format!("third-attempt lead: expected 3 calls, got {calls}"));
    }

    let calls = calls_to(&sim, night);
    println!("  lead {l_night}: {calls} call(s) so far — nobody is called at night");
    if calls != 0 {
        failures.push(format!("night lead: called {calls} time(s) at night"));
    }
    let nine: Timestamp = VLADIVOSTOK_NINE.parse()?;
    let at = nine.checked_add(jiff::SignedDuration::from_secs(5))?;
    say(&format!(
        "The clock moves to {at}: {} in Vladivostok",
        local(&vladivostok, at)
    ));
    clock.set(at);
    wait_lead(store, &l_night, "LeadConfirmed", 1).await?;
    wait_until(|| sms_to(&sim, night).len() >= 2).await;
    let calls = calls_to(&sim, night);
    let texts = sms_to(&sim, night);
    println!(
        "  lead {l_night}: confirmed after {calls} call(s); SMS: {}",
        texts
            .iter()
            .map(|t| format!("«{t}»"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if calls != 1 || texts.len() != 2 {
        failures.push(format!(
            "night lead: expected 1 call and 2 SMS, got {calls} and {}",
            texts.len()
        ));
    }

    say("The partner dashboard");
    let url = format!(
        "http://{}/dashboard/summary?from_day={}&to_day={}",
        system.addresses.lead_http, LEAD_DAYS.0, LEAD_DAYS.1
    );
    let mut partner = serde_json::Value::Null;
    for _ in 0..600 {
        let summary: serde_json::Value = http.get(&url).send().await?.json().await?;
        if let Some(row) = summary["partners"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["partner_id"] == "cpa-net-7"))
        {
            partner = row.clone();
            if partner["confirmed"] == 4 && partner["closed"] == 1 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "  GET /dashboard/summary?from_day={}&to_day={}",
        LEAD_DAYS.0, LEAD_DAYS.1
    );
    println!(
        "  partner cpa-net-7: {} leads, {} confirmed, {} closed, {} with a person, conversion {}, orders {} / confirmed {} (minor units, {})",
        partner["leads"],
        partner["confirmed"],
        partner["closed"],
        partner["manual"],
        partner["conversion"],
        partner["order_total_minor"],
        partner["confirmed_total_minor"],
        partner["currency"]
    );
    if partner["leads"] != 5 || partner["confirmed"] != 4 || partner["closed"] != 1 {
        failures.push(format!(
            "dashboard: expected 5 leads, 4 confirmed, 1 closed for cpa-net-7, got {partner}"
        ));
    }
    Ok(())
}

fn of_type<'a>(events: &'a [Event], event_type: &str) -> Vec<&'a Event> {
    events.iter().filter(|e| e.r#type == event_type).collect()
}

/// Waits (at most ninety seconds) until stream `lead-<id>` holds `n`
/// events of a type; the whole stream.
async fn wait_lead(
    store: &EventStoreClient,
    lead_id: &str,
    event_type: &str,
    n: usize,
) -> anyhow::Result<Vec<Event>> {
    let mut types = Vec::new();
    for _ in 0..900 {
        let events = store
            .grpc()
            .read_stream(ReadStreamRequest {
                stream: format!("lead-{lead_id}"),
                from_version: 1,
                max_count: 0,
            })
            .await?
            .into_inner()
            .events;
        if of_type(&events, event_type).len() >= n {
            return Ok(events);
        }
        types = events.iter().map(|e| e.r#type.clone()).collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("waited ninety seconds for {n} × {event_type} on lead {lead_id}; it has {types:?}")
}

fn digits(phone: &str) -> String {
    phone.chars().filter(char::is_ascii_digit).collect()
}

fn calls_to(sim: &provider_sim::SimHandle, phone: &str) -> usize {
    let digits = digits(phone);
    sim.calls().iter().filter(|c| c.phone == digits).count()
}

fn sms_to(sim: &provider_sim::SimHandle, phone: &str) -> Vec<String> {
    let digits = digits(phone);
    sim.sms()
        .into_iter()
        .filter(|s| s.destination == digits)
        .map(|s| s.text)
        .collect()
}

async fn all_of(store: &EventStoreClient, event_type: &str) -> anyhow::Result<Vec<Event>> {
    let filter = Filter {
        types: vec![event_type.into()],
        ..Default::default()
    };
    let mut stream = store
        .grpc()
        .read_all(ReadAllRequest {
            filter: Some(filter),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut events = Vec::new();
    while let Some(page) = stream.message().await? {
        events.extend(page.events);
    }
    Ok(events)
}

/// Waits (at most two minutes) for `n` events of a type.
async fn wait_for(
    store: &EventStoreClient,
    event_type: &str,
    n: usize,
) -> anyhow::Result<Vec<Event>> {
    for _ in 0..1200 {
        let events = all_of(store, event_type).await?;
        if events.len() >= n {
            println!("  … {n} × {event_type}");
            return Ok(events);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("waited two minutes for {n} × {event_type}")
}

async fn wait_until(check: impl Fn() -> bool) {
    for _ in 0..600 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
