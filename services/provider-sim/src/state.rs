//! What the simulator remembers: every request it received, and what the
//! providers hold as a result (sent SMS and their delivery, transcripts
//! scripted by tests, per-number switches, chat messages, CRM leads and
//! companies, started scenarios). Placed calls and their scripts live in
//! [`crate::calls`], which reports from tasks of its own. Tests read it through [`crate::SimHandle`] or `/_sim/...`.
//!
//! The public record types serialise to the JSON the control API returns
//! and deserialise from it, so another process can read them back as the
//! same types.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::faults::Target;
use crate::pipeline::Incoming;

/// One request as the simulator received it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// Order of arrival across all targets, from 1.
    pub seq: u64,
    pub target: Target,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Every header, names in lower case.
    pub headers: BTreeMap<String, String>,
    /// The body: parsed JSON, a form as an object of strings, `null` when
    /// empty, or the raw text when it is neither.
    pub body: Value,
    /// RFC 3339, from the simulator's clock.
    pub received_at: String,
    /// The HTTP status answered; `None` while the answer is pending (a slow
    /// or hung request).
    pub status: Option<u16>,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    pub fn authorization(&self) -> Option<&str> {
        self.header("authorization")
    }
}

/// Where an SMS stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmsStatus {
    /// Accepted, handed to the operator, no delivery report yet.
    Sent,
    Delivered,
    /// The destination was marked unreachable.
    Undelivered,
}

/// An SMS Exolve accepted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SentSms {
    pub message_id: String,
    /// The sender (`number` of SendSMS).
    pub number: String,
    pub destination: String,
    pub text: String,
    /// Parts it is billed as (GSM-7 or UCS-2).
    pub segments: u32,
    /// RFC 3339.
    pub accepted_at: String,
    pub status: SmsStatus,
    /// When it became delivered or undelivered (RFC 3339).
    pub final_at: Option<String>,
}

/// A voice message (TTS call) Exolve was asked to make.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VoiceMessage {
    pub call_id: u64,
    pub source: String,
    pub destination: String,
    pub text: String,
    pub voice: Option<String>,
}

/// A message sent through the Telegram Bot API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TelegramMessage {
    pub message_id: u64,
    /// As sent: a number or an `@channel` string.
    pub chat_id: Value,
    pub text: String,
    pub parse_mode: Option<String>,
    /// Unix seconds.
    pub date: i64,
}

/// A message posted to a Slack incoming webhook.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlackMessage {
    /// The webhook path, `/services/T…/B…/…`.
    pub path: String,
    pub text: Option<String>,
    pub blocks: Option<Value>,
}

/// A lead in the simulated Bitrix24 portal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BitrixLead {
    pub id: u64,
    /// The fields as last written (`crm.lead.update` merges into them).
    pub fields: Map<String, Value>,
    /// The `params` of `crm.lead.add`.
    pub params: Option<Value>,
    /// How many `crm.lead.update` calls changed it.
    pub updates: u32,
}

/// A company in the simulated Bitrix24 portal, seeded by a test
/// ([`crate::SimHandle::add_company`]) for `crm.company.list` to find.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BitrixCompany {
    pub id: u64,
    pub fields: Map<String, Value>,
}

/// A scenario started through Voximplant's `StartScenarios`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VoximplantCall {
    pub call_session_history_id: u64,
    pub rule_id: Option<u64>,
    pub rule_name: Option<String>,
    pub script_custom_data: Option<String>,
}

/// A transcript scripted by a test, answered once it is ready.
pub(crate) struct ScriptedTranscript {
    pub not_ready_polls: u32,
    pub polls: u32,
    pub body: Value,
}

/// An SMS with its time kept as a timestamp.
pub(crate) struct SmsRecord {
    pub message_id: String,
    pub number: String,
    pub destination: String,
    pub text: String,
    pub segments: u32,
    pub accepted_at: Timestamp,
    pub status: SmsStatus,
    pub final_at: Option<Timestamp>,
}

impl SmsRecord {
    pub fn public(&self) -> SentSms {
        SentSms {
            message_id: self.message_id.clone(),
            number: self.number.clone(),
            destination: self.destination.clone(),
            text: self.text.clone(),
            segments: self.segments,
            accepted_at: self.accepted_at.to_string(),
            status: self.status,
            final_at: self.final_at.map(|t| t.to_string()),
        }
    }
}

