//! A simulated PBX that drives a call-control HTTP server (callflow's
//! `call-router`) through whole calls, and a client for Exolve's dynamic
//! forwarding ("follow me") JSON-RPC.
//!
//! A PBX that can "ask an HTTP server what to do next" posts each step of
//! an inbound call and performs the instructions it gets back (the
//! call-control protocol, documented with `call-router`). Testing a router
//! against that contract needs the other side: something that posts the
//! steps the way the PBX does, performs `say`, `gather`, `dial`, ... on a
//! scripted caller and scripted callees, checks every answer as strictly as
//! a real PBX would, and keeps a log to assert on. That is [`play_call`]
//! with a [`PbxScript`]; the log is a [`PbxCall`]. The simulator serves the
//! same as `POST /_sim/pbx/calls`, so that a demo can drive calls through a
//! running router.
//!
//! # Time
//!
//! Only the HTTP round trips take real time (measured per step, and
//! compared with the script's deadline). The call itself runs on a
//! simulated clock, which gives the `duration_ms` of the hangup report:
//! `say` and `play` take no time; `gather` takes none when digits are
//! typed and its `timeout_ms` when nothing is; `record` takes its `max_ms`;
//! `dial` takes its wait (below) plus, when answered, the script's
//! `talk_ms`.
//!
//! # Dialling
//!
//! Each dialled number answers as [`PbxScript::answers`] says (an
//! unscripted number does not answer). A person answering after more than
//! the target's `timeout_ms` counts as `no_answer`.
//!
//! - `sequence`: targets are tried in order until one answers. The wait
//!   is the full `timeout_ms` of every target that rang out, 0 for busy or
//!   failed ones, plus the answering target's `after_ms`; that is the
//!   reported `answered_after_ms`. When nobody answers, the report is the
//!   last target's outcome and number.
//! - `parallel`: every target rings at once and the earliest answer within
//!   its own timeout wins (the first listed on a tie). When nobody
//!   answers, the outcome is `no_answer` if any target rang out, else
//!   `failed` if all failed, else `busy`; the number is the last target's
//!   and the wait is the longest timeout among those that rang out.
//!
//! `announce` is said (and logged in [`PbxCall::said`]) when a target
//! answers. A bridged conversation dialled with `"record": true` gives a
//! `recording` report after the call's hangup report.
//!
//! # Strictness
//!
//! An answer must be 200 ([`PbxError::Status`] otherwise) with a JSON body
//! of the documented shape — unknown fields included — whose list ends with
//! exactly one `gather`, `dial`, `record` or `hangup` and has nothing after
//! it ([`PbxError::Protocol`] otherwise, naming the step and quoting the
//! body). An empty list where the PBX expected instructions is what a real
//! PBX survives by hanging up: the PBX reports a hangup by `pbx` and logs
//! the violation in [`PbxCall::violations`]. Answers to `hangup` and
//! `recording` reports must have no instructions. A call that has not
//! ended after [`MAX_STEPS`] steps is a loop ([`PbxError::TooManySteps`]).
//! An answer slower than the script's `deadline_ms` is logged as late (a
//! real PBX would have given up on it) and then performed anyway.
//!
//! Where the protocol leaves a detail open, the PBX accepts each reading:
//! `hangup` may be `{"hangup": {}}`, `{"hangup": null}` or `"hangup"`, and
//! "no finish key" may be an absent or null `finish_key`, `""` or
//! `"none"`. A `dial` report carries `answered_after_ms` and `talk_ms` only
//! when the outcome is `answered`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::calls::is_webhook_url;
use crate::state::digits;

