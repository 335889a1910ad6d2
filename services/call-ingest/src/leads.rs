//! Web leads from shops' forms (`POST /webhooks/leads`):
//!
//! ```json
//! {"ref": "c-8812", "site": "shop.example", "name": "Анна", "phone": "8 (916) 123-45-67",
//!  "city": "Владивосток", "time_zone": "Asia/Vladivostok", "partner_id": "cpa-net-7",
//!  "order_id": "100234", "amount": "1990.50", "currency": "RUB"}
//! ```
//!
//! A lead is a stream `lead-<lead id>`. Its id is derived from the site and
//! the shop's `ref`, so a lead posted again while the first is in progress
//! is answered with the first one's id and appends nothing; once a lead has
//! ended, the same ref starts a new one (the next generation of the id).
//!
//! The number follows the shop's rules on top of the numbering plan: a
//! leading 8 is +7, ten digits starting with 9 are a Russian mobile; more
//! than 11 digits, an invalid number, or one that is neither mobile nor
//! fixed line ends the lead at once with `LeadRejected` (which the notifier
//! tells the sellers about): it is recorded, answered 200, and never called.
//! A body that is not a lead at all (no ref, no phone, a time zone that does
//! not exist, a negative amount) is a 4xx and changes nothing.

use jiff::tz::TimeZone;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use kit::events::{derive_event_id, new_event};
use kit::phone::{DefaultRegion, LineKind, PhoneNumber};
use kit::proto::events::v1::{Event, LeadReceived, LeadRejected};
use kit::store_client::Expected;

use crate::Ingest;
use crate::errors::ApiError;
use crate::fields::Fields;

/// A lead as the form sent it, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Lead {
    pub site: String,
    pub reference: String,
    pub name: String,
    pub phone_as_sent: String,
    pub city: String,
    pub time_zone: String,
    pub partner_id: String,
    pub order_id: String,
    pub amount_minor: i64,
    pub currency: String,
}

/// What the shop's rules make of a number.
#[derive(Debug, Clone, PartialEq)]
pub enum Callable {
    Yes(PhoneNumber),
    No {
        /// `phone_too_long`, `phone_invalid` or `phone_not_callable`.
        reason: &'static str,
        detail: String,
    },
}

/// The answer to a lead.
#[derive(Debug, Serialize)]
pub struct LeadAccepted {
    pub lead_id: String,
    pub stream: String,
    /// `received` (it will be called), `rejected` (its number cannot be) or
    /// `in_progress` (the ref's lead was already under way).
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// True when this lead had already been recorded.
    pub duplicate: bool,
}

/// Events after which a lead is over, and its ref free for a new one.
const ENDINGS: &[&str] = &["LeadRejected", "LeadConfirmed", "LeadClosed"];

/// Most leads one ref may start, a guard against a runaway loop.
const MAX_GENERATIONS: u32 = 1000;

fn optional_text(fields: &Fields, name: &str, max: usize) -> Result<String, ApiError> {
    let text = fields.text(name)?.unwrap_or_default();
    if text.chars().count() > max {
        return Err(ApiError::invalid(
            name,
            format!("`{name}` is longer than {max} characters"),
        ));
    }
    Ok(text)
}

/// Reads `amount` (a JSON number or a decimal string, at most two decimals,
/// not negative) into minor units.
fn amount_minor(fields: &Fields) -> Result<i64, ApiError> {
    let invalid = || {
        ApiError::invalid(
            "amount",
            "`amount` must be a non-negative amount with at most two decimals, like 1990.50",
        )
    };
    let text = match fields.raw("amount") {
        None => return Ok(0),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.trim().to_owned(),
        Some(_) => return Err(invalid()),
    };
    if text.is_empty() {
        return Ok(0);
    }
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    if whole.is_empty()
        || whole.len() > 12
        || fraction.len() > 2
        || !whole.chars().all(|c| c.is_ascii_digit())
        || !fraction.chars().all(|c| c.is_ascii_digit())
    {
        return Err(invalid());
    }
    let whole: i64 = whole.parse().map_err(|_| invalid())?;
    let fraction: i64 = format!("{fraction:0<2}").parse().map_err(|_| invalid())?;
    Ok(whole * 100 + fraction)
}

