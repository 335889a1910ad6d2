//! kit: the one shared library of callflow's services.
//!
//! What every service needs and nothing else: configuration from the
//! environment ([`config`]), tracing and metrics ([`telemetry`]), the
//! `/healthz`, `/readyz` and `/metrics` endpoints ([`health`]), graceful
//! shutdown ([`shutdown`]), an injectable [`clock`], Postgres connections and
//! migrations ([`db`]), the NATS JetStream connection ([`bus`]), event helpers
//! ([`events`]), the event-store client ([`store_client`]), the JetStream
//! consumer helper ([`consumer`]), rebuildable read models ([`projection`]) and
//! E.164 phone numbers ([`phone`]).

pub mod api_error;
pub mod bench;
pub mod bus;
pub mod clock;
pub mod config;
pub mod consumer;
pub mod contacts;
pub mod db;
pub mod dead_letters;
pub mod events;
pub mod exolve;
pub mod health;
pub mod json;
pub mod local_time;
pub mod phone;
pub mod projection;
pub mod rate_limit;
pub mod shutdown;
pub mod store_client;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;

/// Every program that links kit allocates with mimalloc: the services make
/// many small short-lived allocations (envelopes, headers, gRPC frames) from
/// many threads, where glibc's allocator spent about a sixth of the
/// pipeline's CPU (`make bench BENCH=pipeline` under perf).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
pub mod upcast;

pub use callflow_proto as proto;
