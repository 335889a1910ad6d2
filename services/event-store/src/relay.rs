//! The relay: publishes every event of the log to JetStream, in log order,
//! exactly once per event id.
//!
//! - Only one relay publishes at a time: it holds a session-level advisory
//!   lock on its own Postgres connection. The others wait as standbys and
//!   take over when that connection (the leader's process) dies.
//! - Each event is published on `<prefix>.<category>.<type>` with
//!   `Nats-Msg-Id = event_id` and `Nats-Expected-Last-Sequence`, so the
//!   stream refuses anything out of order and drops re-publications inside
//!   its duplicate window.
//! - The checkpoint (last acknowledged position) is kept in Postgres. On start
//!   and after every failure the relay resumes after the larger of the
//!   checkpoint and the position of the stream's last message (its
//!   `Callflow-Position` header), so a crash between publish and checkpoint
//!   does not publish anything twice, whatever the duplicate window.

use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::Stream;
use prost::Message as _;
use tokio::sync::watch;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use kit::bus::Bus;
use kit::health::Health;
use kit::proto::events::v1::Event;

use crate::read::{Criteria, Reader};
use crate::schema::RELAY_LOCK_KEY;

/// Header carrying an event's global position.
pub const POSITION_HEADER: &str = "Callflow-Position";

const SAVE_CHECKPOINT: &str =
    "INSERT INTO eventlog.relay_checkpoint (name, position) VALUES ($1, $2)
     ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = now()
     WHERE relay_checkpoint.position < excluded.position";

/// Relay settings.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Checkpoint name (one per target stream).
    pub name: String,
    /// Events published per round (acks are awaited per round).
    pub batch: u32,
}

/// Runs the relay until `shutdown`: waits for leadership, then publishes.
pub async fn run(
    database_url: String,
    config: RelayConfig,
    bus: Bus,
    reader: Reader,
    mut wake: watch::Receiver<u64>,
    health: Health,
    shutdown: CancellationToken,
) {
    health.set("relay", false);
    let mut backoff = Duration::from_millis(200);
    while !shutdown.is_cancelled() {
        let lease = match kit::db::connect(&database_url).await {
            Ok(client) => client,
            Err(error) => {
                tracing::warn!(%error, "relay cannot reach Postgres");
                health.set("relay", false);
                sleep_or_stop(&shutdown, backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(200);
        if !try_lead(&lease).await {
            // Standby: healthy, just not publishing.
            health.set("relay", true);
            sleep_or_stop(&shutdown, Duration::from_secs(1)).await;
            continue;
        }
        let Ok(save) = lease.prepare(SAVE_CHECKPOINT).await else {
            sleep_or_stop(&shutdown, backoff).await;
            continue;
        };
        tracing::info!(relay = %config.name, "relay is the leader");
        let mut leader = Leader {
            config: &config,
            bus: &bus,
            reader: &reader,
            lease: &lease,
            save,
            health: &health,
        };
        leader.publish_until_lost(&mut wake, &shutdown).await;
        health.set("relay", false);
    }
}

async fn try_lead(lease: &Client) -> bool {
    match lease
        .query_one("SELECT pg_try_advisory_lock($1)", &[&RELAY_LOCK_KEY])
        .await
    {
        Ok(row) => row.get(0),
        Err(_) => false,
    }
}

async fn sleep_or_stop(shutdown: &CancellationToken, delay: Duration) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(delay) => {}
    }
}

/// How often a busy relay records its checkpoint.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

struct Leader<'a> {
    config: &'a RelayConfig,
    bus: &'a Bus,
    reader: &'a Reader,
    lease: &'a Client,
    /// [`SAVE_CHECKPOINT`], prepared on the lease.
    save: tokio_postgres::Statement,
    health: &'a Health,
}

/// Where the relay stands: the last position published and the stream
/// sequence of that message.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    position: u64,
    sequence: u64,
}

