//! Which business numbers have transcription on: the switch is made at
//! Exolve (`SetCallTranscribationState`) and recorded as
//! `TranscriptionToggled` in the number's stream (`number-<digits>`), which
//! is where the service looks.

use kit::events::{decode, new_event};
use kit::exolve::{ExolveClient, ExolveError};
use kit::phone::PhoneNumber;
use kit::proto::events::v1::TranscriptionToggled;
use kit::proto::eventstore::v1::ReadStreamRequest;
use kit::store_client::{AppendError, EventStoreClient, Expected};

/// The stream of a business number.
pub fn number_stream(number: &PhoneNumber) -> String {
    format!("number-{}", number.digits())
}

/// Whether transcription is on for `number` (the last switch wins; never
/// switched means off).
pub async fn is_enabled(
    store: &EventStoreClient,
    number: &PhoneNumber,
) -> Result<bool, tonic::Status> {
    let events = store
        .grpc()
        .read_stream(ReadStreamRequest {
            stream: number_stream(number),
            from_version: 1,
            max_count: 0,
        })
        .await?
        .into_inner()
        .events;
    Ok(events
        .iter()
        .rev()
        .find_map(|e| decode::<TranscriptionToggled>(e).ok())
        .is_some_and(|t| t.enabled))
}

/// Why switching failed.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error("Exolve refused: {0}")]
    Exolve(#[from] ExolveError),
    #[error("not recorded: {0}")]
    Store(#[from] AppendError),
}

/// Switches transcription at Exolve, then records it.
pub async fn switch(
    exolve: &ExolveClient,
    store: &EventStoreClient,
    number: &PhoneNumber,
    enabled: bool,
    requested_by: &str,
) -> Result<(), SwitchError> {
    exolve.set_transcription(number.digits(), enabled).await?;
    let payload = TranscriptionToggled {
        number: number.to_string(),
        enabled,
        provider: "exolve".into(),
        requested_by: requested_by.to_owned(),
    };
    let mut event = new_event(uuid::Uuid::new_v4(), None, &payload);
    event.trace = Some(kit::telemetry::current_trace_context());
    store
        .append(&number_stream(number), Expected::Any, vec![event])
        .await?;
    Ok(())
}
