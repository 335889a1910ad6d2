//! The lead in the CRM (Bitrix24 REST through an inbound webhook).
//!
//! `LeadReceived` → the partner is looked up (`crm.company.list` by the
//! lead's `utm_source`, cached) and the lead added (`crm.lead.add` with
//! every field, ORIGINATOR_ID/ORIGIN_ID naming callflow's lead) →
//! `LeadCreatedInCrm`. Every later step of the call-back (`CallAttemptFinished`,
//! `LeadConfirmed`, `LeadClosed`, `LeadNeedsManualProcessing`) updates the
//! CRM lead's status and comments → `LeadUpdatedInCrm`.
//!
//! The portal allows 2 requests a second with bursts of 50 and refuses the
//! excess with 503 QUERY_LIMIT_EXCEEDED: a token bucket keeps this process
//! under that, and a refusal anyway (another client of the portal) waits
//! and tries again. Bitrix24 has no idempotency key, so an add that got no
//! answer is looked up by ORIGIN_ID before it is tried again. A CRM that
//! cannot take the lead (bad token, down after the tries) puts it in the
//! manual queue, and the sellers are told; the call-back goes on.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use uuid::Uuid;

use kit::consumer::{HandleError, Handler, Input, Output};
use kit::events::{Payload, decode, derive_event_id, new_event};
use kit::proto::events::v1::{
    CallOutcome, Event, LeadClosed, LeadCreatedInCrm, LeadNeedsManualProcessing, LeadUpdatedInCrm,
};
use kit::rate_limit::TokenBucket;
use kit::store_client::{EventStoreClient, Expected};

use crate::callback::lead_of;
use crate::lead::{Ending, Lead};

/// What callflow calls itself in the CRM's ORIGINATOR_ID.
const ORIGINATOR: &str = "callflow";
/// How long a partner lookup is trusted.
const PARTNER_TTL: Duration = Duration::from_secs(600);
/// Longest wait for the rate limit inside one handling.
const MAX_LIMIT_WAIT: Duration = Duration::from_secs(2);

/// How a CRM request failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CrmError {
    /// Over the rate limit (ours or the portal's): try again after this.
    #[error("CRM rate limit; again in {0:?}")]
    Busy(Duration),
    /// Down or failing; the request did nothing.
    #[error("CRM unavailable: {0}")]
    Transient(String),
    /// No answer after the request was sent: it may have been carried out.
    #[error("no answer from the CRM: {0}")]
    Unknown(String),
    /// Refused (bad token, bad field): trying again will not help.
    #[error("CRM refused: {0}")]
    Refused(String),
}

/// A Bitrix24 portal's REST API through one inbound webhook.
pub struct Bitrix {
    http: reqwest::Client,
    /// `https://<portal>/rest/<user>/<secret>`.
    base: String,
    limit: TokenBucket,
}

