//! Working with events: typed payloads, stream names, derived event ids and
//! timestamps.

use jiff::Timestamp;
use uuid::Uuid;

use crate::proto::events::v1::Event;
use crate::proto::eventstore::v1::NewEvent;

/// A payload message of `callflow.events.v1`. Its protobuf message name is
/// the event's `type` in the log.
pub trait Payload: prost::Message + prost::Name + Default {}
impl<T: prost::Message + prost::Name + Default> Payload for T {}

/// The `type` an event with payload `P` has in the log.
pub fn type_of<P: Payload>() -> &'static str {
    P::NAME
}

/// Errors of this module.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    #[error("event {event_id} is a {actual}, not a {expected}")]
    WrongType {
        event_id: String,
        expected: &'static str,
        actual: String,
    },
    #[error("payload of event {event_id} ({event_type}) does not decode: {reason}")]
    Undecodable {
        event_id: String,
        event_type: String,
        reason: String,
    },
    #[error("invalid stream name `{0}`: {1}")]
    StreamName(String, &'static str),
}

/// Decodes the payload of `event`, checking that it is a `P`.
pub fn decode<P: Payload>(event: &Event) -> Result<P, EventError> {
    if event.r#type != P::NAME {
        return Err(EventError::WrongType {
            event_id: event.event_id.clone(),
            expected: P::NAME,
            actual: event.r#type.clone(),
        });
    }
    P::decode(event.payload.as_slice()).map_err(|e| EventError::Undecodable {
        event_id: event.event_id.clone(),
        event_type: event.r#type.clone(),
        reason: e.to_string(),
    })
}

/// A new event with payload `payload` and id `event_id`, that happened at
/// `occurred_at` (`None`: when the store records it). Correlation, causation
/// and trace context are left for the caller (or the store's defaults).
pub fn new_event<P: Payload>(
    event_id: Uuid,
    occurred_at: Option<Timestamp>,
    payload: &P,
) -> NewEvent {
    NewEvent {
        event_id: event_id.to_string(),
        r#type: P::NAME.to_owned(),
        occurred_at: occurred_at.map(to_proto_time),
        payload: payload.encode_to_vec(),
        ..Default::default()
    }
}

/// Namespace of every derived event id (a fixed random UUID: changing it
/// would change every derived id).
const EVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6c1f_0f35_2bb4_4c41_9a3e_6f1d_7a55_d0c1);

/// The flow an event belongs to: its correlation id, or its own id when it
/// starts the flow (nil when neither parses).
pub fn correlation_of(event: &Event) -> Uuid {
    Uuid::parse_str(&event.correlation_id)
        .or_else(|_| Uuid::parse_str(&event.event_id))
        .unwrap_or_default()
}

/// The id of an event derived from what caused it: the same cause and kind
/// of output always give the same id, so processing an input twice appends
/// nothing new (the store is idempotent on event ids).
pub fn derive_event_id(cause: &str, kind: &str) -> Uuid {
    let mut name = Vec::with_capacity(cause.len() + kind.len() + 1);
    name.extend_from_slice(cause.as_bytes());
    name.push(b'/');
    name.extend_from_slice(kind.as_bytes());
    Uuid::new_v5(&EVENT_ID_NAMESPACE, &name)
}

/// Longest accepted stream name.
pub const MAX_STREAM_LEN: usize = 200;
/// Longest accepted category.
pub const MAX_CATEGORY_LEN: usize = 50;

