//! Events → rows of the analysts' read model (schema `analytics`).
//!
//! Every column of `calls` is written by one event type only, so applying
//! events again, in any order, gives the same row. Reminders and SMS are
//! state machines: a change applies only when its event is newer (stream
//! version) than what the row reflects. No personal field is ever read.

use std::time::SystemTime;

use deadpool_postgres::Transaction;
use tokio_postgres::types::ToSql;

use kit::events::{decode, from_proto_time, to_system_time};
use kit::projection::{ApplyError, Projector};
use kit::proto::events::v1::{
    CallCompleted, CallStarted, ConsentAnalyzed, ConsentDecision, Event, MessageKind,
    ReminderCancelled, ReminderDue, ReminderExpired, ReminderRescheduled, ReminderScheduled,
    SmsAttemptFailed, SmsAttempted, SmsDelivered, SmsFailed, SmsRequested, SmsSent, SmsUndelivered,
    TranscriptReady, TranscriptionFailed,
};
use kit::proto::eventstore::v1::Filter;

/// The read model as a projector.
pub struct ReadModel;

fn time(ts: &Option<prost_types::Timestamp>) -> Option<SystemTime> {
    ts.as_ref().and_then(from_proto_time).map(to_system_time)
}

fn recorded(event: &Event) -> Option<SystemTime> {
    time(&event.recorded_at)
}

fn decision(value: i32) -> Option<&'static str> {
    match ConsentDecision::try_from(value).ok()? {
        ConsentDecision::Agreed => Some("agreed"),
        ConsentDecision::Declined => Some("declined"),
        ConsentDecision::Unclear => Some("unclear"),
        ConsentDecision::Unspecified => None,
    }
}

fn kind(value: i32) -> Option<&'static str> {
    match MessageKind::try_from(value).ok()? {
        MessageKind::Service => Some("service"),
        MessageKind::Advertising => Some("advertising"),
        MessageKind::Unspecified => None,
    }
}

/// One statement per call event: sets `columns` of the call's row (created
/// when missing) to the first values, and `fills` to the values after them
/// only where the row has none yet (pushed transcripts come without a
/// CallStarted, so their start time fills in until a telephony event says).
async fn upsert_call(
    tx: &Transaction<'_>,
    provider: &str,
    call_id: &str,
    columns: &[&str],
    fills: &[&str],
    values: &[&(dyn ToSql + Sync)],
) -> Result<(), ApplyError> {
    if provider.is_empty() || call_id.is_empty() {
        return Err(ApplyError::Unusable("no provider or call id".into()));
    }
    let all: Vec<&str> = columns.iter().chain(fills).copied().collect();
    let placeholders: Vec<String> = (3..3 + all.len()).map(|n| format!("${n}")).collect();
    let updates: Vec<String> = columns
        .iter()
        .map(|c| format!("{c} = EXCLUDED.{c}"))
        .chain(
            fills
                .iter()
                .map(|c| format!("{c} = coalesce(calls.{c}, EXCLUDED.{c})")),
        )
        .collect();
    let sql = format!(
        "INSERT INTO analytics.calls AS calls (provider, call_id, {}) VALUES ($1, $2, {})
         ON CONFLICT (provider, call_id) DO UPDATE SET {}",
        all.join(", "),
        placeholders.join(", "),
        updates.join(", ")
    );
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&provider, &call_id];
    params.extend_from_slice(values);
    execute(tx, &sql, &params).await?;
    Ok(())
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

