//! The console's projection of the log: what the search box finds and the
//! dead-letter list.
//!
//! - Every event belongs to a flow (its correlation id: a call and all it
//!   caused, a lead's life, an inbound call). `flows` says how each flow
//!   began; `search_keys` maps what people search by — a call, order, lead
//!   or reminder id found in any event's top-level fields, the stream's
//!   name, and a phone number (as its contact stream, an HMAC, from the
//!   fields the `.proto` files mark `contact`) — to the flows it appears in.
//!   The timeline then reads the flow's events from the event store, which
//!   shows personal data only while the contact is not forgotten.
//! - `dead_letters` follows `DeadLettered` and what operators asked
//!   (`DeadLetterRetryRequested`, `DeadLetterDiscarded`) and what came of it
//!   (`DeadLetterRetried`).
//!
//! Applying an event twice changes nothing, so the projection can be
//! followed and rebuilt like any other.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::SystemTime;

use deadpool_postgres::Transaction;
use serde_json::Value;

use kit::events::{from_proto_time, to_system_time};
use kit::phone::{DefaultRegion, PhoneNumber};
use kit::projection::{ApplyError, Projector};
use kit::proto::events::v1::Event;
use kit::proto::eventstore::v1::Filter;
use kit::proto::prost_reflect::Value as ReflectValue;

/// The projector's name in `console.projection_checkpoint`.
pub const NAME: &str = "index";

/// The projector.
pub struct Index {
    /// The salt contact streams are derived with (the deployment's
    /// `CONTACT_SALT`), to index phone numbers without keeping them.
    pub contact_salt: String,
}

/// Top-level payload fields that name something people search by.
const ID_FIELDS: &[(&str, &str)] = &[
    ("call_id", "call"),
    ("order_id", "order"),
    ("lead_id", "lead"),
    ("reminder_id", "reminder"),
];

/// The search key of a phone number.
pub fn contact_key(salt: &str, phone: &PhoneNumber) -> String {
    format!("contact:{}", kit::contacts::contact_stream(salt, phone))
}

impl Index {
    /// What `event` can be found by.
    fn keys(&self, event: &Event, payload: Option<&Value>) -> Vec<String> {
        let mut keys = vec![format!("stream:{}", event.stream)];
        let Some(Value::Object(fields)) = payload else {
            return keys;
        };
        for (field, kind) in ID_FIELDS {
            if let Some(Value::String(id)) = fields.get(*field)
                && !id.is_empty()
            {
                keys.push(format!("{kind}:{id}"));
            }
        }
        for field in contact_fields(&event.r#type) {
            if let Some(Value::String(number)) = fields.get(field)
                && let Ok(phone) = PhoneNumber::parse(number, DefaultRegion::default())
            {
                keys.push(contact_key(&self.contact_salt, &phone));
            }
        }
        keys
    }
}

/// The fields of an event type the `.proto` files mark as naming a contact
/// (read from the descriptors once: this runs for every event of the log).
fn contact_fields(event_type: &str) -> &'static [String] {
    static FIELDS: OnceLock<HashMap<String, Vec<String>>> = OnceLock::new();
    FIELDS
        .get_or_init(|| {
            let pool = kit::proto::descriptors();
            let contact = pool
                .get_extension_by_name("callflow.options.v1.contact")
                .expect("options.proto is compiled");
            pool.all_messages()
                .filter(|m| m.package_name() == "callflow.events.v1")
                .map(|m| {
                    let fields = m
                        .fields()
                        .filter(|f| matches!(f.options().get_extension(&contact).as_ref(), ReflectValue::I32(p) if *p > 0))
                        .map(|f| f.name().to_owned())
                        .collect();
                    (m.name().to_owned(), fields)
                })
                .collect()
        })
        .get(event_type)
        .map_or(&[], Vec::as_slice)
}

fn text<'a>(payload: &'a Value, field: &str) -> &'a str {
    payload.get(field).and_then(Value::as_str).unwrap_or("")
}

fn recorded(event: &Event) -> Option<SystemTime> {
    event
        .recorded_at
        .as_ref()
        .and_then(from_proto_time)
        .map(to_system_time)
}

