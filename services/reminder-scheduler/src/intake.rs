//! What the scheduler hears on JetStream: an agreed consent schedules a
//! reminder, an opt-out cancels every pending reminder of the contact.

use std::sync::Arc;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use kit::consumer::{HandleError, Handler, Input, Output};
use kit::events::{decode, derive_event_id, from_proto_time, to_proto_time};
use kit::phone::{DefaultRegion, PhoneNumber};
use kit::proto::events::v1::{
    ConsentAnalyzed, ConsentDecision, ContactOptedOut, ReminderCancelled, ReminderScheduled,
};
use kit::store_client::Expected;

use crate::placement::{Placement, parse_period};
use crate::zones;

/// Schedules reminders from agreed consents.
pub struct FromConsents {
    pub contacts: kit::contacts::Contacts,
    pub placement: Placement,
    pub default_zone: TimeZone,
    /// The text for consents in any language but English.
    pub text: Arc<str>,
    /// The text for consents made in English.
    pub text_en: Arc<str>,
}

impl Handler for FromConsents {
    async fn handle(&self, input: &Input) -> Result<Vec<Output>, HandleError> {
        let consent: ConsentAnalyzed =
            decode(&input.event).map_err(|e| HandleError::Reject(e.to_string()))?;
        if consent.decision != ConsentDecision::Agreed as i32 {
            return Ok(Vec::new());
        }
        let phone =
            PhoneNumber::parse(&consent.client_phone, DefaultRegion::default()).map_err(|e| {
                HandleError::Reject(format!("client_phone `{}` {e}", consent.client_phone))
            })?;
        let period = parse_period(if consent.remind_after.is_empty() {
            "P1M"
        } else {
            &consent.remind_after
        })
        .map_err(|e| HandleError::Reject(e.to_string()))?;
        let zone = zones::resolve(&self.contacts, &phone, None, &self.default_zone)
            .await
            .map_err(|status| HandleError::Retry(status.message().to_owned()))?;
        let called_at = consent
            .call_started_at
            .as_ref()
            .or(input.event.occurred_at.as_ref())
            .and_then(from_proto_time)
            .unwrap_or(Timestamp::UNIX_EPOCH);
        let reminder_id = derive_event_id(&input.event.event_id, "reminder");
        let due_at = self
            .placement
            .due_at(called_at, period, &zone, reminder_id)
            .map_err(|e| HandleError::Reject(e.to_string()))?;
        let scheduled = ReminderScheduled {
            reminder_id: reminder_id.to_string(),
            phone: phone.to_string(),
            due_at: Some(to_proto_time(due_at)),
            time_zone: zone.iana_name().unwrap_or("UTC").to_owned(),
            text: if consent.language.starts_with("en") {
                self.text_en.to_string()
            } else {
                self.text.to_string()
            },
            source: "consent".into(),
            provider: consent.provider,
            call_id: consent.call_id,
            scheduled_by: crate::NAME.into(),
        };
        Ok(vec![
            Output::new(format!("reminder-{reminder_id}"), "scheduled", &scheduled)
                .expect(Expected::NoStream),
        ])
    }
}

/// Cancels a contact's pending reminders when they opt out.
pub struct OnOptOut {
    pub pool: deadpool_postgres::Pool,
}

impl Handler for OnOptOut {
    async fn handle(&self, input: &Input) -> Result<Vec<Output>, HandleError> {
        let opt_out: ContactOptedOut =
            decode(&input.event).map_err(|e| HandleError::Reject(e.to_string()))?;
        let retry = |e: &dyn std::fmt::Display| HandleError::Retry(e.to_string());
        let client = self.pool.get().await.map_err(|e| retry(&e))?;
        let pending = client
            .query(
                "SELECT reminder_id, version FROM scheduler.reminders WHERE phone = $1 AND state = 'pending' ORDER BY due_at",
                &[&opt_out.phone],
            )
            .await
            .map_err(|e| retry(&e))?;
        Ok(pending
            .iter()
            .map(|row| {
                let id: uuid::Uuid = row.get(0);
                let version: i64 = row.get(1);
                let cancelled = ReminderCancelled {
                    reminder_id: id.to_string(),
                    cancelled_by: crate::NAME.into(),
                    reason: "opted_out".into(),
                };
                Output::new(format!("reminder-{id}"), format!("cancel/{id}"), &cancelled)
                    .expect(Expected::Exact(version as u64))
            })
            .collect())
    }
}
