//! Reading a manager turn: did it offer a call or a reminder, what did it
//! ask last, which period did it name, does it say the line dropped.
//!
//! The manager's words never decide consent, but they tell what a client's
//! bare "да"/"yes" answered: "Напомнить вам через неделю?" — consent;
//! "Это Иван Сергеевич?", "Can you hear me?" — not.

use crate::lexicon::{Class, PHRASES, PhraseList};
use crate::period::{self, Mention};
use crate::tokens::{Token, Utterance, tokenize};

/// A manager turn, read.
#[derive(Debug, Clone)]
pub struct ManagerReading {
    pub utterance: Utterance,
    /// The turn offers a call back or a reminder.
    pub offer: bool,
    /// The turn asks a question.
    pub asks: bool,
    /// The last question is about identity or audibility ("это Иван?",
    /// "вы меня слышите?"), so a yes answers that, not the offer.
    pub identity_last: bool,
    /// The manager says the line dropped or the client cannot be heard.
    pub line_dropped: bool,
    /// Periods named, in order.
    pub periods: Vec<Mention>,
}

/// Read one manager turn.
pub fn read_manager(text: &str) -> ManagerReading {
    let utterance = tokenize(text);
    let u = &utterance;
    let tokens = &u.tokens;
    let offer_at = |i: usize| is_offer_at(tokens, i);
    let offer = (0..tokens.len()).any(offer_at);
    let asks = u.sentences.iter().any(|s| s.question);
    let identity_last = u
        .sentences
        .iter()
        .rposition(|s| s.question)
        .is_some_and(|s| {
            let sent = &u.sentences[s];
            let offers = (sent.first..sent.end).any(offer_at);
            let offered_after = u.sentences[s + 1..]
                .iter()
                .any(|later| (later.first..later.end).any(offer_at));
            !offers && !offered_after && is_identity_question(u, s)
        });
    let line_dropped = (0..tokens.len()).any(|i| phrase_at(tokens, i, &PHRASES.dropped))
        || u.sentences.iter().any(|s| {
            s.question && (s.first..s.end).all(|i| tokens[i].is(Class::HEARING | Class::FILLER))
        });
    let periods = period::find(tokens);
    ManagerReading {
        utterance,
        offer,
        asks,
        identity_last,
        line_dropped,
        periods,
    }
}

fn phrase_at(tokens: &[Token], i: usize, list: &PhraseList) -> bool {
    list.longest_match(tokens, i, tokens.len()).is_some()
}

/// Whether token `i` offers a future call or reminder. Russian: any form of
/// a remind/contact verb except those describing this or past calls
/// ("звоню", "звонили"). English: "remind"/"reminder", multi-word contact
/// verbs ("follow up", "check back", "give you a call"), or a base-form
/// contact verb used as a verb ("can I call you", "to call back"), not a
/// noun ("the demo call").
fn is_offer_at(tokens: &[Token], i: usize) -> bool {
    let t = &tokens[i];
    if phrase_at(tokens, i, &PHRASES.contact) {
        return true;
    }
    if t.is(Class::REMIND) {
        return !t.is(Class::CURRENT_CALL);
    }
    let cyrillic = t.norm.chars().any(|c| matches!(c, '\u{0400}'..='\u{04FF}'));
    // "Записать вас на повторный звонок?"
    if cyrillic && t.is(Class::CONTACT_NOUN) {
        return true;
    }
    if !t.is(Class::CONTACT) || t.is(Class::CURRENT_CALL) {
        return false;
    }
    if cyrillic {
        return true;
    }
    let next = tokens.get(i + 1).map(|t| t.norm.as_str());
    let prev = i.checked_sub(1).map(|p| tokens[p].norm.as_str());
    // "want a quick call then?", "a follow-up call": an indefinite call is
    // an offered one; "the demo call" is not.
    let indefinite =
        (i.saturating_sub(2)..i).any(|k| matches!(tokens[k].norm.as_str(), "a" | "an"));
    if indefinite {
        return true;
    }
    matches!(next, Some("you" | "back" | "me" | "us"))
        || matches!(
            prev,
            Some(
                "to" | "i"
                    | "we"
                    | "can"
                    | "could"
                    | "should"
                    | "will"
                    | "ill"
                    | "lets"
                    | "may"
                    | "might"
            )
        )
}

/// Whether question sentence `s` asks who the client is or whether they can
/// hear: "is this Laura?", "Это Иван Сергеевич?", "Лидия Михайловна?",
/// "вы меня слышите?", "Алло?".
fn is_identity_question(u: &Utterance, s: usize) -> bool {
    let tokens = &u.tokens;
    let sent = &u.sentences[s];
    let range = sent.first..sent.end;
    if range
        .clone()
        .any(|i| phrase_at(tokens, i, &PHRASES.identity))
    {
        return true;
    }
    if range.clone().any(|i| tokens[i].is(Class::HEARING)) {
        return true;
    }
    // Only names (capitalised words of no known class, and "это"/"this
    // is"): "Это Иван Сергеевич?", "Лидия Михайловна?" — but not
    // "Согласны?".
    let is_name = |t: &Token| t.capitalized && t.class == Class::NONE;
    let filler = |t: &Token| {
        matches!(
            t.norm.as_str(),
            "это" | "is" | "this" | "алло" | "hello" | "mr" | "mrs" | "ms"
        )
    };
    range.clone().any(|i| is_name(&tokens[i]))
        && range
            .clone()
            .all(|i| is_name(&tokens[i]) || filler(&tokens[i]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_in_both_languages() {
        assert!(read_manager("Перезвонить вам через пару дней?").offer);
        assert!(read_manager("Давайте я вам напомню в следующем месяце.").offer);
        assert!(read_manager("Can I give you a call next week?").offer);
        assert!(read_manager("Should we check back with you in a month").offer);
        assert!(read_manager("Want a reminder?").offer);
        assert!(!read_manager("Thanks for joining the demo call.").offer);
        assert!(!read_manager("I'm calling from Acme Bank.").offer);
        assert!(!read_manager("Звоню вам по поводу заказа.").offer);
    }

    #[test]
    fn identity_and_hearing_questions() {
        assert!(read_manager("Здравствуйте! Это Пётр Ильич?").identity_last);
        assert!(read_manager("Hi, is this Dana?").identity_last);
        assert!(read_manager("Напомнить через неделю? Алло, вы меня слышите?").identity_last);
        assert!(!read_manager("Is this Dana? Can I call you back tomorrow?").identity_last);
    }

    #[test]
    fn dropped_line() {
        assert!(read_manager("Алло? Алло?").line_dropped);
        assert!(read_manager("Hello? Hello? ...I think I lost her.").line_dropped);
        assert!(!read_manager("Hello, this is Kim from the clinic.").line_dropped);
    }
}
