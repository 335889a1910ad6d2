//! The decisions: given a call's state, what the PBX reports and what the
//! directory says, the next instructions, the next state and the events
//! that record the step. No I/O of its own besides the [`Lookups`] it is
//! given, so the PBX endpoint decides the timing (deadline, fallback) and
//! the outbox decides the durability.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use kit::clock::SharedClock;
use kit::events::{Payload, derive_event_id, new_event, to_proto_duration, to_proto_time};
use kit::phone::PhoneNumber;
use kit::proto::events::v1::{
    CallerIdentified, CallerKind, DialAttempted, DialFinished, Escalated, FallbackUsed,
    InboundCallEnded, InboundCallStarted, MaskedCallBridged, MaskingSummary, MenuChosen,
    RecordingAvailable, TargetRole,
};
use kit::proto::eventstore::v1::NewEvent;

use crate::protocol::{
    self, Answer, Dial, DialMode, DialOutcome, DialTarget, Gather, Instruction, Say, Step,
    StepResult,
};
use crate::scenario::{
    COURIER_STORE, ChainEntry, Masking, ORDER_SHOP, Scenario, Scenarios, Step as Block, fill,
};
use crate::state::{BadState, CallState, Caller, Dialling, MaskingState, Sealer};

/// The stream of a call.
pub fn stream_of(call_id: &str) -> String {
    format!("inbound-{call_id}")
}

/// A live masking session, as the router needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionView {
    pub session_id: String,
    pub courier_phone: String,
    pub client_phone: String,
}

/// What decisions read: the directory and the masking sessions.
pub trait Lookups: Send + Sync {
    fn identify(
        &self,
        phone: &PhoneNumber,
    ) -> impl Future<Output = Result<Caller, LookupError>> + Send;
    fn session(
        &self,
        code: &str,
        now: Timestamp,
    ) -> impl Future<Output = Result<Option<SessionView>, LookupError>> + Send;
}

#[derive(Debug, thiserror::Error)]
#[error("lookup failed: {0}")]
pub struct LookupError(pub String);

/// Why no decision was made.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The PBX broke the protocol: 400.
    #[error("{0}")]
    Malformed(String),
    /// Everything below gets the fallback.
    #[error(transparent)]
    BadState(#[from] BadState),
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error("no line is configured for {0}")]
    NoLine(String),
    #[error("the scenario went round in circles at `{0}`")]
    Loop(String),
}

impl Failure {
    /// The `FallbackUsed.reason` of a failure that gets the fallback.
    pub fn reason(&self) -> &'static str {
        match self {
            Failure::Malformed(_) => "malformed",
            Failure::BadState(_) => "bad_state",
            Failure::Lookup(_) => "error",
            Failure::NoLine(_) => "no_line",
            Failure::Loop(_) => "error",
        }
    }
}

/// A decision: what to answer, and what to record.
#[derive(Debug)]
pub struct Decision {
    pub answer: Answer,
    pub stream: String,
    pub events: Vec<NewEvent>,
}

/// Collects one decision's instructions and events.
struct Out<'a> {
    engine: &'a Engine,
    cause: String,
    at: Timestamp,
    events: Vec<NewEvent>,
    instructions: Vec<Instruction>,
}

impl Out<'_> {
    fn event<P: Payload>(&mut self, payload: &P) {
        let id = derive_event_id(&self.cause, &self.events.len().to_string());
        self.events.push(new_event(id, Some(self.at), payload));
    }
    fn say(&mut self, text: String) {
        self.instructions.push(Instruction::Say(Say {
            text,
            voice: self.engine.scenarios.voice.clone(),
            language: self.engine.scenarios.language.clone(),
        }));
    }
    fn gather(&mut self, max_digits: u32, finish_key: Option<&str>, timeout: Duration) {
        self.instructions.push(Instruction::Gather(Gather {
            max_digits,
            finish_key: finish_key.map(str::to_owned),
            timeout_ms: protocol::millis(timeout),
        }));
    }
    fn hangup(&mut self) {
        self.instructions.push(Instruction::Hangup {});
    }
}

