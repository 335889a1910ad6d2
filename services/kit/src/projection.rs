//! Read models built from the log: a [`Projector`] owns tables in its
//! service's schema that hold nothing but what its events say, so they can
//! be followed live ([`follow`]) and rebuilt from scratch ([`rebuild`]).
//!
//! Each schema keeps its place in the log in `<schema>.projection_checkpoint`
//! (`name text PRIMARY KEY, position bigint`), written in the same
//! transaction as the rows a batch changed, so a crash never loses or
//! double-counts a batch. Events reach a projector in their newest shape
//! (see [`crate::upcast`]) and with personal fields as the event store
//! shows them (redacted once a contact is forgotten).

use std::future::Future;
use std::time::Duration;

use deadpool_postgres::Transaction;
use futures::StreamExt;
use tokio_postgres::GenericClient;
use tokio_util::sync::CancellationToken;

use crate::health::Health;
use crate::proto::events::v1::Event;
use crate::proto::eventstore::v1::{Filter, ReadAllRequest, SubscribeRequest};
use crate::store_client::EventStoreClient;

/// Why an event could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The database failed: the batch is rolled back and read again.
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
    /// The event itself is unusable (undecodable, missing an id): it is
    /// logged and passed over, so that one bad event cannot stop a read model.
    #[error("{0}")]
    Unusable(String),
}

impl From<crate::events::EventError> for ApplyError {
    fn from(error: crate::events::EventError) -> Self {
        Self::Unusable(error.to_string())
    }
}

/// A read model fed by the log.
pub trait Projector: Send + Sync + 'static {
    /// The Postgres schema it lives in (holds `projection_checkpoint`).
    fn schema(&self) -> &'static str;
    /// Its name in `projection_checkpoint` (and in health and logs).
    fn name(&self) -> &'static str;
    /// The events it reads.
    fn filter(&self) -> Filter;
    /// The tables a rebuild empties: every table whose rows come only from
    /// applying events.
    fn tables(&self) -> &'static [&'static str];
    /// Applies one event; must be idempotent, since an event can be applied
    /// again after a crash or alongside a rebuild. `tx` caches prepared
    /// statements (`prepare_cached`): a projection runs the same few
    /// statements thousands of times.
    fn apply(
        &self,
        tx: &Transaction<'_>,
        event: &Event,
    ) -> impl Future<Output = Result<(), ApplyError>> + Send;
}

/// What [`rebuild`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rebuilt {
    /// Events read from the log and applied.
    pub events: u64,
    /// The log position the rebuilt state reflects.
    pub position: u64,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How often a projection records its place when the log brings it nothing
/// to apply.
const IDLE_CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Where `projector` stands in the log.
pub async fn checkpoint<P: Projector>(
    db: &impl GenericClient,
    projector: &P,
) -> Result<u64, tokio_postgres::Error> {
    checkpoint_of(db, projector.schema(), projector.name()).await
}

/// Where the projection `name` of `schema` stands in the log.
async fn checkpoint_of(
    db: &impl GenericClient,
    schema: &str,
    name: &str,
) -> Result<u64, tokio_postgres::Error> {
    let row = db
        .query_opt(
            &format!("SELECT position FROM {schema}.projection_checkpoint WHERE name = $1"),
            &[&name],
        )
        .await?;
    Ok(row.map_or(0, |r| r.get::<_, i64>(0) as u64))
}

