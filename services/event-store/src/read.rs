//! Reading the log: one stream in version order, or the whole log (filtered)
//! in position order, a page at a time.
//!
//! Pages are read with keyset pagination on `position`, so a reader holds no
//! cursor or snapshot open between pages and memory stays bounded by the
//! page size. Because appends commit in position order (see the migration),
//! "everything after the last position I saw" never misses an event.

use std::time::SystemTime;

use deadpool_postgres::Pool;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use kit::proto::events::v1::{Event, TraceContext};
use kit::proto::eventstore::v1::Filter;

use crate::schema::EVENT_COLUMNS;

/// How many columns [`EVENT_COLUMNS`] names: a query's own columns start here.
const EVENT_COLUMN_COUNT: usize = 14;

/// Errors of reading.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("database unavailable: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database error: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("personal data: {0}")]
    Privacy(#[from] crate::privacy::PrivacyError),
}

/// Filtered reads scan at most this many positions per query, so a reader
/// looking for rare events reports progress instead of scanning the whole
/// log in one statement.
pub const SCAN_WINDOW: u64 = 100_000;

/// A page of the log.
#[derive(Debug, Default)]
pub struct Page {
    pub events: Vec<Event>,
    /// Everything up to here (inclusive) has been looked at.
    pub checkpoint: u64,
}

/// A filter checked by the database.
#[derive(Debug, Clone, Default)]
pub struct Criteria {
    pub categories: Vec<String>,
    pub types: Vec<String>,
    pub stream_prefixes: Vec<String>,
    pub recorded_from: Option<SystemTime>,
    pub recorded_until: Option<SystemTime>,
    pub correlation_ids: Vec<Uuid>,
}

impl Criteria {
    pub fn from_filter(filter: Option<&Filter>) -> Self {
        let Some(filter) = filter else {
            return Self::default();
        };
        let time = |ts: &Option<prost_types::Timestamp>| {
            ts.as_ref().and_then(|ts| SystemTime::try_from(*ts).ok())
        };
        Self {
            categories: filter.categories.clone(),
            types: filter.types.clone(),
            stream_prefixes: filter.stream_prefixes.clone(),
            recorded_from: time(&filter.recorded_from),
            recorded_until: time(&filter.recorded_until),
            correlation_ids: filter
                .correlation_ids
                .iter()
                .filter_map(|id| Uuid::parse_str(id).ok())
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.categories.is_empty()
            && self.types.is_empty()
            && self.stream_prefixes.is_empty()
            && self.recorded_from.is_none()
            && self.recorded_until.is_none()
            && self.correlation_ids.is_empty()
    }
}

/// Reads through a connection pool; payloads come out with their personal
/// fields opened (or redacted, for forgotten contacts).
#[derive(Clone)]
pub struct Reader {
    pool: Pool,
    privacy: std::sync::Arc<crate::privacy::Privacy>,
}

impl Reader {
    pub fn new(pool: Pool, privacy: std::sync::Arc<crate::privacy::Privacy>) -> Self {
        Self { pool, privacy }
    }

    /// The highest committed position (0 for an empty log).
    pub async fn head(&self) -> Result<u64, ReadError> {
        let client = self.pool.get().await?;
        let head = client
            .prepare_cached("SELECT coalesce(max(position), 0) FROM eventlog.events")
            .await?;
        let row = client.query_one(&head, &[]).await?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    /// Events of `stream` from `from_version`, at most `limit`, and the
    /// stream's current version.
    ///
    /// One statement (the version rides along each row) and one snapshot:
    /// streams are read on every step of every flow, and a second round
    /// trip for the version doubled the store's statements. Only a read
    /// that starts past the end needs a second look for the version.
    pub async fn stream(
        &self,
        stream: &str,
        from_version: u64,
        limit: u32,
    ) -> Result<(Vec<Event>, u64), ReadError> {
        let client = self.pool.get().await?;
        let select = client
            .prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS}, (SELECT max(version) FROM eventlog.events WHERE stream = $1)
                   FROM eventlog.events WHERE stream = $1 AND version >= $2 ORDER BY version LIMIT $3"
            ))
            .await?;
        let (from_version, limit) = (from_version.max(1) as i64, limit as i64);
        let rows = client
            .query(&select, &[&stream, &from_version, &limit])
            .await?;
        let current = match rows.first() {
            Some(row) => row.get::<_, i64>(EVENT_COLUMN_COUNT),
            // Nothing from version 1 on: the stream is empty.
            None if from_version == 1 => 0,
            None => {
                let version = client
                    .prepare_cached(
                        "SELECT coalesce(max(version), 0) FROM eventlog.events WHERE stream = $1",
                    )
                    .await?;
                client.query_one(&version, &[&stream]).await?.get(0)
            }
        };
        let mut events: Vec<Event> = rows.iter().map(event_from_row).collect();
        self.privacy.open_all(&mut events).await?;
        Ok((events, current as u64))
    }

    /// Up to `limit` events matching `criteria` with a position in
    /// `(after, upto]`, in position order, payloads opened.
    pub async fn page(
        &self,
        after: u64,
        upto: u64,
        criteria: &Criteria,
        limit: u32,
    ) -> Result<Page, ReadError> {
        let mut page = self.sealed_page(after, upto, criteria, limit).await?;
        self.open(&mut page).await?;
        Ok(page)
    }

    /// Opens the payloads of a page from [`Reader::sealed_page`].
    pub async fn open(&self, page: &mut Page) -> Result<(), ReadError> {
        self.privacy.open_all(&mut page.events).await?;
        Ok(())
    }

    /// [`Reader::page`] with payloads as stored, for readers that open
    /// them elsewhere (a long read opens one page while fetching the next).
    pub async fn sealed_page(
        &self,
        after: u64,
        upto: u64,
        criteria: &Criteria,
        limit: u32,
    ) -> Result<Page, ReadError> {
        if after >= upto {
            return Ok(Page {
                events: Vec::new(),
                checkpoint: after,
            });
        }
        let upto = if criteria.is_empty() {
            upto
        } else {
            upto.min(after.saturating_add(SCAN_WINDOW))
        };
        let after_param = after as i64;
        let upto_param = upto as i64;
        let limit_param = limit as i64;
        let mut sql = format!(
            "SELECT {EVENT_COLUMNS} FROM eventlog.events WHERE position > $1 AND position <= $2"
        );
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&after_param, &upto_param];
        if !criteria.categories.is_empty() {
            params.push(&criteria.categories);
            sql.push_str(&format!(" AND category = ANY(${})", params.len()));
        }
        if !criteria.types.is_empty() {
            params.push(&criteria.types);
            sql.push_str(&format!(" AND type = ANY(${})", params.len()));
        }
        if !criteria.stream_prefixes.is_empty() {
            params.push(&criteria.stream_prefixes);
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM unnest(${}::text[]) AS p(prefix) WHERE starts_with(stream, p.prefix))",
                params.len()
            ));
        }
        if !criteria.correlation_ids.is_empty() {
            params.push(&criteria.correlation_ids);
            sql.push_str(&format!(" AND correlation_id = ANY(${})", params.len()));
        }
        if let Some(from) = &criteria.recorded_from {
            params.push(from);
            sql.push_str(&format!(" AND recorded_at >= ${}", params.len()));
        }
        if let Some(until) = &criteria.recorded_until {
            params.push(until);
            sql.push_str(&format!(" AND recorded_at < ${}", params.len()));
        }
        params.push(&limit_param);
        sql.push_str(&format!(" ORDER BY position LIMIT ${}", params.len()));

        let client = self.pool.get().await?;
        let statement = client.prepare_cached(&sql).await?;
        let rows = client.query(&statement, &params).await?;
        let events: Vec<Event> = rows.iter().map(event_from_row).collect();
        drop(client);
        let checkpoint = if events.len() as i64 == limit_param {
            events.last().map_or(upto, |e| e.position)
        } else {
            upto
        };
        Ok(Page { events, checkpoint })
    }
}