/// Where a dial chain went.
enum Chain {
    /// The PBX was told to dial.
    Dialling,
    /// Nothing left to dial (or a closed target jumps): go to this step.
    Next(String),
}

/// Decides calls by the deployment's scenarios.
pub struct Engine {
    pub scenarios: Arc<Scenarios>,
    pub sealer: Sealer,
    pub clock: SharedClock,
    /// Where the PBX reports results (`report_url` in answers).
    pub report_url: String,
}

const MAX_HOPS: usize = 32;

impl Engine {
    /// Decides one step of a call.
    pub async fn decide<L: Lookups>(&self, lookups: &L, step: &Step) -> Result<Decision, Failure> {
        let now = self.clock.now();
        match (&step.state, &step.result) {
            (None, _) => {
                let (name, scenario) = self
                    .scenarios
                    .line(&step.called)
                    .ok_or_else(|| Failure::NoLine(step.called.to_string()))?;
                let mut state = CallState::new(&step.call_id, Some(name), &scenario.start);
                let mut out = self.out(&step.call_id, "start", now);
                out.event(&started(step, name, "callflow"));
                self.enter(
                    lookups,
                    step,
                    scenario,
                    &mut state,
                    scenario.start.clone(),
                    &mut out,
                )
                .await?;
                Ok(self.finish(step, state, out, false))
            }
            (Some(token), Some(result)) => {
                let mut state = self.sealer.open(token, &step.call_id)?;
                let carried = std::mem::take(&mut state.unwritten);
                let mut out = self.out(&step.call_id, &state.seq.to_string(), now);
                self.advance(lookups, step, &mut state, result, &mut out)
                    .await?;
                state.seq += 1;
                let mut decision = self.finish(step, state, out, false);
                if !carried.is_empty() {
                    let mut events = decode_unwritten(&carried);
                    events.append(&mut decision.events);
                    decision.events = events;
                }
                Ok(decision)
            }
            (Some(_), None) => Err(Failure::Malformed("a state without a result".into())),
        }
    }

