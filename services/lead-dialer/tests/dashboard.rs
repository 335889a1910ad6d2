//! The partner dashboard against a real event store and Postgres: two days
//! of leads of two partners on two sites (and a second currency) become
//! per-day rows and totals, the manual queue lists who waits (oldest
//! first) until they are confirmed, JSON and gRPC answer alike and name
//! bad fields, a forgotten contact's leads lose their name and number, and
//! neither a rebuild nor applying events again changes a row. An operator
//! marks a waiting lead handled (MarkHandled, over gRPC and HTTP): it is
//! out of the queue when the answer comes, once, and only if it waited.
//!
//! Days are Moscow days (UTC+3): a lead received at 22:30 UTC belongs to
//! the next day.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use event_store::testing::TestStore;
use kit::clock::TestClock;
use kit::events::{Payload, decode, derive_event_id, new_event};
use kit::health::Health;
use kit::projection::Projector;
use kit::proto::events::v1::{
    CallAttemptScheduled, Event, LeadClosed, LeadConfirmed, LeadManuallyHandled,
    LeadNeedsManualProcessing, LeadReceived, LeadRejected,
};
use kit::proto::eventstore::v1::{ForgetContactRequest, ReadAllRequest, ReadStreamRequest};
use kit::proto::leads::v1::lead_dashboard_client::LeadDashboardClient;
use kit::proto::leads::v1::lead_dashboard_server::LeadDashboardServer;
use kit::proto::leads::v1::{
    ManualQueueRequest, MarkHandledRequest, MarkHandledResponse, SummaryRequest, SummaryResponse,
    SummaryRow,
};
use kit::store_client::Expected;
use kit::testing::eventually;

use lead_dialer::MIGRATIONS;
use lead_dialer::api::{Queries, QueryError, routes};
use lead_dialer::dashboard::Dashboard;
use lead_dialer::handled::MarkError;

const PATIENCE: Duration = Duration::from_secs(60);
const ALPHA: &str = "p-alpha";
const BETA: &str = "p-beta";
const SHOP: &str = "shop.example";
const OTHER: &str = "other.example";
/// The test's "now": noon in Moscow on the second day.
const NOW: &str = "2026-03-03T09:00:00Z";

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn lead(n: u128) -> Uuid {
    Uuid::from_u128(0x1ead_0000 + n)
}

fn phone(n: u128) -> String {
    format!("+7916123450{n}")
}

/// A store, the schema, and the dashboard's projector and queries.
struct World {
    store: TestStore,
    pool: deadpool_postgres::Pool,
    dashboard: Arc<Dashboard>,
    clock: Arc<TestClock>,
    queries: Queries,
    shutdown: CancellationToken,
}

impl Drop for World {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn world() -> World {
    let store = TestStore::start(false).await;
    let mut client = kit::db::connect(&store.db.url).await.unwrap();
    kit::db::migrate(&mut client, "lead_dialer", MIGRATIONS)
        .await
        .unwrap();
    let pool = kit::db::pool(&store.db.url, 4).unwrap();
    let zone = TimeZone::get("Europe/Moscow").unwrap();
    let dashboard = Arc::new(Dashboard::new(
        zone.clone(),
        store.common.contact_salt.clone(),
    ));
    let clock = TestClock::new(at(NOW));
    let queries = Queries {
        pool: pool.clone(),
        store: store.client.clone(),
        zone,
        clock: clock.clone(),
    };
    World {
        store,
        pool,
        dashboard,
        clock,
        queries,
        shutdown: CancellationToken::new(),
    }
}

impl World {
    async fn append<P: Payload>(&self, n: u128, occurred: &str, payload: P) {
        self.store
            .client
            .append(
                &format!("lead-{}", lead(n)),
                Expected::Any,
                vec![new_event(Uuid::new_v4(), Some(at(occurred)), &payload)],
            )
            .await
            .unwrap();
    }

    #[allow(clippy::too_many_arguments)]
    async fn receive(
        &self,
        n: u128,
        partner: &str,
        site: &str,
        amount_minor: i64,
        currency: &str,
        occurred: &str,
        callable: bool,
    ) {
        let payload = LeadReceived {
            lead_id: lead(n).to_string(),
            name: format!("Client {n}"),
            phone: if callable { phone(n) } else { String::new() },
            phone_as_sent: phone(n),
            partner_id: partner.into(),
            site: site.into(),
            order_id: format!("order-{n}"),
            amount_minor,
            currency: currency.into(),
            r#ref: format!("ref-{n}"),
            ..Default::default()
        };
        self.append(n, occurred, payload).await;
    }

    async fn manual(&self, n: u128, occurred: &str, reason: &str, calls_stopped: bool) {
        let payload = LeadNeedsManualProcessing {
            lead_id: lead(n).to_string(),
            reason: reason.into(),
            detail: format!("{reason} in words"),
            calls_stopped,
            ..Default::default()
        };
        self.append(n, occurred, payload).await;
    }