/// Bitrix24's leaky bucket: each request adds one, the bucket drains at a
/// fixed rate, and a request that would overflow it is refused.
#[derive(Default)]
pub(crate) struct LeakyBucket {
    level: f64,
    updated: Option<Timestamp>,
}

impl LeakyBucket {
    pub fn admit(&mut self, now: Timestamp, size: u32, per_second: f64) -> bool {
        if let Some(updated) = self.updated {
            let elapsed = now.duration_since(updated).as_secs_f64().max(0.0);
            self.level = (self.level - elapsed * per_second).max(0.0);
        }
        self.updated = Some(now);
        if self.level + 1.0 > f64::from(size) {
            false
        } else {
            self.level += 1.0;
            true
        }
    }
}

/// Counters for the ids the providers hand out. They survive a reset, so
/// an id is never given twice by one simulator.
pub(crate) struct Ids {
    next_sms: u64,
    next_call: u64,
    next_telegram: u64,
    next_lead: u64,
    next_company: u64,
    next_session: u64,
}

impl Ids {
    fn new() -> Self {
        // Random starts keep ids from two runs of the simulator apart (the
        // demo may restart it while callflow keeps the ids it was given);
        // SMS ids have 18 digits like Exolve's.
        Self {
            next_sms: rand::random_range(100_000_000_000_000_000..800_000_000_000_000_000),
            next_call: rand::random_range(1_000_000_000..5_000_000_000),
            next_telegram: 1,
            next_lead: rand::random_range(1_000..100_000),
            next_company: rand::random_range(1_000..100_000),
            next_session: rand::random_range(1_000_000_000..5_000_000_000),
        }
    }

    fn take(counter: &mut u64) -> u64 {
        let id = *counter;
        *counter += 1;
        id
    }

    pub fn sms(&mut self) -> String {
        Self::take(&mut self.next_sms).to_string()
    }

    pub fn call(&mut self) -> u64 {
        Self::take(&mut self.next_call)
    }

    pub fn telegram(&mut self) -> u64 {
        Self::take(&mut self.next_telegram)
    }

    pub fn lead(&mut self) -> u64 {
        Self::take(&mut self.next_lead)
    }

    pub fn company(&mut self) -> u64 {
        Self::take(&mut self.next_company)
    }

    pub fn session(&mut self) -> u64 {
        Self::take(&mut self.next_session)
    }
}

/// Everything remembered, behind the simulator's one mutex.
pub(crate) struct Records {
    next_seq: u64,
    requests: Vec<RecordedRequest>,
    pub ids: Ids,
    pub sms: Vec<SmsRecord>,
    pub undeliverable: HashSet<String>,
    pub transcripts: HashMap<String, ScriptedTranscript>,
    pub transcription_states: BTreeMap<String, bool>,
    pub amd_states: BTreeMap<String, bool>,
    pub voice_messages: Vec<VoiceMessage>,
    pub telegram: Vec<TelegramMessage>,
    pub slack: Vec<SlackMessage>,
    pub leads: BTreeMap<u64, BitrixLead>,
    pub companies: BTreeMap<u64, BitrixCompany>,
    pub bitrix_bucket: LeakyBucket,
    pub voximplant: Vec<VoximplantCall>,
}

impl Records {
    pub fn new() -> Self {
        Self {
            next_seq: 1,
            requests: Vec::new(),
            ids: Ids::new(),
            sms: Vec::new(),
            undeliverable: HashSet::new(),
            transcripts: HashMap::new(),
            transcription_states: BTreeMap::new(),
            amd_states: BTreeMap::new(),
            voice_messages: Vec::new(),
            telegram: Vec::new(),
            slack: Vec::new(),
            leads: BTreeMap::new(),
            companies: BTreeMap::new(),
            bitrix_bucket: LeakyBucket::default(),
            voximplant: Vec::new(),
        }
    }

    /// Forgets everything but the id counters.
    pub fn reset(&mut self) {
        let ids = std::mem::replace(&mut self.ids, Ids::new());
        let next_seq = self.next_seq;
        *self = Self::new();
        self.ids = ids;
        self.next_seq = next_seq;
    }

