//! Two replicas of the router against the same Postgres and event store,
//! every call alternating between them step by step (each answers with the
//! other's `report_url`): no step is lost or recorded twice, the outboxes
//! drain through one forwarder at a time, and the statistics rebuilt from
//! the log equal the live ones. Also: a PBX without the token is refused.

use std::net::SocketAddr;
use std::time::Duration;

use event_store::testing::TestStore;
use kit::clock::TestClock;
use kit::proto::routing::v1::directory_client::DirectoryClient;
use kit::proto::routing::v1::routing_stats_client::RoutingStatsClient;
use kit::proto::routing::v1::{DailyRequest, Order, Shop, UpsertRequest};
use kit::testing::eventually;
use provider_sim::pbx::{Answer, DialOutcome, PbxScript, play_call};
use tokio_util::sync::CancellationToken;

const SCENARIOS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../infra/call-router/scenarios.toml"
);
const TOKEN: &str = "pbx-secret-token";
const NOW: &str = "2026-11-24T08:00:00Z";
const SHOP: &str = "+74957001001";
const OFFICE: &str = "+74951230000";
const CALLS: usize = 40;

/// A free port (bound and released): the replicas must know each other's
/// address before either starts.
fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn config(http: SocketAddr, peer: SocketAddr) -> call_router::Config {
    call_router::Config {
        http_addr: http,
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        scenarios: SCENARIOS.into(),
        deadline: Duration::from_millis(1500),
        state_secret: "shared-state-secret-of-the-test".into(),
        pbx_token: TOKEN.into(),
        public_url: format!("http://{peer}/pbx/v1/calls"),
        pool: 4,
    }
}

