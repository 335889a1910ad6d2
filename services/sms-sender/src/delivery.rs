//! Following SMS after the provider took them: Exolve has no delivery
//! webhook, so the sender polls `GetList` for each SMS awaiting a report and
//! records `SmsDelivered` or `SmsUndelivered` once it comes (or gives up
//! after a while, leaving the SMS as sent).

use std::time::{Duration, SystemTime};

use jiff::Timestamp;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use kit::clock::SharedClock;
use kit::events::{derive_event_id, new_event, to_system_time};
use kit::exolve::{Delivery, ExolveClient, SmsQuery};
use kit::proto::events::v1::{SmsDelivered, SmsUndelivered};
use kit::store_client::{EventStoreClient, Expected};

use crate::sending::PROVIDER;

/// How the poller runs.
#[derive(Debug, Clone, Copy)]
pub struct PollConfig {
    pub every: Duration,
    pub give_up_after: Duration,
    pub batch: i64,
}

/// Polls until `shutdown`.
pub async fn run(
    pool: deadpool_postgres::Pool,
    store: EventStoreClient,
    exolve: ExolveClient,
    clock: SharedClock,
    config: PollConfig,
    shutdown: CancellationToken,
) {
    while !shutdown.is_cancelled() {
        if let Err(error) = round(&pool, &store, &exolve, &clock, &config).await {
            tracing::warn!(%error, "delivery poll failed");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(config.every) => {}
        }
    }
}

/// One pass over the SMS awaiting a report, least recently checked first.
pub async fn round(
    pool: &deadpool_postgres::Pool,
    store: &EventStoreClient,
    exolve: &ExolveClient,
    clock: &SharedClock,
    config: &PollConfig,
) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT sms_id, message_id, correlation_id, sent_at FROM sms.awaiting_status
             ORDER BY checked_at NULLS FIRST LIMIT $1",
            &[&config.batch],
        )
        .await?;
    let now = clock.now();
    let mut settled = 0;
    for row in rows {
        let sms_id: Uuid = row.get(0);
        let message_id: String = row.get(1);
        let correlation: Uuid = row.get(2);
        let sent_at = Timestamp::try_from(row.get::<_, SystemTime>(3)).unwrap_or(now);
        let listed = exolve
            .list_sms(&SmsQuery {
                message_id: Some(message_id.clone()),
                ..Default::default()
            })
            .await?;
        let report = listed.into_iter().find(|s| s.message_id == message_id);
        let event = match report.as_ref().map(|r| r.delivery) {
            Some(Delivery::Delivered) => Some(new_event(
                derive_event_id(&sms_id.to_string(), "delivered"),
                Some(now),
                &SmsDelivered {
                    sms_id: sms_id.to_string(),
                    provider: PROVIDER.into(),
                    provider_message_id: message_id.clone(),
                },
            )),
            Some(Delivery::Undelivered) => Some(new_event(
                derive_event_id(&sms_id.to_string(), "undelivered"),
                Some(now),
                &SmsUndelivered {
                    sms_id: sms_id.to_string(),
                    provider: PROVIDER.into(),
                    provider_message_id: message_id.clone(),
                    status: report.map(|r| r.raw_status).unwrap_or_default(),
                },
            )),
            _ => None,
        };
        match event {
            Some(mut event) => {
                event.correlation_id = correlation.to_string();
                event.trace = Some(kit::telemetry::current_trace_context());
                store
                    .append(&format!("sms-{sms_id}"), Expected::Any, vec![event])
                    .await?;
                client
                    .execute(
                        "DELETE FROM sms.awaiting_status WHERE sms_id = $1",
                        &[&sms_id],
                    )
                    .await?;
                settled += 1;
            }
            None if now.duration_since(sent_at).as_secs() as u64
                > config.give_up_after.as_secs() =>
            {
                tracing::warn!(%sms_id, "no delivery report; giving up the wait");
                client
                    .execute(
                        "DELETE FROM sms.awaiting_status WHERE sms_id = $1",
                        &[&sms_id],
                    )
                    .await?;
            }
            None => {
                client
                    .execute(
                        "UPDATE sms.awaiting_status SET checked_at = $2 WHERE sms_id = $1",
                        &[&sms_id, &to_system_time(now)],
                    )
                    .await?;
            }
        }
    }
    Ok(settled)
}