    async fn confirm(&self, n: u128, occurred: &str) {
        let payload = LeadConfirmed {
            lead_id: lead(n).to_string(),
            attempt: 1,
            ..Default::default()
        };
        self.append(n, occurred, payload).await;
    }

    /// Two days of leads (days in Moscow):
    ///
    /// | lead | day | partner | site  | amount     | becomes |
    /// |------|-----|---------|-------|------------|---------|
    /// | 1    | 1   | alpha   | shop  | 100000 RUB | confirmed |
    /// | 2    | 1   | alpha   | shop  | 50000 RUB  | rejected |
    /// | 3    | 1   | beta    | other | 70000 RUB  | manual since day 1 10:00Z |
    /// | 8    | 1   | beta    | shop  | 10000 RUB  | received at 23:59 Moscow |
    /// | 4    | 2   | alpha   | other | 30000 RUB  | closed (received 01:30 Moscow) |
    /// | 5    | 2   | beta    | shop  | 20000 RUB  | manual since 08:00Z |
    /// | 6    | 2   | alpha   | shop  | 1500 USD   | manual since 06:45Z, twice |
    /// | 7    | 4   | alpha   | shop  | 999 RUB    | outside the range |
    async fn play_two_days(&self) {
        self.receive(1, ALPHA, SHOP, 100_000, "RUB", "2026-03-02T06:00:00Z", true)
            .await;
        let scheduled = CallAttemptScheduled {
            lead_id: lead(1).to_string(),
            attempt: 1,
            ..Default::default()
        };
        self.append(1, "2026-03-02T06:00:01Z", scheduled).await;
        self.confirm(1, "2026-03-02T06:10:00Z").await;

        self.receive(2, ALPHA, SHOP, 50_000, "RUB", "2026-03-02T07:00:00Z", false)
            .await;
        let rejected = LeadRejected {
            lead_id: lead(2).to_string(),
            reason: "phone_invalid".into(),
            ..Default::default()
        };
        self.append(2, "2026-03-02T07:00:00Z", rejected).await;

        self.receive(3, BETA, OTHER, 70_000, "RUB", "2026-03-02T09:00:00Z", true)
            .await;
        self.manual(3, "2026-03-02T10:00:00Z", "no_call_result", true)
            .await;

        self.receive(8, BETA, SHOP, 10_000, "RUB", "2026-03-02T20:59:00Z", true)
            .await;

        self.receive(4, ALPHA, OTHER, 30_000, "RUB", "2026-03-02T22:30:00Z", true)
            .await;
        let closed = LeadClosed {
            lead_id: lead(4).to_string(),
            reason: "wrong_number".into(),
            attempts: 1,
            ..Default::default()
        };
        self.append(4, "2026-03-03T06:00:00Z", closed).await;

        self.receive(5, BETA, SHOP, 20_000, "RUB", "2026-03-03T06:00:00Z", true)
            .await;
        self.manual(5, "2026-03-03T08:00:00Z", "crm_failed", false)
            .await;

        self.receive(6, ALPHA, SHOP, 1_500, "USD", "2026-03-03T06:30:00Z", true)
            .await;
        self.manual(6, "2026-03-03T06:45:00Z", "crm_failed", false)
            .await;
        self.manual(6, "2026-03-03T07:00:00Z", "not_reached", true)
            .await;

        self.receive(7, ALPHA, SHOP, 999, "RUB", "2026-03-05T09:00:00Z", true)
            .await;
    }

    async fn head(&self) -> u64 {
        self.store
            .client
            .grpc()
            .head(())
            .await
            .unwrap()
            .into_inner()
            .position
    }

    /// Follows the log live until the world is dropped.
    fn follow(&self) {
        tokio::spawn(kit::projection::follow(
            self.pool.clone(),
            self.store.client.clone(),
            self.dashboard.clone(),
            Health::expecting(&["projection"]),
            self.shutdown.clone(),
        ));
    }

    /// Waits until the live projection has applied the whole log.
    async fn caught_up(&self) {
        let head = self.head().await;
        let pool = self.pool.clone();
        let dashboard = self.dashboard.clone();
        eventually("the dashboard to catch up", PATIENCE, || {
            let (pool, dashboard) = (pool.clone(), dashboard.clone());
            async move {
                let client = pool.get().await.ok()?;
                let position = kit::projection::checkpoint(&**client, &*dashboard)
                    .await
                    .ok()?;
                (position >= head).then_some(())
            }
        })
        .await;
    }

