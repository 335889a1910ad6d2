//! The partners' read model: one row per web lead in
//! `lead_dialer.dashboard_leads`, and the two questions the dashboard asks
//! of it ([`summary`], [`manual_queue`]).
//!
//! [`Dashboard`] is the only writer. A lead's row is created by its
//! `LeadReceived` and then changed only by events newer (stream version)
//! than the row, so any event may be applied again, in any order, after a
//! crash or alongside a rebuild, and change nothing. What the row says:
//!
//! - its day: the calendar day, in the dashboard's zone, of when the lead
//!   was received (fixed when the row is written; a new zone needs a
//!   rebuild);
//! - its state: received, then rejected, confirmed or closed, whichever
//!   event came last;
//! - whether it waits for a person: from `LeadNeedsManualProcessing` until
//!   a person marks it handled (`LeadManuallyHandled`, who, when and their
//!   note are kept), or it is confirmed or closed. A lead that needs a
//!   person again after that (say the CRM could not take a confirmed order)
//!   waits again.
//!
//! Events without a `LeadReceived` before them change no row: without it
//! the lead has no day, partner or amount to be counted by.

use std::time::SystemTime;

use deadpool_postgres::Transaction;
use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use tokio_postgres::GenericClient;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use kit::events::{decode, from_proto_time, to_proto_time, to_system_time};
use kit::projection::{ApplyError, Projector};
use kit::proto::events::v1::{
    ContactForgotten, Event, LeadClosed, LeadConfirmed, LeadManuallyHandled,
    LeadNeedsManualProcessing, LeadReceived, LeadRejected,
};
use kit::proto::eventstore::v1::Filter;
use kit::proto::leads::v1::{ManualLead, SummaryResponse, SummaryRow};

/// The category of lead streams (`lead-<lead id>`).
pub const CATEGORY: &str = "lead";
/// The projector's name in `lead_dialer.projection_checkpoint`.
pub const NAME: &str = "dashboard";

/// The dashboard's projection of lead streams.
pub struct Dashboard {
    /// Zone of the dashboard's days.
    pub zone: TimeZone,
    /// Names contact streams (see kit::contacts), to find a forgotten
    /// contact's rows.
    pub contact_salt: String,
}

impl Dashboard {
    pub fn new(zone: TimeZone, contact_salt: String) -> Self {
        Self { zone, contact_salt }
    }
}

/// When `event` happened: its producer's `occurred_at`, else when the store
/// recorded it.
fn happened_at(event: &Event) -> Option<Timestamp> {
    event
        .occurred_at
        .as_ref()
        .or(event.recorded_at.as_ref())
        .and_then(from_proto_time)
}

fn lead_id(text: &str, event: &Event) -> Result<Uuid, ApplyError> {
    Uuid::parse_str(text).map_err(|_| {
        ApplyError::Unusable(format!(
            "{} {} has no lead id the dashboard can use: `{text}`",
            event.r#type, event.event_id
        ))
    })
}

/// Runs `sql` as a statement prepared once per connection.
async fn execute(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, tokio_postgres::Error> {
    let statement = tx.prepare_cached(sql).await?;
    tx.execute(&statement, params).await
}

/// Changes a lead's row with `assignments` (`$1` is the lead, `$2` the
/// version, the rest `values`) if the event is newer than the row.
async fn change(
    tx: &Transaction<'_>,
    lead: Uuid,
    version: i64,
    assignments: &str,
    values: &[&(dyn ToSql + Sync)],
) -> Result<(), ApplyError> {
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&lead, &version];
    params.extend_from_slice(values);
    execute(
        tx,
        &format!(
            "UPDATE lead_dialer.dashboard_leads SET {assignments}, version = $2
             WHERE lead_id = $1 AND version < $2"
        ),
        &params,
    )
    .await?;
    Ok(())
}

