//! The engine: one transcript in, one [`Analysis`] out.
//!
//! Reads every turn (manager turns for what was offered and asked, client
//! turns for signals), lets [`crate::decision`] fold the client turns into a
//! verdict, then picks the reminder period, the evidence, the reason and a
//! confidence. Pure and allocation-light; never panics on any input.

use crate::decision::{
    Analysis, Consent, Context, Evidence, Reason, TurnDecision, Verdict, decide_turn,
};
use crate::offer::{ManagerReading, read_manager};
use crate::period::{Mention, Period};
use crate::signals::{Basis, ClientReading, Kind, read_client};
use crate::transcript::{Speaker, Transcript, Turn};

/// A turn, read.
enum Reading {
    Manager(ManagerReading),
    Client(ClientReading),
}

/// Analyse a whole call.
pub fn analyze(transcript: &Transcript) -> Analysis {
    analyze_turns(&transcript.turns)
}

/// Analyse a call given as turns in speaking order.
pub fn analyze_turns(turns: &[Turn]) -> Analysis {
    let readings: Vec<Reading> = turns
        .iter()
        .map(|t| match t.speaker {
            Speaker::Manager => Reading::Manager(read_manager(&t.text)),
            Speaker::Client => Reading::Client(read_client(&t.text)),
        })
        .collect();

    let mut verdict = Verdict::default();
    let mut last_manager: Option<&ManagerReading> = None;
    let mut offer_made = false;
    for (i, r) in readings.iter().enumerate() {
        match r {
            Reading::Manager(m) => {
                last_manager = Some(m);
                offer_made |= m.offer;
            }
            Reading::Client(c) => {
                let ctx = Context::of(last_manager, offer_made);
                if let Some(d) = decide_turn(c, ctx) {
                    verdict.update(i, d);
                }
            }
        }
    }

    let Some((turn, decision)) = verdict.current else {
        return undecided(&readings);
    };
    let Reading::Client(reading) = &readings[turn] else {
        unreachable!("decisions come from client turns");
    };
    let mut evidence = vec![evidence_of(turns, reading, turn, decision.signal.sentence)];
    let mut confidence = base_confidence(&decision) - 0.05 * verdict.flips.min(3) as f64;
    if looks_like_asr(turns) {
        confidence -= 0.05;
    }
    let (consent, remind_after, opt_out, reason) = match decision.kind {
        Kind::OptOut => (Consent::Declined, None, true, Reason::OptOut),
        Kind::Decline => (Consent::Declined, None, false, Reason::Declined),
        Kind::Agree => {
            let chosen = choose_period(&readings, turn, reading);
            let reason = match chosen.source {
                Some(src)
                    if src.turn == turn || decision.signal.basis == Basis::CounterProposal =>
                {
                    if src.turn != turn || src.sentence != decision.signal.sentence {
                        evidence.push(evidence_of(turns, reading, src.turn, src.sentence));
                    }
                    if offered_period_before(&readings, turn) == Some(chosen.period) {
                        Reason::Agreed
                    } else {
                        Reason::CounterProposal
                    }
                }
                _ => Reason::Agreed,
            };
            (Consent::Agreed, Some(chosen.period), false, reason)
        }
        Kind::Conditional => (Consent::Unclear, None, false, Reason::Conditional),
        Kind::Email => (Consent::Unclear, None, false, Reason::EmailInstead),
        _ if decision.reconsidering => (Consent::Unclear, None, false, Reason::Reconsidering),
        _ => (Consent::Unclear, None, false, Reason::Hedge),
    };
    evidence.dedup();
    Analysis {
        consent,
        remind_after,
        opt_out,
        confidence: round2(confidence.clamp(0.05, 0.99)),
        evidence,
        reason,
    }
}

