//! The call-control protocol on the wire: what a PBX posts at each step of a
//! call and the instructions it gets back (documented with examples in the
//! README, "The call-control protocol"). Parsing checks everything a
//! decision relies on, so a malformed step is a 400 with the reason and
//! never reaches the scenario.

use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use kit::phone::{DefaultRegion, PhoneNumber};

/// A step as posted (before checking).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepRequest {
    pub call_id: String,
    pub numa: String,
    pub numb: String,
    pub started_at: String,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub result: Option<StepResult>,
}

/// What happened since the last answer.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum StepResult {
    Gather {
        digits: String,
    },
    Dial {
        outcome: DialOutcome,
        #[serde(default)]
        number: String,
        #[serde(default)]
        answered_after_ms: u64,
        #[serde(default)]
        talk_ms: u64,
    },
    Record {
        url: String,
        #[serde(default)]
        duration_ms: u64,
    },
    Recording {
        url: String,
        #[serde(default)]
        duration_ms: u64,
    },
    Hangup {
        by: EndedBy,
        #[serde(default)]
        duration_ms: u64,
    },
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DialOutcome {
    Answered,
    NoAnswer,
    Busy,
    Failed,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EndedBy {
    Caller,
    Callee,
    Pbx,
}

impl EndedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            EndedBy::Caller => "caller",
            EndedBy::Callee => "callee",
            EndedBy::Pbx => "pbx",
        }
    }
}

/// A step, checked: the ids are usable as a stream name, the numbers are
/// numbers, the time is a time.
#[derive(Debug, Clone)]
pub struct Step {
    pub call_id: String,
    pub caller: PhoneNumber,
    pub called: PhoneNumber,
    pub started_at: Timestamp,
    pub state: Option<String>,
    pub result: Option<StepResult>,
}

/// Why a step was refused (the 400's message).
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct Malformed(pub String);

/// Whether `id` can be a PBX call id (it becomes the stream
/// `inbound-<call_id>`).
pub fn valid_call_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

impl StepRequest {
    pub fn check(self) -> Result<Step, Malformed> {
        if !valid_call_id(&self.call_id) {
            return Err(Malformed(
                "call_id: 1 to 128 characters of A-Z a-z 0-9 - _ . :".into(),
            ));
        }
        let number = |field: &str, text: &str| {
            PhoneNumber::parse(text, DefaultRegion::default())
                .map_err(|e| Malformed(format!("{field}: `{text}` {e}")))
        };
        let caller = number("numa", &self.numa)?;
        let called = number("numb", &self.numb)?;
        let started_at: Timestamp = self.started_at.parse().map_err(|_| {
            Malformed(format!(
                "started_at: `{}` is not an RFC 3339 time",
                self.started_at
            ))
        })?;
        if self.state.is_some() != self.result.is_some() {
            return Err(Malformed(
                "state and result go together: the first step has neither, every later step both"
                    .into(),
            ));
        }
        if let Some(StepResult::Gather { digits }) = &self.result
            && !digits
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'*' || b == b'#')
        {
            return Err(Malformed(format!(
                "result.gather.digits: `{digits}` holds something other than 0-9, * and #"
            )));
        }
        Ok(Step {
            call_id: self.call_id,
            caller,
            called,
            started_at,
            state: self.state,
            result: self.result,
        })
    }
}

/// The router's answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Answer {
    pub state: String,
    pub report_url: String,
    pub fallback: bool,
    pub instructions: Vec<Instruction>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Instruction {
    Play(Play),
    Say(Say),
    Gather(Gather),
    Dial(Dial),
    Record(Record),
    Hangup {},
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Play {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Say {
    pub text: String,
    pub voice: String,
    pub language: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Gather {
    pub max_digits: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finish_key: Option<String>,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Dial {
    pub targets: Vec<DialTarget>,
    pub mode: DialMode,
    pub caller_id: String,
    pub record: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub announce: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DialTarget {
    pub number: String,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DialMode {
    Sequence,
    Parallel,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub max_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finish_key: Option<String>,
}

pub fn millis(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: serde_json::Value) -> Result<Step, Malformed> {
        serde_json::from_value::<StepRequest>(json)
            .map_err(|e| Malformed(e.to_string()))?
            .check()
    }

    #[test]
    fn a_first_step_and_a_gather_result_parse() {
        let first = request(serde_json::json!({
            "call_id": "pbx-1", "numa": "79161234567", "numb": "+74951110000",
            "started_at": "2026-11-24T10:00:00Z"
        }))
        .unwrap();
        assert_eq!(first.caller.as_str(), "+79161234567");
        assert!(first.result.is_none());
        let next = request(serde_json::json!({
            "call_id": "pbx-1", "numa": "79161234567", "numb": "+74951110000",
            "started_at": "2026-11-24T10:00:00Z", "state": "x",
            "result": {"gather": {"digits": "1"}}
        }))
        .unwrap();
        assert_eq!(next.result, Some(StepResult::Gather { digits: "1".into() }));
    }

    #[test]
    fn malformed_steps_are_named() {
        let base = serde_json::json!({
            "call_id": "pbx-1", "numa": "79161234567", "numb": "+74951110000",
            "started_at": "2026-11-24T10:00:00Z"
        });
        let with = |key: &str, value: serde_json::Value| {
            let mut v = base.clone();
            v[key] = value;
            request(v).unwrap_err().0
        };
        assert!(with("call_id", "a b".into()).starts_with("call_id"));
        assert!(with("numa", "abc".into()).starts_with("numa"));
        assert!(with("started_at", "yesterday".into()).starts_with("started_at"));
        assert!(with("state", "x".into()).starts_with("state and result"));
        let mut v = base.clone();
        v["state"] = "x".into();
        v["result"] = serde_json::json!({"gather": {"digits": "1a"}});
        assert!(request(v).unwrap_err().0.contains("digits"));
        let mut v = base;
        v["state"] = "x".into();
        v["result"] = serde_json::json!({"teleport": {}});
        assert!(request(v).is_err());
    }

    #[test]
    fn instructions_serialize_as_documented() {
        let json = serde_json::to_value(vec![
            Instruction::Gather(Gather {
                max_digits: 1,
                finish_key: Some("#".into()),
                timeout_ms: 5000,
            }),
            Instruction::Hangup {},
        ])
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!([
                {"gather": {"max_digits": 1, "finish_key": "#", "timeout_ms": 5000}},
                {"hangup": {}}
            ])
        );
    }
}