impl Dashboard {
    async fn received(&self, tx: &Transaction<'_>, event: &Event) -> Result<(), ApplyError> {
        let e: LeadReceived = decode(event)?;
        let lead = lead_id(&e.lead_id, event)?;
        let at = happened_at(event)
            .ok_or_else(|| ApplyError::Unusable(format!("{} has no time", event.event_id)))?;
        let day = at.to_zoned_datetime(self.zone.clone()).date().to_string();
        // A number that does not parse (a rejected lead's, or one read
        // redacted) has no contact stream: nothing to find it by later.
        let contact_stream = kit::phone::PhoneNumber::parse(&e.phone, Default::default())
            .ok()
            .map(|phone| kit::contacts::contact_stream(&self.contact_salt, &phone));
        execute(
            tx,
            "INSERT INTO lead_dialer.dashboard_leads
                 (lead_id, received_at, day, partner_id, site, currency, amount_minor, order_id,
                  name, phone, contact_stream, state, version)
             VALUES ($1, $2, $3::text::date, $4, $5, $6, $7, $8, $9, $10, $11, 'received', $12)
             ON CONFLICT (lead_id) DO NOTHING",
            &[
                &lead,
                &to_system_time(at),
                &day,
                &e.partner_id,
                &e.site,
                &e.currency,
                &e.amount_minor,
                &e.order_id,
                &e.name,
                &e.phone,
                &contact_stream,
                &(event.version as i64),
            ],
        )
        .await?;
        Ok(())
    }
}

impl Projector for Dashboard {
    fn schema(&self) -> &'static str {
        crate::SCHEMA
    }

    fn name(&self) -> &'static str {
        NAME
    }

    fn filter(&self) -> Filter {
        Filter {
            categories: vec![CATEGORY.into(), kit::contacts::FORGOTTEN_CATEGORY.into()],
            ..Default::default()
        }
    }

    fn tables(&self) -> &'static [&'static str] {
        &["dashboard_leads"]
    }

    async fn apply(&self, tx: &Transaction<'_>, event: &Event) -> Result<(), ApplyError> {
        let version = event.version as i64;
        match event.r#type.as_str() {
            "LeadReceived" => self.received(tx, event).await,
            "LeadRejected" => {
                let e: LeadRejected = decode(event)?;
                let lead = lead_id(&e.lead_id, event)?;
                change(tx, lead, version, "state = 'rejected'", &[]).await
            }
            "LeadConfirmed" => {
                let e: LeadConfirmed = decode(event)?;
                let lead = lead_id(&e.lead_id, event)?;
                change(
                    tx,
                    lead,
                    version,
                    "state = 'confirmed', manual_since = NULL",
                    &[],
                )
                .await
            }
            "LeadClosed" => {
                let e: LeadClosed = decode(event)?;
                let lead = lead_id(&e.lead_id, event)?;
                change(
                    tx,
                    lead,
                    version,
                    "state = 'closed', manual_since = NULL",
                    &[],
                )
                .await
            }
            "LeadNeedsManualProcessing" => {
                let e: LeadNeedsManualProcessing = decode(event)?;
                let lead = lead_id(&e.lead_id, event)?;
                let since = happened_at(event).map(to_system_time);
                // A lead already waiting keeps waiting since the first time;
                // the newest reason is shown. Calls once stopped stay stopped.
                change(
                    tx,
                    lead,
                    version,
                    "manual_since = coalesce(manual_since, $3), manual_reason = $4,
                     manual_detail = $5, calls_stopped = calls_stopped OR $6",
                    &[&since, &e.reason, &e.detail, &e.calls_stopped],
                )
                .await
            }
            "LeadManuallyHandled" => {
                let e: LeadManuallyHandled = decode(event)?;
                let lead = lead_id(&e.lead_id, event)?;
                let at = happened_at(event).map(to_system_time);
                // Out of the queue; the need's reason stays, as after a
                // confirmation. The newest handling is kept.
                change(
                    tx,
                    lead,
                    version,
                    "manual_since = NULL, handled_at = $3, handled_by = $4, handled_note = $5",
                    &[&at, &e.handled_by, &e.note],
                )
                .await
            }
            "ContactForgotten" => {
                let e: ContactForgotten = decode(event)?;
                // The stream name goes too: it is a pseudonym of the number,
                // and a rebuild (which reads the number redacted) cannot
                // derive it, so live and rebuilt rows stay the same.
                execute(
                    tx,
                    "UPDATE lead_dialer.dashboard_leads
                        SET name = $2, phone = $2, contact_stream = NULL
                      WHERE contact_stream = $1",
                    &[&e.contact_stream, &kit::contacts::FORGOTTEN],
                )
                .await?;
                Ok(())
            }
            // Calls, CRM sync, SMS: nothing the dashboard counts.
            _ => Ok(()),
        }
    }
}

/// Which leads a query is about: one partner, one site, or (`None`) all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    pub partner_id: Option<String>,
    pub site: Option<String>,
}