impl Bitrix {
    pub fn new(base: &str, timeout: Duration, limit: TokenBucket) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(Duration::from_secs(5))
                .build()
                .expect("HTTP client"),
            base: base.trim_end_matches('/').to_owned(),
            limit,
        }
    }

    /// Calls `method` and returns its `result` (and `total`, for lists).
    async fn call(&self, method: &str, body: Value) -> Result<Value, CrmError> {
        self.limit
            .acquire(MAX_LIMIT_WAIT)
            .await
            .map_err(CrmError::Busy)?;
        let response = self
            .http
            .post(format!("{}/{method}.json", self.base))
            .json(&body)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    CrmError::Transient(e.to_string())
                } else {
                    CrmError::Unknown(e.to_string())
                }
            })?;
        let status = response.status();
        let answer: Value = response
            .json()
            .await
            .map_err(|e| CrmError::Unknown(format!("unreadable answer: {e}")))?;
        let error = answer.get("error").and_then(Value::as_str).unwrap_or("");
        let description = answer
            .get("error_description")
            .and_then(Value::as_str)
            .unwrap_or("");
        if error == "QUERY_LIMIT_EXCEEDED" {
            // Another client of the portal used the bucket up.
            return Err(CrmError::Busy(Duration::from_secs(1)));
        }
        if status.is_server_error() {
            return Err(CrmError::Transient(format!(
                "HTTP {status} {error} {description}"
            )));
        }
        if !status.is_success() || !error.is_empty() {
            return Err(CrmError::Refused(format!(
                "HTTP {status} {error}: {description}"
            )));
        }
        Ok(answer.get("result").cloned().unwrap_or(Value::Null))
    }

    /// The id of the first item of a list answer.
    fn first_id(result: &Value) -> Option<String> {
        match result.as_array()?.first()?.get("ID")? {
            Value::String(id) => Some(id.clone()),
            Value::Number(id) => Some(id.to_string()),
            _ => None,
        }
    }

    /// The company whose `field` is `code`.
    pub async fn find_partner(&self, field: &str, code: &str) -> Result<Option<String>, CrmError> {
        let result = self
            .call(
                "crm.company.list",
                json!({ "filter": { field: code }, "select": ["ID", "TITLE"] }),
            )
            .await?;
        Ok(Self::first_id(&result))
    }

    /// Adds a lead; its id.
    pub async fn add_lead(&self, fields: Value) -> Result<String, CrmError> {
        let result = self
            .call(
                "crm.lead.add",
                json!({ "fields": fields, "params": { "REGISTER_SONET_EVENT": "Y" } }),
            )
            .await?;
        match result {
            Value::Number(id) => Ok(id.to_string()),
            Value::String(id) if !id.is_empty() => Ok(id),
            other => Err(CrmError::Unknown(format!("crm.lead.add answered {other}"))),
        }
    }

    /// The lead callflow added for `lead_id`, if any.
    pub async fn find_lead(&self, lead_id: &str) -> Result<Option<String>, CrmError> {
        let result = self
            .call(
                "crm.lead.list",
                json!({
                    "filter": { "ORIGINATOR_ID": ORIGINATOR, "ORIGIN_ID": lead_id },
                    "select": ["ID"],
                }),
            )
            .await?;
        Ok(Self::first_id(&result))
    }

    pub async fn update_lead(&self, id: &str, fields: Value) -> Result<(), CrmError> {
        self.call("crm.lead.update", json!({ "id": id, "fields": fields }))
            .await
            .map(|_| ())
    }
}

/// The handler of lead events that concern the CRM.
pub struct CrmSync {
    pub bitrix: Bitrix,
    pub store: EventStoreClient,
    pub pool: deadpool_postgres::Pool,
    /// The company field holding a partner's `utm_source`.
    pub partner_field: String,
    /// Tries before a failing CRM sends the lead to the manual queue.
    pub attempts: u32,
    /// Partner lookups: code → company id (or none), and when.
    pub partners: Mutex<HashMap<String, (Option<String>, Instant)>>,
}

fn retry(error: impl std::fmt::Display) -> HandleError {
    HandleError::Retry(error.to_string())
}

/// The CRM lead's fields for a received lead.
pub fn lead_fields(lead_id: &str, lead: &Lead, partner: Option<&str>) -> Value {
    let r = lead.received.as_ref().expect("a received lead");
    let amount = format!("{}.{:02}", r.amount_minor / 100, r.amount_minor % 100);
    let mut fields = json!({
        "TITLE": format!("Заказ {} с {}", r.order_id, r.site),
        "NAME": r.name,
        "PHONE": [{ "VALUE": r.phone, "VALUE_TYPE": "WORK" }],
        "SOURCE_ID": "WEB",
        "SOURCE_DESCRIPTION": r.site,
        "UTM_SOURCE": r.partner_id,
        "ADDRESS_CITY": r.city,
        "OPPORTUNITY": amount,
        "CURRENCY_ID": r.currency,
        "COMMENTS": format!(
            "Заказ {} на {} ({} {}). Город: {}, часовой пояс: {}. Лид callflow {}.",
            r.order_id, r.site, amount, r.currency, r.city, r.time_zone, lead_id
        ),
        "ORIGINATOR_ID": ORIGINATOR,
        "ORIGIN_ID": lead_id,
    });
    if let Some(partner) = partner {
        fields["COMPANY_ID"] = json!(partner);
    }
    fields
}

fn outcome_words(outcome: CallOutcome) -> &'static str {
    match outcome {
        CallOutcome::Human => "ответил клиент",
        CallOutcome::Machine => "автоответчик",
        CallOutcome::NoAnswer => "нет ответа",
        CallOutcome::Busy => "занято",
        CallOutcome::Unavailable => "абонент недоступен",
        CallOutcome::WrongNumber => "номер не существует",
        CallOutcome::Failed => "ошибка оператора связи",
        CallOutcome::Unspecified => "неизвестно",
    }
}

