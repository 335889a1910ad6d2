//! The generic "call completed" webhook, for PBXs and providers without an
//! adapter of their own:
//!
//! ```json
//! {"call_uid": "8f2c1", "provider": "asterisk", "direction": "inbound",
//!  "from": "+79161234567", "to": "+74951234567",
//!  "started_at": "2026-11-24T10:15:00+03:00", "duration_seconds": 125,
//!  "manager_id": "m-17", "recording_url": "https://pbx.example/rec/8f2c1.mp3"}
//! ```

use std::time::Duration;

use kit::events::{to_proto_duration, to_proto_time};
use kit::proto::events::v1::{CallCompleted, CallDirection};

use crate::errors::ApiError;
use crate::exolve::client_phone;
use crate::fields::Fields;
use crate::{Call, Settings};

/// The `provider` field: a lowercase name (letters, digits, `_`) that goes
/// into stream names.
pub fn provider_name(fields: &Fields) -> Result<String, ApiError> {
    let provider = fields.required_text("provider")?.to_ascii_lowercase();
    if provider.len() > 30
        || !provider.starts_with(|c: char| c.is_ascii_lowercase())
        || !provider
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(ApiError::invalid(
            "provider",
            "`provider` must be a name like `asterisk` (letters, digits, _)",
        ));
    }
    Ok(provider)
}

/// Reads a generic call-completed body.
pub fn parse(fields: &Fields, settings: &Settings) -> Result<(Call, CallCompleted), ApiError> {
    let call_id = fields
        .id("call_uid")?
        .ok_or_else(|| ApiError::invalid("call_uid", "`call_uid` is required"))?;
    let provider = provider_name(fields)?;
    let direction = match fields.text("direction")?.as_deref() {
        None => CallDirection::Unspecified,
        Some("inbound" | "in") => CallDirection::Inbound,
        Some("outbound" | "out") => CallDirection::Outbound,
        Some(other) => {
            return Err(ApiError::invalid(
                "direction",
                format!("`direction` {other} is not inbound or outbound"),
            ));
        }
    };
    let from = Some(fields.required_phone("from", settings.default_region)?);
    let to = Some(fields.required_phone("to", settings.default_region)?);
    let started_at = fields
        .time("started_at", &settings.provider_time_zone)?
        .ok_or_else(|| ApiError::invalid("started_at", "`started_at` is required"))?;
    let duration = fields.count("duration_seconds")?.map(Duration::from_secs);
    let completed = CallCompleted {
        provider: provider.clone(),
        call_id: call_id.clone(),
        direction: direction as i32,
        client_phone: client_phone(direction, &from, &to),
        from: from.map(|p| p.to_string()).unwrap_or_default(),
        to: to.map(|p| p.to_string()).unwrap_or_default(),
        started_at: Some(to_proto_time(started_at)),
        duration: duration.map(to_proto_duration),
        manager_id: fields.text("manager_id")?.unwrap_or_default(),
        recording_url: fields.url("recording_url")?.unwrap_or_default(),
    };
    let ended_at = started_at
        .checked_add(jiff::SignedDuration::from_secs(
            duration.map_or(0, |d| d.as_secs() as i64),
        ))
        .ok();
    Ok((
        Call {
            provider,
            call_id,
            occurred_at: ended_at,
            kind: "completed",
        },
        completed,
    ))
}