    fn out(&self, call_id: &str, seq: &str, at: Timestamp) -> Out<'_> {
        Out {
            engine: self,
            cause: format!("{}/{seq}", stream_of(call_id)),
            at,
            events: Vec::new(),
            instructions: Vec::new(),
        }
    }

    fn finish(&self, step: &Step, state: CallState, out: Out<'_>, fallback: bool) -> Decision {
        Decision {
            answer: Answer {
                state: self.sealer.seal(&state),
                report_url: self.report_url.clone(),
                fallback,
                instructions: out.instructions,
            },
            stream: stream_of(&step.call_id),
            events: out.events,
        }
    }

    /// Applies a result to the step that waited for it.
    async fn advance<L: Lookups>(
        &self,
        lookups: &L,
        step: &Step,
        state: &mut CallState,
        result: &StepResult,
        out: &mut Out<'_>,
    ) -> Result<(), Failure> {
        match result {
            StepResult::Hangup { by, duration_ms } => {
                if !state.ended {
                    state.ended = true;
                    out.event(&ended(step, state, by.as_str(), *duration_ms));
                }
                return Ok(());
            }
            StepResult::Recording { url, duration_ms } => {
                out.event(&RecordingAvailable {
                    call_id: step.call_id.clone(),
                    url: url.clone(),
                    duration: Some(to_proto_duration(Duration::from_millis(*duration_ms))),
                    courier_id: courier_of(state),
                });
                return Ok(());
            }
            _ if state.ended => {
                return Err(Failure::Malformed("the call has already ended".into()));
            }
            _ => {}
        }
        let Some(scenario) = state
            .scenario
            .as_deref()
            .and_then(|name| self.scenarios.scenarios.get(name))
        else {
            // On the fallback: its one dial has ended.
            return match result {
                StepResult::Dial { .. } => {
                    self.dial_finished(step, state, result, out)?;
                    out.hangup();
                    Ok(())
                }
                other => Err(mismatch(other, "fallback")),
            };
        };
        let block = scenario
            .steps
            .get(&state.step)
            .ok_or(Failure::BadState(BadState::Unreadable))?;
        match (block, result) {
            (
                Block::Menu {
                    say,
                    options,
                    timeout,
                    attempts,
                    invalid,
                    otherwise,
                    ..
                },
                StepResult::Gather { digits },
            ) => {
                let chosen = options.get(digits.as_str());
                out.event(&MenuChosen {
                    call_id: step.call_id.clone(),
                    menu: state.step.clone(),
                    digits: digits.clone(),
                    chosen: chosen.cloned().unwrap_or_default(),
                    attempt: state.attempt,
                });
                let next = if let Some(to) = chosen {
                    to.clone()
                } else if state.attempt < *attempts {
                    state.attempt += 1;
                    if let (Some(text), false) = (invalid, digits.is_empty()) {
                        out.say(text.clone());
                    }
                    out.say(self.text(say, state));
                    out.gather(1, None, *timeout);
                    return Ok(());
                } else {
                    otherwise.clone()
                };
                self.enter(lookups, step, scenario, state, next, out).await
            }
            (
                Block::Dial {
                    chain, otherwise, ..
                },
                StepResult::Dial { outcome, .. },
            ) => {
                let finished = self.dial_finished(step, state, result, out)?;
                if *outcome == DialOutcome::Answered {
                    out.hangup();
                    return Ok(());
                }
                let from = state.chain + 1;
                out.event(&Escalated {
                    call_id: step.call_id.clone(),
                    from_target: finished.target,
                    to_target: chain
                        .get(from)
                        .map(|e| e.target.clone())
                        .unwrap_or_else(|| otherwise.clone()),
                    reason: outcome_name(*outcome).into(),
                });
                match self.dial_chain(step, scenario, state, from, out)? {
                    Chain::Dialling => Ok(()),
                    Chain::Next(next) => {
                        self.enter(lookups, step, scenario, state, next, out).await
                    }
                }
            }
            (Block::Masking(m), StepResult::Gather { digits }) => {
                self.masking_code(lookups, step, scenario, m, state, digits, out)
                    .await
            }
            (Block::Masking(m), StepResult::Dial { outcome, .. }) => {
                self.dial_finished(step, state, result, out)?;
                if *outcome == DialOutcome::Answered {
                    if let Some(masking) = &mut state.masking {
                        masking.counterpart_reached = true;
                    }
                    out.hangup();
                    return Ok(());
                }
                let next = m.otherwise.clone();
                self.enter(lookups, step, scenario, state, next, out).await
            }
            (_, other) => Err(mismatch(other, &state.step)),
        }
    }

    /// Records the end of the dial in progress.
    fn dial_finished(
        &self,
        step: &Step,
        state: &mut CallState,
        result: &StepResult,
        out: &mut Out<'_>,
    ) -> Result<Dialling, Failure> {
        let StepResult::Dial {
            outcome,
            answered_after_ms,
            talk_ms,
            number,
        } = result
        else {
            unreachable!("called with dial results only");
        };
        let dialling = state
            .dialling
            .take()
            .ok_or_else(|| Failure::Malformed("a dial result, but no dial was asked for".into()))?;
        let answered = *outcome == DialOutcome::Answered;
        out.event(&DialFinished {
            call_id: step.call_id.clone(),
            target: dialling.target.clone(),
            role: dialling.role,
            // The fallback dials several numbers at once: who answered.
            number: if number.is_empty() {
                dialling.number.clone()
            } else {
                number.clone()
            },
            outcome: dial_outcome(*outcome) as i32,
            answered_after: answered
                .then(|| to_proto_duration(Duration::from_millis(*answered_after_ms))),
            talk: answered.then(|| to_proto_duration(Duration::from_millis(*talk_ms))),
            caller: step.caller.as_str().to_owned(),
        });
        if answered {
            state.answered = Some((dialling.role, dialling.at_ms + answered_after_ms));
        }
        Ok(dialling)
    }

    /// Runs steps from `name` until one waits for the PBX.
    async fn enter<L: Lookups>(
        &self,
        lookups: &L,
        step: &Step,
        scenario: &Scenario,
        state: &mut CallState,
        mut name: String,
        out: &mut Out<'_>,
    ) -> Result<(), Failure> {
        for _ in 0..MAX_HOPS {
            let block = scenario
                .steps
                .get(&name)
                .expect("scenario references are checked at start");
            state.step = name.clone();
            state.attempt = 1;
            match block {
                Block::Identify(routes) => {
                    name = identify(lookups, step, routes, state, out).await?;
                }
                Block::Say { text, then } => {
                    out.say(self.text(text, state));
                    name = then.clone();
                }
                Block::Menu { say, timeout, .. } => {
                    out.say(self.text(say, state));
                    out.gather(1, None, *timeout);
                    return Ok(());
                }
                Block::Dial { say, .. } => {
                    if let Some(text) = say {
                        out.say(self.text(text, state));
                    }
                    match self.dial_chain(step, scenario, state, 0, out)? {
                        Chain::Dialling => return Ok(()),
                        Chain::Next(next) => name = next,
                    }
                }
                Block::Masking(m) => {
                    state.masking = Some(MaskingState::default());
                    out.say(m.prompt.clone());
                    // No finish key: `#` itself is the caller's answer
                    // (operator), so it must arrive as a digit.
                    out.gather(m.code_digits, None, m.timeout);
                    return Ok(());
                }
                Block::Hangup => {
                    out.hangup();
                    return Ok(());
                }
            }
        }
        Err(Failure::Loop(name))
    }

    /// Tells the PBX to dial the first target from `from` on that takes
    /// calls now; closed targets are passed over (or jump).
    fn dial_chain(
        &self,
        step: &Step,
        scenario: &Scenario,
        state: &mut CallState,
        from: usize,
        out: &mut Out<'_>,
    ) -> Result<Chain, Failure> {
        let Some(Block::Dial {
            chain,
            record,
            otherwise,
            ..
        }) = scenario.steps.get(&state.step)
        else {
            unreachable!("dial_chain runs in dial steps");
        };
        for (i, entry) in chain.iter().enumerate().skip(from) {
            let skip_to = |reason: &str, out: &mut Out<'_>| {
                let next = chain
                    .get(i + 1)
                    .map(|e| e.target.clone())
                    .unwrap_or_else(|| otherwise.clone());
                let to = entry.when_closed.clone().unwrap_or(next);
                out.event(&Escalated {
                    call_id: step.call_id.clone(),
                    from_target: entry.target.clone(),
                    to_target: to,
                    reason: reason.into(),
                });
            };
            let Some((number, role, open)) = self.resolve(entry, state) else {
                // The directory gave no such target for this caller.
                skip_to("unavailable", out);
                continue;
            };
            if !open {
                skip_to("closed", out);
                if let Some(to) = &entry.when_closed {
                    return Ok(Chain::Next(to.clone()));
                }
                continue;
            }
            state.chain = i;
            let announce = entry.announce.as_ref().map(|t| self.text(t, state));
            self.dial(
                step,
                state,
                &entry.target,
                role,
                number,
                entry.timeout,
                *record,
                announce,
                step.caller.as_str(),
                out,
            );
            return Ok(Chain::Dialling);
        }
        Ok(Chain::Next(otherwise.clone()))
    }

    /// Records and instructs one dial.
    #[allow(clippy::too_many_arguments)]
    fn dial(
        &self,
        step: &Step,
        state: &mut CallState,
        target: &str,
        role: TargetRole,
        number: String,
        timeout: Duration,
        record: bool,
        announce: Option<String>,
        caller_id: &str,
        out: &mut Out<'_>,
    ) {
        out.event(&DialAttempted {
            call_id: step.call_id.clone(),
            target: target.to_owned(),
            role: role as i32,
            number: number.clone(),
            timeout: Some(to_proto_duration(timeout)),
            record,
            caller: step.caller.as_str().to_owned(),
        });
        state.dialling = Some(Dialling {
            target: target.to_owned(),
            role: role as i32,
            number: number.clone(),
            at_ms: since_start(step, out.at),
        });
        out.instructions.push(Instruction::Dial(Dial {
            targets: vec![DialTarget {
                number,
                timeout_ms: protocol::millis(timeout),
            }],
            mode: DialMode::Sequence,
            caller_id: caller_id.to_owned(),
            record,
            announce,
        }));
    }

    /// A chain entry's number and role, and whether it takes calls now.
    fn resolve(&self, entry: &ChainEntry, state: &CallState) -> Option<(String, TargetRole, bool)> {
        let now = self.clock.now();
        let caller = state.caller.as_ref();
        match entry.target.as_str() {
            ORDER_SHOP => {
                let shop = caller?.shop.as_ref()?;
                let open = if shop.open_hours.is_empty() {
                    true
                } else {
                    let zone = TimeZone::get(&shop.time_zone)
                        .unwrap_or_else(|_| self.scenarios.default_zone.clone());
                    // Hours the directory accepted always parse; a shop
                    // whose hours do not is treated as open rather than
                    // never reachable.
                    shop.open_hours
                        .parse::<kit::local_time::SendWindow>()
                        .map(|w| w.contains(now, &zone))
                        .unwrap_or(true)
                };
                Some((shop.phone.clone(), TargetRole::Shop, open))
            }
            COURIER_STORE => {
                let store = &caller?.store_phone;
                (!store.is_empty()).then(|| (store.clone(), TargetRole::Store, true))
            }
            name => {
                let target = self.scenarios.targets.get(name)?;
                let open = target
                    .hours
                    .as_ref()
                    .is_none_or(|(window, zone)| window.contains(now, zone));
                Some((target.number.as_str().to_owned(), target.role, open))
            }
        }
    }

    /// The masking line's code entry.
    #[allow(clippy::too_many_arguments)]
    async fn masking_code<L: Lookups>(
        &self,
        lookups: &L,
        step: &Step,
        scenario: &Scenario,
        m: &Masking,
        state: &mut CallState,
        digits: &str,
        out: &mut Out<'_>,
    ) -> Result<(), Failure> {
        let mut masking = state.masking.take().unwrap_or_default();
        if digits.contains('#') {
            masking.operator_requested = true;
            state.masking = Some(masking);
            return self
                .enter(lookups, step, scenario, state, m.operator.clone(), out)
                .await;
        }
        let mut complaint = None;
        if digits.len() == m.code_digits as usize {
            masking.code_entered = true;
            masking.order_code = digits.to_owned();
            match lookups.session(digits, out.at).await? {
                None => complaint = Some(m.not_found.clone()),
                Some(session) => {
                    masking.order_found = true;
                    masking.session_id = session.session_id.clone();
                    let caller = step.caller.as_str();
                    let (role, counterpart) = if caller == session.courier_phone {
                        ("courier", session.client_phone)
                    } else if caller == session.client_phone {
                        ("client", session.courier_phone)
                    } else {
                        ("", String::new())
                    };
                    if role.is_empty() {
                        complaint = Some(m.wrong_phone.clone());
                    } else {
                        masking.phone_found = true;
                        masking.caller_role = role.into();
                        out.event(&MaskedCallBridged {
                            call_id: step.call_id.clone(),
                            session_id: session.session_id,
                            order_code: digits.to_owned(),
                            caller_role: role.into(),
                            counterpart: counterpart.clone(),
                            caller: step.caller.as_str().to_owned(),
                        });
                        let announce = if role == "courier" {
                            &m.announce_courier
                        } else {
                            &m.announce_client
                        };
                        let announce = fill(announce, &[("order_code", digits)]);
                        state.masking = Some(masking);
                        out.say(m.connecting.clone());
                        // The counterpart sees the neutral number, never
                        // the caller's.
                        self.dial(
                            step,
                            state,
                            "counterpart",
                            TargetRole::Counterpart,
                            counterpart,
                            m.dial_timeout,
                            m.record,
                            Some(announce),
                            step.called.as_str(),
                            out,
                        );
                        return Ok(());
                    }
                }
            }
        }
        state.masking = Some(masking);
        if state.attempt < m.attempts {
            state.attempt += 1;
            if let Some(text) = complaint {
                out.say(text);
            }
            out.say(m.prompt.clone());
            out.gather(m.code_digits, None, m.timeout);
            return Ok(());
        }
        if let Some(text) = complaint {
            out.say(text);
        }
        self.enter(lookups, step, scenario, state, m.otherwise.clone(), out)
            .await
    }

    fn text(&self, template: &str, state: &CallState) -> String {
        let caller = state.caller.clone().unwrap_or_default();
        let shop = caller.shop.as_ref().map(|s| s.name.as_str()).unwrap_or("");
        let code = state
            .masking
            .as_ref()
            .map(|m| m.order_code.as_str())
            .unwrap_or("");
        fill(
            template,
            &[
                ("client_name", &caller.client_name),
                ("order_id", &caller.order_id),
                ("shop_name", shop),
                ("order_code", code),
            ],
        )
    }

    /// The answer when no decision could be made in time (or at all): the
    /// configured fallback, built without any I/O.
    pub fn fallback(&self, step: &Step, reason: &str, detail: &str) -> Decision {
        let now = self.clock.now();
        // Ids from the step itself: the PBX repeating it records nothing
        // twice, and a forged token cannot collide with a real decision.
        let which = match &step.state {
            None => "start".to_owned(),
            Some(token) => kit::events::derive_event_id(token, "").to_string(),
        };
        let mut out = self.out(&step.call_id, &format!("fallback/{which}"), now);
        let mut state = self
            .sealer
            .open(step.state.as_deref().unwrap_or(""), &step.call_id)
            .unwrap_or_else(|_| CallState::new(&step.call_id, None, "fallback"));
        if step.state.is_none() {
            out.event(&started(step, "", "callflow"));
        }
        out.event(&FallbackUsed {
            call_id: step.call_id.clone(),
            reason: reason.into(),
            detail: detail.into(),
        });
        match &step.result {
            Some(StepResult::Hangup { by, duration_ms }) => {
                if !state.ended {
                    state.ended = true;
                    out.event(&ended(step, &state, by.as_str(), *duration_ms));
                }
            }
            Some(StepResult::Recording { .. }) => {}
            // A dial has ended (bridged or not): nothing more to try.
            Some(StepResult::Dial { .. }) => out.hangup(),
            None | Some(StepResult::Gather { .. }) | Some(StepResult::Record { .. }) => {
                state.scenario = None;
                state.step = "fallback".into();
                let fallback = &self.scenarios.fallback;
                if let Some(text) = &fallback.say {
                    out.say(text.clone());
                }
                let targets: Vec<DialTarget> = fallback
                    .targets
                    .iter()
                    .map(|(name, timeout)| DialTarget {
                        number: self.scenarios.targets[name].number.as_str().to_owned(),
                        timeout_ms: protocol::millis(*timeout),
                    })
                    .collect();
                out.event(&DialAttempted {
                    call_id: step.call_id.clone(),
                    target: "fallback".into(),
                    role: TargetRole::Fallback as i32,
                    number: targets[0].number.clone(),
                    timeout: Some(to_proto_duration(fallback.targets[0].1)),
                    record: false,
                    caller: step.caller.as_str().to_owned(),
                });
                state.dialling = Some(Dialling {
                    target: "fallback".into(),
                    role: TargetRole::Fallback as i32,
                    number: targets[0].number.clone(),
                    at_ms: since_start(step, now),
                });
                out.instructions.push(Instruction::Dial(Dial {
                    targets,
                    mode: DialMode::Sequence,
                    caller_id: step.caller.as_str().to_owned(),
                    record: false,
                    announce: None,
                }));
            }
        }
        // What this answer records, after whatever earlier fallbacks of the
        // call have not been written yet: all of it travels in the token
        // until a later step writes it (see `CallState::unwritten`).
        let mut unwritten = std::mem::take(&mut state.unwritten);
        unwritten.extend(out.events.iter().map(encode_unwritten));
        state.unwritten = unwritten;
        state.seq += 1;
        let carried = state.unwritten.clone();
        let mut decision = self.finish(step, state, out, true);
        decision.events = decode_unwritten(&carried);
        decision
    }

    /// Exolve's dynamic forwarding: the whole route at once, as a list of
    /// numbers to try in order. Menus take their `without_keypad` step, `say` steps are passed over; a route that reaches no dial
    /// (or the masking line, which needs a code) gets `None`: the fallback.
    pub async fn follow_me<L: Lookups>(
        &self,
        lookups: &L,
        step: &Step,
    ) -> Result<(Vec<(String, Duration)>, Vec<NewEvent>), Failure> {
        let now = self.clock.now();
        let (name, scenario) = self
            .scenarios
            .line(&step.called)
            .ok_or_else(|| Failure::NoLine(step.called.to_string()))?;
        let mut out = self.out(&step.call_id, "start", now);
        out.event(&started(step, name, "exolve"));
        let mut state = CallState::new(&step.call_id, Some(name), &scenario.start);
        let mut at = scenario.start.clone();
        let mut targets = Vec::new();
        for _ in 0..MAX_HOPS {
            match &scenario.steps[&at] {
                Block::Identify(routes) => {
                    at = identify(lookups, step, routes, &mut state, &mut out).await?;
                }
                Block::Say { then, .. } => at = then.clone(),
                Block::Menu { without_keypad, .. } => at = without_keypad.clone(),
                Block::Dial { chain, .. } => {
                    // A closed target with `when_closed` continues the
                    // route there, as the live call would after trying the
                    // targets before it.
                    let mut jump = None;
                    for entry in chain {
                        match self.resolve(entry, &state) {
                            Some((number, _, true)) => targets.push((number, entry.timeout)),
                            _ if entry.when_closed.is_some() => {
                                jump = entry.when_closed.clone();
                                break;
                            }
                            _ => {}
                        }
                    }
                    match jump {
                        Some(to) => at = to,
                        None => return Ok((targets, out.events)),
                    }
                }
                Block::Masking(_) | Block::Hangup => return Ok((targets, out.events)),
            }
        }
        Err(Failure::Loop(at))
    }
}