/// The CRM status and comment after `about`: the whole call history, so an
/// update repeated or reordered still leaves the right text.
pub fn progress_fields(lead: &Lead, about: &Event) -> (String, Value) {
    let status = match (about.r#type.as_str(), lead.ending) {
        (_, Some(Ending::Confirmed)) => "PROCESSED",
        ("LeadClosed", _) => match decode::<LeadClosed>(about) {
            Ok(closed) if closed.reason == "wrong_number" => "JUNK",
            _ => "IN_PROCESS",
        },
        _ => "IN_PROCESS",
    };
    let mut lines: Vec<String> = lead
        .attempts
        .iter()
        .map(|a| match &a.finished {
            Some(f) => format!("Звонок {}: {}", a.number, outcome_words(f.outcome())),
            None if a.started.is_some() => format!("Звонок {}: идёт", a.number),
            None => format!("Звонок {}: запланирован на {}", a.number, a.due_at),
        })
        .collect();
    match (about.r#type.as_str(), lead.ending) {
        (_, Some(Ending::Confirmed)) => lines.push("Заказ подтверждён клиентом.".into()),
        ("LeadClosed", _) => {
            if let Ok(closed) = decode::<LeadClosed>(about) {
                lines.push(format!("Закрыт: {}.", closed.detail));
            }
        }
        ("LeadNeedsManualProcessing", _) => {
            if let Ok(manual) = decode::<LeadNeedsManualProcessing>(about) {
                lines.push(format!("Нужен менеджер: {}.", manual.detail));
            }
        }
        _ => {}
    }
    (
        status.to_owned(),
        json!({ "STATUS_ID": status, "COMMENTS": lines.join("\n") }),
    )
}

impl Handler for CrmSync {
    async fn handle(&self, input: &Input) -> Result<Vec<Output>, HandleError> {
        let event = &input.event;
        let progress = match event.r#type.as_str() {
            "LeadReceived" => false,
            "CallAttemptFinished" | "LeadConfirmed" | "LeadClosed" => true,
            "LeadNeedsManualProcessing" => decode::<LeadNeedsManualProcessing>(event)
                .map(|m| m.reason != "crm_failed")
                .unwrap_or(false),
            _ => return Ok(Vec::new()),
        };
        let Some(lead_id) = lead_of(&event.stream) else {
            return Err(HandleError::Reject(format!(
                "`{}` is not a lead stream",
                event.stream
            )));
        };
        let lead = crate::lead::read_for(&self.store, lead_id, event, input.delivered)
            .await
            .map_err(|s| retry(s.message()))?;
        // A lead whose number cannot be called never reaches the CRM.
        if lead.phone().is_none() || lead.crm_failed {
            return Ok(Vec::new());
        }
        if progress {
            self.update(lead_id, &lead, event, input.delivered).await
        } else {
            self.create(lead_id, &lead, event, input.delivered).await
        }
        .map(|()| Vec::new())
    }
}

impl CrmSync {
    async fn record<P: Payload>(
        &self,
        lead_id: Uuid,
        kind: &str,
        cause: &Event,
        payload: &P,
    ) -> Result<(), HandleError> {
        let id = lead_id.to_string();
        let mut event = new_event(derive_event_id(&id, kind), None, payload);
        event.correlation_id = id;
        event.causation_id = cause.event_id.clone();
        event.trace = Some(kit::telemetry::current_trace_context());
        // Derived ids make a repeat harmless, and the CRM's events do not
        // depend on the call-back's: no need to race it for the version.
        self.store
            .append(&format!("lead-{lead_id}"), Expected::Any, vec![event])
            .await
            .map_err(retry)?;
        Ok(())
    }

    /// What to do when a request failed on try number `delivered`.
    async fn failed(
        &self,
        lead_id: Uuid,
        lead: &Lead,
        cause: &Event,
        delivered: u64,
        error: CrmError,
    ) -> Result<(), HandleError> {
        match error {
            CrmError::Busy(wait) => Err(HandleError::Later(wait)),
            CrmError::Transient(_) | CrmError::Unknown(_) if delivered < self.attempts as u64 => {
                tracing::warn!(lead = %lead_id, %error, "CRM failed; trying again");
                Err(HandleError::Later(Duration::from_secs(
                    1 << delivered.min(5),
                )))
            }
            error => {
                let received = lead.received.as_ref().expect("a received lead");
                let manual = LeadNeedsManualProcessing {
                    lead_id: lead_id.to_string(),
                    reason: "crm_failed".into(),
                    detail: format!("Bitrix24 did not take the lead: {error}"),
                    calls_stopped: false,
                    site: received.site.clone(),
                    partner_id: received.partner_id.clone(),
                };
                metrics::counter!("callflow_lead_crm_total", "outcome" => "failed").increment(1);
                self.record(lead_id, "manual/crm", cause, &manual).await
            }
        }
    }

