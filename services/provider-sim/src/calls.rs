//! Outbound calls, played from scripts and reported by webhook.
//!
//! callflow's dialer places a call through Voximplant (`StartScenarios`,
//! whose `script_custom_data` names the phone) or Exolve
//! (`MakeVoiceMessage`), and learns how it went only later, from a webhook.
//! The simulator plays the part of the callee: each call to a number takes
//! the next outcome scripted for it ([`crate::SimHandle::script_calls`]),
//! and after the script's delay the provider's report is POSTed to the URL
//! configured for that provider. The crate docs give both report bodies.
//!
//! The desk of calls keeps its own lock, apart from the other records,
//! because reports are sent by spawned tasks that outlive the request that
//! placed the call: they hold an `Arc<Desk>`, not the whole simulator.
//! Delays and retries run on tokio's real time, not on the simulator's
//! clock: a report is an event the receiver waits for, and a test clock
//! that nobody advances must not hold it back forever.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::state::digits;

/// How many times a report is offered before the simulator gives up.
pub const MAX_DELIVERY_ATTEMPTS: u32 = 20;
/// The wait after the first failed try; it doubles after each failure...
pub const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);
/// ...up to this.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);
/// How long one try may take; a receiver that hangs counts as a failure.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// How a call ends, as a script says. Written in snake case (`no_answer`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallOutcome {
    /// A person answers.
    Human,
    /// An answering machine (voicemail) answers.
    Machine,
    /// It rings until the caller gives up.
    NoAnswer,
    Busy,
    /// Switched off or out of reach.
    Unavailable,
    /// The number does not exist.
    WrongNumber,
    /// The provider could not place it (for example, out of funds).
    Failed,
    /// The call is placed, but no result is ever reported: the lost webhook
    /// the dialer must time out on.
    Silent,
}

impl CallOutcome {
    pub const ALL: [CallOutcome; 8] = [
        CallOutcome::Human,
        CallOutcome::Machine,
        CallOutcome::NoAnswer,
        CallOutcome::Busy,
        CallOutcome::Unavailable,
        CallOutcome::WrongNumber,
        CallOutcome::Failed,
        CallOutcome::Silent,
    ];

    /// The name used over HTTP.
    pub fn name(self) -> &'static str {
        match self {
            CallOutcome::Human => "human",
            CallOutcome::Machine => "machine",
            CallOutcome::NoAnswer => "no_answer",
            CallOutcome::Busy => "busy",
            CallOutcome::Unavailable => "unavailable",
            CallOutcome::WrongNumber => "wrong_number",
            CallOutcome::Failed => "failed",
            CallOutcome::Silent => "silent",
        }
    }

    /// Seconds the call lasted: only answered calls have any.
    fn duration_secs(self) -> u64 {
        match self {
            CallOutcome::Human => 25,
            CallOutcome::Machine => 12,
            _ => 0,
        }
    }
}

/// Which provider placed a call. Written `voximplant` / `exolve`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallProvider {
    Voximplant,
    Exolve,
}

impl CallProvider {
    pub fn name(self) -> &'static str {
        match self {
            CallProvider::Voximplant => "voximplant",
            CallProvider::Exolve => "exolve",
        }
    }
}

/// A call the simulator placed, with what it played and how its report
/// fared.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlacedCall {
    pub provider: CallProvider,
    /// The provider's id for it: Voximplant's `call_session_history_id`,
    /// Exolve's `call_id`, as a string.
    pub call_id: String,
    /// The number called, digits only.
    pub phone: String,
    pub outcome: CallOutcome,
    /// RFC 3339, from the simulator's clock.
    pub placed_at: String,
    /// Milliseconds between placing the call and first offering its report.
    pub delay_ms: u64,
    /// The body of the provider's report; `None` for `silent`.
    pub report: Option<Value>,
    /// Whether a try was answered 2xx.
    pub delivered: bool,
    /// Tries so far (0 while the delay runs, when silent, or when no URL is
    /// configured for the provider).
    pub delivery_attempts: u32,
    /// What went wrong on the last failed try: `HTTP 404`, a connection
    /// error. `None` once delivered.
    pub delivery_error: Option<String>,
}

/// What a provider handler knows about a call it just placed.
pub(crate) enum Placement {
    Voximplant {
        session: u64,
        /// `script_custom_data` as received, echoed in the report.
        custom_data: String,
    },
    Exolve {
        call_id: u64,
        source: String,
        destination: String,
        /// Whether answering-machine detection is on for `source`.
        amd: bool,
    },
}

impl Placement {
    fn provider(&self) -> CallProvider {
        match self {
            Placement::Voximplant { .. } => CallProvider::Voximplant,
            Placement::Exolve { .. } => CallProvider::Exolve,
        }
    }

