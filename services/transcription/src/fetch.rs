//! Fetching a completed call's transcript: poll Exolve until it is ready or
//! the deadline (counted from the end of the call, so restarts do not extend
//! it) has passed. Waiting happens in JetStream — the message comes back
//! after an exponential backoff with jitter — not in a sleeping task, so a
//! restart loses nothing.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use rand::Rng;

use kit::clock::SharedClock;
use kit::consumer::{HandleError, Handler, Input, Output};
use kit::events::{decode, from_proto_time, to_proto_duration};
use kit::exolve::{ExolveClient, ExolveError, Transcription};
use kit::phone::{DefaultRegion, PhoneNumber};
use kit::proto::events::v1::{
    CallCompleted, CallDirection, SpeakerRole, TranscriptReady, TranscriptTurn, TranscriptionFailed,
};
use kit::proto::eventstore::v1::ReadStreamRequest;
use kit::store_client::EventStoreClient;

use crate::{Config, numbers};

/// The handler of `CallCompleted`.
pub struct Transcriber {
    pub exolve: ExolveClient,
    pub store: EventStoreClient,
    pub clock: SharedClock,
    pub config: Config,
}

fn retry(status: tonic::Status) -> HandleError {
    HandleError::Retry(status.message().to_owned())
}

impl Transcriber {
    /// The business's number in the call: the called one for an inbound
    /// call, the calling one for an outbound call, else whichever has
    /// transcription on.
    async fn business_number(
        &self,
        call: &CallCompleted,
    ) -> Result<Option<PhoneNumber>, HandleError> {
        let parse = |text: &str| PhoneNumber::parse(text, DefaultRegion::default()).ok();
        let candidates = match CallDirection::try_from(call.direction) {
            Ok(CallDirection::Inbound) => vec![parse(&call.to)],
            Ok(CallDirection::Outbound) => vec![parse(&call.from)],
            _ => vec![parse(&call.to), parse(&call.from)],
        };
        for number in candidates.into_iter().flatten() {
            if numbers::is_enabled(&self.store, &number)
                .await
                .map_err(retry)?
            {
                return Ok(Some(number));
            }
        }
        Ok(None)
    }

    /// Whether the call already has a transcript (pushed by the provider, or
    /// fetched before a redelivery).
    async fn already_transcribed(&self, stream: &str) -> Result<bool, HandleError> {
        let events = self
            .store
            .grpc()
            .read_stream(ReadStreamRequest {
                stream: stream.to_owned(),
                from_version: 1,
                max_count: 0,
            })
            .await
            .map_err(retry)?
            .into_inner()
            .events;
        Ok(events
            .iter()
            .any(|e| e.r#type == "TranscriptReady" || e.r#type == "TranscriptionFailed"))
    }

    /// The wait before asking again after `delivered` attempts.
    fn backoff(&self, delivered: u64) -> Duration {
        let exponent = delivered.saturating_sub(1).min(16) as u32;
        let delay = self
            .config
            .poll_first
            .saturating_mul(2u32.saturating_pow(exponent))
            .min(self.config.poll_max);
        delay.mul_f64(rand::rng().random_range(0.5..1.0))
    }
}

impl Handler for Transcriber {
    async fn handle(&self, input: &Input) -> Result<Vec<Output>, HandleError> {
        let call: CallCompleted =
            decode(&input.event).map_err(|e| HandleError::Reject(e.to_string()))?;
        if self.business_number(&call).await?.is_none()
            || self.already_transcribed(&input.event.stream).await?
        {
            return Ok(Vec::new());
        }
        let ended_at = input
            .event
            .occurred_at
            .as_ref()
            .and_then(from_proto_time)
            .unwrap_or_else(|| self.clock.now());
        let deadline = ended_at
            .checked_add(
                SignedDuration::try_from(self.config.deadline).unwrap_or(SignedDuration::MAX),
            )
            .unwrap_or(Timestamp::MAX);
        let failed = |reason: String| {
            let payload = TranscriptionFailed {
                provider: call.provider.clone(),
                call_id: call.call_id.clone(),
                reason,
                attempts: input.delivered as u32,
            };
            Ok(vec![Output::new(&input.event.stream, "failed", &payload)])
        };
        match self.exolve.transcription(&call.call_id).await {
            Ok(transcription) => Ok(vec![Output::new(
                &input.event.stream,
                "transcript",
                &transcript(&call, &transcription, &self.config.caller_channel),
            )]),
            Err(ExolveError::Permanent(reason)) => failed(reason),
            Err(error) if self.clock.now() >= deadline => failed(format!(
                "no transcript by the deadline ({:?} after the call): {error}",
                self.config.deadline
            )),
            Err(ExolveError::RateLimited(Some(after))) => Err(HandleError::Later(after)),
            Err(error) => {
                tracing::debug!(call_id = %call.call_id, %error, "transcript not ready yet");
                Err(HandleError::Later(self.backoff(input.delivered)))
            }
        }
    }
}

/// The transcript as an event: channels mapped to roles from the call's
/// direction (the calling party is the client on an inbound call, the
/// manager on an outbound one).
pub fn transcript(
    call: &CallCompleted,
    transcription: &Transcription,
    caller_channel: &str,
) -> TranscriptReady {
    let caller_is_client = match CallDirection::try_from(call.direction) {
        Ok(CallDirection::Inbound) => true,
        Ok(CallDirection::Outbound) => false,
        _ => !call.client_phone.is_empty() && call.client_phone == call.from,
    };
    let turns: Vec<TranscriptTurn> = transcription
        .chunks
        .iter()
        .map(|chunk| {
            let caller = chunk.channel == caller_channel;
            let role = if caller == caller_is_client {
                SpeakerRole::Client
            } else {
                SpeakerRole::Manager
            };
            TranscriptTurn {
                role: role as i32,
                text: chunk.text.clone(),
                start: chunk.start.map(to_proto_duration),
                end: chunk.end.map(to_proto_duration),
            }
        })
        .collect();
    let cyrillic = turns.iter().any(|t| {
        t.text
            .chars()
            .any(|c| ('\u{0400}'..='\u{04FF}').contains(&c))
    });
    TranscriptReady {
        provider: call.provider.clone(),
        call_id: call.call_id.clone(),
        language: if turns.is_empty() {
            String::new()
        } else if cyrillic {
            "ru".into()
        } else {
            "en".into()
        },
        turns,
        client_phone: call.client_phone.clone(),
        call_started_at: call.started_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kit::exolve::Chunk;

    fn chunk(channel: &str, text: &str) -> Chunk {
        Chunk {
            channel: channel.into(),
            text: text.into(),
            start: None,
            end: None,
        }
    }

    #[test]
    fn channels_become_roles_from_the_direction() {
        let transcription = Transcription {
            calling_number: String::new(),
            called_number: String::new(),
            chunks: vec![
                chunk("1", "Алло, это магазин?"),
                chunk("2", "Да, слушаю вас"),
            ],
        };
        let inbound = CallCompleted {
            direction: CallDirection::Inbound as i32,
            ..Default::default()
        };
        let t = transcript(&inbound, &transcription, "1");
        assert_eq!(t.turns[0].role, SpeakerRole::Client as i32);
        assert_eq!(t.turns[1].role, SpeakerRole::Manager as i32);
        assert_eq!(t.language, "ru");
        let outbound = CallCompleted {
            direction: CallDirection::Outbound as i32,
            ..Default::default()
        };
        let t = transcript(&outbound, &transcription, "1");
        assert_eq!(t.turns[0].role, SpeakerRole::Manager as i32);
    }
}