impl Projector for ReadModel {
    fn schema(&self) -> &'static str {
        crate::SCHEMA
    }

    fn name(&self) -> &'static str {
        "read_model"
    }

    fn filter(&self) -> Filter {
        Filter {
            categories: vec!["call".into(), "reminder".into(), "sms".into()],
            ..Default::default()
        }
    }

    fn tables(&self) -> &'static [&'static str] {
        &["calls", "reminders", "sms"]
    }

    async fn apply(&self, tx: &Transaction<'_>, event: &Event) -> Result<(), ApplyError> {
        let version = event.version as i64;
        match event.r#type.as_str() {
            "CallStarted" => {
                let e: CallStarted = decode(event)?;
                let correlation = kit::events::correlation_of(event);
                upsert_call(
                    tx,
                    &e.provider,
                    &e.call_id,
                    &["started_at", "correlation_id"],
                    &[],
                    &[&time(&e.started_at), &correlation],
                )
                .await
            }
            "CallCompleted" => {
                let e: CallCompleted = decode(event)?;
                let duration = e
                    .duration
                    .map(|d| d.seconds as f64 + f64::from(d.nanos) / 1e9);
                upsert_call(
                    tx,
                    &e.provider,
                    &e.call_id,
                    &["completed_at", "duration_seconds", "manager_id"],
                    &["started_at"],
                    &[
                        &recorded(event),
                        &duration,
                        &e.manager_id,
                        &time(&e.started_at),
                    ],
                )
                .await
            }
            "TranscriptReady" => {
                let e: TranscriptReady = decode(event)?;
                upsert_call(
                    tx,
                    &e.provider,
                    &e.call_id,
                    &["transcribed_at", "language"],
                    &["started_at"],
                    &[&recorded(event), &e.language, &time(&e.call_started_at)],
                )
                .await
            }
            "TranscriptionFailed" => {
                let e: TranscriptionFailed = decode(event)?;
                upsert_call(
                    tx,
                    &e.provider,
                    &e.call_id,
                    &["transcription_failed_at", "transcription_failure"],
                    &[],
                    &[&recorded(event), &e.reason],
                )
                .await
            }
            "ConsentAnalyzed" => {
                let e: ConsentAnalyzed = decode(event)?;
                let remind_after = (!e.remind_after.is_empty()).then_some(e.remind_after.as_str());
                upsert_call(
                    tx,
                    &e.provider,
                    &e.call_id,
                    &[
                        "analyzed_at",
                        "consent_decision",
                        "remind_after",
                        "opted_out",
                        "consent_confidence",
                        "analyzer_version",
                    ],
                    &["started_at"],
                    &[
                        &recorded(event),
                        &decision(e.decision),
                        &remind_after,
                        &e.opt_out,
                        &e.confidence,
                        &e.analyzer_version,
                        &time(&e.call_started_at),
                    ],
                )
                .await
            }
            "ReminderScheduled" => {
                let e: ReminderScheduled = decode(event)?;
                let (provider, call_id) = if e.call_id.is_empty() {
                    (None, None)
                } else {
                    (Some(e.provider.as_str()), Some(e.call_id.as_str()))
                };
                execute(
                    tx,
                    "INSERT INTO analytics.reminders (reminder_id, provider, call_id, source, scheduled_at, due_at,
                                                      time_zone, state, version)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8)
                     ON CONFLICT (reminder_id) DO NOTHING",
                    &[
                        &e.reminder_id, &provider, &call_id, &e.source, &recorded(event),
                        &time(&e.due_at), &e.time_zone, &version,
                    ],
                )
                .await?;
                Ok(())
            }
            "ReminderRescheduled" => {
                let e: ReminderRescheduled = decode(event)?;
                reminder(
                    tx,
                    &e.reminder_id,
                    version,
                    "due_at = $3, reschedules = reschedules + 1",
                    &time(&e.due_at),
                )
                .await
            }
            "ReminderDue" => {
                let e: ReminderDue = decode(event)?;
                reminder(
                    tx,
                    &e.reminder_id,
                    version,
                    "state = 'due', fired_at = $3",
                    &recorded(event),
                )
                .await
            }
            "ReminderCancelled" => {
                let e: ReminderCancelled = decode(event)?;
                reminder(
                    tx,
                    &e.reminder_id,
                    version,
                    "state = 'cancelled', cancelled_at = $3",
                    &recorded(event),
                )
                .await
            }
            "ReminderExpired" => {
                let e: ReminderExpired = decode(event)?;
                reminder(
                    tx,
                    &e.reminder_id,
                    version,
                    "state = 'expired', expired_at = $3",
                    &recorded(event),
                )
                .await
            }
            "SmsRequested" => {
                let e: SmsRequested = decode(event)?;
                let reminder_id = (!e.reminder_id.is_empty()).then_some(e.reminder_id.as_str());
                execute(
                    tx,
                    "INSERT INTO analytics.sms (sms_id, reminder_id, status, kind, parts, requested_at, version)
                     VALUES ($1, $2, 'requested', $3, $4, $5, $6)
                     ON CONFLICT (sms_id) DO NOTHING",
                    &[&e.sms_id, &reminder_id, &kind(e.kind), &(e.parts as i32), &recorded(event), &version],
                )
                .await?;
                Ok(())
            }
            "SmsAttempted" => {
                let e: SmsAttempted = decode(event)?;
                sms(
                    tx,
                    &e.sms_id,
                    version,
                    "attempts = greatest(attempts, $3), provider = $4",
                    &[&(e.attempt as i32), &e.provider],
                )
                .await
            }
            "SmsAttemptFailed" => {
                let e: SmsAttemptFailed = decode(event)?;
                sms(
                    tx,
                    &e.sms_id,
                    version,
                    "attempts = greatest(attempts, $3), failure = $4",
                    &[&(e.attempt as i32), &e.reason],
                )
                .await
            }
            "SmsSent" => {
                let e: SmsSent = decode(event)?;
                sms(tx, &e.sms_id, version, "status = 'sent', sent_at = $3, parts = $4, attempts = greatest(attempts, $5), provider = $6",
                    &[&recorded(event), &(e.parts as i32), &(e.attempt as i32), &e.provider]).await
            }
            "SmsFailed" => {
                let e: SmsFailed = decode(event)?;
                sms(tx, &e.sms_id, version, "status = 'failed', failed_at = $3, failure = $4, attempts = greatest(attempts, $5)",
                    &[&recorded(event), &e.reason, &(e.attempt as i32)]).await
            }
            "SmsDelivered" => {
                let e: SmsDelivered = decode(event)?;
                sms(
                    tx,
                    &e.sms_id,
                    version,
                    "status = 'delivered', delivered_at = $3",
                    &[&recorded(event)],
                )
                .await
            }
            "SmsUndelivered" => {
                let e: SmsUndelivered = decode(event)?;
                sms(
                    tx,
                    &e.sms_id,
                    version,
                    "status = 'undelivered', failed_at = $3, failure = $4",
                    &[&recorded(event), &e.status],
                )
                .await
            }
            _ => Ok(()),
        }
    }
}

/// Applies a change to a reminder if `version` is newer than its row.
async fn reminder(
    tx: &Transaction<'_>,
    reminder_id: &str,
    version: i64,
    assignments: &str,
    value: &(dyn ToSql + Sync),
) -> Result<(), ApplyError> {
    execute(
        tx,
        &format!(
            "UPDATE analytics.reminders SET {assignments}, version = $2
             WHERE reminder_id = $1 AND version < $2"
        ),
        &[&reminder_id, &version, value],
    )
    .await?;
    Ok(())
}

/// Applies a change to an SMS if `version` is newer than its row.
async fn sms(
    tx: &Transaction<'_>,
    sms_id: &str,
    version: i64,
    assignments: &str,
    values: &[&(dyn ToSql + Sync)],
) -> Result<(), ApplyError> {
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&sms_id, &version];
    params.extend_from_slice(values);
    execute(
        tx,
        &format!(
            "UPDATE analytics.sms SET {assignments}, version = $2
             WHERE sms_id = $1 AND version < $2"
        ),
        &params,
    )
    .await?;
    Ok(())
}