/// Reads a lead body.
pub fn parse(fields: &Fields) -> Result<Lead, ApiError> {
    let reference = fields
        .id("ref")?
        .ok_or_else(|| ApiError::invalid("ref", "`ref` is required"))?;
    let site = fields
        .id("site")?
        .ok_or_else(|| ApiError::invalid("site", "`site` is required"))?
        .to_ascii_lowercase();
    let phone_as_sent = fields.required_text("phone")?;
    if phone_as_sent.chars().count() > 40 {
        return Err(ApiError::invalid(
            "phone",
            "`phone` is longer than 40 characters",
        ));
    }
    let time_zone = optional_text(fields, "time_zone", 64)?;
    if !time_zone.is_empty() && TimeZone::get(&time_zone).is_err() {
        return Err(ApiError::invalid(
            "time_zone",
            format!("`time_zone` {time_zone} is not an IANA time zone like Europe/Moscow"),
        ));
    }
    let currency = optional_text(fields, "currency", 3)?.to_ascii_uppercase();
    let iso_4217 = currency.len() == 3 && currency.chars().all(|c| c.is_ascii_uppercase());
    if !currency.is_empty() && !iso_4217 {
        return Err(ApiError::invalid(
            "currency",
            "`currency` must be an ISO 4217 code like RUB",
        ));
    }
    Ok(Lead {
        site,
        reference,
        name: optional_text(fields, "name", 200)?,
        phone_as_sent,
        city: optional_text(fields, "city", 100)?,
        time_zone,
        partner_id: optional_text(fields, "partner_id", 100)?,
        order_id: optional_text(fields, "order_id", 100)?,
        amount_minor: amount_minor(fields)?,
        currency: if currency.is_empty() {
            "RUB".into()
        } else {
            currency
        },
    })
}

/// The shop's rules for a number typed into its form.
pub fn callable(phone_as_sent: &str) -> Callable {
    let digits = phone_as_sent.chars().filter(char::is_ascii_digit).count();
    if digits > 11 {
        return Callable::No {
            reason: "phone_too_long",
            detail: format!("the number has {digits} digits; at most 11 are callable"),
        };
    }
    // The numbering plan with Russian habits: a leading 8 is the trunk
    // prefix of +7, ten digits are a national number (9… a mobile).
    let phone = match PhoneNumber::parse(phone_as_sent, DefaultRegion::default()) {
        Ok(phone) => phone,
        Err(error) => {
            return Callable::No {
                reason: "phone_invalid",
                detail: format!("the number {error}"),
            };
        }
    };
    match phone.kind() {
        LineKind::Mobile | LineKind::FixedLine | LineKind::FixedOrMobile => Callable::Yes(phone),
        LineKind::TollFree | LineKind::Other => Callable::No {
            reason: "phone_not_callable",
            detail:
                "the number is neither a mobile nor a fixed line (toll-free, premium, service…)"
                    .into(),
        },
    }
}

fn stream_of(lead_id: Uuid) -> String {
    format!("lead-{lead_id}")
}

