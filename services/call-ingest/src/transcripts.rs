//! Transcripts pushed by a provider or a PBX (instead of being fetched by
//! the transcription service):
//!
//! ```json
//! {"provider": "exolve", "call_id": "4412", "language": "ru",
//!  "client_phone": "+79161234567", "call_started_at": "2026-11-24T10:00:00+03:00",
//!  "turns": [{"speaker": "manager", "text": "Напомнить вам через месяц?", "start": 1.5, "end": 3.0},
//!            {"speaker": "client", "text": "Да, давайте"}]}
//! ```
//!
//! A call has at most one transcript: when one is already recorded (fetched
//! or pushed before), the answer names it and nothing is written.

use serde_json::Value;

use kit::events::{to_proto_duration, to_proto_time};
use kit::proto::events::v1::{SpeakerRole, TranscriptReady, TranscriptTurn};

use crate::errors::ApiError;
use crate::fields::Fields;
use crate::{Call, Settings};

/// Most turns in one transcript.
pub const MAX_TURNS: usize = 2000;

/// Reads a pushed transcript.
pub fn parse(fields: &Fields, settings: &Settings) -> Result<(Call, TranscriptReady), ApiError> {
    let provider = crate::generic::provider_name(fields)?;
    let call_id = fields
        .id("call_id")?
        .ok_or_else(|| ApiError::invalid("call_id", "`call_id` is required"))?;
    let client_phone = fields.phone("client_phone", settings.default_region)?;
    let started = fields.time("call_started_at", &settings.provider_time_zone)?;
    let language = fields.text("language")?.unwrap_or_default();
    if language.len() > 35
        || !language
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(ApiError::invalid(
            "language",
            "`language` must be a BCP 47 tag like ru or en-US",
        ));
    }
    let turns = match fields.raw("turns") {
        Some(Value::Array(turns)) if turns.len() <= MAX_TURNS => turns,
        Some(Value::Array(_)) => {
            return Err(ApiError::invalid(
                "turns",
                format!("at most {MAX_TURNS} turns"),
            ));
        }
        None => {
            return Err(ApiError::invalid(
                "turns",
                "`turns` is required (it may be empty)",
            ));
        }
        Some(_) => return Err(ApiError::invalid("turns", "`turns` must be an array")),
    };
    let turns = turns
        .iter()
        .enumerate()
        .map(|(i, turn)| read_turn(i, turn))
        .collect::<Result<Vec<_>, _>>()?;
    let transcript = TranscriptReady {
        provider: provider.clone(),
        call_id: call_id.clone(),
        turns,
        language,
        client_phone: client_phone.map(|p| p.to_string()).unwrap_or_default(),
        call_started_at: started.map(to_proto_time),
    };
    Ok((
        Call {
            provider,
            call_id,
            occurred_at: None,
            kind: "transcript",
        },
        transcript,
    ))
}

fn read_turn(index: usize, turn: &Value) -> Result<TranscriptTurn, ApiError> {
    let field = |name: &str| format!("turns[{index}].{name}");
    let role = match turn.get("speaker").and_then(Value::as_str) {
        Some("manager" | "agent" | "operator") => SpeakerRole::Manager,
        Some("client" | "customer") => SpeakerRole::Client,
        _ => {
            return Err(ApiError::invalid(
                field("speaker"),
                "`speaker` must be manager or client",
            ));
        }
    };
    let text = match turn.get("text") {
        Some(Value::String(text)) if text.chars().count() <= 10_000 => text.clone(),
        Some(Value::String(_)) => {
            return Err(ApiError::invalid(field("text"), "at most 10000 characters"));
        }
        _ => return Err(ApiError::invalid(field("text"), "`text` must be a string")),
    };
    let offset = |name: &str| -> Result<Option<kit::proto::prost_types::Duration>, ApiError> {
        match turn.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => value
                .as_f64()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(|s| Some(to_proto_duration(std::time::Duration::from_secs_f64(s))))
                .ok_or_else(|| {
                    ApiError::invalid(
                        field(name),
                        format!("`{name}` must be seconds from the start, ≥ 0"),
                    )
                }),
        }
    };
    Ok(TranscriptTurn {
        role: role as i32,
        text,
        start: offset("start")?,
        end: offset("end")?,
    })
}
