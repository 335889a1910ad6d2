//! Configuration shared by every service, from environment variables with
//! defaults that work on a developer machine (`make run` sets the real ones).
//!
//! Each service declares its own `clap::Args` struct for what is only its
//! own and flattens [`Common`] into it, so `--help` lists every variable.

use std::time::Duration;

/// Settings every service reads.
#[derive(clap::Args, Debug, Clone)]
#[group(id = "common")]
#[command(next_help_heading = "Common")]
pub struct Common {
    /// PostgreSQL connection URL.
    #[arg(
        long = "database-url",
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/callflow"
    )]
    pub database_url: String,

    /// NATS server URL (JetStream must be enabled).
    #[arg(
        long = "nats-url",
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,

    /// gRPC URL of the event store, for services that append events.
    #[arg(
        long = "event-store-url",
        env = "EVENT_STORE_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub event_store_url: String,

    /// Name of the JetStream stream that carries the event log.
    #[arg(
        long = "jetstream-stream",
        env = "CALLFLOW_JETSTREAM_STREAM",
        default_value = "CALLFLOW"
    )]
    pub jetstream_stream: String,

    /// Copies JetStream keeps of the stream when it creates it (3 on a
    /// three-node cluster; 1 on a single server). An existing stream keeps
    /// its own setting.
    #[arg(
        long = "jetstream-replicas",
        env = "CALLFLOW_JETSTREAM_REPLICAS",
        default_value_t = 1
    )]
    pub jetstream_replicas: usize,

    /// Subject prefix of published events: `<prefix>.<category>.<Type>`.
    #[arg(
        long = "subject-prefix",
        env = "CALLFLOW_SUBJECT_PREFIX",
        default_value = "callflow.evt"
    )]
    pub subject_prefix: String,

    /// Secret the event store authenticates services with: a service's
    /// token is HMAC-SHA256(secret, service name). The default is for
    /// development only.
    #[arg(
        long = "event-store-auth-secret",
        env = "EVENT_STORE_AUTH_SECRET",
        default_value = "dev-only-event-store-secret",
        hide_env_values = true
    )]
    pub event_store_auth_secret: String,

    /// This service's own token, when the operator hands out tokens instead
    /// of the secret (Kubernetes); else it is derived from the secret.
    #[arg(
        long = "event-store-token",
        env = "EVENT_STORE_TOKEN",
        hide_env_values = true
    )]
    pub event_store_token: Option<String>,

    /// Salt of contact stream names (an HMAC of the number, so the number is
    /// not readable in stream names). Every service of a deployment must
    /// use the same; the default is for development only.
    #[arg(
        long = "contact-salt",
        env = "CALLFLOW_CONTACT_SALT",
        default_value = "dev-only-contact-salt",
        hide_env_values = true
    )]
    pub contact_salt: String,

    /// How long to wait for in-flight work after SIGTERM before giving up
    /// (for example `20s`, `500ms`).
    #[arg(long = "drain-timeout", env = "CALLFLOW_DRAIN_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
}

impl Common {
    /// The token `service` presents to the event store.
    pub fn event_store_token_for(&self, service: &str) -> String {
        self.event_store_token
            .clone()
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| {
                crate::store_client::token_for(&self.event_store_auth_secret, service)
            })
    }

    /// A client of the event store that authenticates as `service`.
    pub fn event_store(
        &self,
        service: &str,
    ) -> Result<crate::store_client::EventStoreClient, tonic::transport::Error> {
        Ok(
            crate::store_client::EventStoreClient::connect_lazy(&self.event_store_url, service)?
                .authenticated(&self.event_store_token_for(service)),
        )
    }
}

/// Parses durations written as `<number><unit>` with unit `ms`, `s`, `m`
/// or `h` (`1500ms`, `30s`, `5m`, `2h`), for configuration values.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` has no unit: write it like 30s, 500ms, 5m or 2h"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` does not start with a whole number"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "s" => Ok(Duration::from_secs(number)),
        "m" => Ok(Duration::from_secs(number * 60)),
        "h" => Ok(Duration::from_secs(number * 3600)),
        _ => Err(format!("`{text}` has unit `{unit}`; use ms, s, m or h")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_refuse_without() {
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("3 days").is_err());
    }
}