/// An `eventlog.events` row (selected as [`EVENT_COLUMNS`]) as an envelope.
pub fn event_from_row(row: &Row) -> Event {
    let time = |index| {
        let at: SystemTime = row.get(index);
        Some(prost_types::Timestamp::from(at))
    };
    let causation: Option<Uuid> = row.get(9);
    Event {
        position: row.get::<_, i64>(0) as u64,
        event_id: row.get::<_, Uuid>(1).to_string(),
        stream: row.get(2),
        version: row.get::<_, i64>(3) as u64,
        category: row.get(4),
        r#type: row.get(5),
        occurred_at: time(6),
        recorded_at: time(7),
        correlation_id: row.get::<_, Uuid>(8).to_string(),
        causation_id: causation.map(|id| id.to_string()).unwrap_or_default(),
        trace: Some(TraceContext {
            traceparent: row.get(10),
            tracestate: row.get(11),
        }),
        producer: row.get(12),
        payload: row.get(13),
    }
}

/// The outcome of checking the hash chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainReport {
    pub checked: u64,
    pub unchained: u64,
    pub first_broken: Option<(u64, String)>,
    pub last_position: u64,
}

impl Reader {
    /// Recomputes the hash chain over `(after, upto]` (see migration 0002)
    /// and stops at the first event whose hash does not follow.
    pub async fn verify(&self, after: u64, upto: u64) -> Result<ChainReport, ReadError> {
        use sha2::{Digest, Sha256};
        let client = self.pool.get().await?;
        let mut previous: Vec<u8> = if after == 0 {
            Vec::new()
        } else {
            client
                .query_opt("SELECT chain_hash FROM eventlog.events WHERE position <= $1 ORDER BY position DESC LIMIT 1", &[&(after as i64)])
                .await?
                .and_then(|row| row.get::<_, Option<Vec<u8>>>(0))
                .unwrap_or_default()
        };
        let page = client
            .prepare_cached(
                "SELECT position, chain_hash, eventlog.canonical(e) FROM eventlog.events e
                 WHERE position > $1 AND position <= $2 ORDER BY position LIMIT 5000",
            )
            .await?;
        let mut report = ChainReport {
            last_position: after,
            ..Default::default()
        };
        let mut from = after as i64;
        loop {
            let rows = client.query(&page, &[&from, &(upto as i64)]).await?;
            if rows.is_empty() {
                return Ok(report);
            }
            for row in &rows {
                let position = row.get::<_, i64>(0) as u64;
                let stored: Option<Vec<u8>> = row.get(1);
                let canonical: Vec<u8> = row.get(2);
                report.last_position = position;
                let Some(stored) = stored else {
                    // Written before the chain existed.
                    report.unchained += 1;
                    previous.clear();
                    continue;
                };
                let expected = Sha256::new()
                    .chain_update(&previous)
                    .chain_update(&canonical)
                    .finalize()
                    .to_vec();
                report.checked += 1;
                if expected != stored {
                    report.first_broken = Some((
                        position,
                        "its hash does not follow from the events before it: this event or the one before was changed, \
                         removed or slipped in"
                            .into(),
                    ));
                    return Ok(report);
                }
                previous = stored;
            }
            from = report.last_position as i64;
        }
    }
}
