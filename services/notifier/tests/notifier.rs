//! The notifier against a real event store and JetStream, with the provider
//! simulator as Telegram and Slack and a local server as another team's
//! webhook: rules route events, a failing destination does not hold up the
//! others, rate limits are honoured, webhooks are signed, each delivery is
//! recorded once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use event_store::testing::TestStore;
use kit::events::new_event;
use kit::proto::events::v1::{ConsentAnalyzed, ConsentDecision, SmsFailed};
use kit::store_client::Expected;
use kit::testing::eventually;
use provider_sim::{Fault, ProviderSim, SimConfig, Target};

const PATIENCE: Duration = Duration::from_secs(60);

type Received = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

async fn team_webhook() -> (String, Received) {
    let received: Received = Arc::default();
    let sink = received.clone();
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push((headers, body));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_each_destination_once_whatever_the_others_do() {
    let store = TestStore::start(true).await;
    let sim = ProviderSim::bind("127.0.0.1:0", SimConfig::default())
        .await
        .unwrap();
    let handle = sim.handle();
    let stop = CancellationToken::new();
    sim.spawn(stop.clone());
    let (hook_url, received) = team_webhook().await;

    // Secrets come from the environment; the file only names the variables.
    // SAFETY: set before the notifier's threads read them.
    unsafe {
        std::env::set_var("NOTIFIER_TEST_TG", "sim-telegram-token");
        std::env::set_var(
            "NOTIFIER_TEST_SLACK",
            format!("{}/services/T000/B000/xyz", handle.base_url()),
        );
        std::env::set_var("NOTIFIER_TEST_HOOK", "team-secret");
    }
    let rules = format!(
        r#"
        [destinations.managers]
        kind = "telegram"
        url = "{base}"
        token_env = "NOTIFIER_TEST_TG"
        chat_id = "-1001"
        [destinations.ops]
        kind = "slack"
        webhook_url_env = "NOTIFIER_TEST_SLACK"
        [destinations.crm]
        kind = "webhook"
        url = "{hook_url}"
        secret_env = "NOTIFIER_TEST_HOOK"
        [[rules]]
        events = ["ConsentAnalyzed", "SmsFailed"]
        destination = "managers"
        [[rules]]
        events = ["SmsFailed"]
        destination = "ops"
        template = "SMS failed for {{phone}}: {{reason}}"
        [[rules]]
        events = ["ConsentAnalyzed"]
        destination = "crm"
        "#,
        base = handle.base_url()
    );
    let path =
        std::env::temp_dir().join(format!("notifier-rules-{:08x}.toml", rand::random::<u32>()));
    std::fs::write(&path, rules).unwrap();

    // Slack is down for a while; Telegram asks to slow down once.
    handle.inject(Target::Slack, Fault::server_error(503), 3);
    handle.inject(Target::Telegram, Fault::rate_limited(1), 1);

    let mut common = store.common.clone();
    common.event_store_url = store.url();
    let config = notifier::Config {
        http_addr: "127.0.0.1:0".parse().unwrap(),
        rules: Some(path.clone()),
        telegram_url: String::new(),
        telegram_token: String::new(),
        telegram_chat: String::new(),
        support_slack_url: String::new(),
    };
    tokio::spawn(notifier::run(common, config, stop.clone()));

    let consent = ConsentAnalyzed {
        call_id: "c-9".into(),
        client_phone: "+79161234567".into(),
        decision: ConsentDecision::Agreed as i32,
        remind_after: "P1M".into(),
        evidence: vec!["да, давайте".into()],
        ..Default::default()
    };
    let failed = SmsFailed {
        phone: "+79161234567".into(),
        reason: "invalid destination".into(),
        ..Default::default()
    };
    store
        .client
        .append(
            "call-exolve-c-9",
            Expected::Any,
            vec![new_event(uuid::Uuid::new_v4(), None, &consent)],
        )
        .await
        .unwrap();
    store
        .client
        .append(
            "sms-s-9",
            Expected::Any,
            vec![new_event(uuid::Uuid::new_v4(), None, &failed)],
        )
        .await
        .unwrap();

    // Telegram: both, after waiting out its 429.
    let chat = eventually("two Telegram messages", PATIENCE, || async {
        let messages = handle.telegram_messages();
        (messages.len() >= 2).then_some(messages)
    })
    .await;
    assert!(
        chat.iter()
            .any(|m| m.text.contains("c-9") && m.text.contains("agreed"))
    );
    // The team's webhook: the consent, signed.
    let (headers, body) = eventually("the team's webhook", PATIENCE, || async {
        received.lock().unwrap().first().cloned()
    })
    .await;
    let mut mac = Hmac::<Sha256>::new_from_slice(b"team-secret").unwrap();
    mac.update(&body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(
        headers
            .get("x-callflow-signature")
            .unwrap()
            .to_str()
            .unwrap(),
        expected
    );
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["type"], "ConsentAnalyzed");
    assert_eq!(json["fields"]["call_id"], "c-9");
    // Slack: once it is back, the failure, with the rule's template.
    let slack = eventually("Slack once it is back", PATIENCE, || async {
        handle.slack_messages().into_iter().next()
    })
    .await;
    assert_eq!(
        slack.text.as_deref(),
        Some("SMS failed for +79161234567: invalid destination")
    );

    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        handle.telegram_messages().len(),
        2,
        "each Telegram message once"
    );
    assert_eq!(handle.slack_messages().len(), 1, "each Slack message once");
    assert_eq!(received.lock().unwrap().len(), 1, "the webhook once");
    stop.cancel();
    let _ = std::fs::remove_file(path);
}