/// The most steps (requests) one call may take; more is a loop.
pub const MAX_STEPS: usize = 64;
/// How long the PBX waits for one answer before it gives up on the call.
/// Much longer than any deadline: a late answer is logged and used, only a
/// router that hangs ends the call with an error.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What happens on the caller's and the callees' side of one call.
///
/// JSON (the body of `POST /_sim/pbx/calls` carries one as `script`), every
/// field but the first three optional:
///
/// ```json
/// {"call_id": "pbx-8f2c1", "numa": "+79161234567", "numb": "+74951110000",
///  "started_at": "2026-11-24T10:00:00Z", "digits": ["1"],
///  "answers": {"+74951110001": "busy", "+74951110002": {"human": {"after_ms": 3000}}},
///  "talk_ms": 61000, "hang_up_after": null, "deadline_ms": 1500, "token": "secret"}
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PbxScript {
    pub call_id: String,
    /// The caller.
    pub numa: String,
    /// The number called.
    pub numb: String,
    /// When the call started; now (the simulator's clock over HTTP) when
    /// absent.
    #[serde(
        default,
        with = "optional_timestamp",
        skip_serializing_if = "Option::is_none"
    )]
    pub started_at: Option<Timestamp>,
    /// What the caller types: each `gather` takes the next entry; once they
    /// are used up the caller types nothing (`""`, the gather times out).
    #[serde(default)]
    pub digits: Vec<String>,
    /// How each dialled number answers, keyed by the number exactly as the
    /// dial target spells it; an unscripted number does not answer.
    #[serde(default)]
    pub answers: BTreeMap<String, Answer>,
    /// How long an answered conversation lasts.
    #[serde(default = "default_talk_ms")]
    pub talk_ms: u64,
    /// The caller hangs up instead of performing the N-th answer's
    /// instructions (counted from 1), and the PBX reports a hangup by
    /// `caller`.
    #[serde(default)]
    pub hang_up_after: Option<usize>,
    /// An answer slower than this is late.
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
    /// Sent as `Authorization: Bearer <token>` with every step.
    #[serde(default)]
    pub token: Option<String>,
}

fn default_talk_ms() -> u64 {
    60_000
}

fn default_deadline_ms() -> u64 {
    1_500
}

impl PbxScript {
    /// A call from `numa` to `numb` where the caller types nothing, nobody
    /// dialled answers, and every default applies.
    pub fn new(call_id: &str, numa: &str, numb: &str) -> Self {
        Self {
            call_id: call_id.to_owned(),
            numa: numa.to_owned(),
            numb: numb.to_owned(),
            started_at: None,
            digits: Vec::new(),
            answers: BTreeMap::new(),
            talk_ms: default_talk_ms(),
            hang_up_after: None,
            deadline_ms: default_deadline_ms(),
            token: None,
        }
    }
}

/// How a dialled number answers. JSON: `{"human": {"after_ms": 3000}}`,
/// `"no_answer"`, `"busy"` or `"failed"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Answer {
    /// A person picks up `after_ms` after the dial reaches this number.
    Human {
        after_ms: u64,
    },
    /// It rings until the target's timeout.
    NoAnswer,
    Busy,
    Failed,
}

/// What the PBX reports in a step (the protocol's `result`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PbxResult {
    /// What was typed, without the finish key; `""` on timeout.
    Gather {
        digits: String,
    },
    Dial(DialResult),
    Record {
        url: String,
        duration_ms: u64,
    },
    /// The recording of a bridged conversation, after the call.
    Recording {
        url: String,
        duration_ms: u64,
    },
    Hangup {
        by: HangupBy,
        duration_ms: u64,
    },
}

/// The `dial` report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DialResult {
    pub outcome: DialOutcome,
    /// Who answered, or the last target tried.
    pub number: String,
    /// Only when answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_after_ms: Option<u64>,
    /// Only when answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub talk_ms: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DialOutcome {
    Answered,
    NoAnswer,
    Busy,
    Failed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HangupBy {
    Caller,
    Callee,
    Pbx,
}

/// One request of a call and its answer.
#[derive(Clone, Debug, Serialize)]
pub struct PbxStep {
    /// 1 for the start of the call.
    pub n: usize,
    /// Where it was posted.
    pub url: String,
    /// The state token sent (none at the start).
    pub state: Option<String>,
    /// The result reported (none at the start).
    pub result: Option<PbxResult>,
    /// The instructions received, as received.
    pub instructions: Vec<Value>,
    /// The answer said `"fallback": true`.
    pub fallback: bool,
    /// The round trip, request to the whole answer read.
    pub latency_ms: f64,
    /// Slower than the script's deadline.
    pub late: bool,
}