/// Waits until the projection `name` of `schema` has applied the log up to
/// `position`, at most `within`; whether it did. An API that wrote through
/// the log answers after this, so the next read shows the write.
pub async fn settle(
    pool: &deadpool_postgres::Pool,
    schema: &str,
    name: &str,
    position: u64,
    within: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Ok(client) = pool.get().await
            && let Ok(at) = checkpoint_of(&**client, schema, name).await
            && at >= position
        {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn save_checkpoint<P: Projector>(
    tx: &deadpool_postgres::Transaction<'_>,
    projector: &P,
    position: u64,
) -> Result<(), tokio_postgres::Error> {
    let save = tx
        .prepare_cached(&format!(
            "INSERT INTO {schema}.projection_checkpoint (name, position) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET position = greatest(projection_checkpoint.position, excluded.position)",
            schema = projector.schema()
        ))
        .await?;
    tx.execute(&save, &[&projector.name(), &(position as i64)])
        .await?;
    Ok(())
}

async fn apply_all<P: Projector>(
    tx: &Transaction<'_>,
    projector: &P,
    events: Vec<Event>,
) -> Result<(), tokio_postgres::Error> {
    let upcasters = crate::upcast::registry();
    for event in events {
        let event = upcasters.upcast(event);
        match projector.apply(tx, &event).await {
            Ok(()) => {}
            Err(ApplyError::Postgres(error)) => return Err(error),
            Err(ApplyError::Unusable(reason)) => {
                tracing::error!(projection = projector.name(), event_id = %event.event_id,
                                position = event.position, %reason, "event passed over")
            }
        }
    }
    Ok(())
}

/// Follows the log from the checkpoint until `shutdown`, applying events in
/// batches; each batch commits with its checkpoint. Health check
/// `projection` is up once caught up.
pub async fn follow<P: Projector>(
    pool: deadpool_postgres::Pool,
    store: EventStoreClient,
    projector: std::sync::Arc<P>,
    health: Health,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(200);
    while !shutdown.is_cancelled() {
        match follow_once(&pool, &store, &*projector, &health, &shutdown).await {
            Ok(()) => return,
            Err(error) => {
                health.set("projection", false);
                tracing::warn!(projection = projector.name(), error = ?error, "projection interrupted; resuming");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn follow_once<P: Projector>(
    pool: &deadpool_postgres::Pool,
    store: &EventStoreClient,
    projector: &P,
    health: &Health,
    shutdown: &CancellationToken,
) -> Result<(), BoxError> {
    let after = checkpoint(&**pool.get().await?, projector).await?;
    let request = SubscribeRequest {
        after_position: after,
        filter: Some(projector.filter()),
        batch_size: 500,
    };
    let mut stream = store.grpc().subscribe(request).await?.into_inner();
    // Most commits hold nothing for a given projection, and the store tells
    // each one so; recording every such checkpoint would cost a transaction
    // per commit per projection. A checkpoint with nothing applied waits
    // (at most IDLE_CHECKPOINT_EVERY) to be recorded with a later batch;
    // meanwhile a restart would only look at those positions again.
    let mut unsaved: Option<u64> = None;
    let mut saved = tokio::time::Instant::now();
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            message = stream.next() => message,
            _ = tokio::time::sleep_until(saved + IDLE_CHECKPOINT_EVERY), if unsaved.is_some() => {
                let mut client = pool.get().await?;
                let tx = client.transaction().await?;
                save_checkpoint(&tx, projector, unsaved.take().expect("unsaved")).await?;
                tx.commit().await?;
                saved = tokio::time::Instant::now();
                continue;
            }
        };
        let Some(message) = message else {
            return Err("subscription ended".into());
        };
        let message = message?;
        if message.events.is_empty()
            && !message.caught_up
            && saved.elapsed() < IDLE_CHECKPOINT_EVERY
        {
            unsaved = Some(message.checkpoint);
            continue;
        }
        let mut client = pool.get().await?;
        let tx = client.transaction().await?;
        apply_all(&tx, projector, message.events).await?;
        save_checkpoint(&tx, projector, message.checkpoint).await?;
        tx.commit().await?;
        unsaved = None;
        saved = tokio::time::Instant::now();
        if message.caught_up {
            health.set("projection", true);
        }
    }
}

/// Empties the projector's tables and replays the log up to its current
/// head, in one transaction: readers see the old state until the new one
/// commits, never a half-built one. A live service may keep running: its
/// writes to these tables wait for the rebuild, and because the head is read
/// only once the tables are locked, the live projector's checkpoint is never
/// ahead of the rebuilt state; it then re-applies (idempotently) whatever it
/// had in hand and goes on.
pub async fn rebuild<P: Projector>(
    pool: &deadpool_postgres::Pool,
    store: &EventStoreClient,
    projector: &P,
) -> Result<Rebuilt, BoxError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let mut tables: Vec<String> = projector
        .tables()
        .iter()
        .map(|t| format!("{}.{t}", projector.schema()))
        .collect();
    tables.push(format!("{}.projection_checkpoint", projector.schema()));
    // TRUNCATE takes the tables' exclusive locks before the head is read.
    tx.batch_execute(&format!("TRUNCATE {}", tables.join(", ")))
        .await?;
    let head = store.grpc().head(()).await?.into_inner().position;
    let mut events = 0;
    if head > 0 {
        let request = ReadAllRequest {
            after_position: 0,
            to_position: head,
            filter: Some(projector.filter()),
            batch_size: 2000,
        };
        let mut pages = store.grpc().read_all(request).await?.into_inner();
        while let Some(page) = pages.message().await? {
            events += page.events.len() as u64;
            apply_all(&tx, projector, page.events).await?;
        }
    }
    save_checkpoint(&tx, projector, head).await?;
    tx.commit().await?;
    Ok(Rebuilt {
        events,
        position: head,
    })
}