/// Looks the caller up, records who they are, and returns the step that
/// kind of caller goes to.
async fn identify<L: Lookups>(
    lookups: &L,
    step: &Step,
    routes: &crate::scenario::Routes,
    state: &mut CallState,
    out: &mut Out<'_>,
) -> Result<String, Failure> {
    let caller = lookups.identify(&step.caller).await?;
    out.event(&identified(step, &caller));
    let next = routes.next(caller.kind()).to_owned();
    state.caller = Some(caller);
    Ok(next)
}

fn encode_unwritten(event: &NewEvent) -> String {
    use base64::Engine as _;
    use prost::Message as _;
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(event.encode_to_vec())
}

/// The events a token carries; ones that do not decode (they were sealed
/// by this router, so only a bug could make them) are dropped.
fn decode_unwritten(carried: &[String]) -> Vec<NewEvent> {
    use base64::Engine as _;
    use prost::Message as _;
    carried
        .iter()
        .filter_map(|text| {
            let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(text)
                .ok()?;
            NewEvent::decode(bytes.as_slice()).ok()
        })
        .collect()
}

fn mismatch(result: &StepResult, step: &str) -> Failure {
    let kind = match result {
        StepResult::Gather { .. } => "gather",
        StepResult::Dial { .. } => "dial",
        StepResult::Record { .. } => "record",
        StepResult::Recording { .. } => "recording",
        StepResult::Hangup { .. } => "hangup",
    };
    Failure::Malformed(format!(
        "result `{kind}` does not answer what the call is waiting for (step `{step}`)"
    ))
}