impl Leader<'_> {
    /// Publishes until shutdown or until the lease connection is lost.
    async fn publish_until_lost(
        &mut self,
        wake: &mut watch::Receiver<u64>,
        shutdown: &CancellationToken,
    ) {
        let mut backoff = Duration::from_millis(200);
        let mut cursor: Option<(Stream, Cursor)> = None;
        // The page after the cursor, when the last round read it already.
        let mut prefetched: Vec<Event> = Vec::new();
        // The checkpoint is recorded at most every CHECKPOINT_EVERY (a
        // statement per round cost as much as the round's read), and once
        // more when the relay has caught up. It only speeds up a resume,
        // which goes on from the stream's last message when that is further.
        let mut recorded = (0, tokio::time::Instant::now());
        while !shutdown.is_cancelled() && !self.lease.is_closed() {
            let (stream, at) = match cursor.take() {
                Some(current) => current,
                None => match self.resume().await {
                    Ok(resumed) => resumed,
                    Err(reason) => {
                        tracing::warn!(%reason, "relay cannot resume; retrying");
                        self.health.set("relay", false);
                        sleep_or_stop(shutdown, backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                },
            };
            // Look at the head before reading, so a commit that lands
            // after the read still wakes us.
            wake.borrow_and_update();
            let round = match std::mem::take(&mut prefetched) {
                page if !page.is_empty() => self.publish_round(at, page).await,
                _ => match self.read_page(at.position).await {
                    Ok(page) => self.publish_round(at, page).await,
                    Err(reason) => Err(reason),
                },
            };
            match round {
                Ok((next, following)) => {
                    self.health.set("relay", true);
                    backoff = Duration::from_millis(200);
                    let idle = next.position == at.position;
                    let due = recorded.1 + CHECKPOINT_EVERY;
                    if next.position > recorded.0 && tokio::time::Instant::now() >= due {
                        if let Err(reason) = self.save_checkpoint(next.position).await {
                            tracing::warn!(%reason, "relay checkpoint not recorded; resyncing");
                            self.health.set("relay", false);
                            sleep_or_stop(shutdown, backoff).await;
                            continue;
                        }
                        recorded = (next.position, tokio::time::Instant::now());
                    }
                    cursor = Some((stream, next));
                    prefetched = following;
                    if idle {
                        // Caught up: record the checkpoint once it is due,
                        // unless new events come first.
                        let unsaved = next.position > recorded.0;
                        tokio::select! {
                            _ = shutdown.cancelled() => {}
                            _ = wake.changed() => {}
                            _ = tokio::time::sleep_until(due), if unsaved => {
                                if self.save_checkpoint(next.position).await.is_ok() {
                                    recorded = (next.position, tokio::time::Instant::now());
                                }
                            }
                        }
                    }
                }
                Err(reason) => {
                    tracing::warn!(%reason, position = at.position, "relay round failed; resyncing");
                    self.health.set("relay", false);
                    sleep_or_stop(shutdown, backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Finds where to resume: after the checkpoint or after the stream's last
    /// message, whichever is further.
    async fn resume(&self) -> Result<(Stream, Cursor), String> {
        let stream = self.bus.ensure_stream().await.map_err(|e| e.to_string())?;
        let checkpoint = self
            .lease
            .query_opt(
                "SELECT position FROM eventlog.relay_checkpoint WHERE name = $1",
                &[&self.config.name],
            )
            .await
            .map_err(|e| e.to_string())?
            .map_or(0, |row| row.get::<_, i64>(0) as u64);
        let info = stream.get_info().await.map_err(|e| e.to_string())?;
        let sequence = info.state.last_sequence;
        let published = if sequence == 0 {
            0
        } else {
            match stream.get_raw_message(sequence).await {
                Ok(message) => message
                    .headers
                    .get(POSITION_HEADER)
                    .and_then(|v| v.as_str().parse().ok())
                    .unwrap_or(0),
                // Removed by limits or by an operator: trust the checkpoint.
                Err(_) => 0,
            }
        };
        let position = checkpoint.max(published);
        tracing::info!(
            checkpoint,
            published,
            sequence,
            "relay resumes after position {position}"
        );
        Ok((stream, Cursor { position, sequence }))
    }

    /// Reads the page after `after`, payloads opened.
    async fn read_page(&self, after: u64) -> Result<Vec<Event>, String> {
        // No upper bound: appends commit in position order, so whatever is
        // visible after `after` is the log's next stretch without holes.
        let events = self
            .reader
            .page(
                after,
                i64::MAX as u64,
                &Criteria::default(),
                self.config.batch,
            )
            .await
            .map_err(|e| e.to_string())?
            .events;
        // A page short of the batch reached the head: only a full one says
        // the relay is behind, and by how much is worth a query.
        let lag = if events.len() < self.config.batch as usize {
            0
        } else {
            let head = self.reader.head().await.unwrap_or(after);
            head.saturating_sub(after)
        };
        metrics::gauge!("callflow_relay_lag_events").set(lag as f64);
        Ok(events)
    }

    /// Publishes `page` (the events right after `at`), records the
    /// checkpoint, and returns where the relay stands with the page after it,
    /// read while the acknowledgements came back.
    async fn publish_round(
        &self,
        at: Cursor,
        page: Vec<Event>,
    ) -> Result<(Cursor, Vec<Event>), String> {
        let Some(last_position) = page.last().map(|e| e.position) else {
            return Ok((at, Vec::new()));
        };
        let js = &self.bus.jetstream;
        let mut acks = Vec::with_capacity(page.len());
        for (offset, event) in page.iter().enumerate() {
            let subject = self.bus.subject(&event.category, &event.r#type);
            let mut message = PublishMessage::build()
                .payload(event.encode_to_vec().into())
                .message_id(&event.event_id)
                .expected_last_sequence(at.sequence + offset as u64)
                .header(POSITION_HEADER, event.position.to_string().as_str())
                .header("Callflow-Type", event.r#type.as_str())
                .header("Callflow-Stream", event.stream.as_str())
                .header("Content-Type", "application/protobuf");
            if let Some(trace) = &event.trace {
                if !trace.traceparent.is_empty() {
                    message = message.header("traceparent", trace.traceparent.as_str());
                }
                if !trace.tracestate.is_empty() {
                    message = message.header("tracestate", trace.tracestate.as_str());
                }
            }
            acks.push(
                js.send_publish(subject, message)
                    .await
                    .map_err(|e| e.to_string())?,
            );
        }
        let confirm = async {
            let mut last = at;
            for (ack, event) in acks.into_iter().zip(&page) {
                match ack.await {
                    Ok(ack) => {
                        last = Cursor {
                            position: event.position,
                            sequence: ack.sequence,
                        };
                    }
                    Err(error) if error.kind() == PublishErrorKind::WrongLastSequence => {
                        // Someone else published (a previous leader still
                        // draining): resync from the stream itself.
                        return (last, Err(format!("stream moved under the relay: {error}")));
                    }
                    Err(error) => return (last, Err(error.to_string())),
                }
            }
            (last, Ok(()))
        };
        let ((last, confirmed), next) = tokio::join!(confirm, self.read_page(last_position));
        if let Err(reason) = confirmed {
            // What was confirmed stays published: record it before resyncing.
            let _ = self.save_checkpoint(last.position).await;
            return Err(reason);
        }
        metrics::counter!("callflow_relay_published_total").increment(page.len() as u64);
        metrics::gauge!("callflow_relay_position").set(last.position as f64);
        // A failed read only costs the prefetch; the next round reads again.
        Ok((last, next.unwrap_or_default()))
    }

    async fn save_checkpoint(&self, position: u64) -> Result<(), String> {
        self.lease
            .execute(&self.save, &[&self.config.name, &(position as i64)])
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