/// The verdict when no client turn decided anything.
fn undecided(readings: &[Reading]) -> Analysis {
    let client_words = readings
        .iter()
        .any(|r| matches!(r, Reading::Client(c) if !c.utterance.tokens.is_empty()));
    let last_client_trails = readings
        .iter()
        .rev()
        .find_map(|r| match r {
            Reading::Client(c) => Some(c.trails_off),
            Reading::Manager(_) => None,
        })
        .unwrap_or(false);
    let manager_lost_line = matches!(readings.last(), Some(Reading::Manager(m)) if m.line_dropped);
    let (reason, confidence) = if !client_words {
        (Reason::NoClientTurns, 0.95)
    } else if manager_lost_line || last_client_trails {
        (Reason::CallDropped, 0.85)
    } else {
        (Reason::NoDecision, 0.6)
    };
    Analysis {
        consent: Consent::Unclear,
        remind_after: None,
        opt_out: false,
        confidence,
        evidence: Vec::new(),
        reason,
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// How sure a decision of this kind and basis is, before penalties.
fn base_confidence(d: &TurnDecision) -> f64 {
    let answer_only = d.signal.basis == Basis::Answer;
    let mut c: f64 = match d.kind {
        Kind::OptOut => 0.95,
        Kind::Agree | Kind::Decline if answer_only => 0.8,
        Kind::Agree | Kind::Decline => 0.9,
        Kind::Hedge if d.reconsidering => 0.6,
        _ => 0.75,
    };
    if answer_only && d.context == Context::OpenOffer {
        c -= 0.1;
    }
    if d.mixed {
        c -= 0.05;
    }
    c
}

/// Unpunctuated lowercase text is raw ASR output, with its misheard words.
fn looks_like_asr(turns: &[Turn]) -> bool {
    let text_turns = turns.iter().filter(|t| !t.text.trim().is_empty());
    let mut n = 0;
    for t in text_turns {
        n += 1;
        let has_caps = t.text.chars().any(char::is_uppercase);
        let has_punct = t.text.chars().any(|c| matches!(c, '.' | ',' | '?' | '!'));
        if has_caps || has_punct {
            return false;
        }
    }
    n > 0
}

fn evidence_of(turns: &[Turn], reading: &ClientReading, turn: usize, sentence: usize) -> Evidence {
    let text = &turns[turn].text;
    let quote = if sentence < reading.utterance.sentences.len() && turn < turns.len() {
        reading.utterance.sentence_text(text, sentence)
    } else {
        text.trim()
    };
    Evidence {
        turn,
        text: quote.to_owned(),
    }
}

/// Where a chosen period was said, when a client said it.
#[derive(Debug, Clone, Copy)]
struct Source {
    turn: usize,
    sentence: usize,
}

struct Chosen {
    period: Period,
    /// Set when the period came from the deciding client turn.
    source: Option<Source>,
}

/// The reminder period for an agreement in client turn `turn`:
///
/// 1. the last period the client named in that turn and did not reject
///    ("не через неделю, а через две" → two weeks, "через месяц поздно,
///    давайте через неделю" → a week);
/// 2. else the nearest earlier period, walking back over the call: what the
///    manager offered, or what the client proposed before;
/// 3. else a month.
fn choose_period(readings: &[Reading], turn: usize, reading: &ClientReading) -> Chosen {
    // An elided unit ("а через две") takes the unit of the period before.
    let earlier_mention = |before_mention: usize| -> Option<Mention> {
        if let Some(p) = reading.periods[..before_mention]
            .iter()
            .rev()
            .find(|p| p.mention.scale.is_some())
        {
            return Some(p.mention);
        }
        readings[..turn].iter().rev().find_map(|r| match r {
            Reading::Manager(m) => m.periods.iter().rev().find(|p| p.scale.is_some()).copied(),
            Reading::Client(c) => c
                .periods
                .iter()
                .rev()
                .find(|p| p.mention.scale.is_some())
                .map(|p| p.mention),
        })
    };
    if let Some(idx) = reading.periods.iter().rposition(|p| p.usable()) {
        let p = &reading.periods[idx];
        if let Some(period) = p
            .mention
            .period
            .or_else(|| earlier_mention(idx).and_then(|e| p.mention.with_unit_of(&e)))
        {
            return Chosen {
                period,
                source: Some(Source {
                    turn,
                    sentence: p.sentence,
                }),
            };
        }
    }
    // Walking back, skip the periods this client turn turned down ("да,
    // только не через неделю").
    let refused: Vec<Period> = reading
        .periods
        .iter()
        .filter(|p| p.rejected)
        .filter_map(|p| p.mention.period)
        .collect();
    let acceptable = |p: &Period| !refused.contains(p);
    for (j, r) in readings[..turn].iter().enumerate().rev() {
        let found = match r {
            Reading::Manager(m) => m
                .periods
                .iter()
                .rev()
                .filter(|p| !p.negated)
                .find_map(|p| p.period.filter(acceptable))
                .map(|period| (period, None)),
            Reading::Client(c) => c
                .periods
                .iter()
                .rev()
                .find(|p| p.usable() && p.mention.period.is_some_and(|p| acceptable(&p)))
                .map(|p| {
                    (
                        p.mention.period.unwrap_or(Period::DEFAULT),
                        Some(Source {
                            turn: j,
                            sentence: p.sentence,
                        }),
                    )
                }),
        };
        if let Some((period, source)) = found {
            return Chosen { period, source };
        }
    }
    Chosen {
        period: Period::DEFAULT,
        source: None,
    }
}

/// The last period the manager named before `turn`.
fn offered_period_before(readings: &[Reading], turn: usize) -> Option<Period> {
    readings[..turn].iter().rev().find_map(|r| match r {
        Reading::Manager(m) => m
            .periods
            .iter()
            .rev()
            .find(|p| !p.negated)
            .and_then(|p| p.period),
        Reading::Client(_) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(turns: &[(&str, &str)]) -> Analysis {
        let turns: Vec<Turn> = turns
            .iter()
            .map(|(s, t)| match *s {
                "m" => Turn::manager(*t),
                _ => Turn::client(*t),
            })
            .collect();
        analyze_turns(&turns)
    }

    #[test]
    fn empty_and_manager_only_calls_are_unclear() {
        let a = analyze_turns(&[]);
        assert_eq!(
            (a.consent, a.reason),
            (Consent::Unclear, Reason::NoClientTurns)
        );
        let a = call(&[("m", "Напомнить вам через неделю? Алло?"), ("c", "   ")]);
        assert_eq!(a.consent, Consent::Unclear);
        assert_eq!(a.reason, Reason::NoClientTurns);
    }

    #[test]
    fn offered_period_is_accepted() {
        let a = call(&[
            ("m", "Можно я перезвоню вам через три недели?"),
            ("c", "Угу, можно."),
        ]);
        assert_eq!(a.consent, Consent::Agreed);
        assert_eq!(a.remind_after, Some(Period::days(21)));
        assert_eq!(a.reason, Reason::Agreed);
        assert_eq!(a.evidence[0].turn, 1);
    }

    #[test]
    fn counter_proposal_wins_over_the_offer() {
        let a = call(&[
            ("m", "Shall I call you back in a month?"),
            ("c", "That's too far off. Ten days would be better."),
        ]);
        assert_eq!(a.consent, Consent::Agreed);
        assert_eq!(a.remind_after, Some(Period::days(10)));
        assert_eq!(a.reason, Reason::CounterProposal);
        let a = call(&[
            ("m", "Напомнить вам через месяц?"),
            ("c", "Давайте, только не через месяц, а через два."),
        ]);
        assert_eq!(a.remind_after, Some(Period::months(2)));
    }

    #[test]
    fn no_period_means_a_month() {
        let a = call(&[
            ("m", "Can I remind you about it later?"),
            ("c", "sure go ahead"),
        ]);
        assert_eq!(a.remind_after, Some(Period::DEFAULT));
    }

    #[test]
    fn change_of_mind_last_decision_wins() {
        let a = call(&[
            ("m", "Напомнить вам через неделю?"),
            ("c", "Да, напомните."),
            ("m", "Хорошо, записываю."),
            ("c", "Хотя нет, не надо, я передумал."),
        ]);
        assert_eq!(a.consent, Consent::Declined);
        let a = call(&[
            ("m", "Want me to call in two weeks?"),
            ("c", "Nah."),
            ("m", "There's a discount if you book early."),
            ("c", "Oh, okay then, call me."),
        ]);
        assert_eq!(a.consent, Consent::Agreed);
        assert_eq!(a.remind_after, Some(Period::days(14)));
    }

    #[test]
    fn opt_out_implies_declined() {
        let a = call(&[
            ("m", "Напомнить через месяц?"),
            ("c", "Вычеркните мой номер из вашего списка."),
        ]);
        assert_eq!(
            (a.consent, a.opt_out, a.remind_after),
            (Consent::Declined, true, None)
        );
    }

    #[test]
    fn email_instead_is_unclear() {
        let a = call(&[
            ("m", "Shall I follow up next week?"),
            ("c", "Just email me the brochure."),
            ("m", "Will do. And the call?"),
            ("c", "Let me look at the brochure first."),
        ]);
        assert_eq!(
            (a.consent, a.reason),
            (Consent::Unclear, Reason::EmailInstead)
        );
    }

    #[test]
    fn dropped_call_before_an_answer() {
        let a = call(&[
            ("m", "Перезвонить вам завтра?"),
            ("c", "Что-что? Вас не..."),
            ("m", "Алло? Алло?"),
        ]);
        assert_eq!(
            (a.consent, a.reason),
            (Consent::Unclear, Reason::CallDropped)
        );
    }
}