    /// Logs a request on arrival; returns its sequence number.
    pub fn record(&mut self, target: Target, incoming: &Incoming, now: Timestamp) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let headers = incoming
            .headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        self.requests.push(RecordedRequest {
            seq,
            target,
            method: incoming.method.to_string(),
            path: incoming.path.clone(),
            query: incoming.query.clone(),
            headers,
            body: incoming.body_for_record(),
            received_at: now.to_string(),
            status: None,
        });
        seq
    }

    pub fn answered(&mut self, seq: u64, status: u16) {
        // Requests are appended in seq order; a reset in between may have
        // dropped this one, which is fine.
        if let Ok(index) = self.requests.binary_search_by_key(&seq, |r| r.seq) {
            self.requests[index].status = Some(status);
        }
    }

    pub fn requests(&self, target: Option<Target>) -> Vec<RecordedRequest> {
        self.requests
            .iter()
            .filter(|r| target.is_none_or(|t| r.target == t))
            .cloned()
            .collect()
    }

    /// Moves SMS whose delivery delay has passed to their final status. An
    /// SMS's fate is settled when it is first looked at after the delay, so
    /// a destination marked unreachable after sending still counts.
    pub fn settle_sms(&mut self, now: Timestamp, delay: Duration) {
        let delay = jiff::SignedDuration::try_from(delay).unwrap_or(jiff::SignedDuration::MAX);
        for sms in self.sms.iter_mut().filter(|s| s.status == SmsStatus::Sent) {
            let due = sms.accepted_at.checked_add(delay).unwrap_or(Timestamp::MAX);
            if now >= due {
                sms.status = if self.undeliverable.contains(&sms.destination) {
                    SmsStatus::Undelivered
                } else {
                    SmsStatus::Delivered
                };
                sms.final_at = Some(due);
            }
        }
    }
}

/// Digits only, so `+7 999 111-22-33` and `79991112233` are one number.
pub(crate) fn digits(number: &str) -> String {
    number.chars().filter(char::is_ascii_digit).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    #[test]
    fn bucket_refuses_overflow_and_drains_at_its_rate() {
        let mut bucket = LeakyBucket::default();
        assert!(bucket.admit(at(100), 3, 1.0));
        assert!(bucket.admit(at(100), 3, 1.0));
        assert!(bucket.admit(at(100), 3, 1.0));
        assert!(!bucket.admit(at(100), 3, 1.0));
        // One second drains one request's worth.
        assert!(bucket.admit(at(101), 3, 1.0));
        assert!(!bucket.admit(at(101), 3, 1.0));
        // A long pause empties it, never below zero.
        for _ in 0..3 {
            assert!(bucket.admit(at(1000), 3, 1.0));
        }
        assert!(!bucket.admit(at(1000), 3, 1.0));
    }

    #[test]
    fn zero_refill_never_drains() {
        let mut bucket = LeakyBucket::default();
        assert!(bucket.admit(at(0), 1, 0.0));
        assert!(!bucket.admit(at(10_000), 1, 0.0));
    }

    #[test]
    fn sms_settle_after_the_delay_to_delivered_or_undelivered() {
        let mut records = Records::new();
        for (id, destination) in [("1", "79990000001"), ("2", "79990000002")] {
            records.sms.push(SmsRecord {
                message_id: id.into(),
                number: "sender".into(),
                destination: destination.into(),
                text: "hi".into(),
                segments: 1,
                accepted_at: at(0),
                status: SmsStatus::Sent,
                final_at: None,
            });
        }
        records.undeliverable.insert("79990000002".into());
        records.settle_sms(at(5), Duration::from_secs(10));
        assert!(records.sms.iter().all(|s| s.status == SmsStatus::Sent));
        records.settle_sms(at(10), Duration::from_secs(10));
        assert_eq!(records.sms[0].status, SmsStatus::Delivered);
        assert_eq!(records.sms[1].status, SmsStatus::Undelivered);
        assert_eq!(records.sms[1].final_at, Some(at(10)));
    }

    #[test]
    fn reset_keeps_ids_moving_forward() {
        let mut records = Records::new();
        let first = records.ids.call();
        records.reset();
        assert_eq!(records.ids.call(), first + 1);
    }
}