fn since_start(step: &Step, at: Timestamp) -> u64 {
    at.duration_since(step.started_at)
        .as_millis()
        .max(0)
        .try_into()
        .unwrap_or(0)
}

fn started(step: &Step, scenario: &str, dialect: &str) -> InboundCallStarted {
    InboundCallStarted {
        call_id: step.call_id.clone(),
        caller: step.caller.as_str().to_owned(),
        called: step.called.as_str().to_owned(),
        scenario: scenario.into(),
        dialect: dialect.into(),
        started_at: Some(to_proto_time(step.started_at)),
    }
}

fn identified(step: &Step, caller: &Caller) -> CallerIdentified {
    let shop = caller.shop.as_ref();
    CallerIdentified {
        call_id: step.call_id.clone(),
        kind: caller.kind,
        client_name: caller.client_name.clone(),
        order_id: caller.order_id.clone(),
        shop_id: shop.map(|s| s.shop_id.clone()).unwrap_or_default(),
        shop_name: shop.map(|s| s.name.clone()).unwrap_or_default(),
        courier_id: caller.courier_id.clone(),
        caller: step.caller.as_str().to_owned(),
    }
}

fn ended(step: &Step, state: &CallState, by: &str, duration_ms: u64) -> InboundCallEnded {
    let (answered_by, time_to_answer) = match state.answered {
        Some((role, ms)) => (role, Some(to_proto_duration(Duration::from_millis(ms)))),
        None => (TargetRole::Unspecified as i32, None),
    };
    InboundCallEnded {
        call_id: step.call_id.clone(),
        ended_by: by.into(),
        duration: Some(to_proto_duration(Duration::from_millis(duration_ms))),
        answered_by,
        time_to_answer,
        masking: state.masking.as_ref().map(|m| MaskingSummary {
            code_entered: m.code_entered,
            order_found: m.order_found,
            phone_found: m.phone_found,
            caller_role: m.caller_role.clone(),
            counterpart_reached: m.counterpart_reached,
            operator_requested: m.operator_requested,
            order_code: m.order_code.clone(),
        }),
    }
}

fn courier_of(state: &CallState) -> String {
    state
        .caller
        .as_ref()
        .filter(|c| c.kind() == CallerKind::Courier)
        .map(|c| c.courier_id.clone())
        .unwrap_or_default()
}

fn outcome_name(outcome: DialOutcome) -> &'static str {
    match outcome {
        DialOutcome::Answered => "answered",
        DialOutcome::NoAnswer => "no_answer",
        DialOutcome::Busy => "busy",
        DialOutcome::Failed => "failed",
    }
}

fn dial_outcome(outcome: DialOutcome) -> kit::proto::events::v1::DialOutcome {
    use kit::proto::events::v1::DialOutcome as Recorded;
    match outcome {
        DialOutcome::Answered => Recorded::Answered,
        DialOutcome::NoAnswer => Recorded::NoAnswer,
        DialOutcome::Busy => Recorded::Busy,
        DialOutcome::Failed => Recorded::Failed,
    }
}
