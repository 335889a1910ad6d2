//! The event store's Postgres schema (`eventlog`), as versioned migrations.

use kit::db::Migration;

pub const SCHEMA: &str = "eventlog";

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "events",
        sql: include_str!("../migrations/0001_events.sql"),
    },
    Migration {
        version: 2,
        name: "chain",
        sql: include_str!("../migrations/0002_chain.sql"),
    },
    Migration {
        version: 3,
        name: "correlation",
        sql: include_str!("../migrations/0003_correlation.sql"),
    },
    Migration {
        version: 4,
        name: "privacy",
        sql: include_str!("../migrations/0004_privacy.sql"),
    },
];

/// Key of the session-level advisory lock held by the one relay that
/// publishes to JetStream.
pub const RELAY_LOCK_KEY: i64 = 7_250_482_940_277_416_752;

/// Columns of an event row, in the order [`crate::read::event_from_row`]
/// expects.
pub const EVENT_COLUMNS: &str = "position, event_id, stream, version, category, type, occurred_at, \
     recorded_at, correlation_id, causation_id, traceparent, tracestate, producer, payload";
