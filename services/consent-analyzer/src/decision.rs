//! The decision: what the engine returns, and the rules that turn the
//! signals of each client turn into one verdict for the call.
//!
//! * **Only the client decides**, and a bare answer ("да", "sure", "нет",
//!   "okay", a hedge, a period on its own) counts only as an answer to an
//!   offer of a call: the manager's turn before it offered one, or it made
//!   a statement after an offer earlier in the call. A "yes" to "is this
//!   Laura?" or "can you hear me?" decides nothing.
//! * **Requests and refusals stand on their own**: "позвоните через неделю",
//!   "не надо", "not interested", "больше не звоните".
//! * **Within a turn, the last decision wins**; a hedge after a decision
//!   does not undo it ("ладно, напомните, там видно будет"), unless a change
//!   of mind opens it ("да, давайте… хотя подождите").
//! * **Across turns, the last decision wins**; a hedge, a condition or a
//!   request to write instead replaces an earlier decision only when it
//!   answers the offer asked again.
//! * **An opt-out is final**: once the client asked not to be called again,
//!   no later word makes the call centre ring them.

use serde::{Deserialize, Serialize};

use crate::offer::ManagerReading;
use crate::period::Period;
use crate::signals::{ClientReading, Kind, Signal};

/// Whether the client agreed to be reminded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consent {
    Agreed,
    Declined,
    Unclear,
}

impl Consent {
    pub fn as_str(self) -> &'static str {
        match self {
            Consent::Agreed => "agreed",
            Consent::Declined => "declined",
            Consent::Unclear => "unclear",
        }
    }
}

impl std::fmt::Display for Consent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the engine decided what it did (machine-readable, snake_case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The client accepted the offered call or reminder.
    Agreed,
    /// The client agreed with a period of their own.
    CounterProposal,
    /// The client refused.
    Declined,
    /// The client asked not to be contacted again.
    OptOut,
    /// The client did not decide: "не знаю", "I'll think about it".
    Hedge,
    /// The client agreed only on a condition that stayed open.
    Conditional,
    /// The client asked for email (or another written channel) instead of a
    /// call, without agreeing to one.
    EmailInstead,
    /// The client started to decide, then reopened it ("хотя подождите").
    Reconsidering,
    /// The line dropped before the client answered.
    CallDropped,
    /// The transcript has no client words at all.
    NoClientTurns,
    /// The client spoke but never answered the offer.
    NoDecision,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Agreed => "agreed",
            Reason::CounterProposal => "counter_proposal",
            Reason::Declined => "declined",
            Reason::OptOut => "opt_out",
            Reason::Hedge => "hedge",
            Reason::Conditional => "conditional",
            Reason::EmailInstead => "email_instead",
            Reason::Reconsidering => "reconsidering",
            Reason::CallDropped => "call_dropped",
            Reason::NoClientTurns => "no_client_turns",
            Reason::NoDecision => "no_decision",
        }
    }
}

/// A client utterance that decided, quoted so a manager can check it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// Index of the turn in the transcript (0-based, counting both
    /// speakers).
    pub turn: usize,
    /// The client's sentence, as transcribed.
    pub text: String,
}

/// The engine's verdict on one call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    pub consent: Consent,
    /// When to remind: set only when `consent` is `agreed`.
    pub remind_after: Option<Period>,
    /// The client asked not to be contacted again (then `consent` is
    /// `declined`).
    pub opt_out: bool,
    /// How sure the engine is, 0..1.
    pub confidence: f64,
    /// The client utterances that decided.
    pub evidence: Vec<Evidence>,
    pub reason: Reason,
}

/// What the manager's turn before a client turn makes of a bare answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// The manager just offered a call or a reminder (or asked again).
    Offer,
    /// The manager made a statement after offering earlier: the offer is
    /// still the open question.
    OpenOffer,
    /// The manager asked something else (who, can you hear, how was it).
    OtherQuestion,
    /// No offer has been made yet.
    NoOffer,
}

impl Context {
    /// The context of a client turn, from the latest manager turn before it
    /// and whether any manager turn so far offered a call.
    pub fn of(last_manager: Option<&ManagerReading>, offer_made: bool) -> Context {
        match last_manager {
            None => Context::NoOffer,
            Some(m) if m.identity_last => Context::OtherQuestion,
            Some(m) if m.offer => Context::Offer,
            Some(m) if m.asks => Context::OtherQuestion,
            Some(_) if offer_made => Context::OpenOffer,
            Some(_) => Context::NoOffer,
        }
    }

    /// Whether a bare answer here answers the offer.
    pub fn answers_offer(self) -> bool {
        matches!(self, Context::Offer | Context::OpenOffer)
    }
}

/// What one client turn decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TurnDecision {
    /// Agree, Decline, OptOut, Hedge, Conditional or Email.
    pub kind: Kind,
    /// The signal that decided (for evidence and the period).
    pub signal: Signal,
    /// The turn reopened a decision it had made ("да… хотя подождите").
    pub reconsidering: bool,
    /// The turn holds both an agreement and a refusal.
    pub mixed: bool,
    pub context: Context,
}