    fn call_id(&self) -> String {
        match self {
            Placement::Voximplant { session, .. } => session.to_string(),
            Placement::Exolve { call_id, .. } => call_id.to_string(),
        }
    }

    /// The body the provider reports for `outcome`; `None` when it reports
    /// nothing.
    fn report(&self, outcome: CallOutcome) -> Option<Value> {
        if outcome == CallOutcome::Silent {
            return None;
        }
        let duration = outcome.duration_secs();
        Some(match self {
            Placement::Voximplant {
                session,
                custom_data,
            } => {
                // SIP codes as the scenario sees them in `Failed`.
                let (result, code, class, confidence) = match outcome {
                    CallOutcome::Human => ("Connected", 0, "HUMAN", 92),
                    CallOutcome::Machine => ("Connected", 0, "VOICEMAIL", 88),
                    CallOutcome::NoAnswer => ("Failed", 487, "", 0),
                    CallOutcome::Busy => ("Failed", 486, "", 0),
                    CallOutcome::Unavailable => ("Failed", 480, "", 0),
                    CallOutcome::WrongNumber => ("Failed", 404, "", 0),
                    CallOutcome::Failed | CallOutcome::Silent => ("Failed", 402, "", 0),
                };
                json!({
                    "call_session_history_id": session,
                    "custom_data": custom_data,
                    "result": result,
                    "code": code,
                    "result_class": class,
                    "confidence": confidence,
                    "duration": duration,
                })
            }
            Placement::Exolve {
                call_id,
                source,
                destination,
                amd,
            } => {
                let status = match outcome {
                    CallOutcome::Human | CallOutcome::Machine => "answered",
                    CallOutcome::NoAnswer => "no_answer",
                    CallOutcome::Busy => "busy",
                    CallOutcome::Unavailable => "unavailable",
                    CallOutcome::WrongNumber => "invalid_number",
                    CallOutcome::Failed | CallOutcome::Silent => "failed",
                };
                // Without detection Exolve cannot tell who answered: a
                // machine is just an answered call.
                let amd_result = match outcome {
                    CallOutcome::Human if *amd => "human",
                    CallOutcome::Machine if *amd => "machine",
                    _ => "",
                };
                json!({
                    "call_id": call_id.to_string(),
                    "event": "call_finished",
                    "status": status,
                    "amd_result": amd_result,
                    "duration": duration,
                    "source": source,
                    "destination": destination,
                })
            }
        })
    }
}

/// The outcomes scripted for one number.
struct Script {
    outcomes: Vec<CallOutcome>,
    used: usize,
    delay: Duration,
}

impl Script {
    /// The next outcome; the last one repeats once the list is used up.
    fn next(&mut self) -> CallOutcome {
        let index = self.used.min(self.outcomes.len() - 1);
        self.used += 1;
        self.outcomes[index]
    }
}

/// Where reports go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Webhooks {
    pub voximplant: Option<String>,
    pub exolve: Option<String>,
    /// Sent as `Authorization: Bearer <token>` when set.
    pub token: Option<String>,
}

impl Webhooks {
    fn url(&self, provider: CallProvider) -> Option<&str> {
        match provider {
            CallProvider::Voximplant => self.voximplant.as_deref(),
            CallProvider::Exolve => self.exolve.as_deref(),
        }
    }
}

struct DeskState {
    scripts: HashMap<String, Script>,
    calls: Vec<PlacedCall>,
    webhooks: Webhooks,
    /// Cancelled at reset and at shutdown, to stop pending reports: a
    /// report from before a reset must not land in the next scenario.
    reports: CancellationToken,
}

/// Scripts, placed calls and their reports.
pub(crate) struct Desk {
    state: Mutex<DeskState>,
    http: reqwest::Client,
    /// The simulator's shutdown; each generation of `reports` hangs off it.
    stopping: CancellationToken,
}