/// Leads received from `from` to `to` (inclusive days) in `scope`: per day,
/// partner, site and currency (by day, partner, site), and totals per
/// partner and per site (by name), each per currency.
pub async fn summary(
    db: &impl GenericClient,
    from: Date,
    to: Date,
    scope: &Scope,
) -> Result<SummaryResponse, tokio_postgres::Error> {
    // One pass over the range: GROUPING() tells the three kinds of groups
    // apart (bits, from the left: day, partner, site aggregated away).
    let rows = db
        .query(
            r#"SELECT day::text, partner_id, site, currency,
                      GROUPING(day, partner_id, site) AS kind,
                      count(*) AS leads,
                      count(*) FILTER (WHERE state = 'rejected') AS rejected,
                      count(*) FILTER (WHERE state = 'confirmed') AS confirmed,
                      count(*) FILTER (WHERE state = 'closed') AS closed,
                      count(*) FILTER (WHERE manual_since IS NOT NULL) AS manual,
                      coalesce(sum(amount_minor), 0)::bigint AS order_total,
                      coalesce(sum(amount_minor) FILTER (WHERE state = 'confirmed'), 0)::bigint
                          AS confirmed_total
                 FROM lead_dialer.dashboard_leads
                WHERE day BETWEEN $1::text::date AND $2::text::date
                  AND ($3::text IS NULL OR partner_id = $3)
                  AND ($4::text IS NULL OR site = $4)
                GROUP BY GROUPING SETS ((day, partner_id, site, currency),
                                        (partner_id, currency),
                                        (site, currency))
                ORDER BY kind, day, partner_id COLLATE "C", site COLLATE "C", currency COLLATE "C""#,
            &[
                &from.to_string(),
                &to.to_string(),
                &scope.partner_id,
                &scope.site,
            ],
        )
        .await?;
    let mut response = SummaryResponse::default();
    for row in rows {
        let leads = row.get::<_, i64>("leads") as u64;
        let confirmed = row.get::<_, i64>("confirmed") as u64;
        let summary = SummaryRow {
            day: row.get::<_, Option<String>>(0).unwrap_or_default(),
            partner_id: row.get::<_, Option<String>>(1).unwrap_or_default(),
            site: row.get::<_, Option<String>>(2).unwrap_or_default(),
            currency: row.get(3),
            leads,
            rejected: row.get::<_, i64>("rejected") as u64,
            confirmed,
            closed: row.get::<_, i64>("closed") as u64,
            manual: row.get::<_, i64>("manual") as u64,
            conversion: if leads == 0 {
                0.0
            } else {
                confirmed as f64 / leads as f64
            },
            order_total_minor: row.get("order_total"),
            confirmed_total_minor: row.get("confirmed_total"),
        };
        match row.get::<_, i32>("kind") {
            0 => response.rows.push(summary),
            0b101 => response.partners.push(summary),
            _ => response.sites.push(summary),
        }
    }
    Ok(response)
}

/// Up to `limit` leads of `scope` that wait for a person, oldest first,
/// with how long they have waited at `now`.
pub async fn manual_queue(
    db: &impl GenericClient,
    limit: u32,
    scope: &Scope,
    now: Timestamp,
) -> Result<Vec<ManualLead>, tokio_postgres::Error> {
    let rows = db
        .query(
            "SELECT lead_id, name, phone, site, partner_id, order_id, amount_minor, currency,
                    manual_reason, manual_detail, calls_stopped, manual_since
               FROM lead_dialer.dashboard_leads
              WHERE manual_since IS NOT NULL
                AND ($2::text IS NULL OR partner_id = $2)
                AND ($3::text IS NULL OR site = $3)
              ORDER BY manual_since, lead_id
              LIMIT $1",
            &[&i64::from(limit), &scope.partner_id, &scope.site],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            let since =
                Timestamp::try_from(row.get::<_, SystemTime>(11)).unwrap_or(Timestamp::UNIX_EPOCH);
            ManualLead {
                lead_id: row.get::<_, Uuid>(0).to_string(),
                name: row.get(1),
                phone: row.get(2),
                site: row.get(3),
                partner_id: row.get(4),
                order_id: row.get(5),
                amount_minor: row.get(6),
                currency: row.get(7),
                reason: row.get::<_, Option<String>>(8).unwrap_or_default(),
                detail: row.get::<_, Option<String>>(9).unwrap_or_default(),
                calls_stopped: row.get(10),
                since: Some(to_proto_time(since)),
                // A clock behind the event's time reads as just now.
                age_seconds: now.duration_since(since).as_secs().max(0) as u64,
            }
        })
        .collect())
}