/// The log of one call, played to its end.
#[derive(Clone, Debug, Serialize)]
pub struct PbxCall {
    pub call_id: String,
    pub steps: Vec<PbxStep>,
    /// Texts of `say`, and `announce` texts when a target answered, in
    /// order.
    pub said: Vec<String>,
    /// Prompt ids and URLs of `play`, in order.
    pub played: Vec<String>,
    /// The digits reported by each `gather`, in order.
    pub gathered: Vec<String>,
    /// Every dial target actually tried, in order.
    pub dials: Vec<DialAttempt>,
    /// Who answered the last answered dial.
    pub answered_by: Option<String>,
    /// Any answer said `"fallback": true`.
    pub fallback_used: bool,
    /// Answers slower than the deadline.
    pub late_answers: usize,
    /// Who ended the call.
    pub ended_by: HangupBy,
    /// The simulated duration reported with the hangup.
    pub duration_ms: u64,
    /// URLs of the bridged conversations' recordings, reported after the
    /// hangup (`record` instructions' URLs are in their steps).
    pub recordings: Vec<String>,
    /// Protocol violations the PBX survived (an empty list where it
    /// expected instructions).
    pub violations: Vec<String>,
}

impl PbxCall {
    /// The results reported, in order (the start has none).
    pub fn results(&self) -> impl Iterator<Item = &PbxResult> {
        self.steps.iter().filter_map(|step| step.result.as_ref())
    }

    /// The slowest answer's round trip.
    pub fn max_latency_ms(&self) -> f64 {
        self.steps.iter().map(|s| s.latency_ms).fold(0.0, f64::max)
    }
}

/// One target of a dial, as it went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DialAttempt {
    pub number: String,
    pub outcome: DialOutcome,
    pub caller_id: Option<String>,
    pub record: bool,
}

/// Why a call could not be played to its end.
#[derive(Debug, thiserror::Error)]
pub enum PbxError {
    #[error("step {step}: {source}")]
    Http {
        step: usize,
        #[source]
        source: reqwest::Error,
    },
    #[error("step {step}: HTTP {status}: {body}")]
    Status {
        step: usize,
        status: u16,
        body: String,
    },
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("the call did not end within {0} steps")]
    TooManySteps(usize),
    #[error("JSON-RPC error {code}: {message}")]
    Rpc { code: i64, message: String },
}

/// Plays the call `script` describes against the call-control server at
/// `url`: posts the start, performs the instructions, reports each result
/// where the answer says, until the call is over and its recordings are
/// reported. Returns the log.
pub async fn play_call(
    client: &reqwest::Client,
    url: &str,
    script: &PbxScript,
) -> Result<PbxCall, PbxError> {
    let mut player = Player::new(client, url, script);
    let mut result = None;
    loop {
        let reply = player.post(result.as_ref()).await?;
        if matches!(result, Some(PbxResult::Hangup { .. })) {
            reply.expect_none(player.call.steps.len())?;
            break;
        }
        let answers = player.call.steps.len();
        result = Some(if script.hang_up_after == Some(answers) {
            player.hang_up(HangupBy::Caller)
        } else if reply.instructions.is_empty() {
            player.call.violations.push(format!(
                "step {answers}: no instructions where the PBX expected some; it hung up"
            ));
            player.hang_up(HangupBy::Pbx)
        } else {
            player.perform(&reply.instructions)
        });
    }
    // Recordings of bridged conversations are ready only after the call.
    for recording in std::mem::take(&mut player.recordings) {
        let reply = player.post(Some(&recording)).await?;
        reply.expect_none(player.call.steps.len())?;
    }
    Ok(player.call)
}

/// One call in progress.
struct Player<'a> {
    client: &'a reqwest::Client,
    script: &'a PbxScript,
    url: &'a str,
    started_at: String,
    /// Where the next step goes: the last answer's `report_url`, or `url`.
    next_url: String,
    /// The last state token received.
    state: Option<String>,
    digits: std::slice::Iter<'a, String>,
    /// The simulated call duration so far.
    elapsed_ms: u64,
    /// Recordings made so far, to number their URLs.
    recorded: usize,
    /// `recording` reports to post after the hangup.
    recordings: Vec<PbxResult>,
    call: PbxCall,
}

/// A checked answer.
struct Reply {
    body: String,
    instructions: Vec<Instruction>,
}