impl Desk {
    pub fn new(webhooks: Webhooks, stopping: CancellationToken) -> std::io::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .build()
            .map_err(std::io::Error::other)?;
        Ok(Self {
            state: Mutex::new(DeskState {
                scripts: HashMap::new(),
                calls: Vec::new(),
                webhooks,
                reports: stopping.child_token(),
            }),
            http,
            stopping,
        })
    }

    fn lock(&self) -> MutexGuard<'_, DeskState> {
        // Nothing panics holding the lock on purpose; if something did, the
        // state is still good enough for the tests that read it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Scripts the calls to `phone` (any `+`, spaces or dashes ignored);
    /// replaces an earlier script and starts it over. An empty list drops
    /// the script.
    pub fn script(&self, phone: &str, outcomes: &[CallOutcome], delay: Duration) {
        let phone = digits(phone);
        let mut state = self.lock();
        if outcomes.is_empty() {
            state.scripts.remove(&phone);
        } else {
            state.scripts.insert(
                phone,
                Script {
                    outcomes: outcomes.to_vec(),
                    used: 0,
                    delay,
                },
            );
        }
    }

    pub fn calls(&self) -> Vec<PlacedCall> {
        self.lock().calls.clone()
    }

    pub fn set_webhooks(&self, webhooks: Webhooks) {
        self.lock().webhooks = webhooks;
    }

    pub fn webhooks(&self) -> Webhooks {
        self.lock().webhooks.clone()
    }

    /// Forgets scripts and calls and stops pending reports. The webhook
    /// URLs stay: they are wiring, like the API keys, not a scenario's state.
    pub fn reset(&self) {
        let mut state = self.lock();
        state.reports.cancel();
        state.reports = self.stopping.child_token();
        state.scripts.clear();
        state.calls.clear();
    }

    /// Records a call to `phone` (digits) placed at `now`, plays its next
    /// scripted outcome, and spawns the task that reports it. Must run
    /// inside the tokio runtime (provider handlers do).
    pub fn place(self: &Arc<Self>, placement: Placement, phone: &str, now: Timestamp) {
        let phone = digits(phone);
        let provider = placement.provider();
        let call_id = placement.call_id();
        let mut state = self.lock();
        let (outcome, delay) = state
            .scripts
            .get_mut(&phone)
            .map_or((CallOutcome::Human, Duration::ZERO), |script| {
                (script.next(), script.delay)
            });
        let report = placement.report(outcome);
        state.calls.push(PlacedCall {
            provider,
            call_id: call_id.clone(),
            phone: phone.clone(),
            outcome,
            placed_at: now.to_string(),
            delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            report: report.clone(),
            delivered: false,
            delivery_attempts: 0,
            delivery_error: None,
        });
        let cancel = state.reports.clone();
        drop(state);
        tracing::info!(provider = provider.name(), %call_id, %phone, outcome = outcome.name(), "call placed");
        if let Some(body) = report {
            let desk = self.clone();
            tokio::spawn(async move {
                desk.deliver(provider, call_id, body, delay, cancel).await;
            });
        }
    }

    /// Updates the record of one call, if a reset has not dropped it.
    fn update(&self, provider: CallProvider, call_id: &str, change: impl FnOnce(&mut PlacedCall)) {
        let mut state = self.lock();
        if let Some(call) = state
            .calls
            .iter_mut()
            .find(|c| c.provider == provider && c.call_id == call_id)
        {
            change(call);
        }
    }

    /// Waits `delay`, then POSTs `body` to the provider's URL until a 2xx,
    /// [`MAX_DELIVERY_ATTEMPTS`] tries, or `cancel`. A 404 is retried like
    /// any failure: the receiver may not have recorded the call id yet,
    /// since the report can race the dialer's own bookkeeping.
    async fn deliver(
        self: Arc<Self>,
        provider: CallProvider,
        call_id: String,
        body: Value,
        delay: Duration,
        cancel: CancellationToken,
    ) {
        if !pause(delay, &cancel).await {
            return;
        }
        // Read when due, so that a test may point the webhook somewhere
        // after placing the call.
        let webhooks = self.webhooks();
        let Some(url) = webhooks.url(provider).map(str::to_owned) else {
            tracing::debug!(
                provider = provider.name(),
                %call_id,
                "no call events URL configured; the outcome is not reported"
            );
            return;
        };
        let token = webhooks.token;
        let mut backoff = FIRST_RETRY_DELAY;
        for attempt in 1..=MAX_DELIVERY_ATTEMPTS {
            let mut request = self.http.post(&url).json(&body);
            if let Some(token) = &token {
                request = request.bearer_auth(token);
            }
            let answer = tokio::select! {
                answer = request.send() => answer,
                _ = cancel.cancelled() => return,
            };
            let error = match answer {
                Ok(response) if response.status().is_success() => None,
                Ok(response) => Some(format!("HTTP {}", response.status().as_u16())),
                Err(e) => Some(e.to_string()),
            };
            let delivered = error.is_none();
            self.update(provider, &call_id, |call| {
                call.delivery_attempts = attempt;
                call.delivered = delivered;
                call.delivery_error = error.clone();
            });
            if delivered {
                tracing::info!(provider = provider.name(), %call_id, attempt, "call outcome reported");
                return;
            }
            if attempt == MAX_DELIVERY_ATTEMPTS {
                tracing::warn!(provider = provider.name(), %call_id, ?error, "call outcome never delivered; giving up");
                return;
            }
            tracing::debug!(provider = provider.name(), %call_id, attempt, ?error, "call outcome report failed; retrying");
            if !pause(backoff, &cancel).await {
                return;
            }
            backoff = (backoff * 2).min(MAX_RETRY_DELAY);
        }
    }
}