/// Checks a stream name (`<category>-<id>`) and returns its category.
///
/// The category becomes a NATS subject token, so it is restricted to
/// lowercase letters, digits and `_`, starting with a letter. The id part may
/// also hold `-`, `.`, `:` and uppercase letters (provider ids).
pub fn stream_category(stream: &str) -> Result<&str, EventError> {
    let invalid = |why| EventError::StreamName(stream.to_owned(), why);
    if stream.len() > MAX_STREAM_LEN {
        return Err(invalid("longer than 200 characters"));
    }
    let (category, id) = stream
        .split_once('-')
        .ok_or_else(|| invalid("must be <category>-<id>"))?;
    if category.is_empty() || category.len() > MAX_CATEGORY_LEN {
        return Err(invalid("category must be 1 to 50 characters"));
    }
    if !category.starts_with(|c: char| c.is_ascii_lowercase())
        || !category
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(invalid(
            "category must be lowercase letters, digits and _, starting with a letter",
        ));
    }
    if id.is_empty() {
        return Err(invalid("id after the category is empty"));
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
    {
        return Err(invalid("id may hold only letters, digits, -, _, . and :"));
    }
    Ok(category)
}

/// Whether `name` is a valid event type: an ASCII identifier starting with
/// an uppercase letter, at most 100 characters (it becomes a subject token).
pub fn is_valid_type(name: &str) -> bool {
    name.len() <= 100
        && name.starts_with(|c: char| c.is_ascii_uppercase())
        && name.chars().all(|c| c.is_ascii_alphanumeric())
}

/// A jiff timestamp as a protobuf timestamp.
pub fn to_proto_time(ts: Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ts.as_second(),
        nanos: ts.subsec_nanosecond(),
    }
}

/// A protobuf timestamp as a jiff timestamp; `None` when out of range.
pub fn from_proto_time(ts: &prost_types::Timestamp) -> Option<Timestamp> {
    Timestamp::new(ts.seconds, ts.nanos).ok()
}

/// A jiff timestamp as a `SystemTime` (what tokio-postgres binds to
/// `timestamptz`). Every timestamp callflow handles fits.
pub fn to_system_time(ts: Timestamp) -> std::time::SystemTime {
    std::time::SystemTime::try_from(ts).unwrap_or(std::time::UNIX_EPOCH)
}

/// A std duration as a protobuf duration.
pub fn to_proto_duration(d: std::time::Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::events::v1::{CallCompleted, CallStarted};

    #[test]
    fn derived_ids_are_stable_and_depend_on_cause_and_kind() {
        let a = derive_event_id("3f7a…cause", "consent");
        assert_eq!(a, derive_event_id("3f7a…cause", "consent"));
        assert_ne!(a, derive_event_id("3f7a…cause", "opt-out"));
        assert_ne!(a, derive_event_id("other-cause", "consent"));
        assert_eq!(a.get_version_num(), 5);
    }

    #[test]
    fn stream_names_give_their_category() {
        assert_eq!(stream_category("call-exolve-123"), Ok("call"));
        assert_eq!(stream_category("contact-79991112233"), Ok("contact"));
        assert_eq!(
            stream_category("dead_letter-consent-analyzer"),
            Ok("dead_letter")
        );
        for bad in [
            "call", "-1", "Call-1", "call-", "ca.ll-1", "call-a b", "9call-1",
        ] {
            assert!(stream_category(bad).is_err(), "{bad} should be refused");
        }
        assert!(stream_category(&format!("call-{}", "x".repeat(200))).is_err());
    }

    #[test]
    fn types_are_identifiers() {
        assert!(is_valid_type("CallCompleted"));
        assert!(!is_valid_type("callCompleted"));
        assert!(!is_valid_type("Call.Completed"));
        assert!(!is_valid_type(""));
    }

    #[test]
    fn payloads_round_trip_and_refuse_the_wrong_type() {
        let payload = CallCompleted {
            call_id: "123".into(),
            ..Default::default()
        };
        let new = new_event(Uuid::nil(), Some(Timestamp::UNIX_EPOCH), &payload);
        assert_eq!(new.r#type, "CallCompleted");
        let event = Event {
            event_id: new.event_id.clone(),
            r#type: new.r#type.clone(),
            payload: new.payload.clone(),
            ..Default::default()
        };
        assert_eq!(decode::<CallCompleted>(&event).unwrap(), payload);
        assert!(matches!(
            decode::<CallStarted>(&event),
            Err(EventError::WrongType { .. })
        ));
    }
}