impl Reply {
    /// Answers to `hangup` and `recording` reports end the conversation.
    fn expect_none(&self, step: usize) -> Result<(), PbxError> {
        if self.instructions.is_empty() {
            Ok(())
        } else {
            Err(violation(
                step,
                &self.body,
                "instructions in the answer to a hangup or recording report",
            ))
        }
    }
}

impl<'a> Player<'a> {
    fn new(client: &'a reqwest::Client, url: &'a str, script: &'a PbxScript) -> Self {
        Self {
            client,
            script,
            url,
            started_at: script.started_at.unwrap_or_else(Timestamp::now).to_string(),
            next_url: url.to_owned(),
            state: None,
            digits: script.digits.iter(),
            elapsed_ms: 0,
            recorded: 0,
            recordings: Vec::new(),
            call: PbxCall {
                call_id: script.call_id.clone(),
                steps: Vec::new(),
                said: Vec::new(),
                played: Vec::new(),
                gathered: Vec::new(),
                dials: Vec::new(),
                answered_by: None,
                fallback_used: false,
                late_answers: 0,
                // Set by the hangup that ends every call played through.
                ended_by: HangupBy::Pbx,
                duration_ms: 0,
                recordings: Vec::new(),
                violations: Vec::new(),
            },
        }
    }

    /// Posts one step, checks the answer and logs both.
    async fn post(&mut self, result: Option<&PbxResult>) -> Result<Reply, PbxError> {
        let n = self.call.steps.len() + 1;
        if n > MAX_STEPS {
            return Err(PbxError::TooManySteps(MAX_STEPS));
        }
        let mut body = json!({
            "call_id": self.script.call_id,
            "numa": self.script.numa,
            "numb": self.script.numb,
            "started_at": self.started_at,
        });
        if let Some(state) = &self.state {
            body["state"] = json!(state);
        }
        if let Some(result) = result {
            body["result"] = json!(result);
        }
        let mut request = self
            .client
            .post(&self.next_url)
            .timeout(REQUEST_TIMEOUT)
            .json(&body);
        if let Some(token) = &self.script.token {
            request = request.bearer_auth(token);
        }
        let http = |source| PbxError::Http { step: n, source };
        let started = Instant::now();
        let response = request.send().await.map_err(http)?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(http)?;
        let latency = started.elapsed();
        if status != 200 {
            return Err(PbxError::Status {
                step: n,
                status,
                body: text,
            });
        }
        let (answer, instructions) = parse_answer(n, &text)?;
        let late = latency > Duration::from_millis(self.script.deadline_ms);
        self.call.late_answers += usize::from(late);
        self.call.fallback_used |= answer.fallback;
        self.call.steps.push(PbxStep {
            n,
            url: self.next_url.clone(),
            state: self.state.clone(),
            result: result.cloned(),
            instructions: answer.instructions,
            fallback: answer.fallback,
            latency_ms: latency.as_secs_f64() * 1000.0,
            late,
        });
        // An answer without a state (allowed only for the last ones) keeps
        // the previous state for what follows, such as recording reports.
        if answer.state.is_some() {
            self.state = answer.state;
        }
        self.next_url = answer.report_url.unwrap_or_else(|| self.url.to_owned());
        Ok(Reply {
            body: text,
            instructions,
        })
    }

    /// Performs a checked list: everything up to its last instruction, then
    /// that one, whose result is the next report.
    fn perform(&mut self, instructions: &[Instruction]) -> PbxResult {
        for instruction in instructions {
            match instruction {
                Instruction::Say(say) => self.call.said.push(say.text.clone()),
                Instruction::Play(play) => {
                    let what = play.prompt.as_ref().or(play.url.as_ref());
                    self.call.played.extend(what.cloned());
                }
                Instruction::Gather(gather) => return self.gather(gather),
                Instruction::Dial(dial) => return self.dial(dial),
                Instruction::Record(record) => {
                    self.elapsed_ms += record.max_ms;
                    return PbxResult::Record {
                        url: self.recording_url(),
                        duration_ms: record.max_ms,
                    };
                }
                Instruction::Hangup(_) => return self.hang_up(HangupBy::Pbx),
            }
        }
        // Unreachable: a checked list ends with one of the above.
        self.hang_up(HangupBy::Pbx)
    }

