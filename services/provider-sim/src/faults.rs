//! Faults on demand: what a test can make the next answers of one target
//! be, the queues that hold them, and each provider's own shape for them.
//!
//! Faults are queued per [`Target`] and consumed one per request, in the
//! order they were injected; a target with an empty queue answers normally.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use axum::response::Response;
use serde::{Deserialize, Serialize};

use crate::{bitrix, exolve, slack, telegram, voximplant};

/// One kind of request the simulator answers: the unit for faults and for
/// the request log. Written in snake case over HTTP (`exolve_send_sms`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Exolve `/messaging/v1/SendSMS`.
    ExolveSendSms,
    /// Exolve `/messaging/v1/GetList`.
    ExolveGetList,
    /// Exolve `/statistics/call-record/v1/GetTranscribation`.
    ExolveTranscription,
    /// Exolve `/number/v1/SetCallTranscribationState`.
    ExolveTranscriptionState,
    /// Exolve `/call/v1/MakeVoiceMessage`.
    ExolveVoiceMessage,
    /// Exolve `/number/v1/SetAmdState`.
    ExolveAmdState,
    /// Telegram `/bot<token>/sendMessage`.
    Telegram,
    /// Slack `/services/T…/B…/…`.
    Slack,
    /// Bitrix24 `crm.lead.add`.
    BitrixLeadAdd,
    /// Bitrix24 `crm.lead.update`.
    BitrixLeadUpdate,
    /// Bitrix24 `crm.lead.list`.
    BitrixLeadList,
    /// Bitrix24 `crm.company.list`.
    BitrixCompanyList,
    /// Any other Bitrix24 REST method (answered "method not found").
    BitrixOther,
    /// Voximplant `/platform_api/StartScenarios`.
    Voximplant,
}

impl Target {
    pub const ALL: [Target; 14] = [
        Target::ExolveSendSms,
        Target::ExolveGetList,
        Target::ExolveTranscription,
        Target::ExolveTranscriptionState,
        Target::ExolveVoiceMessage,
        Target::ExolveAmdState,
        Target::Telegram,
        Target::Slack,
        Target::BitrixLeadAdd,
        Target::BitrixLeadUpdate,
        Target::BitrixLeadList,
        Target::BitrixCompanyList,
        Target::BitrixOther,
        Target::Voximplant,
    ];

    /// The name used over HTTP.
    pub fn name(self) -> &'static str {
        match self {
            Target::ExolveSendSms => "exolve_send_sms",
            Target::ExolveGetList => "exolve_get_list",
            Target::ExolveTranscription => "exolve_transcription",
            Target::ExolveTranscriptionState => "exolve_transcription_state",
            Target::ExolveVoiceMessage => "exolve_voice_message",
            Target::ExolveAmdState => "exolve_amd_state",
            Target::Telegram => "telegram",
            Target::Slack => "slack",
            Target::BitrixLeadAdd => "bitrix_lead_add",
            Target::BitrixLeadUpdate => "bitrix_lead_update",
            Target::BitrixLeadList => "bitrix_lead_list",
            Target::BitrixCompanyList => "bitrix_company_list",
            Target::BitrixOther => "bitrix_other",
            Target::Voximplant => "voximplant",
        }
    }

    /// Whose error shapes the target's faults take.
    pub fn provider(self) -> Provider {
        match self {
            Target::ExolveSendSms
            | Target::ExolveGetList
            | Target::ExolveTranscription
            | Target::ExolveTranscriptionState
            | Target::ExolveVoiceMessage
            | Target::ExolveAmdState => Provider::Exolve,
            Target::Telegram => Provider::Telegram,
            Target::Slack => Provider::Slack,
            Target::BitrixLeadAdd
            | Target::BitrixLeadUpdate
            | Target::BitrixLeadList
            | Target::BitrixCompanyList
            | Target::BitrixOther => Provider::Bitrix,
            Target::Voximplant => Provider::Voximplant,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A target name that names no target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown target `{0}`")]
pub struct UnknownTarget(pub String);

impl FromStr for Target {
    type Err = UnknownTarget;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Target::ALL
            .into_iter()
            .find(|t| t.name() == name)
            .ok_or_else(|| UnknownTarget(name.to_owned()))
    }
}

/// The provider behind a target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    Exolve,
    Telegram,
    Slack,
    Bitrix,
    Voximplant,
}

/// What the next answer of a target is made to be. Over HTTP it is an
/// object tagged by `kind`: `{"kind": "server_error", "status": 503}`,
/// `{"kind": "rate_limited", "retry_after_secs": 3}`,
/// `{"kind": "timeout", "accepted": true}`, `{"kind": "slow", "delay_ms": 500}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// A 5xx answer with the provider's own error body. A status outside
    /// 500–599 is answered as 500.
    ServerError {
        #[serde(default = "default_server_error")]
        status: u16,
    },
    /// The provider's rate-limit answer: Telegram's 429 with
    /// `parameters.retry_after`, Slack's and Exolve's 429 with a `Retry-After`
    /// header, Voximplant's 429 with a `Retry-After` header, Bitrix24's 503
    /// `QUERY_LIMIT_EXCEEDED` (which carries no retry time).
    RateLimited { retry_after_secs: u32 },
    /// No answer: the request is held open for the configured hang time
    /// (120 s by default) or until the server shuts down, then answered 504.
    /// With `accepted`, the provider first carries the request out (the SMS
    /// is sent, the lead created, the message posted) and only the answer is
    /// lost: the ambiguous outcome. Without it, nothing happened.
    Timeout {
        #[serde(default)]
        accepted: bool,
    },
    /// The normal answer, after a delay.
    Slow { delay_ms: u64 },
}

