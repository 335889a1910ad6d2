//! The demo's inbound calls: the marketplace's number routes clients to
//! their order's shop (escalating to the office and the call centre), sends
//! partner shops to the support chat and couriers to their store (recorded);
//! the delivery service's neutral number bridges courier and client by
//! order code. The simulated PBX plays each call against call-router; the
//! support Slack channel follows, and the routing statistics sum up.

use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use kit::clock::TestClock;
use kit::proto::routing::v1::directory_client::DirectoryClient;
use kit::proto::routing::v1::masking_client::MaskingClient;
use kit::proto::routing::v1::{Courier, OpenSessionRequest, Order, Shop, UpsertRequest};
use provider_sim::pbx::{Answer, DialOutcome, PbxCall, PbxScript, play_call};

use super::{say, wait_until};
use crate::System;

/// 12:00 in Moscow, two days after the leads: shops and office are open.
const NOON: &str = "2026-12-28T09:00:00Z";
const DAY: &str = "2026-12-28";

const MARKETPLACE: &str = "+74951110000";
const NEUTRAL: &str = "+74951110001";
const OFFICE: &str = "+74951230000";
const CALL_CENTRE: &str = "+74957770000";
const OPERATOR: &str = "+74951230099";
const BOOKSHOP: &str = "+74957001001";
const NIGHT_SHOP: &str = "+74957001002";
const ANNA: &str = "+79161110001";
const OLEG: &str = "+79163330003";
const COURIER: &str = "+79162220002";
const STORE: &str = "+74957003003";

fn human(after_ms: u64) -> Answer {
    Answer::Human { after_ms }
}

/// One call the PBX plays, and who must have been dialled.
struct Call<'a> {
    title: &'a str,
    id: &'a str,
    from: &'a str,
    to: &'a str,
    digits: &'a [&'a str],
    answers: &'a [(&'a str, Answer)],
    expect: &'a [(&'a str, DialOutcome)],
}

struct Demo<'a> {
    http: reqwest::Client,
    url: String,
    started_at: jiff::Timestamp,
    failures: &'a mut Vec<String>,
}

impl Demo<'_> {
    /// Plays a call, prints its path, and checks who was dialled.
    async fn call(&mut self, c: Call<'_>) -> anyhow::Result<PbxCall> {
        let Call {
            title,
            id,
            from,
            to,
            digits,
            answers,
            expect,
        } = c;
        let mut script = PbxScript::new(id, from, to);
        script.started_at = Some(self.started_at);
        script.digits = digits.iter().map(|d| d.to_string()).collect();
        for (number, answer) in answers {
            script.answers.insert(number.to_string(), *answer);
        }
        let call = play_call(&self.http, &self.url, &script)
            .await
            .with_context(|| format!("call {id}"))?;
        say(title);
        for text in &call.said {
            println!("    «{text}»");
        }
        if !call.gathered.is_empty() {
            println!("    pressed: {}", call.gathered.join(", "));
        }
        for dial in &call.dials {
            println!("    dialled {} → {:?}", dial.number, dial.outcome);
        }
        let dialled: Vec<(&str, DialOutcome)> = call
            .dials
            .iter()
            .map(|d| (d.number.as_str(), d.outcome))
            .collect();
        if dialled != expect {
            self.failures.push(format!(
                "call {id}: expected dials {expect:?}, got {dialled:?}"
            ));
        }
        if call.fallback_used || !call.violations.is_empty() {
            self.failures.push(format!(
                "call {id}: fallback {} / protocol violations {:?}",
                call.fallback_used, call.violations
            ));
        }
        Ok(call)
    }
}