    fn hang_up(&mut self, by: HangupBy) -> PbxResult {
        self.call.ended_by = by;
        self.call.duration_ms = self.elapsed_ms;
        PbxResult::Hangup {
            by,
            duration_ms: self.elapsed_ms,
        }
    }

    fn gather(&mut self, gather: &Gather) -> PbxResult {
        let typed = self.digits.next().map_or("", String::as_str);
        // The finish key ends the input and is not reported.
        let typed = match gather.finish_key() {
            Some(key) => typed.split(key).next().unwrap_or_default(),
            None => typed,
        };
        let digits: String = typed.chars().take(gather.max_digits).collect();
        if digits.is_empty() {
            self.elapsed_ms += gather.timeout_ms;
        }
        self.call.gathered.push(digits.clone());
        PbxResult::Gather { digits }
    }

    fn dial(&mut self, dial: &Dial) -> PbxResult {
        let rings: Vec<Ring> = dial.targets.iter().map(|t| self.ring(t)).collect();
        let tried = match dial.mode {
            DialMode::Sequence => sequence(&dial.targets, &rings),
            DialMode::Parallel => parallel(&dial.targets, &rings),
        };
        for (number, outcome) in &tried.attempts {
            self.call.dials.push(DialAttempt {
                number: number.clone(),
                outcome: *outcome,
                caller_id: dial.caller_id.clone(),
                record: dial.record,
            });
        }
        let Some(after_ms) = tried.answered_after_ms else {
            self.elapsed_ms += tried.waited_ms;
            return PbxResult::Dial(DialResult {
                outcome: tried.outcome,
                number: tried.number,
                answered_after_ms: None,
                talk_ms: None,
            });
        };
        // The callee hears the announcement before being bridged.
        self.call.said.extend(dial.announce.clone());
        let talk_ms = self.script.talk_ms;
        self.elapsed_ms += after_ms + talk_ms;
        self.call.answered_by = Some(tried.number.clone());
        if dial.record {
            let url = self.recording_url();
            self.call.recordings.push(url.clone());
            self.recordings.push(PbxResult::Recording {
                url,
                duration_ms: talk_ms,
            });
        }
        PbxResult::Dial(DialResult {
            outcome: DialOutcome::Answered,
            number: tried.number,
            answered_after_ms: Some(after_ms),
            talk_ms: Some(talk_ms),
        })
    }

    /// How one target answers, its timeout applied.
    fn ring(&self, target: &DialTarget) -> Ring {
        match self.script.answers.get(&target.number) {
            Some(Answer::Human { after_ms }) if *after_ms <= target.timeout_ms => {
                Ring::Answers(*after_ms)
            }
            Some(Answer::Human { .. } | Answer::NoAnswer) | None => Ring::RingsOut,
            Some(Answer::Busy) => Ring::Busy,
            Some(Answer::Failed) => Ring::Failed,
        }
    }

    fn recording_url(&mut self) -> String {
        self.recorded += 1;
        format!(
            "http://sim/recordings/{}-{}.wav",
            self.script.call_id, self.recorded
        )
    }
}

/// How one dial target answers.
#[derive(Clone, Copy)]
enum Ring {
    /// Picks up this long after it starts ringing, within its timeout.
    Answers(u64),
    /// Rings for its whole timeout.
    RingsOut,
    Busy,
    Failed,
}

impl Ring {
    fn outcome(self) -> DialOutcome {
        match self {
            Ring::Answers(_) => DialOutcome::Answered,
            Ring::RingsOut => DialOutcome::NoAnswer,
            Ring::Busy => DialOutcome::Busy,
            Ring::Failed => DialOutcome::Failed,
        }
    }
}

/// How a dial went.
struct Tried {
    /// Each target tried, with its own outcome.
    attempts: Vec<(String, DialOutcome)>,
    /// Answered: the whole wait until someone picked up.
    answered_after_ms: Option<u64>,
    /// Not answered: how long it rang in all.
    waited_ms: u64,
    outcome: DialOutcome,
    /// Who answered, or the last target tried.
    number: String,
}

