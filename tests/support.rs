//! The whole system (`callflow up`, with the provider simulator) on a
//! throw-away database and JetStream stream, on a clock the test moves.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use prost::Message as _;
use tokio_util::sync::CancellationToken;

use callflow::{Addresses, System, UpConfig};
use kit::clock::TestClock;
use kit::proto::events::v1::Event;
use kit::proto::eventstore::v1::{Filter, ReadAllRequest, ReadStreamRequest};
use kit::store_client::EventStoreClient;
use kit::testing::{TestBus, TestDb, common};
use provider_sim::SimHandle;

/// A running system.
pub struct Running {
    pub addresses: Addresses,
    pub http: reqwest::Client,
    pub shutdown: CancellationToken,
    pub clock: Arc<TestClock>,
    pub sim: SimHandle,
    pub store: EventStoreClient,
    pub config: UpConfig,
    system: Option<System>,
    pub bus: TestBus,
    pub db: TestDb,
}

pub const EXOLVE_TOKEN: &str = "e2e-exolve-token";
pub const BUSINESS_NUMBER: &str = "+74951234567";
pub const LEADS_TOKEN: &str = "e2e-leads-token";

/// Every service on ephemeral ports, with settings that make the test quick
/// (short polls and backoffs) but otherwise the defaults; the repository's
/// scenarios (the tests play them) and console users (operator /
/// operator-dev-password, viewer / viewer-dev-password).
pub fn config(db: &TestDb, bus: &TestBus) -> UpConfig {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Args {
        #[command(flatten)]
        up: UpConfig,
    }
    let any = "127.0.0.1:0";
    let args = Args::try_parse_from([
        "e2e",
        "--provider-sim-addr",
        any,
        "--event-store-grpc-addr",
        any,
        "--event-store-http-addr",
        any,
        "--call-ingest-http-addr",
        any,
        "--call-ingest-business-numbers",
        BUSINESS_NUMBER,
        "--call-ingest-exolve-token",
        EXOLVE_TOKEN,
        "--reminder-grpc-addr",
        any,
        "--reminder-http-addr",
        any,
        "--reminder-poll",
        "100ms",
        "--transcription-poll-first",
        "200ms",
        "--transcription-poll-max",
        "1s",
        "--sms-http-addr",
        any,
        "--sms-retry-base",
        "200ms",
        "--sms-retry-max",
        "1s",
        "--sms-reconcile-after",
        "1s",
        "--sms-quiet-recheck",
        "200ms",
        "--sms-status-poll",
        "200ms",
        "--exolve-timeout",
        "2s",
        "--notifier-http-addr",
        any,
        "--consent-analyzer-http-addr",
        any,
        "--transcription-http-addr",
        any,
        "--analytics-http-addr",
        any,
        "--call-ingest-leads-token",
        LEADS_TOKEN,
        "--lead-http-addr",
        any,
        "--lead-grpc-addr",
        any,
        "--bitrix-timeout",
        "1s",
        "--router-http-addr",
        any,
        "--router-grpc-addr",
        any,
        "--console-http-addr",
        any,
    ])
    .expect("test configuration parses");
    let mut up = args.up.with_repository_files();
    up.common = common(&db.url, bus);
    up
}

impl Running {
    pub async fn start() -> Self {
        Self::start_at("2026-11-24T08:00:00Z").await
    }

    /// Starts the system with its clock at `now` (RFC 3339).
    pub async fn start_at(now: &str) -> Self {
        Self::start_with(now, |_| {}).await
    }

    /// Starts the system with its clock at `now`, with `change` made to the
    /// test configuration.
    pub async fn start_with(now: &str, change: impl FnOnce(&mut UpConfig)) -> Self {
        kit::telemetry::init_for_tests();
        let db = TestDb::create().await;
        let bus = TestBus::new();
        let mut config = config(&db, &bus);
        change(&mut config);
        let clock = TestClock::new(now.parse().unwrap());
        let shutdown = CancellationToken::new();
        let system = System::start(config.clone(), clock.clone(), shutdown.clone())
            .await
            .expect("system starts");
        let store = EventStoreClient::connect_lazy(
            &format!("http://{}", system.addresses.event_store_grpc),
            "e2e",
        )
        .unwrap()
        .authenticated(&config.common.event_store_token_for("e2e"));
        Self {
            addresses: system.addresses.clone(),
            sim: system.simulator.clone().expect("the simulator runs"),
            http: reqwest::Client::new(),
            shutdown,
            clock,
            store,
            config,
            system: Some(system),
            bus,
            db,
        }
    }

