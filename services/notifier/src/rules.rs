//! The notifier's configuration: destinations (a Telegram chat, a Slack
//! channel, another team's webhook) and rules (which event types go where,
//! with which text). Read from a TOML file; secrets are never in the file,
//! only the names of the environment variables that hold them:
//!
//! ```toml
//! [destinations.managers]
//! kind = "telegram"
//! url = "https://api.telegram.org"
//! token_env = "TELEGRAM_BOT_TOKEN"
//! chat_id = "-1001234567890"
//! per_minute = 20
//!
//! [destinations.crm]
//! kind = "webhook"
//! url = "https://crm.example/hooks/callflow"
//! secret_env = "CRM_WEBHOOK_SECRET"
//!
//! [[rules]]
//! events = ["ConsentAnalyzed", "SmsFailed"]
//! destination = "managers"
//! template = "Call {call_id}: {decision}"   # optional; each type has a default
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

/// Where notifications go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// Telegram Bot API `sendMessage`.
    Telegram {
        url: String,
        token: String,
        chat_id: String,
    },
    /// A Slack incoming webhook.
    Slack { webhook_url: String },
    /// A JSON webhook, signed with HMAC-SHA256 (`X-Callflow-Signature`).
    Webhook { url: String, secret: String },
}

impl Destination {
    /// The channel name in events.
    pub fn channel(&self) -> &'static str {
        match self {
            Destination::Telegram { .. } => "telegram",
            Destination::Slack { .. } => "slack",
            Destination::Webhook { .. } => "webhook",
        }
    }

    /// What to call the target in events (never a secret).
    pub fn target(&self, name: &str) -> String {
        match self {
            Destination::Telegram { chat_id, .. } => format!("{name} (chat {chat_id})"),
            _ => name.to_owned(),
        }
    }
}

/// One destination with its rate limit.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub destination: Destination,
    /// Messages per minute this destination accepts.
    pub per_minute: u32,
}

/// A rule: events of these types go to this destination.
#[derive(Debug, Clone)]
pub struct Rule {
    pub events: Vec<String>,
    pub destination: String,
    pub template: Option<String>,
}