impl Ingest {
    /// The id the lead gets: the first generation of its ref whose stream is
    /// empty (a new lead) or not yet ended (a duplicate, with its events).
    async fn lead_id(&self, lead: &Lead) -> Result<(Uuid, Vec<Event>), ApiError> {
        for generation in 0..MAX_GENERATIONS {
            let id = derive_event_id(
                &format!("{}:{}:{generation}", lead.site, lead.reference),
                "lead",
            );
            let events = self.read_stream(&stream_of(id)).await?;
            if events.is_empty() || !events.iter().any(|e| ENDINGS.contains(&e.r#type.as_str())) {
                return Ok((id, events));
            }
        }
        Err(ApiError::invalid(
            "ref",
            format!("`ref` has started {MAX_GENERATIONS} leads already"),
        ))
    }

    /// Records a lead (and its rejection when its number cannot be called).
    pub async fn receive_lead(&self, lead: Lead) -> Result<LeadAccepted, ApiError> {
        let (lead_id, earlier) = self.lead_id(&lead).await?;
        let stream = stream_of(lead_id);
        if !earlier.is_empty() {
            return Ok(LeadAccepted {
                lead_id: lead_id.to_string(),
                stream,
                status: "in_progress",
                reason: None,
                duplicate: true,
            });
        }
        let verdict = callable(&lead.phone_as_sent);
        let received = LeadReceived {
            lead_id: lead_id.to_string(),
            name: lead.name.clone(),
            phone: match &verdict {
                Callable::Yes(phone) => phone.to_string(),
                Callable::No { .. } => String::new(),
            },
            phone_as_sent: lead.phone_as_sent.clone(),
            city: lead.city.clone(),
            time_zone: lead.time_zone.clone(),
            partner_id: lead.partner_id.clone(),
            site: lead.site.clone(),
            order_id: lead.order_id.clone(),
            amount_minor: lead.amount_minor,
            currency: lead.currency.clone(),
            r#ref: lead.reference.clone(),
        };
        let now = self.clock.now();
        let cause = lead_id.to_string();
        let mut events = vec![new_event(
            derive_event_id(&cause, "received"),
            Some(now),
            &received,
        )];
        let rejection = match &verdict {
            Callable::Yes(_) => None,
            Callable::No { reason, detail } => {
                events.push(new_event(
                    derive_event_id(&cause, "rejected"),
                    Some(now),
                    &LeadRejected {
                        lead_id: cause.clone(),
                        reason: (*reason).into(),
                        detail: detail.clone(),
                        site: lead.site.clone(),
                        partner_id: lead.partner_id.clone(),
                        r#ref: lead.reference.clone(),
                    },
                ));
                Some((*reason).to_owned())
            }
        };
        for event in &mut events {
            // A lead is one flow: every event of it shares its id.
            event.correlation_id = cause.clone();
            event.trace = Some(kit::telemetry::current_trace_context());
        }
        let Some(appended) = self
            .append_in_time(&stream, Expected::NoStream, events, "lead")
            .await?
        else {
            // Another request for the same ref won the race: it is the lead.
            return Ok(LeadAccepted {
                lead_id: cause,
                stream,
                status: "in_progress",
                reason: None,
                duplicate: true,
            });
        };
        Ok(LeadAccepted {
            lead_id: cause,
            stream,
            status: if rejection.is_some() {
                "rejected"
            } else {
                "received"
            },
            reason: rejection,
            duplicate: appended.duplicate,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(json: &str) -> Fields {
        Fields::parse(json.as_bytes()).unwrap()
    }

    #[test]
    fn the_shops_number_rules() {
        let yes = |input: &str, e164: &str| match callable(input) {
            Callable::Yes(phone) => assert_eq!(phone.as_str(), e164, "{input}"),
            other => panic!("{input}: {other:?}"),
        };
        yes("8 (916) 123-45-67", "+79161234567");
        yes("9161234567", "+79161234567");
        yes("+7 916 123 45 67", "+79161234567");
        yes("79161234567", "+79161234567");
        yes("8 495 123-45-67", "+74951234567");
        let no = |input: &str, expected: &str| match callable(input) {
            Callable::No { reason, .. } => assert_eq!(reason, expected, "{input}"),
            other => panic!("{input}: {other:?}"),
        };
        no("8916123456789", "phone_too_long");
        no("+7 916 123 45 67 8", "phone_too_long");
        no("12345", "phone_invalid");
        no("позвоните мне", "phone_invalid");
        no("8 800 555-35-35", "phone_not_callable");
    }

    #[test]
    fn a_lead_needs_a_ref_a_site_and_a_phone() {
        let lead = parse(&fields(
            r#"{"ref":"c-1","site":"Shop.Example","phone":"89161234567","amount":1990.5,"time_zone":"Asia/Vladivostok"}"#,
        ))
        .unwrap();
        assert_eq!(lead.site, "shop.example");
        assert_eq!(lead.amount_minor, 199_050);
        assert_eq!(lead.currency, "RUB");
        for (body, field) in [
            (r#"{"site":"s","phone":"1"}"#, "ref"),
            (r#"{"ref":"r","phone":"1"}"#, "site"),
            (r#"{"ref":"r","site":"s"}"#, "phone"),
            (
                r#"{"ref":"r","site":"s","phone":"1","time_zone":"Mars/Olympus"}"#,
                "time_zone",
            ),
            (
                r#"{"ref":"r","site":"s","phone":"1","amount":-5}"#,
                "amount",
            ),
            (
                r#"{"ref":"r","site":"s","phone":"1","amount":"1.999"}"#,
                "amount",
            ),
            (
                r#"{"ref":"r","site":"s","phone":"1","currency":"rubles"}"#,
                "currency",
            ),
            (r#"{"ref":"r r","site":"s","phone":"1"}"#, "ref"),
        ] {
            let error = parse(&fields(body)).unwrap_err();
            assert_eq!(error.field.as_deref(), Some(field), "{body}");
        }
    }
}