fn default_server_error() -> u16 {
    500
}

impl Fault {
    pub fn server_error(status: u16) -> Self {
        Fault::ServerError { status }
    }

    pub fn rate_limited(retry_after_secs: u32) -> Self {
        Fault::RateLimited { retry_after_secs }
    }

    /// Hangs before the provider does anything.
    pub fn timeout() -> Self {
        Fault::Timeout { accepted: false }
    }

    /// The provider carries the request out, then hangs.
    pub fn timeout_after_accepting() -> Self {
        Fault::Timeout { accepted: true }
    }

    pub fn slow(delay: Duration) -> Self {
        Fault::Slow {
            delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// The queued faults of every target.
#[derive(Default)]
pub(crate) struct FaultQueues {
    queues: HashMap<Target, VecDeque<Fault>>,
}

impl FaultQueues {
    pub fn push(&mut self, target: Target, fault: Fault, times: usize) {
        let queue = self.queues.entry(target).or_default();
        queue.extend(std::iter::repeat_n(fault, times));
    }

    pub fn pop(&mut self, target: Target) -> Option<Fault> {
        self.queues.get_mut(&target)?.pop_front()
    }

    /// The faults still queued, per target with any.
    pub fn pending(&self) -> BTreeMap<Target, Vec<Fault>> {
        self.queues
            .iter()
            .filter(|(_, queue)| !queue.is_empty())
            .map(|(target, queue)| (*target, queue.iter().cloned().collect()))
            .collect()
    }

    pub fn clear(&mut self) {
        self.queues.clear();
    }
}

/// The provider's answer to an internal fault with `status`.
pub(crate) fn server_error(provider: Provider, status: u16) -> Response {
    let status = axum::http::StatusCode::from_u16(status)
        .ok()
        .filter(|s| s.is_server_error())
        .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    match provider {
        Provider::Exolve => exolve::server_error(status),
        Provider::Telegram => telegram::server_error(status),
        Provider::Slack => slack::server_error(status),
        Provider::Bitrix => bitrix::server_error(status),
        Provider::Voximplant => voximplant::server_error(status),
    }
}

/// The provider's answer when the caller is rate limited.
pub(crate) fn rate_limited(provider: Provider, retry_after_secs: u32) -> Response {
    match provider {
        Provider::Exolve => exolve::rate_limited(retry_after_secs),
        Provider::Telegram => telegram::rate_limited(retry_after_secs),
        Provider::Slack => slack::rate_limited(retry_after_secs),
        Provider::Bitrix => bitrix::query_limit_exceeded(),
        Provider::Voximplant => voximplant::rate_limited(retry_after_secs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_names_round_trip_through_serde_and_from_str() {
        for target in Target::ALL {
            let json = serde_json::to_value(target).unwrap();
            assert_eq!(json, serde_json::Value::String(target.name().into()));
            assert_eq!(target.name().parse::<Target>().unwrap(), target);
        }
        assert!("nope".parse::<Target>().is_err());
    }

    #[test]
    fn faults_are_tagged_by_kind() {
        let fault: Fault =
            serde_json::from_str(r#"{"kind": "timeout", "accepted": true}"#).unwrap();
        assert_eq!(fault, Fault::timeout_after_accepting());
        let fault: Fault = serde_json::from_str(r#"{"kind": "timeout"}"#).unwrap();
        assert_eq!(fault, Fault::timeout());
        let fault: Fault = serde_json::from_str(r#"{"kind": "server_error"}"#).unwrap();
        assert_eq!(fault, Fault::server_error(500));
        assert_eq!(
            serde_json::to_value(Fault::rate_limited(7)).unwrap(),
            serde_json::json!({"kind": "rate_limited", "retry_after_secs": 7})
        );
    }

    #[test]
    fn queues_are_consumed_in_order_per_target() {
        let mut queues = FaultQueues::default();
        queues.push(Target::Slack, Fault::server_error(502), 2);
        queues.push(Target::Slack, Fault::rate_limited(1), 1);
        queues.push(Target::Telegram, Fault::timeout(), 1);
        assert_eq!(queues.pending()[&Target::Slack].len(), 3);
        assert_eq!(queues.pop(Target::Slack), Some(Fault::server_error(502)));
        assert_eq!(queues.pop(Target::Slack), Some(Fault::server_error(502)));
        assert_eq!(queues.pop(Target::Slack), Some(Fault::rate_limited(1)));
        assert_eq!(queues.pop(Target::Slack), None);
        assert_eq!(queues.pop(Target::Voximplant), None);
        assert!(!queues.pending().contains_key(&Target::Slack));
        queues.clear();
        assert_eq!(queues.pop(Target::Telegram), None);
    }
}