/// Waits `duration`; `false` when cut short by `cancel`.
async fn pause(duration: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(duration) => true,
        _ = cancel.cancelled() => false,
    }
}

/// The phone of callflow's Voximplant custom data,
/// `{"phone": "+79161234567", "ref": "..."}`; `None` for anything else.
pub(crate) fn custom_data_phone(custom_data: &str) -> Option<String> {
    let data: Value = serde_json::from_str(custom_data).ok()?;
    let phone = digits(data.get("phone")?.as_str()?);
    (!phone.is_empty()).then_some(phone)
}

/// Whether `url` is one the simulator can POST to: absolute http(s).
pub(crate) fn is_webhook_url(url: &str) -> bool {
    reqwest::Url::parse(url)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_play_in_order_then_repeat_the_last() {
        let mut script = Script {
            outcomes: vec![CallOutcome::NoAnswer, CallOutcome::Human],
            used: 0,
            delay: Duration::ZERO,
        };
        assert_eq!(script.next(), CallOutcome::NoAnswer);
        assert_eq!(script.next(), CallOutcome::Human);
        assert_eq!(script.next(), CallOutcome::Human);
    }

    #[test]
    fn outcome_names_match_serde() {
        for outcome in CallOutcome::ALL {
            assert_eq!(
                serde_json::to_value(outcome).unwrap(),
                Value::String(outcome.name().into())
            );
        }
    }

    #[test]
    fn voximplant_reports_sip_codes_and_amd_classes() {
        let placement = Placement::Voximplant {
            session: 7,
            custom_data: "{}".into(),
        };
        let machine = placement.report(CallOutcome::Machine).unwrap();
        assert_eq!(machine["result"], json!("Connected"));
        assert_eq!(machine["result_class"], json!("VOICEMAIL"));
        assert_eq!(machine["confidence"], json!(88));
        assert_eq!(machine["duration"], json!(12));
        for (outcome, code) in [
            (CallOutcome::NoAnswer, 487),
            (CallOutcome::Busy, 486),
            (CallOutcome::Unavailable, 480),
            (CallOutcome::WrongNumber, 404),
            (CallOutcome::Failed, 402),
        ] {
            let report = placement.report(outcome).unwrap();
            assert_eq!(report["result"], json!("Failed"), "{outcome:?}");
            assert_eq!(report["code"], json!(code), "{outcome:?}");
            assert_eq!(report["result_class"], json!(""), "{outcome:?}");
            assert_eq!(report["duration"], json!(0), "{outcome:?}");
        }
        assert_eq!(placement.report(CallOutcome::Silent), None);
    }

    #[test]
    fn exolve_reports_amd_only_when_it_is_on() {
        let placement = |amd| Placement::Exolve {
            call_id: 42,
            source: "74951234567".into(),
            destination: "79161234567".into(),
            amd,
        };
        let on = placement(true).report(CallOutcome::Human).unwrap();
        assert_eq!(on["call_id"], json!("42"));
        assert_eq!(on["status"], json!("answered"));
        assert_eq!(on["amd_result"], json!("human"));
        let off = placement(false).report(CallOutcome::Machine).unwrap();
        assert_eq!(off["status"], json!("answered"));
        assert_eq!(off["amd_result"], json!(""));
        let wrong = placement(true).report(CallOutcome::WrongNumber).unwrap();
        assert_eq!(wrong["status"], json!("invalid_number"));
        assert_eq!(wrong["amd_result"], json!(""));
    }

    #[test]
    fn custom_data_names_the_phone_or_nothing() {
        assert_eq!(
            custom_data_phone(r#"{"phone": "+7 916 123-45-67", "ref": "lead-1"}"#).as_deref(),
            Some("79161234567")
        );
        assert_eq!(custom_data_phone("lead:42"), None);
        assert_eq!(custom_data_phone(r#"{"ref": "x"}"#), None);
        assert_eq!(custom_data_phone(r#"{"phone": 79161234567}"#), None);
    }

    #[test]
    fn webhook_urls_are_absolute_http() {
        assert!(is_webhook_url("http://127.0.0.1:8080/hooks/voximplant"));
        assert!(is_webhook_url("https://callflow.example/x"));
        assert!(!is_webhook_url("ftp://host/x"));
        assert!(!is_webhook_url("/relative"));
        assert!(!is_webhook_url(""));
    }
}