    /// A second replica of every service (its own ports, no simulator of
    /// its own) on the same database, NATS stream, clock and simulator:
    /// scale-out as Kubernetes runs it. Stop it with its token.
    pub async fn replica(&self) -> (System, CancellationToken) {
        let mut config = self.config.clone();
        config.simulator = false;
        let sim = self.sim.base_url().to_owned();
        config.exolve.url = sim.clone();
        config.exolve.key = config.provider_sim.exolve_api_key.clone();
        config.notifier.telegram_url = sim.clone();
        config.notifier.telegram_token = config.provider_sim.telegram_token.clone();
        config.lead_dialer.voximplant_url = sim.clone();
        config.lead_dialer.bitrix_url =
            format!("{sim}/rest/1/{}", config.provider_sim.bitrix_secret);
        let shutdown = CancellationToken::new();
        let system = System::start(config, self.clock.clone(), shutdown.clone())
            .await
            .expect("the replica starts");
        (system, shutdown)
    }

    /// Stops every service and waits for them to drain.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match self.system.take() {
            Some(system) => system.wait().await,
            None => Ok(()),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addresses.call_ingest_http)
    }

    /// Posts an Exolve call-event webhook; returns the status and body.
    pub async fn exolve_webhook(&self, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let response = self
            .http
            .post(self.url("/webhooks/exolve/call-events"))
            .bearer_auth(EXOLVE_TOKEN)
            .json(body)
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.json().await.unwrap_or_default(),
        )
    }

    /// Posts a web lead to call-ingest; returns the status and body.
    pub async fn post_lead(&self, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let response = self
            .http
            .post(self.url("/webhooks/leads"))
            .bearer_auth(LEADS_TOKEN)
            .json(body)
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.json().await.unwrap_or_default(),
        )
    }

    /// Switches transcription on for the business number (at the simulator
    /// and in the log), as an operator would with `transcription enable`.
    pub async fn enable_transcription(&self) {
        let mut exolve = self.config.exolve.clone();
        exolve.url = self.sim.base_url().to_owned();
        exolve.key = self.config.provider_sim.exolve_api_key.clone();
        let number = kit::phone::PhoneNumber::parse(BUSINESS_NUMBER, Default::default()).unwrap();
        transcription::numbers::switch(&exolve.client(), &self.store, &number, true, "e2e")
            .await
            .unwrap();
    }

    pub async fn stream(&self, name: &str) -> Vec<Event> {
        self.store
            .grpc()
            .read_stream(ReadStreamRequest {
                stream: name.into(),
                from_version: 1,
                max_count: 0,
            })
            .await
            .unwrap()
            .into_inner()
            .events
    }

    /// Every event of `event_type` in the log, in order.
    pub async fn all_of(&self, event_type: &str) -> Vec<Event> {
        let filter = Filter {
            types: vec![event_type.into()],
            ..Default::default()
        };
        let mut stream = self
            .store
            .grpc()
            .read_all(ReadAllRequest {
                filter: Some(filter),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mut events = Vec::new();
        while let Some(page) = stream.message().await.unwrap() {
            events.extend(page.events);
        }
        events
    }

    /// Waits for at least `n` events of `event_type`.
    pub async fn wait_for(&self, event_type: &str, n: usize) -> Vec<Event> {
        kit::testing::eventually(
            &format!("{n} × {event_type}"),
            Duration::from_secs(90),
            || async {
                let events = self.all_of(event_type).await;
                (events.len() >= n).then_some(events)
            },
        )
        .await
    }

    /// The next `n` messages published on `subject_filter` (relative to the
    /// test's prefix, for example `call.*`), with their headers.
    pub async fn published(
        &self,
        subject_filter: &str,
        n: usize,
    ) -> Vec<(String, async_nats::HeaderMap, Event)> {
        let bus = self.bus.connect().await;
        let stream = bus.ensure_stream().await.unwrap();
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::Config {
                filter_subject: format!("{}.{subject_filter}", self.bus.prefix),
                ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut messages = consumer.messages().await.unwrap();
        let mut out = Vec::new();
        while out.len() < n {
            let message = tokio::time::timeout(Duration::from_secs(60), messages.next())
                .await
                .expect("events reach JetStream")
                .unwrap()
                .unwrap();
            let event = Event::decode(message.payload.as_ref()).unwrap();
            out.push((
                message.subject.to_string(),
                message.headers.clone().unwrap_or_default(),
                event,
            ));
        }
        out
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
