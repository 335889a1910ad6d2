//! notifier: tells people and systems what happened. Rules ([`rules`]) send
//! events of chosen types to Telegram chats, Slack channels or signed
//! webhooks ([`channels`]) with a text from a template ([`templates`]); each
//! destination is its own durable consumer with its own rate limit, and each
//! delivery is recorded as an event ([`notify`]).

pub mod channels;
pub mod notify;
pub mod rules;
pub mod templates;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use kit::bus::Bus;
use kit::config::Common;
use kit::consumer::{self, ConsumerConfig};
use kit::health::Health;

/// Name of the service.
pub const NAME: &str = "notifier";

/// Settings of the notifier (besides [`Common`]).
#[derive(clap::Args, Debug, Clone)]
#[group(id = "notifier")]
#[command(next_help_heading = "notifier")]
pub struct Config {
    /// Address of /healthz, /readyz and /metrics.
    #[arg(
        id = "notifier_http_addr",
        long = "notifier-http-addr",
        env = "NOTIFIER_HTTP_ADDR",
        default_value = "127.0.0.1:9104"
    )]
    pub http_addr: SocketAddr,

    /// TOML file of destinations and rules (see the `rules` module). Without
    /// one, the managers' Telegram chat hears about consents, failed SMS and
    /// parked messages.
    #[arg(id = "notifier_rules", long = "notifier-rules", env = "NOTIFIER_RULES")]
    pub rules: Option<PathBuf>,

    /// Telegram Bot API base URL for the default rules.
    #[arg(
        id = "notifier_telegram_url",
        long = "notifier-telegram-url",
        env = "NOTIFIER_TELEGRAM_URL",
        default_value = "http://127.0.0.1:9900"
    )]
    pub telegram_url: String,

    /// Bot token for the default rules.
    #[arg(
        id = "notifier_telegram_token",
        long = "notifier-telegram-token",
        env = "NOTIFIER_TELEGRAM_TOKEN",
        default_value = "sim-telegram-token",
        hide_env_values = true
    )]
    pub telegram_token: String,

    /// The managers' chat id for the default rules.
    #[arg(
        id = "notifier_telegram_chat",
        long = "notifier-telegram-chat",
        env = "NOTIFIER_TELEGRAM_CHAT",
        default_value = "-1001000000001"
    )]
    pub telegram_chat: String,

    /// Slack incoming-webhook URL of the support channel, which the default
    /// rules tell about every step of routed inbound calls (empty: no
    /// support channel).
    #[arg(
        id = "notifier_support_slack_url",
        long = "notifier-support-slack-url",
        env = "NOTIFIER_SUPPORT_SLACK_URL",
        default_value = "",
        hide_env_values = true
    )]
    pub support_slack_url: String,
}

/// Errors that stop the notifier.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Rules(#[from] rules::RulesError),
    #[error(transparent)]
    Bus(#[from] kit::bus::BusError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Reads the rules the configuration names.
pub fn load_rules(config: &Config) -> Result<rules::Rules, Error> {
    match &config.rules {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::Config(format!("NOTIFIER_RULES {}: {e}", path.display())))?;
            Ok(rules::Rules::parse(&text, |name| std::env::var(name).ok())?)
        }
        None => Ok(rules::defaults(
            &config.telegram_url,
            &config.telegram_token,
            &config.telegram_chat,
            &config.support_slack_url,
        )),
    }
}

/// Runs one consumer per destination until `shutdown`.
pub async fn run(common: Common, config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    let rules = Arc::new(load_rules(&config)?);
    let http_listener = TcpListener::bind(config.http_addr)
        .await
        .map_err(|source| Error::Listen {
            addr: config.http_addr,
            source,
        })?;
    let store = common
        .event_store(NAME)
        .map_err(|e| Error::Config(format!("EVENT_STORE_URL: {e}")))?;
    let bus = Bus::connect(&common, NAME).await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| Error::Config(e.to_string()))?;
    let tasks = TaskTracker::new();
    tasks.spawn(kit::health::serve_http(
        http_listener,
        kit::health::routes(Health::new()),
        shutdown.clone(),
    ));
    for target in &rules.targets {
        if !rules.rules.iter().any(|r| r.destination == target.name) {
            continue;
        }
        let handler = notify::Notifier {
            limit: notify::RateLimit::new(target.per_minute),
            target: target.clone(),
            rules: rules.clone(),
            store: store.clone(),
            http: http.clone(),
        };
        // One message at a time: a channel reads like a story (a call's
        // steps, a lead's news) and must not tell it out of order; chats
        // take a message a second at best anyway.
        let consumer = ConsumerConfig {
            concurrency: 1,
            ..ConsumerConfig::new(
                format!("{NAME}-{}", target.name),
                format!("{}.>", bus.subject_prefix),
            )
        };
        tracing::info!(destination = %target.name, channel = target.destination.channel(), "notifying");
        tasks.spawn(consumer::run(
            bus.clone(),
            store.clone(),
            consumer,
            Arc::new(handler),
            shutdown.clone(),
        ));
    }
    tasks.close();
    tasks.wait().await;
    Ok(())
}