    async fn partner(&self, code: &str) -> Result<Option<String>, CrmError> {
        if code.is_empty() {
            return Ok(None);
        }
        if let Some((id, at)) = self.partners.lock().expect("partners lock").get(code)
            && at.elapsed() < PARTNER_TTL
        {
            return Ok(id.clone());
        }
        let id = self.bitrix.find_partner(&self.partner_field, code).await?;
        self.partners
            .lock()
            .expect("partners lock")
            .insert(code.to_owned(), (id.clone(), Instant::now()));
        Ok(id)
    }

    async fn create(
        &self,
        lead_id: Uuid,
        lead: &Lead,
        cause: &Event,
        delivered: u64,
    ) -> Result<(), HandleError> {
        if lead.crm_lead_id.is_some() {
            return Ok(());
        }
        let client = self.pool.get().await.map_err(retry)?;
        let claim = client
            .prepare_cached(
                "INSERT INTO lead_dialer.crm_claims (lead_id) VALUES ($1) ON CONFLICT DO NOTHING",
            )
            .await
            .map_err(retry)?;
        let first_try = client.execute(&claim, &[&lead_id]).await.map_err(retry)? == 1;
        drop(client);
        let id = lead_id.to_string();
        let received = lead.received.as_ref().expect("a received lead");
        let mut reconciled = false;
        let found = if first_try {
            None
        } else {
            match self.bitrix.find_lead(&id).await {
                Ok(found) => found,
                Err(error) => return self.failed(lead_id, lead, cause, delivered, error).await,
            }
        };
        let partner = match self.partner(&received.partner_id).await {
            Ok(partner) => partner,
            Err(error) => return self.failed(lead_id, lead, cause, delivered, error).await,
        };
        let crm_lead_id = match found {
            Some(found) => {
                reconciled = true;
                found
            }
            None => {
                let fields = lead_fields(&id, lead, partner.as_deref());
                match self.bitrix.add_lead(fields).await {
                    Ok(crm_id) => crm_id,
                    Err(error) => return self.failed(lead_id, lead, cause, delivered, error).await,
                }
            }
        };
        metrics::counter!("callflow_lead_crm_total", "outcome" => "created").increment(1);
        let created = LeadCreatedInCrm {
            lead_id: id,
            crm: "bitrix24".into(),
            crm_lead_id,
            partner_crm_id: partner.unwrap_or_default(),
            reconciled,
        };
        self.record(lead_id, "crm/created", cause, &created).await
    }

    async fn update(
        &self,
        lead_id: Uuid,
        lead: &Lead,
        about: &Event,
        delivered: u64,
    ) -> Result<(), HandleError> {
        let Some(crm_lead_id) = &lead.crm_lead_id else {
            // Created soon (the portal's rate limit queues creations); the
            // update waits for it, but not forever.
            if delivered > 200 {
                tracing::warn!(lead = %lead_id, "no CRM lead to update; giving up the update");
                return Ok(());
            }
            return Err(HandleError::Later(Duration::from_secs(5)));
        };
        let (status, fields) = progress_fields(lead, about);
        if let Err(error) = self.bitrix.update_lead(crm_lead_id, fields).await {
            return match error {
                CrmError::Busy(wait) => Err(HandleError::Later(wait)),
                // The status is also in callflow's events; a lost update is
                // logged, not a reason for the manual queue.
                CrmError::Refused(reason) => {
                    tracing::warn!(lead = %lead_id, %reason, "CRM refused an update");
                    Ok(())
                }
                error => Err(retry(error)),
            };
        }
        let updated = LeadUpdatedInCrm {
            lead_id: lead_id.to_string(),
            crm_lead_id: crm_lead_id.clone(),
            status,
            about: about.r#type.clone(),
        };
        self.record(
            lead_id,
            &format!("crm/updated/{}", about.event_id),
            about,
            &updated,
        )
        .await
    }
}