    /// Every row of the read model, as JSON text, in lead order.
    async fn rows(&self) -> Vec<String> {
        let client = self.pool.get().await.unwrap();
        client
            .query(
                "SELECT to_jsonb(d)::text FROM lead_dialer.dashboard_leads d ORDER BY lead_id",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    async fn rebuild(&self) -> kit::projection::Rebuilt {
        kit::projection::rebuild(&self.pool, &self.store.client, &*self.dashboard)
            .await
            .unwrap()
    }

    /// Every event the dashboard reads, in log order.
    async fn events(&self) -> Vec<Event> {
        let request = ReadAllRequest {
            after_position: 0,
            to_position: self.head().await,
            filter: Some(self.dashboard.filter()),
            batch_size: 1000,
        };
        let mut pages = self
            .store
            .client
            .grpc()
            .read_all(request)
            .await
            .unwrap()
            .into_inner();
        let mut events = Vec::new();
        while let Some(page) = pages.message().await.unwrap() {
            events.extend(page.events);
        }
        events
    }

    /// The stream of lead `n`.
    async fn stream(&self, n: u128) -> Vec<Event> {
        self.store
            .client
            .grpc()
            .read_stream(ReadStreamRequest {
                stream: format!("lead-{}", lead(n)),
                from_version: 1,
                max_count: 0,
            })
            .await
            .unwrap()
            .into_inner()
            .events
    }

    /// The `LeadManuallyHandled` events of lead `n`.
    async fn handlings(&self, n: u128) -> Vec<(Event, LeadManuallyHandled)> {
        self.stream(n)
            .await
            .into_iter()
            .filter(|e| e.r#type == "LeadManuallyHandled")
            .map(|e| {
                let payload = decode(&e).unwrap();
                (e, payload)
            })
            .collect()
    }

    async fn mark(
        &self,
        n: u128,
        handled_by: &str,
        note: &str,
    ) -> Result<MarkHandledResponse, MarkError> {
        self.queries
            .mark_handled_for(&MarkHandledRequest {
                lead_id: lead(n).to_string(),
                handled_by: handled_by.into(),
                note: note.into(),
            })
            .await
    }

    /// Serves the dashboard over HTTP and gRPC until the world is dropped:
    /// the HTTP base URL (`…/dashboard`) and a gRPC client.
    async fn serve(&self) -> (String, LeadDashboardClient<tonic::transport::Channel>) {
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_addr = http.local_addr().unwrap();
        let app = routes(self.queries.clone());
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            axum::serve(http, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        });
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc_addr = grpc.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(LeadDashboardServer::new(self.queries.clone()))
                .serve_with_incoming_shutdown(
                    TcpListenerStream::new(grpc),
                    self.shutdown.clone().cancelled_owned(),
                ),
        );
        let client = LeadDashboardClient::connect(format!("http://{grpc_addr}"))
            .await
            .unwrap();
        (format!("http://{http_addr}/dashboard"), client)
    }

    async fn summary(&self, from: &str, to: &str, partner: &str, site: &str) -> SummaryResponse {
        self.queries
            .summary_for(&SummaryRequest {
                from_day: from.into(),
                to_day: to.into(),
                partner_id: partner.into(),
                site: site.into(),
            })
            .await
            .unwrap()
    }

    /// The manual queue as (lead number, age in seconds).
    async fn queue(&self, limit: u32, partner: &str, site: &str) -> Vec<(u128, u64)> {
        self.queries
            .manual_queue_for(&ManualQueueRequest {
                limit,
                partner_id: partner.into(),
                site: site.into(),
            })
            .await
            .unwrap()
            .leads
            .iter()
            .map(|l| {
                let id = Uuid::parse_str(&l.lead_id).unwrap().as_u128() - 0x1ead_0000;
                (id, l.age_seconds)
            })
            .collect()
    }
}

/// A row's keys and counts: (day, partner, site, currency, leads, rejected,
/// confirmed, closed, manual, order total, confirmed total).
type Counts = (
    String,
    String,
    String,
    String,
    u64,
    u64,
    u64,
    u64,
    u64,
    i64,
    i64,
);

fn counts(rows: &[SummaryRow]) -> Vec<Counts> {
    rows.iter()
        .map(|r| {
            let expected = if r.leads == 0 {
                0.0
            } else {
                r.confirmed as f64 / r.leads as f64
            };
            assert!(
                (r.conversion - expected).abs() < 1e-12,
                "conversion of {r:?}"
            );
            (
                r.day.clone(),
                r.partner_id.clone(),
                r.site.clone(),
                r.currency.clone(),
                r.leads,
                r.rejected,
                r.confirmed,
                r.closed,
                r.manual,
                r.order_total_minor,
                r.confirmed_total_minor,
            )
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn c(
    day: &str,
    partner: &str,
    site: &str,
    currency: &str,
    leads: u64,
    rejected: u64,
    confirmed: u64,
    closed: u64,
    manual: u64,
    total: i64,
    confirmed_total: i64,
) -> Counts {
    (
        day.into(),
        partner.into(),
        site.into(),
        currency.into(),
        leads,
        rejected,
        confirmed,
        closed,
        manual,
        total,
        confirmed_total,
    )
}

const DAY1: &str = "2026-03-02";
const DAY2: &str = "2026-03-03";

#[tokio::test]
async fn summary_and_manual_queue_follow_the_lead_streams_and_rebuild_to_the_same() {
    let world = world().await;
    world.follow();
    world.play_two_days().await;
    world.caught_up().await;

    let summary = world.summary(DAY1, DAY2, "", "").await;
    assert_eq!(
        counts(&summary.rows),
        vec![
            c(DAY1, ALPHA, SHOP, "RUB", 2, 1, 1, 0, 0, 150_000, 100_000),
            c(DAY1, BETA, OTHER, "RUB", 1, 0, 0, 0, 1, 70_000, 0),
            c(DAY1, BETA, SHOP, "RUB", 1, 0, 0, 0, 0, 10_000, 0),
            c(DAY2, ALPHA, OTHER, "RUB", 1, 0, 0, 1, 0, 30_000, 0),
            c(DAY2, ALPHA, SHOP, "USD", 1, 0, 0, 0, 1, 1_500, 0),
            c(DAY2, BETA, SHOP, "RUB", 1, 0, 0, 0, 1, 20_000, 0),
        ]
    );
    assert_eq!(
        counts(&summary.partners),
        vec![
            c("", ALPHA, "", "RUB", 3, 1, 1, 1, 0, 180_000, 100_000),
            c("", ALPHA, "", "USD", 1, 0, 0, 0, 1, 1_500, 0),
            c("", BETA, "", "RUB", 3, 0, 0, 0, 2, 100_000, 0),
        ]
    );
    assert_eq!(
        counts(&summary.sites),
        vec![
            c("", "", OTHER, "RUB", 2, 0, 0, 1, 1, 100_000, 0),
            c("", "", SHOP, "RUB", 4, 1, 1, 0, 1, 180_000, 100_000),
            c("", "", SHOP, "USD", 1, 0, 0, 0, 1, 1_500, 0),
        ]
    );
    assert!((summary.partners[0].conversion - 1.0 / 3.0).abs() < 1e-12);

    // Filters narrow the rows and the totals alike.
    let alpha_shop = world.summary(DAY1, DAY2, ALPHA, SHOP).await;
    assert_eq!(
        counts(&alpha_shop.rows),
        vec![
            c(DAY1, ALPHA, SHOP, "RUB", 2, 1, 1, 0, 0, 150_000, 100_000),
            c(DAY2, ALPHA, SHOP, "USD", 1, 0, 0, 0, 1, 1_500, 0),
        ]
    );
    assert_eq!(alpha_shop.sites.len(), 2);
    assert!(alpha_shop.partners.iter().all(|r| r.partner_id == ALPHA));

    // Empty days are today in Moscow: at 00:30 there it is already day 2,
    // while UTC is still on day 1.
    world.clock.set(at("2026-03-02T21:30:00Z"));
    let today = world.summary("", "", "", "").await;
    assert_eq!(today.rows.len(), 3);
    assert!(today.rows.iter().all(|r| r.day == DAY2), "{today:?}");
    world.clock.set(at(NOW));
    let later = world.summary(DAY2, "2026-03-05", "", "").await;
    assert_eq!(later.rows.last().unwrap().day, "2026-03-05");

    // The manual queue: oldest first, with how long each has waited (6
    // waits since its first call for a person, 06:45).
    assert_eq!(
        world.queue(0, "", "").await,
        vec![(3, 23 * 3600), (6, 2 * 3600 + 15 * 60), (5, 3600)]
    );
    assert_eq!(world.queue(2, "", "").await, vec![(3, 82_800), (6, 8_100)]);
    assert_eq!(
        world.queue(0, BETA, "").await,
        vec![(3, 82_800), (5, 3_600)]
    );
    assert_eq!(world.queue(0, "", SHOP).await, vec![(6, 8_100), (5, 3_600)]);
    let six = world
        .queries
        .manual_queue_for(&ManualQueueRequest {
            limit: 1,
            partner_id: ALPHA.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .leads
        .remove(0);
    assert_eq!(six.lead_id, lead(6).to_string());
    assert_eq!(
        (six.name.as_str(), six.phone.as_str()),
        ("Client 6", phone(6).as_str())
    );
    assert_eq!(
        (six.site.as_str(), six.order_id.as_str()),
        (SHOP, "order-6")
    );
    assert_eq!((six.amount_minor, six.currency.as_str()), (1_500, "USD"));
    assert_eq!(six.reason, "not_reached", "the newest reason");
    assert_eq!(six.detail, "not_reached in words");
    assert!(six.calls_stopped);
    assert_eq!(
        six.since,
        Some(kit::events::to_proto_time(at("2026-03-03T06:45:00Z")))
    );

    // A person confirms 5: it leaves the queue and counts as confirmed.
    world.confirm(5, "2026-03-03T08:30:00Z").await;
    world.caught_up().await;
    assert_eq!(world.queue(0, "", "").await, vec![(3, 82_800), (6, 8_100)]);
    let beta = world.summary(DAY1, DAY2, BETA, "").await;
    assert_eq!(
        counts(&beta.partners),
        vec![c("", BETA, "", "RUB", 3, 0, 1, 0, 1, 100_000, 20_000)]
    );

    // Rebuilt from the log, the read model is what the live one is.
    let live = world.rows().await;
    assert_eq!(live.len(), 8);
    let rebuilt = world.rebuild().await;
    assert_eq!(rebuilt.position, world.head().await);
    assert_eq!(world.rows().await, live);
}

/// A projection records where it stands even when the log brings it
/// nothing to apply (it does so lazily, not once per commit): a log that
/// ends with other services' events still finds it caught up.
#[tokio::test]
async fn the_checkpoint_reaches_the_head_past_events_the_projection_does_not_read() {
    let world = world().await;
    world.follow();
    world.play_two_days().await;
    world.caught_up().await;
    let before = world.rows().await;
    for n in 0..20 {
        world
            .store
            .client
            .append(
                &format!("call-exolve-other-{n}"),
                Expected::Any,
                vec![event_store::testing::call_event(&format!("other-{n}"))],
            )
            .await
            .unwrap();
    }
    world.caught_up().await;
    assert_eq!(world.rows().await, before);
}

#[tokio::test]
async fn applying_events_again_changes_nothing() {
    let world = world().await;
    world.play_two_days().await;
    world.confirm(5, "2026-03-03T08:30:00Z").await;
    let handled = LeadManuallyHandled {
        lead_id: lead(6).to_string(),
        handled_by: "anna".into(),
        note: "called the client".into(),
        ..Default::default()
    };
    world.append(6, "2026-03-03T08:45:00Z", handled).await;
    world.rebuild().await;
    let once = world.rows().await;
    assert_eq!(once.len(), 8);

    // Every event again, twice, in log order: what a redelivery or a
    // projector racing a rebuild does. The manual call for 5 comes again
    // after its confirmation and must not put it back in the queue.
    let events = world.events().await;
    let mut client = world.pool.get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    for event in &events {
        world.dashboard.apply(&tx, event).await.unwrap();
        world.dashboard.apply(&tx, event).await.unwrap();
    }
    // And backwards: older events never undo newer ones (6's need does
    // not bring it back after its handling).
    for event in events.iter().rev() {
        world.dashboard.apply(&tx, event).await.unwrap();
    }
    tx.commit().await.unwrap();
    drop(client);
    assert_eq!(world.rows().await, once);
    assert_eq!(world.queue(0, "", "").await, vec![(3, 82_800)]);
}

#[tokio::test]
async fn forgetting_a_contact_blanks_their_leads() {
    let world = world().await;
    world.follow();
    world.play_two_days().await;
    world.caught_up().await;

    // The store forgets 3's number and records ContactForgotten naming the
    // contact stream services derive from it.
    let contact = kit::phone::PhoneNumber::parse(&phone(3), Default::default()).unwrap();
    world
        .store
        .client
        .grpc()
        .forget_contact(ForgetContactRequest {
            phone: phone(3),
            requested_by: "dpo".into(),
            reason: "request 12".into(),
            contact_stream: kit::contacts::contact_stream(
                &world.store.common.contact_salt,
                &contact,
            ),
        })
        .await
        .unwrap();
    world.caught_up().await;

    let queue = world
        .queries
        .manual_queue_for(&ManualQueueRequest::default())
        .await
        .unwrap()
        .leads;
    let three = queue
        .iter()
        .find(|l| l.lead_id == lead(3).to_string())
        .unwrap();
    assert_eq!(three.name, kit::contacts::FORGOTTEN);
    assert_eq!(three.phone, kit::contacts::FORGOTTEN);
    assert_eq!(three.order_id, "order-3", "not personal: kept");
    let six = queue
        .iter()
        .find(|l| l.lead_id == lead(6).to_string())
        .unwrap();
    assert_eq!(six.name, "Client 6", "other clients are untouched");

    // The rebuild reads the number redacted and ends up the same.
    let live = world.rows().await;
    assert!(!live.iter().any(|row| row.contains(&phone(3))));
    world.rebuild().await;
    assert_eq!(world.rows().await, live);
}

async fn get(url: &str) -> (u16, Value) {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn json_and_grpc_give_the_same_answers_and_name_bad_fields() {
    let world = world().await;
    world.play_two_days().await;
    world.rebuild().await;
    let (base, mut client) = world.serve().await;

    // Summary: the protobuf fields, numbers as numbers.
    let (status, json) = get(&format!(
        "{base}/summary?from_day={DAY1}&to_day={DAY2}&partner_id={BETA}"
    ))
    .await;
    assert_eq!(status, 200, "{json}");
    let by_grpc = client
        .summary(SummaryRequest {
            from_day: DAY1.into(),
            to_day: DAY2.into(),
            partner_id: BETA.into(),
            site: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(json["rows"].as_array().unwrap().len(), by_grpc.rows.len());
    assert_eq!(json["rows"][0]["day"], DAY1);
    assert_eq!(json["rows"][0]["partner_id"], BETA);
    assert_eq!(json["rows"][0]["site"], OTHER);
    assert_eq!(json["rows"][0]["leads"], 1);
    assert_eq!(json["rows"][0]["manual"], 1);
    assert_eq!(json["rows"][0]["conversion"], 0.0);
    assert_eq!(json["rows"][0]["order_total_minor"], 70_000);
    assert_eq!(json["partners"][0]["leads"], 3);
    assert_eq!(json["partners"][0]["day"], "", "every field is present");
    assert_eq!(json["sites"].as_array().unwrap().len(), by_grpc.sites.len());

    // Manual queue.
    let (status, json) = get(&format!("{base}/manual-queue?limit=2")).await;
    assert_eq!(status, 200, "{json}");
    let leads = json["leads"].as_array().unwrap();
    assert_eq!(leads.len(), 2);
    assert_eq!(leads[0]["lead_id"], lead(3).to_string());
    assert_eq!(leads[0]["age_seconds"], 82_800);
    assert_eq!(leads[0]["since"], "2026-03-02T10:00:00Z");
    assert_eq!(leads[0]["reason"], "no_call_result");
    assert_eq!(leads[0]["calls_stopped"], true);
    assert_eq!(leads[1]["lead_id"], lead(6).to_string());
    let (_, json) = get(&format!("{base}/manual-queue?site={SHOP}&limit=")).await;
    assert_eq!(json["leads"].as_array().unwrap().len(), 2);

    // Bad input: 400 naming the field, over HTTP.
    for (query, field) in [
        ("summary?from_day=2026-3-2", "from_day"),
        ("summary?to_day=tomorrow", "to_day"),
        ("summary?from_day=2026-03-03&to_day=2026-03-02", "from_day"),
        ("summary?from_day=2025-01-01&to_day=2026-03-03", "to_day"),
        ("summary?partner=p-alpha", "partner"),
        ("summary?site=a&site=b", "site"),
        ("manual-queue?limit=1001", "limit"),
        ("manual-queue?limit=-1", "limit"),
        ("manual-queue?limit=many", "limit"),
    ] {
        let (status, json) = get(&format!("{base}/{query}")).await;
        assert_eq!(status, 400, "{query}: {json}");
        assert_eq!(json["error"]["field"], field, "{query}: {json}");
        let error = json["error"]["message"].as_str().unwrap();
        assert!(error.starts_with(&format!("{field}: ")), "{query}: {error}");
    }

    // And INVALID_ARGUMENT naming it over gRPC.
    let status = client
        .summary(SummaryRequest {
            from_day: DAY2.into(),
            to_day: DAY1.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().starts_with("from_day: "), "{status:?}");
    let status = client
        .summary(SummaryRequest {
            from_day: "2026-03-02T00:00:00Z".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().starts_with("from_day: "), "{status:?}");
    let status = client
        .manual_queue(ManualQueueRequest {
            limit: 5000,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().starts_with("limit: "), "{status:?}");
    let queue = client
        .manual_queue(ManualQueueRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(queue.leads.len(), 3);
}

#[tokio::test]
async fn an_unreachable_database_is_unavailable() {
    // A pool pointing at a port where no Postgres listens.
    let queries = Queries {
        pool: kit::db::pool("postgres://postgres@127.0.0.1:1/none", 1).unwrap(),
        store: kit::store_client::EventStoreClient::connect_lazy("http://127.0.0.1:1", "test")
            .unwrap(),
        zone: TimeZone::get("Europe/Moscow").unwrap(),
        clock: TestClock::new(at(NOW)),
    };
    let error = queries
        .summary_for(&SummaryRequest::default())
        .await
        .unwrap_err();
    assert!(matches!(error, QueryError::Unavailable(_)), "{error:?}");
    let status = tonic::Status::from(error);
    assert_eq!(status.code(), tonic::Code::Unavailable);
}

fn not_queued(result: Result<MarkHandledResponse, MarkError>) -> String {
    match result {
        Err(MarkError::NotQueued(message)) => message,
        other => panic!("not FAILED_PRECONDITION: {other:?}"),
    }
}

#[tokio::test]
async fn an_operator_marks_a_waiting_lead_handled_once() {
    let world = world().await;
    world.follow();
    world.play_two_days().await;
    world.caught_up().await;
    assert_eq!(
        world.queue(0, "", "").await,
        vec![(3, 82_800), (6, 8_100), (5, 3_600)]
    );

    // 3 waits since its call gave no result; anna called the client.
    let note = "called the client, they will order again";
    let answer = world.mark(3, " anna ", note).await.unwrap();
    assert_eq!(answer.lead_id, lead(3).to_string());
    assert_eq!(
        (answer.handled_by.as_str(), answer.note.as_str()),
        ("anna", note)
    );
    assert_eq!(answer.reason, "no_call_result");
    assert_eq!(answer.detail, "no_call_result in words");
    assert_eq!(answer.handled_at, Some(kit::events::to_proto_time(at(NOW))));
    assert!(!answer.repeated);
    // The answer came once the dashboard shows it: the very next read.
    assert_eq!(world.queue(0, "", "").await, vec![(6, 8_100), (5, 3_600)]);
    let beta = world.summary(DAY1, DAY1, BETA, OTHER).await;
    assert_eq!(beta.rows[0].manual, 0, "{beta:?}");

    // On the lead's stream: one event naming the operator, derived from
    // the need it answers.
    let need = world
        .stream(3)
        .await
        .into_iter()
        .find(|e| e.r#type == "LeadNeedsManualProcessing")
        .unwrap();
    let handlings = world.handlings(3).await;
    assert_eq!(handlings.len(), 1);
    let (event, payload) = &handlings[0];
    assert_eq!(
        event.event_id,
        derive_event_id(&need.event_id, lead_dialer::handled::EVENT_KIND).to_string()
    );
    assert_eq!(answer.event_id, event.event_id);
    assert_eq!(event.causation_id, need.event_id);
    assert_eq!(payload.lead_id, lead(3).to_string());
    assert_eq!(
        (payload.handled_by.as_str(), payload.note.as_str()),
        ("anna", note)
    );
    assert_eq!(payload.reason, "no_call_result");

    // The same request again: the same answer, nothing appended.
    let head = world.head().await;
    let again = world.mark(3, "anna", note).await.unwrap();
    assert!(again.repeated);
    assert_eq!(
        (&again.event_id, &again.handled_at, &again.note),
        (&answer.event_id, &answer.handled_at, &answer.note)
    );
    // Someone else, or another note: it is not in the queue any more.
    let other = not_queued(world.mark(3, "boris", note).await);
    assert!(other.contains("anna already marked it handled"), "{other}");
    let other = not_queued(world.mark(3, "anna", "another note").await);
    assert!(other.contains("another note"), "{other}");
    // A lead nobody knows, one that never waited, one confirmed since.
    assert!(matches!(
        world.mark(99, "anna", "").await,
        Err(MarkError::NotFound(_))
    ));
    assert!(world.stream(99).await.is_empty());
    let never = not_queued(world.mark(8, "anna", "").await);
    assert!(never.contains("never needed a person"), "{never}");
    world.confirm(5, "2026-03-03T08:30:00Z").await;
    let head_after_confirm = world.head().await;
    assert!(head_after_confirm > head);
    let confirmed = not_queued(world.mark(5, "anna", "").await);
    assert!(confirmed.contains("confirmed"), "{confirmed}");
    // Bad input names its field and appends nothing.
    for (request, field) in [
        (("not-a-uuid", "anna", ""), "lead_id"),
        (("", "anna", ""), "lead_id"),
        ((&*lead(6).to_string(), " ", ""), "handled_by"),
        ((&*lead(6).to_string(), &*"x".repeat(101), ""), "handled_by"),
        ((&*lead(6).to_string(), "anna", &*"x".repeat(1001)), "note"),
    ] {
        let (lead_id, handled_by, note) = request;
        let error = world
            .queries
            .mark_handled_for(&MarkHandledRequest {
                lead_id: lead_id.into(),
                handled_by: handled_by.into(),
                note: note.into(),
            })
            .await
            .unwrap_err();
        match &error {
            MarkError::Invalid { field: named, .. } => assert_eq!(named, field),
            other => panic!("{request:?}: not INVALID_ARGUMENT: {other:?}"),
        }
        assert!(
            error.to_string().starts_with(&format!("{field}: ")),
            "{error}"
        );
    }
    assert_eq!(world.head().await, head_after_confirm, "nothing appended");
    assert_eq!(world.handlings(6).await.len(), 0);

    // A later need puts 3 back in the queue, to be handled again.
    world
        .manual(3, "2026-03-03T08:50:00Z", "crm_failed", false)
        .await;
    world.caught_up().await;
    assert_eq!(world.queue(0, "", "").await, vec![(6, 8_100), (3, 600)]);
    let second = world.mark(3, "boris", "").await.unwrap();
    assert!(!second.repeated);
    assert_ne!(second.event_id, answer.event_id);
    assert_eq!(second.reason, "crm_failed");
    assert_eq!(world.queue(0, "", "").await, vec![(6, 8_100)]);
    assert_eq!(world.handlings(3).await.len(), 2);

    // Rebuilt from the log, the read model is what the live one is, with
    // the newest handling kept.
    let live = world.rows().await;
    let three = live
        .iter()
        .find(|row| row.contains(&lead(3).to_string()))
        .unwrap();
    assert!(three.contains(r#""handled_by": "boris""#), "{three}");
    world.rebuild().await;
    assert_eq!(world.rows().await, live);
}

#[tokio::test]
async fn two_operators_at_once_handle_a_lead_once() {
    let world = world().await;
    world.follow();
    world.play_two_days().await;
    world.caught_up().await;
    let (anna, boris) = tokio::join!(world.mark(6, "anna", ""), world.mark(6, "boris", ""));
    let (winner, loser) = match (anna, boris) {
        (Ok(won), lost) => (won, lost),
        (lost, Ok(won)) => (won, lost),
        both => panic!("nobody marked it: {both:?}"),
    };
    let message = not_queued(loser);
    assert!(
        message.contains(&format!("{} already marked it handled", winner.handled_by)),
        "{message}"
    );
    let handlings = world.handlings(6).await;
    assert_eq!(handlings.len(), 1);
    assert_eq!(handlings[0].1.handled_by, winner.handled_by);
    assert_eq!(world.queue(0, "", "").await, vec![(3, 82_800), (5, 3_600)]);
}

async fn post(url: &str, body: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn marking_handled_over_http_and_grpc() {
    let world = world().await;
    world.follow();
    world.play_two_days().await;
    world.caught_up().await;
    let (base, mut client) = world.serve().await;
    let handled = |n: u128| format!("{base}/manual-queue/{}/handled", lead(n));

    // 5 went to a person when the CRM failed; anna created it by hand.
    let body = r#"{"handled_by": "anna", "note": "created in Bitrix24 by hand"}"#;
    let (status, json) = post(&handled(5), body).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["lead_id"], lead(5).to_string());
    assert_eq!(json["handled_by"], "anna");
    assert_eq!(json["note"], "created in Bitrix24 by hand");
    assert_eq!(json["handled_at"], "2026-03-03T09:00:00Z");
    assert_eq!(json["reason"], "crm_failed");
    assert_eq!(json["repeated"], false);
    let (_, queue) = get(&format!("{base}/manual-queue")).await;
    let waiting: Vec<&str> = queue["leads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["lead_id"].as_str().unwrap())
        .collect();
    assert_eq!(waiting, vec![lead(3).to_string(), lead(6).to_string()]);
    let (status, again) = post(&handled(5), body).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["repeated"], true);
    assert_eq!(again["event_id"], json["event_id"]);

    // Errors, in the JSON shape of callflow's other endpoints.
    let head = world.head().await;
    let (status, json) = post(&handled(5), r#"{"handled_by": "boris"}"#).await;
    assert_eq!(status, 409, "{json}");
    assert_eq!(json["error"]["code"], "not_in_manual_queue");
    let (status, json) = post(&handled(99), r#"{"handled_by": "anna"}"#).await;
    assert_eq!(status, 404, "{json}");
    assert_eq!(json["error"]["code"], "unknown_lead");
    let too_long = format!(
        r#"{{"handled_by": "anna", "note": "{}"}}"#,
        "x".repeat(1001)
    );
    for (url, body, field) in [
        (
            format!("{base}/manual-queue/nope/handled"),
            r#"{"handled_by": "anna"}"#,
            "lead_id",
        ),
        (handled(6), r#"{"note": "no name"}"#, "handled_by"),
        (handled(6), r#"{"handled_by": 7}"#, "handled_by"),
        (
            handled(6),
            r#"{"handled_by": "anna", "notes": "x"}"#,
            "notes",
        ),
        (handled(6), too_long.as_str(), "note"),
    ] {
        let (status, json) = post(&url, body).await;
        assert_eq!(status, 422, "{body}: {json}");
        assert_eq!(json["error"]["code"], "invalid_field", "{json}");
        assert_eq!(json["error"]["field"], field, "{body}: {json}");
        let message = json["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(&format!("{field}: ")), "{message}");
    }
    for body in ["", "handled_by=anna", r#"["anna"]"#] {
        let (status, json) = post(&handled(6), body).await;
        assert_eq!(status, 400, "{body}: {json}");
        assert_eq!(json["error"]["code"], "malformed_body", "{json}");
    }
    assert_eq!(world.head().await, head, "nothing appended");

    // gRPC: the same, with its status codes.
    let answer = client
        .mark_handled(MarkHandledRequest {
            lead_id: lead(6).to_string(),
            handled_by: "boris".into(),
            note: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.reason, "not_reached");
    let queue = client
        .manual_queue(ManualQueueRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(queue.leads.len(), 1);
    assert_eq!(queue.leads[0].lead_id, lead(3).to_string());
    for (n, handled_by, code) in [
        (99, "anna", tonic::Code::NotFound),
        (8, "anna", tonic::Code::FailedPrecondition),
        (6, "anna", tonic::Code::FailedPrecondition),
        (3, "", tonic::Code::InvalidArgument),
    ] {
        let status = client
            .mark_handled(MarkHandledRequest {
                lead_id: lead(n).to_string(),
                handled_by: handled_by.into(),
                note: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), code, "{n}: {status:?}");
    }
    let status = client
        .mark_handled(MarkHandledRequest {
            lead_id: "3".into(),
            handled_by: "anna".into(),
            note: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().starts_with("lead_id: "), "{status:?}");
    assert_eq!(world.handlings(3).await.len(), 0);
}