/// The whole configuration, checked.
#[derive(Debug, Clone)]
pub struct Rules {
    pub targets: Vec<Target>,
    pub rules: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    destinations: BTreeMap<String, DestinationEntry>,
    #[serde(default)]
    rules: Vec<RuleEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DestinationEntry {
    kind: String,
    url: Option<String>,
    token_env: Option<String>,
    chat_id: Option<String>,
    webhook_url_env: Option<String>,
    secret_env: Option<String>,
    per_minute: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleEntry {
    events: Vec<String>,
    destination: String,
    template: Option<String>,
}

/// Why a configuration is refused (the message says where).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("notifier rules: {0}")]
pub struct RulesError(pub String);

impl Rules {
    /// Parses `text` (TOML); `env` looks up secrets by variable name.
    pub fn parse(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self, RulesError> {
        let file: File = toml::from_str(text).map_err(|e| RulesError(e.to_string()))?;
        let mut targets = Vec::new();
        for (name, entry) in file.destinations {
            let secret = |field: &str, variable: &Option<String>| -> Result<String, RulesError> {
                let variable = variable.as_deref().ok_or_else(|| {
                    RulesError(format!(
                        "destination `{name}`: `{field}` (an environment variable name) is required"
                    ))
                })?;
                env(variable).filter(|v| !v.is_empty()).ok_or_else(|| {
                    RulesError(format!(
                        "destination `{name}`: environment variable {variable} is not set"
                    ))
                })
            };
            let destination = match entry.kind.as_str() {
                "telegram" => Destination::Telegram {
                    url: entry
                        .url
                        .clone()
                        .unwrap_or_else(|| "https://api.telegram.org".into()),
                    token: secret("token_env", &entry.token_env)?,
                    chat_id: entry.chat_id.clone().ok_or_else(|| {
                        RulesError(format!("destination `{name}`: `chat_id` is required"))
                    })?,
                },
                "slack" => Destination::Slack {
                    webhook_url: secret("webhook_url_env", &entry.webhook_url_env)?,
                },
                "webhook" => Destination::Webhook {
                    url: entry.url.clone().ok_or_else(|| {
                        RulesError(format!("destination `{name}`: `url` is required"))
                    })?,
                    secret: secret("secret_env", &entry.secret_env)?,
                },
                other => {
                    return Err(RulesError(format!(
                        "destination `{name}`: kind `{other}` is not telegram, slack or webhook"
                    )));
                }
            };
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(RulesError(format!(
                    "destination `{name}`: names are letters, digits, - and _"
                )));
            }
            let default_rate = match destination {
                // Telegram allows about 20 messages a minute in a group,
                // Slack about one a second per channel.
                Destination::Telegram { .. } => 20,
                Destination::Slack { .. } => 60,
                Destination::Webhook { .. } => 600,
            };
            targets.push(Target {
                name,
                destination,
                per_minute: entry.per_minute.unwrap_or(default_rate).max(1),
            });
        }
        let mut rules = Vec::new();
        for (index, entry) in file.rules.into_iter().enumerate() {
            if !targets.iter().any(|t| t.name == entry.destination) {
                return Err(RulesError(format!(
                    "rules[{index}]: no destination named `{}`",
                    entry.destination
                )));
            }
            if entry.events.is_empty()
                || entry.events.iter().any(|e| !kit::events::is_valid_type(e))
            {
                return Err(RulesError(format!(
                    "rules[{index}]: `events` must list event types like ConsentAnalyzed"
                )));
            }
            rules.push(Rule {
                events: entry.events,
                destination: entry.destination,
                template: entry.template,
            });
        }
        Ok(Self { targets, rules })
    }

    /// The rules for `destination` that match `event_type`.
    pub fn matching<'a>(
        &'a self,
        destination: &'a str,
        event_type: &'a str,
    ) -> impl Iterator<Item = (usize, &'a Rule)> {
        self.rules.iter().enumerate().filter(move |(_, r)| {
            r.destination == destination && r.events.iter().any(|e| e == event_type)
        })
    }
}

/// The events of inbound calls the support channel hears about: who
/// called, about which order, who answered, each escalation, fallbacks.
pub const ROUTING_EVENTS: &[&str] = &[
    "CallerIdentified",
    "DialFinished",
    "Escalated",
    "FallbackUsed",
    "InboundCallEnded",
];

/// The rules when no file is given: the managers' Telegram chat hears about
/// consents, failed SMS, parked messages and the web leads' news: new,
/// confirmed, rejected (cannot be called), needing a person and handled by
/// one; and, when a support Slack webhook is configured, the support channel
/// follows every routed inbound call step by step.
pub fn defaults(telegram_url: &str, token: &str, chat_id: &str, support_slack: &str) -> Rules {
    let mut targets = vec![Target {
        name: "managers".into(),
        destination: Destination::Telegram {
            url: telegram_url.into(),
            token: token.into(),
            chat_id: chat_id.into(),
        },
        per_minute: 20,
    }];
    let mut rules = vec![Rule {
        events: vec![
            "ConsentAnalyzed".into(),
            "SmsFailed".into(),
            "LeadReceived".into(),
            "LeadConfirmed".into(),
            "LeadRejected".into(),
            "LeadNeedsManualProcessing".into(),
            "LeadManuallyHandled".into(),
            "DeadLettered".into(),
        ],
        destination: "managers".into(),
        template: None,
    }];
    if !support_slack.is_empty() {
        targets.push(Target {
            name: "support".into(),
            destination: Destination::Slack {
                webhook_url: support_slack.into(),
            },
            per_minute: 60,
        });
        rules.push(Rule {
            events: ROUTING_EVENTS.iter().map(|e| e.to_string()).collect(),
            destination: "support".into(),
            template: None,
        });
    }
    Rules { targets, rules }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TG" => Some("123:abc".into()),
            "HOOK" => Some("s3cret".into()),
            _ => None,
        }
    }

    #[test]
    fn a_file_with_destinations_and_rules_is_read() {
        let rules = Rules::parse(
            r#"
            [destinations.managers]
            kind = "telegram"
            token_env = "TG"
            chat_id = "-100"
            [destinations.crm]
            kind = "webhook"
            url = "https://crm.example/hook"
            secret_env = "HOOK"
            per_minute = 5
            [[rules]]
            events = ["ConsentAnalyzed"]
            destination = "managers"
            template = "Call {call_id}"
            [[rules]]
            events = ["ConsentAnalyzed", "SmsSent"]
            destination = "crm"
            "#,
            env,
        )
        .unwrap();
        assert_eq!(rules.targets.len(), 2);
        assert_eq!(rules.matching("crm", "SmsSent").count(), 1);
        assert_eq!(rules.matching("managers", "SmsSent").count(), 0);
        let crm = rules.targets.iter().find(|t| t.name == "crm").unwrap();
        assert_eq!(crm.per_minute, 5);
    }

    #[test]
    fn mistakes_are_refused_with_where_they_are() {
        let cases = [
            ("[destinations.x]\nkind = \"pager\"", "kind `pager`"),
            (
                "[destinations.x]\nkind = \"telegram\"\ntoken_env = \"NOPE\"\nchat_id = \"1\"",
                "NOPE is not set",
            ),
            (
                "[destinations.x]\nkind = \"telegram\"\ntoken_env = \"TG\"",
                "`chat_id` is required",
            ),
            (
                "[[rules]]\nevents = [\"X\"]\ndestination = \"ghost\"",
                "no destination named `ghost`",
            ),
            (
                "[destinations.x]\nkind = \"slack\"\nwebhook_url_env = \"HOOK\"\n[[rules]]\nevents = [\"not a type\"]\ndestination = \"x\"",
                "event types",
            ),
            ("colour = \"blue\"", "unknown field"),
        ];
        for (text, needle) in cases {
            let error = Rules::parse(text, env).unwrap_err();
            assert!(error.0.contains(needle), "{text}: {error}");
        }
    }
}