pub(super) async fn play_routing(
    system: &System,
    clock: &TestClock,
    failures: &mut Vec<String>,
) -> anyhow::Result<()> {
    let sim = system.simulator.clone().context("the simulator runs")?;
    let a = &system.addresses;
    clock.set(NOON.parse()?);
    println!("\n— Inbound calls, {DAY} 12:00 Moscow —");
    let grpc = format!("http://{}", a.router_grpc);
    let mut directory = DirectoryClient::connect(grpc.clone()).await?;
    directory
        .upsert(UpsertRequest {
            shops: vec![
                Shop {
                    shop_id: "books".into(),
                    name: "Книжный дом".into(),
                    phone: BOOKSHOP.into(),
                    city: "Москва".into(),
                    open_hours: "09:00-21:00".into(),
                    time_zone: "Europe/Moscow".into(),
                },
                Shop {
                    shop_id: "owls".into(),
                    name: "Ночная сова".into(),
                    phone: NIGHT_SHOP.into(),
                    city: "Москва".into(),
                    open_hours: "22:00-23:59".into(),
                    time_zone: "Europe/Moscow".into(),
                },
            ],
            orders: vec![
                Order {
                    order_id: "A-1001".into(),
                    client_phone: ANNA.into(),
                    client_name: "Анна".into(),
                    shop_id: "books".into(),
                    active: true,
                },
                Order {
                    order_id: "N-2002".into(),
                    client_phone: OLEG.into(),
                    client_name: "Олег".into(),
                    shop_id: "owls".into(),
                    active: true,
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
        .await?;
    say("The marketplace's directory imported: 2 shops, 2 clients' orders, 1 external courier");

    let mut demo = Demo {
        http: reqwest::Client::new(),
        url: format!("http://{}/pbx/v1/calls", a.router_http),
        started_at: NOON.parse()?,
        failures,
    };
    use DialOutcome::{Answered, Busy, NoAnswer};
    demo.call(Call {
        title: "Анна calls about her order and presses 1: the shop answers",
        id: "demo-in-1",
        from: ANNA,
        to: MARKETPLACE,
        digits: &["1"],
        answers: &[(BOOKSHOP, human(4_000))],
        expect: &[(BOOKSHOP, Answered)],
    })
    .await?;
    demo.call(Call {
        title: "Анна again: the shop does not answer in 15 s, the office is busy, the call centre answers",
        id: "demo-in-2",
        from: ANNA,
        to: MARKETPLACE,
        digits: &["1"],
        answers: &[(OFFICE, Answer::Busy), (CALL_CENTRE, human(2_000))],
        expect: &[
            (BOOKSHOP, NoAnswer),
            (OFFICE, Busy),
            (CALL_CENTRE, Answered),
        ],
    })
    .await?;
    demo.call(Call {
        title: "Олег's shop opens only at night: straight to the call centre",
        id: "demo-in-3",
        from: OLEG,
        to: MARKETPLACE,
        digits: &["1"],
        answers: &[(CALL_CENTRE, human(3_000))],
        expect: &[(CALL_CENTRE, Answered)],
    })
    .await?;
    demo.call(Call {
        title: "A partner shop calls: sent to the support chat",
        id: "demo-in-4",
        from: BOOKSHOP,
        to: MARKETPLACE,
        digits: &[],
        answers: &[],
        expect: &[],
    })
    .await?;
    let courier = demo
        .call(Call {
            title: "An external courier calls: put through to the store, recorded",
            id: "demo-in-5",
            from: COURIER,
            to: MARKETPLACE,
            digits: &[],
            answers: &[(STORE, human(2_000))],
            expect: &[(STORE, Answered)],
        })
        .await?;
    if courier.recordings.len() != 1 {
        demo.failures
            .push("the courier's call was not recorded".into());
    }

    let mut masking = MaskingClient::connect(grpc).await?;
    masking
        .open(OpenSessionRequest {
            order_code: "48213".into(),
            courier_phone: COURIER.into(),
            client_phone: ANNA.into(),
            ttl: Some(Duration::from_secs(4 * 3600).try_into()?),
            order_id: "A-1001".into(),
        })
        .await?;
    say("Delivery 48213 opened a masking session on the neutral number for 4 hours");
    let bridged = demo
        .call(Call {
            title: "The courier calls the neutral number and types 48213: Анна answers, seeing the neutral number",
            id: "demo-mask-1",
            from: COURIER,
            to: NEUTRAL,
            digits: &["48213"],
            answers: &[(ANNA, human(5_000))],
            expect: &[(ANNA, Answered)],
        })
        .await?;
    if bridged.dials.first().and_then(|d| d.caller_id.as_deref()) != Some(NEUTRAL) {
        demo.failures
            .push("the client saw another number than the neutral one".into());
    }
    demo.call(Call {
        title: "Анна calls back through the neutral number: the courier answers",
        id: "demo-mask-2",
        from: ANNA,
        to: NEUTRAL,
        digits: &["48213"],
        answers: &[(COURIER, human(3_000))],
        expect: &[(COURIER, Answered)],
    })
    .await?;
    demo.call(Call {
        title: "Someone else types the code, is asked to call from the order's number, presses #: an operator",
        id: "demo-mask-3",
        from: "+79165550005",
        to: NEUTRAL,
        digits: &["48213", "#"],
        answers: &[(OPERATOR, human(1_000))],
        expect: &[(OPERATOR, Answered)],
    })
    .await?;

    let slack = {
        let sim = sim.clone();
        move || {
            sim.slack_messages()
                .into_iter()
                .filter_map(|m| m.text)
                .collect::<Vec<_>>()
        }
    };
    wait_until(|| slack().iter().filter(|t| t.contains("ended after")).count() >= 8).await;
    let messages = slack();
    println!(
        "  support Slack channel got {} message(s), for example:",
        messages.len()
    );
    for text in messages.iter().filter(|t| t.contains("demo-in-2")) {
        println!("    {text}");
    }

    // The statistics, once the router's read model has every call.
    let http = reqwest::Client::new();
    let stats_url = format!(
        "http://{}/stats/daily?from_day={DAY}&to_day={DAY}",
        a.router_http
    );
    let mut day = Value::Null;
    for _ in 0..300 {
        let body: Value = http.get(&stats_url).send().await?.json().await?;
        day = body["days"][0].clone();
        if day["calls"] == 8 && day["masking_calls"] == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("  GET /stats/daily?from_day={DAY}&to_day={DAY}");
    println!(
        "  {} calls; by caller {}; answered by {}; {} escalation(s); time to answer avg {} ms; masking: {} call(s), {} bridged; {} fallback(s)",
        day["calls"],
        day["by_caller"],
        day["answered_by"],
        day["escalations"],
        day["time_to_answer_avg_ms"],
        day["masking_calls"],
        day["masking_bridged"],
        day["fallbacks"]
    );
    if day["calls"] != 8
        || day["answered_by"]["call_centre"] != 2
        || day["escalations"] != 3
        || day["masking_bridged"] != 2
        || day["fallbacks"] != 0
    {
        demo.failures.push(format!(
            "routing statistics: expected 8 calls, 2 answered by the call centre, 3 escalations, 2 masked calls bridged, no fallback; got {day}"
        ));
    }
    Ok(())
}
