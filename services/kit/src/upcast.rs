//! Schema evolution: when a payload type gets a new shape, the new shape is
//! a new message (`FooV2`); events already in the log keep the old one
//! forever. Readers of the log — replay, export, projections — see the
//! newest shape because they pass every event through the upcasters
//! registered here, in one place: an upcaster turns an event of the old
//! type into one of the new type (payload re-encoded, envelope unchanged).
//!
//! To evolve a type: add the new message to `events.proto`, register an
//! upcaster from the old type in [`registry`], and move producers to the new
//! type. Chains (V1 → V2 → V3) are followed.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::proto::events::v1::Event;

/// Turns an event of one type into the next shape.
pub type Upcaster = fn(Event) -> Event;

/// A set of upcasters keyed by the type they read.
#[derive(Default, Clone)]
pub struct Upcasters {
    by_type: HashMap<String, Upcaster>,
}

impl Upcasters {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `upcaster` for events of type `from`.
    pub fn register(&mut self, from: &str, upcaster: Upcaster) -> &mut Self {
        self.by_type.insert(from.to_owned(), upcaster);
        self
    }

    /// The newest shape of `event` (itself when no upcaster applies).
    pub fn upcast(&self, mut event: Event) -> Event {
        // Bounded, in case of a mistaken cycle.
        for _ in 0..16 {
            match self.by_type.get(&event.r#type) {
                Some(upcaster) => event = upcaster(event),
                None => break,
            }
        }
        event
    }
}

/// The upcasters of callflow's own event types. None yet: every type still
/// has its first shape.
pub fn registry() -> &'static Upcasters {
    static REGISTRY: OnceLock<Upcasters> = OnceLock::new();
    REGISTRY.get_or_init(Upcasters::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn renamed(mut event: Event) -> Event {
        event.r#type = format!("{}V2", event.r#type.trim_end_matches("V1"));
        event.payload.extend_from_slice(b"+v2");
        event
    }

    #[test]
    fn old_shapes_become_the_newest_and_others_pass_through() {
        let mut upcasters = Upcasters::new();
        upcasters.register("NoteV1", renamed);
        let old = Event {
            r#type: "NoteV1".into(),
            payload: b"x".to_vec(),
            ..Default::default()
        };
        let new = upcasters.upcast(old);
        assert_eq!(new.r#type, "NoteV2");
        assert_eq!(new.payload, b"x+v2");
        let other = Event {
            r#type: "CallCompleted".into(),
            ..Default::default()
        };
        assert_eq!(upcasters.upcast(other.clone()), other);
    }
}