fn sequence(targets: &[DialTarget], rings: &[Ring]) -> Tried {
    let mut attempts = Vec::new();
    let mut waited_ms = 0;
    for (target, ring) in targets.iter().zip(rings) {
        attempts.push((target.number.clone(), ring.outcome()));
        match ring {
            Ring::Answers(after_ms) => {
                return Tried {
                    attempts,
                    answered_after_ms: Some(waited_ms + after_ms),
                    waited_ms,
                    outcome: DialOutcome::Answered,
                    number: target.number.clone(),
                };
            }
            Ring::RingsOut => waited_ms += target.timeout_ms,
            Ring::Busy | Ring::Failed => {}
        }
    }
    // Nobody answered: the last target's outcome (a checked dial has one).
    let (number, outcome) = attempts
        .last()
        .cloned()
        .unwrap_or((String::new(), DialOutcome::Failed));
    Tried {
        attempts,
        answered_after_ms: None,
        waited_ms,
        outcome,
        number,
    }
}

fn parallel(targets: &[DialTarget], rings: &[Ring]) -> Tried {
    // The earliest pick-up wins; on a tie, the first listed.
    let mut winner: Option<(usize, u64)> = None;
    for (i, ring) in rings.iter().enumerate() {
        if let Ring::Answers(after_ms) = *ring
            && winner.is_none_or(|(_, best)| after_ms < best)
        {
            winner = Some((i, after_ms));
        }
    }
    let attempts = targets
        .iter()
        .zip(rings)
        .enumerate()
        .map(|(i, (target, ring))| {
            let outcome = match ring {
                // The others stop ringing once one answers.
                Ring::Answers(_) if winner.is_some_and(|(w, _)| w != i) => DialOutcome::NoAnswer,
                ring => ring.outcome(),
            };
            (target.number.clone(), outcome)
        })
        .collect();
    if let Some((i, after_ms)) = winner {
        return Tried {
            attempts,
            answered_after_ms: Some(after_ms),
            waited_ms: 0,
            outcome: DialOutcome::Answered,
            number: targets[i].number.clone(),
        };
    }
    let rang_out = || {
        targets
            .iter()
            .zip(rings)
            .filter(|(_, ring)| matches!(ring, Ring::RingsOut))
    };
    let outcome = if rang_out().next().is_some() {
        DialOutcome::NoAnswer
    } else if rings.iter().all(|ring| matches!(ring, Ring::Failed)) {
        DialOutcome::Failed
    } else {
        DialOutcome::Busy
    };
    Tried {
        attempts,
        answered_after_ms: None,
        waited_ms: rang_out().map(|(t, _)| t.timeout_ms).max().unwrap_or(0),
        outcome,
        number: targets.last().map(|t| t.number.clone()).unwrap_or_default(),
    }
}

// --- The answers' wire format ---

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireAnswer {
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    report_url: Option<String>,
    #[serde(default)]
    fallback: bool,
    #[serde(default)]
    instructions: Vec<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum Instruction {
    Play(Play),
    Say(Say),
    Gather(Gather),
    Dial(Dial),
    Record(Record),
    Hangup(Empty),
}

impl Instruction {
    /// Waits for something (or ends the call): must end the list.
    fn ends_list(&self) -> bool {
        !matches!(self, Instruction::Play(_) | Instruction::Say(_))
    }

    fn name(&self) -> &'static str {
        match self {
            Instruction::Play(_) => "play",
            Instruction::Say(_) => "say",
            Instruction::Gather(_) => "gather",
            Instruction::Dial(_) => "dial",
            Instruction::Record(_) => "record",
            Instruction::Hangup(_) => "hangup",
        }
    }

    /// What the types cannot say.
    fn check(&self) -> Result<(), String> {
        match self {
            Instruction::Play(play) if play.prompt.is_some() == play.url.is_some() => {
                Err("play needs exactly one of `prompt` and `url`".into())
            }
            Instruction::Say(say) if say.text.trim().is_empty() => {
                Err("say has an empty text".into())
            }
            Instruction::Gather(gather) if gather.max_digits == 0 => {
                Err("gather with max_digits 0".into())
            }
            Instruction::Gather(Gather { finish_key, .. })
            | Instruction::Record(Record { finish_key, .. }) => check_finish_key(finish_key),
            Instruction::Dial(dial) if dial.targets.is_empty() => {
                Err("dial without targets".into())
            }
            Instruction::Dial(dial) if dial.targets.iter().any(|t| t.number.is_empty()) => {
                Err("dial target without a number".into())
            }
            _ => Ok(()),
        }
    }
}