#[tokio::test]
async fn two_replicas_share_calls_without_losing_or_repeating_a_step() {
    let mut store = TestStore::start(false).await;
    let mut common = store.common.clone();
    common.event_store_url = store.url();
    let clock = TestClock::new(NOW.parse().unwrap());
    let shutdown = CancellationToken::new();
    let (a, b) = (free_addr(), free_addr());
    let first = call_router::CallRouter::bind(common.clone(), config(a, b), clock.clone())
        .await
        .unwrap();
    let second = call_router::CallRouter::bind(common.clone(), config(b, a), clock.clone())
        .await
        .unwrap();
    let grpc = format!("http://{}", first.grpc_addr());
    let stats_b = format!("http://{}", second.grpc_addr());
    let tasks = [
        tokio::spawn(first.run(shutdown.clone())),
        tokio::spawn(second.run(shutdown.clone())),
    ];

    let mut directory = DirectoryClient::connect(grpc.clone()).await.unwrap();
    directory
        .upsert(UpsertRequest {
            shops: vec![Shop {
                shop_id: "books".into(),
                name: "Книжный".into(),
                phone: SHOP.into(),
                city: "Москва".into(),
                open_hours: String::new(),
                time_zone: String::new(),
            }],
            orders: (0..CALLS)
                .map(|i| Order {
                    order_id: format!("o-{i}"),
                    client_phone: format!("+7916000{i:04}"),
                    client_name: format!("Клиент {i}"),
                    shop_id: "books".into(),
                    active: true,
                })
                .collect(),
            couriers: vec![],
        })
        .await
        .unwrap();

    let http = reqwest::Client::new();
    // Without the token, or with another one: 401, nothing recorded.
    let step = serde_json::json!({"call_id": "no-token", "numa": "+79160000001",
        "numb": "+74951110000", "started_at": NOW});
    let refused = http
        .post(format!("http://{a}/pbx/v1/calls"))
        .json(&step)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let refused = http
        .post(format!("http://{b}/pbx/v1/calls"))
        .bearer_auth("guess")
        .json(&step)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);

    // Half the calls the shop answers, half go on to the office.
    let calls = (0..CALLS).map(|i| {
        let http = http.clone();
        let url = format!("http://{}/pbx/v1/calls", if i % 2 == 0 { a } else { b });
        async move {
            let mut script = PbxScript::new(
                &format!("r-{i}"),
                &format!("+7916000{i:04}"),
                "+74951110000",
            );
            script.started_at = Some(NOW.parse().unwrap());
            script.token = Some(TOKEN.into());
            script.digits = vec!["1".into()];
            if i % 2 == 0 {
                script
                    .answers
                    .insert(SHOP.into(), Answer::Human { after_ms: 2_000 });
            } else {
                script
                    .answers
                    .insert(OFFICE.into(), Answer::Human { after_ms: 1_000 });
            }
            play_call(&http, &url, &script).await.unwrap()
        }
    });
    let played = futures::future::join_all(calls).await;
    for (i, call) in played.iter().enumerate() {
        assert!(!call.fallback_used, "call {i} fell back");
        let last = call.dials.last().unwrap();
        assert_eq!(last.outcome, DialOutcome::Answered, "call {i}");
        let urls: Vec<&str> = call.steps.iter().map(|s| s.url.as_str()).collect();
        assert!(
            urls.windows(2).all(|w| w[0] != w[1]),
            "steps alternate between the replicas: {urls:?}"
        );
    }

    // Every call's stream holds each step once, in order.
    for i in 0..CALLS {
        let stream = format!("inbound-r-{i}");
        let events = eventually(
            &format!("{stream} is complete"),
            Duration::from_secs(60),
            || {
                let client = store.client.clone();
                let stream = stream.clone();
                async move {
                    let events = client
                        .grpc()
                        .read_stream(kit::proto::eventstore::v1::ReadStreamRequest {
                            stream,
                            from_version: 1,
                            max_count: 0,
                        })
                        .await
                        .ok()?
                        .into_inner()
                        .events;
                    events
                        .iter()
                        .any(|e| e.r#type == "InboundCallEnded")
                        .then_some(events)
                }
            },
        )
        .await;
        let types: Vec<&str> = events.iter().map(|e| e.r#type.as_str()).collect();
        let expected: &[&str] = if i % 2 == 0 {
            &[
                "InboundCallStarted",
                "CallerIdentified",
                "MenuChosen",
                "DialAttempted",
                "DialFinished",
                "InboundCallEnded",
            ]
        } else {
            &[
                "InboundCallStarted",
                "CallerIdentified",
                "MenuChosen",
                "DialAttempted",
                "DialFinished",
                "Escalated",
                "DialAttempted",
                "DialFinished",
                "InboundCallEnded",
            ]
        };
        assert_eq!(types, expected, "call {i}");
    }
    let db = store.db.connect().await;
    eventually("the outboxes drain", Duration::from_secs(30), || async {
        let left: i64 = db
            .query_one("SELECT count(*) FROM call_router.outbox", &[])
            .await
            .unwrap()
            .get(0);
        (left == 0).then_some(())
    })
    .await;

    // The statistics, live on replica B, then rebuilt from the log.
    let mut stats = RoutingStatsClient::connect(stats_b).await.unwrap();
    let live = eventually("every call is counted", Duration::from_secs(30), || {
        let mut stats = stats.clone();
        async move {
            let days = stats
                .daily(DailyRequest::default())
                .await
                .ok()?
                .into_inner();
            // Every call answered and ended: the shop after 2 s, the
            // office after 1 s (the test clock stands still).
            let day = days.days.first()?;
            let answered: u64 = day.answered_by.values().sum();
            (answered == CALLS as u64 && day.time_to_answer_avg_ms == 1_500).then_some(days)
        }
    })
    .await;
    let day = &live.days[0];
    assert_eq!(day.answered_by.get("shop"), Some(&(CALLS as u64 / 2)));
    assert_eq!(day.answered_by.get("office"), Some(&(CALLS as u64 / 2)));
    assert_eq!(day.escalations, CALLS as u64 / 2);
    call_router::rebuild(&common).await.unwrap();
    let rebuilt = stats
        .daily(DailyRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rebuilt, live);

    shutdown.cancel();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    store.stop().await;
}
