//! Events as JSON, for people and tools outside Rust: the envelope's fields
//! and the payload decoded field by field with the protobuf JSON mapping
//! (field names as in the `.proto` files, 64-bit numbers as strings, enums
//! by name, defaults included so every row of a type has the same fields).
//! Payload types unknown to this build are given as base64.

use crate::proto::prost_reflect::{DynamicMessage, SerializeOptions};
use base64::Engine;
use serde_json::{Map, Value, json};

use crate::events::from_proto_time;
use crate::proto::events::v1::Event;

const OPTIONS: SerializeOptions = SerializeOptions::new()
    .use_proto_field_name(true)
    .skip_default_fields(false);

/// The payload of `event` as JSON; `None` when its type is unknown or the
/// bytes do not decode as it.
pub fn payload(event: &Event) -> Option<Value> {
    let descriptor = crate::proto::descriptors()
        .get_message_by_name(&format!("callflow.events.v1.{}", event.r#type))?;
    let message = DynamicMessage::decode(descriptor, event.payload.as_slice()).ok()?;
    message
        .serialize_with_options(serde_json::value::Serializer, &OPTIONS)
        .ok()
}

fn time(ts: &Option<prost_types::Timestamp>) -> Value {
    ts.as_ref()
        .and_then(from_proto_time)
        .map_or(Value::Null, |t| Value::String(t.to_string()))
}

/// The envelope's fields of `event`, in a stable order.
pub fn envelope(event: &Event) -> Map<String, Value> {
    let trace = event.trace.clone().unwrap_or_default();
    let mut map = Map::new();
    map.insert("position".into(), json!(event.position));
    map.insert("event_id".into(), json!(event.event_id));
    map.insert("stream".into(), json!(event.stream));
    map.insert("version".into(), json!(event.version));
    map.insert("category".into(), json!(event.category));
    map.insert("type".into(), json!(event.r#type));
    map.insert("occurred_at".into(), time(&event.occurred_at));
    map.insert("recorded_at".into(), time(&event.recorded_at));
    map.insert("correlation_id".into(), json!(event.correlation_id));
    map.insert("causation_id".into(), json!(event.causation_id));
    map.insert("producer".into(), json!(event.producer));
    map.insert("traceparent".into(), json!(trace.traceparent));
    map
}

/// `event` as one JSON object: the envelope and `payload` (decoded, or
/// `payload_base64` when the type is unknown).
pub fn event(event: &Event) -> Value {
    let mut map = envelope(event);
    match payload(event) {
        Some(payload) => {
            map.insert("payload".into(), payload);
        }
        None => {
            map.insert(
                "payload_base64".into(),
                json!(base64::engine::general_purpose::STANDARD.encode(&event.payload)),
            );
        }
    }
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::new_event;
    use crate::proto::events::v1::{CallCompleted, CallDirection};

    #[test]
    fn payloads_decode_field_by_field_with_proto_names() {
        let payload = CallCompleted {
            call_id: "4412".into(),
            direction: CallDirection::Inbound as i32,
            duration: Some(prost_types::Duration {
                seconds: 125,
                nanos: 0,
            }),
            ..Default::default()
        };
        let new = new_event(uuid::Uuid::nil(), None, &payload);
        let event = Event {
            r#type: new.r#type,
            payload: new.payload,
            position: 7,
            ..Default::default()
        };
        let json = super::event(&event);
        assert_eq!(json["position"], 7);
        assert_eq!(json["payload"]["call_id"], "4412");
        assert_eq!(json["payload"]["direction"], "CALL_DIRECTION_INBOUND");
        assert_eq!(json["payload"]["duration"], "125s");
        assert_eq!(json["payload"]["manager_id"], "", "defaults are present");
    }

    #[test]
    fn unknown_types_keep_their_bytes() {
        let event = Event {
            r#type: "FromTheFuture".into(),
            payload: vec![1, 2, 3],
            ..Default::default()
        };
        assert_eq!(super::event(&event)["payload_base64"], "AQID");
    }
}