impl Projector for Index {
    fn schema(&self) -> &'static str {
        crate::SCHEMA
    }

    fn name(&self) -> &'static str {
        NAME
    }

    fn filter(&self) -> Filter {
        Filter::default()
    }

    fn tables(&self) -> &'static [&'static str] {
        &["flows", "search_keys", "dead_letters"]
    }

    async fn apply(&self, tx: &Transaction<'_>, event: &Event) -> Result<(), ApplyError> {
        let correlation = kit::events::correlation_of(event);
        let payload = kit::json::payload(event);
        let at = recorded(event);
        let statement = tx
            .prepare_cached(
                "INSERT INTO console.flows AS f
                   (correlation_id, first_position, first_type, first_stream, started_at, last_at)
                 VALUES ($1, $2, $3, $4, $5, $5)
                 ON CONFLICT (correlation_id) DO UPDATE SET
                   first_type = CASE WHEN EXCLUDED.first_position < f.first_position
                                     THEN EXCLUDED.first_type ELSE f.first_type END,
                   first_stream = CASE WHEN EXCLUDED.first_position < f.first_position
                                       THEN EXCLUDED.first_stream ELSE f.first_stream END,
                   first_position = least(f.first_position, EXCLUDED.first_position),
                   started_at = least(f.started_at, EXCLUDED.started_at),
                   last_at = greatest(f.last_at, EXCLUDED.last_at)",
            )
            .await?;
        tx.execute(
            &statement,
            &[
                &correlation,
                &(event.position as i64),
                &event.r#type,
                &event.stream,
                &at,
            ],
        )
        .await?;
        let keys = self.keys(event, payload.as_ref());
        let statement = tx
            .prepare_cached(
                "INSERT INTO console.search_keys (key, correlation_id)
                 SELECT unnest($1::text[]), $2 ON CONFLICT DO NOTHING",
            )
            .await?;
        tx.execute(&statement, &[&keys, &correlation]).await?;
        if let Some(payload) = &payload {
            self.dead_letters(tx, event, payload, at).await?;
            if event.r#type == "ContactForgotten" {
                let stream = text(payload, "contact_stream");
                if !stream.is_empty() {
                    // The flows stay; only finding them by this number goes.
                    tx.execute(
                        "DELETE FROM console.search_keys WHERE key = $1",
                        &[&format!("contact:{stream}")],
                    )
                    .await?;
                }
            }
        }
        Ok(())
    }
}

impl Index {
    async fn dead_letters(
        &self,
        tx: &Transaction<'_>,
        event: &Event,
        payload: &Value,
        at: Option<SystemTime>,
    ) -> Result<(), ApplyError> {
        let consumer = text(payload, "consumer");
        let event_id = text(payload, "event_id");
        let position = event.position as i64;
        match event.r#type.as_str() {
            "DeadLettered" => {
                let number = |field: &str| {
                    payload
                        .get(field)
                        .and_then(|v| v.as_str().and_then(|s| s.parse().ok()).or(v.as_i64()))
                        .unwrap_or(0i64)
                };
                let statement = tx
                    .prepare_cached(
                        "INSERT INTO console.dead_letters AS d
                           (consumer, event_id, event_type, event_stream, event_position, subject,
                            deliveries, reason, parked_at, state, position)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'parked', $10)
                         ON CONFLICT (consumer, event_id) DO UPDATE SET
                           deliveries = EXCLUDED.deliveries, reason = EXCLUDED.reason,
                           parked_at = EXCLUDED.parked_at, state = 'parked',
                           changed_by = NULL, detail = NULL, changed_at = NULL,
                           position = EXCLUDED.position
                         WHERE d.position < EXCLUDED.position",
                    )
                    .await?;
                tx.execute(
                    &statement,
                    &[
                        &consumer,
                        &event_id,
                        &text(payload, "event_type"),
                        &text(payload, "event_stream"),
                        &number("event_position"),
                        &text(payload, "subject"),
                        &number("deliveries"),
                        &text(payload, "reason"),
                        &at,
                        &position,
                    ],
                )
                .await?;
            }
            "DeadLetterRetryRequested" | "DeadLetterRetried" | "DeadLetterDiscarded" => {
                let (state, detail) = match event.r#type.as_str() {
                    "DeadLetterRetryRequested" => ("retry_requested", text(payload, "reason")),
                    "DeadLetterDiscarded" => ("discarded", text(payload, "reason")),
                    _ if payload.get("succeeded").and_then(Value::as_bool) == Some(true) => {
                        ("retried", text(payload, "detail"))
                    }
                    _ => ("retry_failed", text(payload, "detail")),
                };
                let statement = tx
                    .prepare_cached(
                        "UPDATE console.dead_letters
                            SET state = $3, changed_by = $4, detail = $5, changed_at = $6, position = $7
                          WHERE consumer = $1 AND event_id = $2 AND position < $7",
                    )
                    .await?;
                tx.execute(
                    &statement,
                    &[
                        &consumer,
                        &event_id,
                        &state,
                        &text(payload, "requested_by"),
                        &detail,
                        &at,
                        &position,
                    ],
                )
                .await?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// Waits (a few seconds at most) until the index reflects the log up to
/// `position`, so the page a change returns to already shows it.
pub async fn settle(pool: &deadpool_postgres::Pool, position: u64) {
    kit::projection::settle(
        pool,
        crate::SCHEMA,
        NAME,
        position,
        std::time::Duration::from_secs(5),
    )
    .await;
}
