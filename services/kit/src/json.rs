//! Events as JSON, for people and tools outside Rust: the envelope's fields
//! and the payload decoded field by field with the protobuf JSON mapping
//! (field names as in the `.proto` files, 64-bit numbers as strings, enums
//! by name, defaults included so every row of a type has the same fields).
//! Payload types unknown to this build are given as base64.

use crate::proto::prost_reflect::{DynamicMessage, SerializeOptions};
use base64::Engine;
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::{Map, Value, json};

use crate::events::from_proto_time;
use crate::proto::events::v1::Event;

const OPTIONS: SerializeOptions = SerializeOptions::new()
    .use_proto_field_name(true)
    .skip_default_fields(false);

/// The payload of `event` as JSON; `None` when its type is unknown or the
/// bytes do not decode as it.
pub fn payload(event: &Event) -> Option<Value> {
    decoded(event)?
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

/// The payload decoded as its type, when this build knows the type.
fn decoded(event: &Event) -> Option<DynamicMessage> {
    let descriptor = crate::proto::descriptors()
        .get_message_by_name(&format!("callflow.events.v1.{}", event.r#type))?;
    DynamicMessage::decode(descriptor, event.payload.as_slice()).ok()
}

struct Time<'a>(&'a Option<prost_types::Timestamp>);

impl Serialize for Time<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0.as_ref().and_then(from_proto_time) {
            Some(time) => serializer.collect_str(&time),
            None => serializer.serialize_none(),
        }
    }
}

struct Payload<'a>(&'a DynamicMessage);

impl Serialize for Payload<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize_with_options(serializer, &OPTIONS)
    }
}

/// [`event`] written straight to `out` as one line, without building a
/// `Value` first: what exports use, where this is most of the work. Keys
/// come in the same (alphabetical) order as [`event`] gives them.
pub fn write_line(out: &mut impl std::io::Write, event: &Event) -> std::io::Result<()> {
    let mut serializer = serde_json::Serializer::new(&mut *out);
    let mut map = (&mut serializer).serialize_map(Some(13))?;
    map.serialize_entry("category", &event.category)?;
    map.serialize_entry("causation_id", &event.causation_id)?;
    map.serialize_entry("correlation_id", &event.correlation_id)?;
    map.serialize_entry("event_id", &event.event_id)?;
    map.serialize_entry("occurred_at", &Time(&event.occurred_at))?;
    match decoded(event) {
        Some(message) => map.serialize_entry("payload", &Payload(&message))?,
        None => map.serialize_entry(
            "payload_base64",
            &base64::engine::general_purpose::STANDARD.encode(&event.payload),
        )?,
    }
    map.serialize_entry("position", &event.position)?;
    map.serialize_entry("producer", &event.producer)?;
    map.serialize_entry("recorded_at", &Time(&event.recorded_at))?;
    map.serialize_entry("stream", &event.stream)?;
    let traceparent = event.trace.as_ref().map_or("", |t| t.traceparent.as_str());
    map.serialize_entry("traceparent", traceparent)?;
    map.serialize_entry("type", &event.r#type)?;
    map.serialize_entry("version", &event.version)?;
    map.end()?;
    out.write_all(b"\n")
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

    #[test]
    fn written_lines_are_the_same_json_as_values() {
        let payload = CallCompleted {
            call_id: "4412".into(),
            direction: CallDirection::Inbound as i32,
            ..Default::default()
        };
        let new = new_event(uuid::Uuid::nil(), None, &payload);
        let known = Event {
            r#type: new.r#type,
            payload: new.payload,
            position: 7,
            occurred_at: Some(prost_types::Timestamp {
                seconds: 1_795_000_000,
                nanos: 0,
            }),
            ..Default::default()
        };
        let unknown = Event {
            r#type: "FromTheFuture".into(),
            payload: vec![1, 2, 3],
            ..Default::default()
        };
        for event in [known, unknown] {
            let mut line = Vec::new();
            write_line(&mut line, &event).unwrap();
            assert_eq!(line.last(), Some(&b'\n'));
            let parsed: Value = serde_json::from_slice(&line).unwrap();
            assert_eq!(parsed, super::event(&event));
        }
    }
}