fn check_finish_key(key: &Option<String>) -> Result<(), String> {
    match key.as_deref() {
        None | Some("#" | "*" | "" | "none") => Ok(()),
        Some(other) => Err(format!("finish_key `{other}` is not `#`, `*` or none")),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Play {
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Say {
    text: String,
    #[serde(default)]
    #[allow(dead_code)] // checked for shape, not used by the simulation
    voice: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    language: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Gather {
    max_digits: usize,
    #[serde(default)]
    finish_key: Option<String>,
    timeout_ms: u64,
}

impl Gather {
    fn finish_key(&self) -> Option<&str> {
        self.finish_key
            .as_deref()
            .filter(|key| matches!(*key, "#" | "*"))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Dial {
    targets: Vec<DialTarget>,
    mode: DialMode,
    #[serde(default)]
    caller_id: Option<String>,
    #[serde(default)]
    record: bool,
    #[serde(default)]
    announce: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DialTarget {
    number: String,
    timeout_ms: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum DialMode {
    Sequence,
    Parallel,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    max_ms: u64,
    #[serde(default)]
    finish_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

fn violation(step: usize, body: &str, reason: impl std::fmt::Display) -> PbxError {
    PbxError::Protocol(format!("step {step}: {reason}; body: {body}"))
}

/// Checks an answer's shape and its list.
fn parse_answer(step: usize, body: &str) -> Result<(WireAnswer, Vec<Instruction>), PbxError> {
    let answer: WireAnswer = serde_json::from_str(body).map_err(|e| violation(step, body, e))?;
    let mut instructions = Vec::with_capacity(answer.instructions.len());
    for (i, value) in answer.instructions.iter().enumerate() {
        let instruction = parse_instruction(value)
            .map_err(|e| violation(step, body, format!("instruction {}: {e}", i + 1)))?;
        instructions.push(instruction);
    }
    if let Some((last, rest)) = instructions.split_last() {
        if let Some(i) = rest.iter().position(Instruction::ends_list) {
            return Err(violation(
                step,
                body,
                format!(
                    "instruction {} (`{}`) must be the last one",
                    i + 1,
                    rest[i].name()
                ),
            ));
        }
        if !last.ends_list() {
            return Err(violation(
                step,
                body,
                format!(
                    "the list ends with `{}`, not with gather, dial, record or hangup",
                    last.name()
                ),
            ));
        }
        // The next report must carry it.
        if answer.state.is_none() {
            return Err(violation(step, body, "instructions without a state"));
        }
    }
    if let Some(url) = answer.report_url.as_deref().filter(|u| !is_webhook_url(u)) {
        return Err(violation(
            step,
            body,
            format!("report_url `{url}` is not an absolute http(s) URL"),
        ));
    }
    Ok((answer, instructions))
}

fn parse_instruction(value: &Value) -> Result<Instruction, String> {
    // `hangup` has no fields; accept each way of writing that.
    let value = match value {
        Value::String(name) if name == "hangup" => &json!({ "hangup": {} }),
        Value::Object(map) if map.len() == 1 && map.get("hangup") == Some(&Value::Null) => {
            &json!({ "hangup": {} })
        }
        value => value,
    };
    let instruction = Instruction::deserialize(value).map_err(|e| e.to_string())?;
    instruction.check()?;
    Ok(instruction)
}

/// `started_at` as RFC 3339 text, without relying on jiff's serde feature.
mod optional_timestamp {
    use jiff::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(value: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(at) => s.serialize_some(&at.to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| text.parse().map_err(D::Error::custom))
            .transpose()
    }
}

// --- Exolve's dynamic forwarding (follow me) ---

/// Where Exolve is to forward a call, as a `getControlCallFollowMe`
/// handler answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowMe {
    /// 1, 2 or 3, as the handler said.
    pub redirect_type: u8,
    pub masking: bool,
    /// Where Exolve is to send the call's events (`event_URL`).
    pub event_url: String,
    pub targets: Vec<FollowMeTarget>,
}

/// One line of `followme_struct`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowMeTarget {
    /// `I_FOLLOW_ORDER`.
    pub order: u32,
    /// `ACTIVE`: `"Y"` or `"N"`.
    pub active: bool,
    pub name: String,
    /// `REDIRECT_NUMBER`, digits.
    pub number: String,
    pub period: String,
    pub period_description: String,
    /// `TIMEOUT`, seconds.
    pub timeout_s: u64,
}

/// JSON-RPC ids, distinct within a process.
static NEXT_RPC_ID: AtomicU64 = AtomicU64::new(1);

/// Asks the dynamic forwarding handler at `url`, as Exolve does when a call
/// to a number with dynamic forwarding arrives, where to forward the call
/// from `numa` (sent as digits, `7999…`).
pub async fn ask_follow_me(
    client: &reqwest::Client,
    url: &str,
    numa: &str,
    call_sid: &str,
    sip_id: &str,
) -> Result<FollowMe, PbxError> {
    let id = NEXT_RPC_ID.fetch_add(1, Ordering::Relaxed);
    let request = json!({
        "id": id,
        "jsonrpc": "2.0",
        "method": "getControlCallFollowMe",
        "params": {"sip_id": sip_id, "numberA": digits(numa), "call_sid": call_sid},
    });
    let http = |source| PbxError::Http { step: 1, source };
    let response = client
        .post(url)
        .timeout(REQUEST_TIMEOUT)
        .json(&request)
        .send()
        .await
        .map_err(http)?;
    let status = response.status().as_u16();
    let body = response.text().await.map_err(http)?;
    let bad = |reason: String| PbxError::Protocol(format!("follow me: {reason}; body: {body}"));
    let answer = match serde_json::from_str::<RpcAnswer>(&body) {
        Ok(answer) => answer,
        Err(_) if status != 200 => {
            return Err(PbxError::Status {
                step: 1,
                status,
                body,
            });
        }
        Err(e) => return Err(bad(e.to_string())),
    };
    // A JSON-RPC error is the handler's answer whatever the HTTP status.
    if let Some(error) = answer.error {
        return Err(PbxError::Rpc {
            code: error.code,
            message: error.message,
        });
    }
    if status != 200 {
        return Err(PbxError::Status {
            step: 1,
            status,
            body,
        });
    }
    if answer.jsonrpc != "2.0" || answer.id != json!(id) {
        return Err(bad(format!("expected jsonrpc 2.0 and id {id}")));
    }
    let result = answer
        .result
        .ok_or_else(|| bad("neither result nor error".into()))?;
    if !(1..=3).contains(&result.redirect_type) {
        return Err(bad(format!(
            "redirect_type {} is not 1, 2 or 3",
            result.redirect_type
        )));
    }
    let (count, lines) = result.followme_struct;
    if count != lines.len() {
        return Err(bad(format!(
            "followme_struct says {count} targets but lists {}",
            lines.len()
        )));
    }
    let mut targets = Vec::with_capacity(lines.len());
    for line in lines {
        let active = match line.active.as_str() {
            "Y" => true,
            "N" => false,
            other => return Err(bad(format!("ACTIVE `{other}` is not Y or N"))),
        };
        targets.push(FollowMeTarget {
            order: line.i_follow_order,
            active,
            name: line.name,
            number: line.redirect_number,
            period: line.period,
            period_description: line.period_description,
            timeout_s: line.timeout,
        });
    }
    Ok(FollowMe {
        redirect_type: result.redirect_type,
        masking: result.masking,
        event_url: result.event_url,
        targets,
    })
}

#[derive(Deserialize)]
struct RpcAnswer {
    #[serde(default)]
    id: Value,
    #[serde(default)]
    jsonrpc: String,
    #[serde(default)]
    result: Option<WireFollowMe>,
    #[serde(default)]
    error: Option<RpcError>,
}

#[derive(Deserialize)]
struct RpcError {
    code: i64,
    message: String,
}

#[derive(Deserialize)]
struct WireFollowMe {
    redirect_type: u8,
    #[serde(rename = "event_URL")]
    event_url: String,
    masking: bool,
    /// `[N, [line, ...]]`.
    followme_struct: (usize, Vec<WireFollowMeLine>),
}

#[derive(Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
struct WireFollowMeLine {
    i_follow_order: u32,
    active: String,
    name: String,
    redirect_number: String,
    period: String,
    period_description: String,
    timeout: u64,
}