/// Decide one client turn from its signals, given what it answers.
pub fn decide_turn(reading: &ClientReading, context: Context) -> Option<TurnDecision> {
    let allowed: Vec<Signal> = reading
        .signals
        .iter()
        .copied()
        .filter(|s| !s.needs_offer() || context.answers_offer())
        .collect();
    let decide = |kind: Kind, signal: Signal, reconsidering: bool| TurnDecision {
        kind,
        signal,
        reconsidering,
        mixed: allowed.iter().any(|s| s.kind == Kind::Agree)
            && allowed.iter().any(|s| s.kind == Kind::Decline),
        context,
    };
    if let Some(s) = allowed.iter().find(|s| s.kind == Kind::OptOut) {
        return Some(decide(Kind::OptOut, *s, false));
    }
    let undecided = |s: &&Signal| matches!(s.kind, Kind::Hedge | Kind::Email);
    if let Some(d) = allowed.iter().rposition(Signal::is_decision) {
        let later = &allowed[d + 1..];
        if let Some(r) = later.iter().position(|s| s.kind == Kind::Reconsider) {
            // "Да, давайте… хотя подождите, а ставка какая?": reopened.
            let after = later[r + 1..].iter().find(undecided);
            let (kind, sig) = after.map_or((Kind::Hedge, later[r]), |s| (s.kind, *s));
            return Some(decide(kind, sig, true));
        }
        return Some(decide(allowed[d].kind, allowed[d], false));
    }
    allowed
        .iter()
        .rfind(undecided)
        .map(|s| decide(s.kind, *s, false))
}

/// The running verdict over the client turns of a call.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    /// The decision that stands, with its turn index.
    pub current: Option<(usize, TurnDecision)>,
    /// The first opt-out, with its turn index (final once set).
    pub opt_out: Option<(usize, TurnDecision)>,
    /// How often the client switched between yes and no.
    pub flips: u32,
}

impl Verdict {
    /// Take in the decision of client turn `turn`.
    pub fn update(&mut self, turn: usize, d: TurnDecision) {
        if self.opt_out.is_some() {
            return;
        }
        match d.kind {
            Kind::OptOut => {
                self.opt_out = Some((turn, d));
                self.current = Some((turn, d));
            }
            Kind::Agree | Kind::Decline => {
                if let Some((_, cur)) = self.current
                    && matches!(cur.kind, Kind::Agree | Kind::Decline)
                    && cur.kind != d.kind
                {
                    self.flips += 1;
                }
                self.current = Some((turn, d));
            }
            _ => {
                let replaceable = match self.current {
                    None => true,
                    Some((_, cur)) => !matches!(cur.kind, Kind::Agree | Kind::Decline),
                };
                if replaceable || d.context == Context::Offer {
                    self.current = Some((turn, d));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offer::read_manager;
    use crate::signals::read_client;

    fn turn(manager: &str, client: &str) -> Option<Kind> {
        let m = read_manager(manager);
        let ctx = Context::of(Some(&m), m.offer);
        decide_turn(&read_client(client), ctx).map(|d| d.kind)
    }

    #[test]
    fn a_yes_answers_the_question_asked() {
        assert_eq!(turn("Напомнить вам через месяц?", "Да."), Some(Kind::Agree));
        assert_eq!(turn("Это Марина Олеговна?", "Да."), None);
        assert_eq!(turn("Hi, can you hear me okay?", "Yes."), None);
        assert_eq!(turn("How was the treatment?", "Fine, thanks."), None);
        assert_eq!(
            turn("Is this Dana?", "Yes, but please don't call me."),
            Some(Kind::Decline)
        );
    }

    #[test]
    fn last_decision_in_a_turn_wins_and_hedges_after_do_not_undo_it() {
        assert_eq!(
            turn("Напомнить?", "Да, давайте. Ой, нет, не надо."),
            Some(Kind::Decline)
        );
        assert_eq!(
            turn(
                "Напомнить?",
                "Не знаю… ладно, напоминайте, там видно будет."
            ),
            Some(Kind::Agree)
        );
        assert_eq!(
            turn("Remind you?", "Sure. Wait, actually, I'm not sure."),
            Some(Kind::Hedge)
        );
    }

    #[test]
    fn opt_out_is_final() {
        let mut v = Verdict::default();
        let m = read_manager("Перезвонить вам?");
        let ctx = Context::of(Some(&m), true);
        v.update(
            1,
            decide_turn(&read_client("Больше не звоните мне."), ctx).unwrap(),
        );
        v.update(
            3,
            decide_turn(&read_client("Ну ладно, звоните."), ctx).unwrap(),
        );
        assert_eq!(v.current.unwrap().1.kind, Kind::OptOut);
    }

    #[test]
    fn later_hedge_only_reopens_when_the_offer_is_asked_again() {
        let offer = read_manager("Напомнить вам через неделю?");
        let other = read_manager("Хорошо. У нас ещё есть рассрочка.");
        let mut v = Verdict::default();
        v.update(
            1,
            decide_turn(
                &read_client("Да, напомните."),
                Context::of(Some(&offer), true),
            )
            .unwrap(),
        );
        v.update(
            3,
            decide_turn(&read_client("Посмотрим."), Context::of(Some(&other), true)).unwrap(),
        );
        assert_eq!(v.current.unwrap().1.kind, Kind::Agree);
        v.update(
            5,
            decide_turn(&read_client("Посмотрим."), Context::of(Some(&offer), true)).unwrap(),
        );
        assert_eq!(v.current.unwrap().1.kind, Kind::Hedge);
    }
}
