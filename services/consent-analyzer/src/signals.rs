//! Reading one client utterance into decision signals.
//!
//! A client turn is scanned left to right, sentence by sentence, and each
//! place where the client says something that bears on the reminder becomes
//! a [`Signal`]: agreement, refusal, opt-out, hedge, a request to write
//! instead, a change of mind. The rules here are about the utterance alone:
//!
//! * **Negation scope.** `не`/`not` binds to what follows it: a contact verb
//!   (`не звоните` — refusal; with `больше`/`again` — opt-out), a need word
//!   (`не надо`), an agreement word (`не согласен` — refusal, `не против` —
//!   agreement), a knowing word (`не знаю` — hedge), or a period (`не через
//!   неделю` — the period is refused, not the call).
//! * **Words, not substrings.** Matching is on whole tokens and their stems,
//!   so `когда`, `никогда`, `давно`, `yesterday` never read as a yes.
//! * **Requests vs. statements.** `позвоните через неделю` and `call me in a
//!   week` agree by themselves; `вы мне бесконечно звоните` and `I'll call
//!   you` do not.
//! * **Timing objections.** `через месяц поздно`, `no need to wait that long`
//!   object to the period, not to the contact.
//! * **Conditions.** A decision next to an `если`/`if` clause (bar idioms
//!   like `если честно`, `if that's okay`) is only conditional.
//! * **Already done.** `уже купили`, `already got one` answer an offer with
//!   no.
//! * **Asides.** A remark made to someone in the room (`Коля, иду!`, `yes,
//!   honey, coming!` … `sorry, that wasn't for you`) is set aside.
//! * **Counter-proposals.** A period offered on its own or with `лучше`,
//!   `make it`, `instead` agrees with a different period.
//!
//! What a bare `да`/`yes` means depends on what the manager asked; that is
//! decided in [`crate::decision`], which gets each signal's [`Basis`].

use crate::lexicon::{Class, PHRASES, PhraseList};
use crate::period::{self, Mention};
use crate::tokens::{Break, Token, Utterance, tokenize};

/// What a signal says about the reminder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Agree,
    Decline,
    /// Do not contact me again (implies decline).
    OptOut,
    /// Neither yes nor no: "не знаю", "I'll think about it".
    Hedge,
    /// Yes or no, but only if something holds: "если будет скидка — да".
    Conditional,
    /// "Send it by email": a different channel, not an answer about calls.
    Email,
    /// "Хотя подождите", "actually, wait": what was just decided is reopened.
    Reconsider,
    /// An objection to the period ("через месяц поздно"), not to the call.
    TimingObjection,
}

/// Why a signal means what it means; decides whether it needs an offer to
/// answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// An answer word or set phrase ("да", "sure", "sounds good", "нет"):
    /// means consent only as an answer to an offer of a call.
    Answer,
    /// A request to be called or reminded ("позвоните через неделю",
    /// "remind me").
    Request,
    /// A period the client proposes ("лучше через две недели", "make it two
    /// months").
    CounterProposal,
    /// A phrase with its own meaning ("не надо", "not interested", "больше
    /// не звоните", "на почту").
    Statement,
}

/// One signal found in a client utterance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signal {
    pub kind: Kind,
    pub basis: Basis,
    /// Sentence index in the utterance.
    pub sentence: usize,
    /// Token range `first..end`.
    pub first: usize,
    pub end: usize,
}

impl Signal {
    /// Whether this signal only counts as an answer to an offer of a call
    /// (a bare "yes" to "is this Laura?" is not consent).
    pub fn needs_offer(&self) -> bool {
        matches!(self.basis, Basis::Answer | Basis::CounterProposal)
            || matches!(self.kind, Kind::Hedge | Kind::Conditional)
    }

    /// Agreement or refusal, possibly conditional: the signals that decide.
    pub fn is_decision(&self) -> bool {
        matches!(self.kind, Kind::Agree | Kind::Decline | Kind::Conditional)
    }
}

/// A period the client mentioned, with what the client thinks of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientPeriod {
    pub mention: Mention,
    pub sentence: usize,
    /// Negated or objected to: "не через неделю", "через месяц поздно",
    /// "пару дней не надо".
    pub rejected: bool,
    /// Said to someone else or inside a condition: not a period the client
    /// chose.
    pub excluded: bool,
}

impl ClientPeriod {
    /// Whether this period can be the reminder period.
    pub fn usable(&self) -> bool {
        !self.rejected && !self.excluded
    }
}

/// A client utterance, read.
#[derive(Debug, Clone)]
pub struct ClientReading {
    pub utterance: Utterance,
    pub signals: Vec<Signal>,
    pub periods: Vec<ClientPeriod>,
    /// Per sentence: said to someone else in the room.
    pub aside: Vec<bool>,
    /// The utterance trails off ("вас плохо слышно ал", "I'll be back
    /// from..."): a sign of a dropped line.
    pub trails_off: bool,
}

/// Read one client utterance.
pub fn read_client(text: &str) -> ClientReading {
    let utterance = tokenize(text);
    let u = &utterance;
    let aside = find_asides(u);
    let conditional = conditional_clauses(u);
    let mut periods: Vec<ClientPeriod> = period::find(&u.tokens)
        .into_iter()
        .map(|m| {
            let sentence = u.tokens[m.first].sentence;
            ClientPeriod {
                mention: m,
                sentence,
                rejected: m.negated || period_objected(u, &m),
                excluded: aside[sentence] || conditional[u.tokens[m.first].clause],
            }
        })
        .collect();

    let mut signals = Vec::new();
    for (s, sent) in u.sentences.iter().enumerate() {
        if aside[s] {
            continue;
        }
        let mut i = sent.first;
        while i < sent.end {
            match signal_at(u, i, sent.end) {
                Some(Found::Signal(kind, basis, len)) => {
                    signals.push(Signal {
                        kind,
                        basis,
                        sentence: s,
                        first: i,
                        end: i + len,
                    });
                    i += len;
                }
                Some(Found::Idiom(len)) => i += len,
                None => i += 1,
            }
        }
    }

    // A refusal whose object is a period or that complains about timing
    // ("пару дней не надо", "no need to wait that long") objects to the
    // period, not to being called.
    for sig in &mut signals {
        if sig.kind == Kind::Decline
            && sig.basis == Basis::Statement
            && refusal_is_about_timing(u, &periods, sig)
        {
            sig.kind = Kind::TimingObjection;
        }
    }
    for p in &mut periods {
        if !p.rejected
            && signals.iter().any(|s| {
                s.kind == Kind::TimingObjection
                    && near(s.first, s.end, p.mention.first, p.mention.end, 2)
            })
        {
            p.rejected = true;
        }
    }

    add_counter_proposals(u, &periods, &aside, &mut signals);

    // A yes- or no-word inside the client's own question ("да? а сколько
    // стоит?") answers nothing, and a yes that says who is speaking ("yes,
    // this is Ivan", "да, это я") answers "who", not the offer.
    let identity = identity_answers(u);
    signals.retain(|sig| {
        let answer = sig.basis == Basis::Answer;
        // "Да? А сколько?" asks back; "Yes, what time?" answers, then asks:
        // only a particle in the clause that carries the question mark is
        // dropped.
        let sent = &u.sentences[sig.sentence];
        let question = sent.question
            && matches!(sig.kind, Kind::Agree | Kind::Decline)
            && u.tokens[sig.first].clause == u.tokens[sent.end - 1].clause;
        let who = identity[sig.sentence] && sig.kind == Kind::Agree;
        !(answer && (question || who))
    });
    for sig in &mut signals {
        if conditional[u.tokens[sig.first].clause]
            && matches!(sig.kind, Kind::Agree | Kind::Decline)
        {
            sig.kind = Kind::Conditional;
        }
    }
    signals.sort_by_key(|s| (s.first, s.end));

    let trails_off = trails_off(text, u);
    ClientReading {
        utterance,
        signals,
        periods,
        aside,
        trails_off,
    }
}

/// Whether two token ranges are within `gap` tokens of each other.
fn near(a0: usize, a1: usize, b0: usize, b1: usize, gap: usize) -> bool {
    a0 <= b1 + gap && b0 <= a1 + gap
}

/// Length of the first (longest) phrase of `list` matching at `i`.
fn any_phrase_at(tokens: &[Token], i: usize, end: usize, list: &PhraseList) -> Option<usize> {
    list.longest_match(tokens, i, end)
}

/// Index of the previous token in the same clause, skipping tokens of the
/// `skip` classes.
fn prev_in_clause(tokens: &[Token], i: usize, skip: Class) -> Option<usize> {
    let clause = tokens[i].clause;
    let mut j = i;
    while j > 0 {
        j -= 1;
        if tokens[j].clause != clause {
            return None;
        }
        if !tokens[j].is(skip) {
            return Some(j);
        }
    }
    None
}

/// Whether token `i` opens its clause (only fillers before it).
fn opens_clause(tokens: &[Token], i: usize) -> bool {
    prev_in_clause(tokens, i, Class::FILLER).is_none()
}

/// What starts at a token.
enum Found {
    /// A signal of `usize` tokens.
    Signal(Kind, Basis, usize),
    /// An idiom of `usize` tokens that says nothing about the reminder
    /// although it contains a yes-word ("сколько можно", "да ну").
    Idiom(usize),
}

/// The signal starting at token `i` (the sentence ends at `end`). Rules are
/// tried from the most specific (fixed phrases, negation scopes) to the
/// least (single answer words), so "не надо" is never read as "не" + "надо"
/// and "почему бы и нет" never as "нет".
fn signal_at(u: &Utterance, i: usize, end: usize) -> Option<Found> {
    let tokens = &u.tokens[..];
    let t = &tokens[i];
    let p = &*PHRASES;
    use Basis::*;
    use Kind::*;
    let found = |k: Kind, b: Basis, n: usize| Some(Found::Signal(k, b, n));

    if let Some(n) = any_phrase_at(tokens, i, end, &p.not_yes) {
        return Some(Found::Idiom(n));
    }
    if let Some(n) = any_phrase_at(tokens, i, end, &p.opt_out) {
        return found(OptOut, Statement, n);
    }
    if t.is(Class::REMOVE) && removes_from_list(tokens, i, end) {
        return found(OptOut, Statement, 1);
    }
    if let Some((kind, n)) = negated_contact(u, i, end) {
        return found(kind, Statement, n);
    }
    if let Some(n) = no_more_calls(tokens, i, end) {
        return found(OptOut, Statement, n);
    }
    if let Some(n) = stop_calling(tokens, i, end) {
        return found(OptOut, Statement, n);
    }
    // Hedge, agreement and refusal phrases compete: the longest wins, so
    // "of course not" is a refusal although "of course" agrees, and "maybe
    // not" a hedge although "not" alone would refuse.
    // "That's okay" opening a clause declines an offer ("that's okay, I've
    // got it") unless a yes came first ("yes, that's okay"); inside a
    // clause it is politeness ("call me, if that's okay").
    let yes_before = (u.sentences[t.sentence].first..i).any(|k| tokens[k].is(Class::YES));
    let polite = if yes_before { Agree } else { Decline };
    let candidates = [
        (any_phrase_at(tokens, i, end, &p.hedge), Hedge, Statement),
        (
            any_phrase_at(tokens, i, end, &p.decline),
            Decline,
            Statement,
        ),
        (any_phrase_at(tokens, i, end, &p.agree), Agree, Answer),
        (
            any_phrase_at(tokens, i, end, &p.polite).filter(|_| opens_clause(tokens, i)),
            polite,
            Answer,
        ),
    ];
    let mut best: Option<(usize, Kind, Basis)> = None;
    for (len, kind, basis) in candidates {
        if let Some(n) = len
            && best.is_none_or(|b| n > b.0)
        {
            best = Some((n, kind, basis));
        }
    }
    if let Some((n, kind, basis)) = best {
        return found(kind, basis, n);
    }
    if let Some(n) = any_phrase_at(tokens, i, end, &p.change) {
        return found(Reconsider, Statement, n);
    }
    if t.is(Class::CHANGE) && opens_clause(tokens, i) {
        return found(Reconsider, Statement, 1);
    }
    if let Some(n) = request_at(tokens, i, end) {
        return found(Agree, Request, n);
    }
    if t.is(Class::EMAIL) {
        return found(Email, Statement, 1);
    }
    if t.is(Class::HEDGE) {
        return found(Hedge, Statement, 1);
    }
    if let Some(n) = already_done(tokens, i) {
        return found(Decline, Answer, n);
    }
    if t.is(Class::YES) && is_yes_word(tokens, i) {
        return found(Agree, Answer, 1);
    }
    if t.is(Class::NO) || is_bare_ne(tokens, i) {
        return found(Decline, Answer, 1);
    }
    None
}

/// "удалите мой номер", "remove me from your list": a remove verb with the
/// number, the list or the speaker as object.
fn removes_from_list(tokens: &[Token], i: usize, end: usize) -> bool {
    if i > 0 && tokens[i - 1].is(Class::NEG) {
        return false;
    }
    tokens[i + 1..end.min(i + 6)]
        .iter()
        .any(|t| t.is(Class::LIST) || (t.is(Class::ME) && t.break_before == Break::None))
}

/// A negator, then (skipping need-words, pronouns, "again" words) a contact
/// or remind verb. With "again/больше/никогда" anywhere in the clause it is
/// an opt-out; a negated reminder is a refusal (a reminder is what was
/// offered; an opt-out is about calls).
fn negated_contact(u: &Utterance, i: usize, end: usize) -> Option<(Kind, usize)> {
    let tokens = &u.tokens;
    if !tokens[i].is(Class::NEG) {
        return None;
    }
    let skippable =
        Class::NEED | Class::ME | Class::AGAIN | Class::FILLER | Class::NEG | Class::SUBJECT;
    let mut j = i + 1;
    while j < end && j <= i + 4 {
        let t = &tokens[j];
        if t.break_before > Break::None && t.break_before != Break::Dash {
            return None;
        }
        // "чтобы ваш банк мне больше не звонил": a past form in a purpose
        // clause is a wish about the future.
        let purpose = tokens[..i]
            .iter()
            .rev()
            .take_while(|p| p.sentence == t.sentence)
            .any(|p| p.is(Class::PURPOSE));
        if t.is(Class::CONTACT) && (!t.is(Class::CURRENT_CALL) || purpose) {
            let again = u
                .clause_range(i)
                .chain(u.clause_range(j))
                .any(|k| tokens[k].is(Class::AGAIN))
                || tokens[i..end.min(j + 4)].iter().any(|t| t.is(Class::AGAIN));
            return Some((if again { Kind::OptOut } else { Kind::Decline }, j + 1 - i));
        }
        if t.is(Class::REMIND) {
            return Some((Kind::Decline, j + 1 - i));
        }
        let filler_word = matches!(
            t.norm.as_str(),
            "ничего"
                | "nothing"
                | "you"
                | "this"
                | "that"
                | "сюда"
                | "here"
                | "ever"
                | "to"
                | "do"
                | "mine"
                | "my"
        );
        // "не ставьте мне напоминание": the verb before the noun.
        let imperative_before_noun = t.norm.ends_with("те")
            && tokens[j + 1..end.min(j + 3)]
                .iter()
                .any(|n| n.is(Class::REMIND | Class::CONTACT_NOUN));
        if !(t.is(skippable) || filler_word || imperative_before_noun) {
            return None;
        }
        j += 1;
    }
    None
}

/// "no more calls", "больше никаких звонков": opt-out without a verb.
fn no_more_calls(tokens: &[Token], i: usize, end: usize) -> Option<usize> {
    let t = &tokens[i];
    let opens = (matches!(t.norm.as_str(), "no" | "any")
        && tokens.get(i + 1).is_some_and(|n| n.norm == "more"))
        || (t.is(Class::AGAIN)
            && tokens
                .get(i + 1)
                .is_some_and(|n| n.norm.starts_with("никак")));
    if !opens {
        return None;
    }
    let k = i + 2;
    (k < end && (tokens[k].is(Class::CONTACT_NOUN | Class::CONTACT) || tokens[k].is(Class::REMIND)))
        .then_some(3)
}

/// "stop calling me", "хватит мне названивать": a stop verb governing a
/// contact verb is an opt-out.
fn stop_calling(tokens: &[Token], i: usize, end: usize) -> Option<usize> {
    if !tokens[i].is(Class::STOP) {
        return None;
    }
    let mut j = i + 1;
    while j < end && j <= i + 3 {
        let t = &tokens[j];
        if t.is(Class::CONTACT) {
            return Some(j + 1 - i);
        }
        if !(t.is(Class::ME | Class::FILLER)
            || matches!(
                t.norm.as_str(),
                "уже" | "you" | "вам" | "вас" | "with" | "the"
            ))
        {
            return None;
        }
        j += 1;
    }
    None
}

/// Whether a yes-word at `i` is an answer, not part of a statement:
/// "I'm fine" and "всё хорошо" describe the speaker; "давайте я подумаю"
/// introduces what follows.
fn is_yes_word(tokens: &[Token], i: usize) -> bool {
    let t = &tokens[i];
    if let Some(p) = prev_in_clause(tokens, i, Class::FILLER)
        && tokens[p].is(Class::COPULA)
    {
        return false;
    }
    if t.stem == "дава"
        && tokens
            .get(i + 1)
            .is_some_and(|n| n.break_before == Break::None && n.is(Class::SUBJECT))
    {
        return false;
    }
    // "можно" with a complement is a modal ("а можно на почту?"), a yes
    // only on its own or with what is offered ("можно позвонить",
    // "можно через неделю").
    if t.norm == "можно" {
        let clause_rest = (i + 1..tokens.len()).take_while(|&k| tokens[k].clause == t.clause);
        let mut content =
            clause_rest.filter(|&k| !tokens[k].is(Class::FILLER | Class::YES | Class::INTENSIFIER));
        return content.all(|k| {
            tokens[k].is(Class::CONTACT | Class::REMIND)
                || period::find(&tokens[k..k + 1]).len() == 1
                || matches!(tokens[k].norm.as_str(), "через" | "in" | "в" | "принципе")
                || tokens[k].digits
                || period::is_unit_word(&tokens[k])
        });
    }
    true
}

/// "уже купили", "already bought one": the need is gone, which answers an
/// offer with no.
fn already_done(tokens: &[Token], i: usize) -> Option<usize> {
    if !matches!(tokens[i].norm.as_str(), "уже" | "already") {
        return None;
    }
    let done = |t: &Token| {
        let n = t.norm.as_str();
        let cyrillic = n.chars().any(|c| matches!(c, '\u{0400}'..='\u{04FF}'));
        if cyrillic {
            (n.ends_with('л')
                || n.ends_with("ла")
                || n.ends_with("ли")
                || n.ends_with("лось")
                || n.ends_with("лся")
                || n.ends_with("лись")
                || n == "есть")
                && n.chars().count() > 3
        } else {
            (n.ends_with("ed") && n.len() > 4)
                || matches!(
                    n,
                    "bought"
                        | "got"
                        | "found"
                        | "have"
                        | "has"
                        | "had"
                        | "did"
                        | "done"
                        | "made"
                        | "went"
                        | "paid"
                        | "signed"
                        | "switched"
                        | "booked"
                )
        }
    };
    let stop =
        (i + 1..tokens.len().min(i + 4)).take_while(|&k| tokens[k].clause == tokens[i].clause);
    for k in stop {
        if tokens[k].is(Class::NEG) {
            return None;
        }
        if done(&tokens[k]) {
            return Some(k + 1 - i);
        }
    }
    None
}

/// A bare `не`/`not` used as "no": "Не, не надо", "не-не", "да не, мы сами".
fn is_bare_ne(tokens: &[Token], i: usize) -> bool {
    let t = &tokens[i];
    if t.norm != "не" {
        return false;
    }
    // Not before a sentence end: "вас не..." is cut off, not a refusal.
    tokens.get(i + 1).is_some_and(|n| {
        matches!(n.break_before, Break::Clause | Break::Dash)
            || n.is(Class::NO | Class::NEG | Class::FILLER)
    })
}

/// A request to be contacted at `i`: an imperative or hortative contact verb
/// in Russian, a base-form contact verb addressed to the listener in
/// English, or a multi-word contact verb ("follow up", "give me a call").
/// Returns the tokens used.
fn request_at(tokens: &[Token], i: usize, end: usize) -> Option<usize> {
    let t = &tokens[i];
    if let Some(n) = any_phrase_at(tokens, i, end, &PHRASES.contact) {
        return english_request_subject_ok(tokens, i).then_some(n);
    }
    if !t.is(Class::CONTACT | Class::REMIND) || t.is(Class::CURRENT_CALL) {
        return None;
    }
    if t.norm.chars().any(|c| matches!(c, '\u{0400}'..='\u{04FF}')) {
        let n = t.norm.as_str();
        if t.stem.starts_with("напоминан") {
            // "поставьте (мне) напоминание": an imperative before the noun.
            return prev_in_clause(tokens, i, Class::FILLER | Class::ME)
                .filter(|&p| {
                    tokens[p].norm.ends_with("те") && (p == 0 || !tokens[p - 1].is(Class::NEG))
                })
                .map(|_| 1);
        }
        let imperative = ["те", "и", "й", "ись", "имся", "емся"]
            .iter()
            .any(|e| n.ends_with(e))
            && !n.ends_with("ли")
            && !n.ends_with("ии");
        if !imperative {
            return None;
        }
        // "вы мне бесконечно звоните" is a complaint, not a request, unless
        // it names when ("вы мне позвоните через неделю?").
        let clause: Vec<usize> = clause_of(tokens, i).collect();
        let with_subject = clause
            .iter()
            .any(|&k| k < i && tokens[k].is(Class::SUBJECT) && tokens[k].norm != "мы");
        if with_subject {
            let has_period =
                !period::find(&tokens[clause[0]..clause[clause.len() - 1] + 1]).is_empty();
            let third_person = clause
                .iter()
                .any(|&k| k < i && matches!(tokens[k].norm.as_str(), "я" | "он" | "она" | "они"));
            if third_person || !has_period {
                return None;
            }
        }
        return Some(1);
    }
    // English: base form only ("call", not "calling"/"calls"/"reminder").
    if t.norm != t.stem {
        return None;
    }
    if let Some(p) = prev_in_clause(tokens, i, Class::FILLER) {
        let prev = &tokens[p];
        // Noun uses: "no call", "a reminder call", "the demo call".
        if prev.is(Class::NO | Class::NEG | Class::REMIND | Class::CONTACT_NOUN)
            || matches!(
                prev.norm.as_str(),
                "a" | "an" | "the" | "any" | "your" | "my" | "this" | "that" | "another" | "demo"
            )
        {
            return None;
        }
        // An infinitive ("no need to remind me", "going to call") is a
        // request only when the listener is its subject ("I'd like you to
        // call me").
        if prev.norm == "to" && !(p.saturating_sub(3)..p).any(|k| tokens[k].norm == "you") {
            return None;
        }
    }
    english_request_subject_ok(tokens, i).then_some(1)
}

/// Token indices of the clause of token `i`.
fn clause_of(tokens: &[Token], i: usize) -> impl Iterator<Item = usize> + '_ {
    let c = tokens[i].clause;
    let mut a = i;
    while a > 0 && tokens[a - 1].clause == c {
        a -= 1;
    }
    (a..tokens.len()).take_while(move |&k| tokens[k].clause == c)
}

/// In English, a contact verb is a request unless a first- or third-person
/// subject governs it in the clause ("I'll call you", "they call me every
/// day"); "could you call me" and "you can call me" are requests.
fn english_request_subject_ok(tokens: &[Token], i: usize) -> bool {
    let clause = tokens[i].clause;
    let mut j = i;
    let mut steps = 0;
    while j > 0 && steps < 5 {
        j -= 1;
        steps += 1;
        let t = &tokens[j];
        if t.clause != clause {
            break;
        }
        if t.norm == "you" || t.norm == "youll" {
            return true;
        }
        if t.is(Class::SUBJECT) && t.norm != "вы" && t.norm != "мы" {
            return false;
        }
        if t.norm == "well" && t.break_before == Break::None && j + 1 == i {
            // "we'll call" written without the apostrophe.
            return false;
        }
    }
    true
}

/// Whether a period mention is objected to by a timing word next to it:
/// "через месяц поздно", "Полгода — это много", "a month's kind of far out",
/// or refused outright: "пару дней не надо".
fn period_objected(u: &Utterance, m: &Mention) -> bool {
    let tokens = &u.tokens;
    let sentence = tokens[m.first].sentence;
    let after =
        (m.end..tokens.len().min(m.end + 4)).take_while(|&k| tokens[k].sentence == sentence);
    for k in after {
        let t = &tokens[k];
        if t.is(Class::TIMING) {
            return true;
        }
        if k <= m.end + 1
            && t.is(Class::NEG)
            && tokens.get(k + 1).is_some_and(|n| n.is(Class::NEED))
        {
            return true;
        }
    }
    false
}

/// Whether a refusal phrase is about the period (it is next to a period
/// mention) or about waiting (a timing word follows it).
fn refusal_is_about_timing(u: &Utterance, periods: &[ClientPeriod], sig: &Signal) -> bool {
    let tokens = &u.tokens;
    if periods.iter().any(|p| {
        p.sentence == sig.sentence && near(sig.first, sig.end, p.mention.first, p.mention.end, 1)
    }) {
        return true;
    }
    (sig.end..tokens.len().min(sig.end + 4))
        .take_while(|&k| tokens[k].sentence == sig.sentence)
        .any(|k| tokens[k].is(Class::TIMING))
}

/// Per clause: whether it falls under a condition. A condition ("если",
/// "if", bar idioms like "если честно", "if that's okay") that opens a
/// clause covers that clause and the ones right before and after it ("Да,
/// если будет скидка", "If it's cheaper, then yes"); one inside a clause
/// covers only its clause ("I'll call you if I need anything"). A later
/// clause opened by "то"/"тогда"/"then" is covered too ("Если будет
/// дешевле, чем сейчас, тогда да"). "Нет, я сам позвоню, если надо будет"
/// keeps its "нет".
fn conditional_clauses(u: &Utterance) -> Vec<bool> {
    let tokens = &u.tokens;
    let n = tokens.last().map_or(0, |t| t.clause + 1);
    let mut cond = vec![false; n];
    for sent in &u.sentences {
        let Some(at) = (sent.first..sent.end).find(|&i| {
            tokens[i].is(Class::COND)
                && any_phrase_at(tokens, i, sent.end, &PHRASES.not_conditional).is_none()
        }) else {
            continue;
        };
        let c = tokens[at].clause;
        if opens_clause(tokens, at) {
            // "Да, если будет скидка" / "Если будет скидка, то да".
            let first_clause = tokens[sent.first].clause;
            let last_clause = tokens[sent.end - 1].clause;
            let (lo, hi) = (
                c.saturating_sub(1).max(first_clause),
                (c + 1).min(last_clause),
            );
            cond[lo..=hi].fill(true);
        } else {
            // "I'll call you if I need anything": the condition belongs to
            // its own clause.
            cond[c] = true;
        }
        for i in at..sent.end {
            let opens = i == sent.first || tokens[i].clause != tokens[i - 1].clause;
            if opens && matches!(tokens[i].norm.as_str(), "то" | "тогда" | "then") {
                cond[tokens[i].clause] = true;
            }
        }
    }
    cond
}

/// A period the client proposes counts as agreement with that period when
/// it is offered as a choice: with "лучше", "make it", "instead", or on its
/// own ("Через две недели — нормально", "Угу, через неделю").
fn add_counter_proposals(
    u: &Utterance,
    periods: &[ClientPeriod],
    aside: &[bool],
    signals: &mut Vec<Signal>,
) {
    let tokens = &u.tokens;
    for p in periods {
        let m = &p.mention;
        if !p.usable() || aside[p.sentence] {
            continue;
        }
        let sent = &u.sentences[p.sentence];
        let clause: Vec<usize> = clause_of(tokens, m.first).collect();
        let proposed = (sent.first..sent.end).any(|k| {
            tokens[k].is(Class::PROPOSE)
                || any_phrase_at(tokens, k, sent.end, &PHRASES.propose).is_some()
        });
        // A question proposes only with a proposing word ("может, через
        // месяц?", "how about next week?"); "через месяц?" alone asks back.
        if sent.question && !proposed {
            continue;
        }
        let bare = clause.iter().all(|&k| {
            (m.first..m.end).contains(&k)
                || tokens[k].is(Class::FILLER | Class::YES | Class::PROPOSE)
                || matches!(
                    tokens[k].norm.as_str(),
                    "а" | "но" | "but" | "only" | "is" | "its" | "would" | "be" | "works"
                )
        });
        if proposed || bare {
            signals.push(Signal {
                kind: Kind::Agree,
                basis: Basis::CounterProposal,
                sentence: p.sentence,
                first: m.first,
                end: m.end,
            });
        }
    }
}

/// Per sentence: the client says who they are ("yes, speaking", "this is
/// Ivan", "да, это я", "Я, слушаю").
fn identity_answers(u: &Utterance) -> Vec<bool> {
    let tokens = &u.tokens;
    u.sentences
        .iter()
        .map(|sent| {
            (sent.first..sent.end).any(|i| {
                any_phrase_at(tokens, i, sent.end, &PHRASES.identity_answer).is_some()
                    || tokens[i].norm == "слушаю"
                    || (matches!(tokens[i].norm.as_str(), "this" | "это" | "im")
                        && tokens.get(i + 1).is_some_and(|n| {
                            let n = if n.norm == "is" {
                                tokens.get(i + 2)
                            } else {
                                Some(n)
                            };
                            n.is_some_and(|n| {
                                n.capitalized
                                    && n.class == Class::NONE
                                    && n.sentence == tokens[i].sentence
                            })
                        }))
            })
        })
        .collect()
}

/// Sentences said to someone else in the room.
///
/// * Everything up to an explicit "это я не вам" / "that wasn't for you" /
///   "это я коллеге".
/// * An exclamation or a remark followed by an apology that addresses
///   someone by name or kinship ("Коля, да иду я!", "Да, мам, сейчас
///   иду!.. Извините.") and says nothing about calls.
fn find_asides(u: &Utterance) -> Vec<bool> {
    let tokens = &u.tokens;
    let n = u.sentences.len();
    let mut aside = vec![false; n];
    for (s, sent) in u.sentences.iter().enumerate() {
        let marker = (sent.first..sent.end).any(|i| {
            any_phrase_at(tokens, i, sent.end, &PHRASES.aside).is_some()
                || (tokens[i].norm == "это"
                    && tokens
                        .get(i + 1)
                        .is_some_and(|t| t.norm == "я" && t.break_before == Break::None)
                    && tokens
                        .get(i + 2)
                        .is_some_and(|t| t.sentence == s && t.break_before == Break::None))
        });
        if marker {
            aside[..=s].fill(true);
        }
    }
    for (s, sent) in u.sentences.iter().enumerate() {
        if aside[s] {
            continue;
        }
        let about_calls =
            (sent.first..sent.end).any(|i| tokens[i].is(Class::CONTACT | Class::REMIND));
        let apology_follows = u
            .sentences
            .get(s + 1)
            .is_some_and(|next| tokens[next.first].is(Class::APOLOGY));
        if !about_calls && (sent.exclamation || apology_follows) && has_vocative(u, s) {
            aside[s] = true;
        }
    }
    aside
}

/// Whether sentence `s` addresses someone by name or kinship: a kinship
/// word, or a capitalised word of no known class set off by commas ("Да,
/// Лен, положи", "Коля, иду").
fn has_vocative(u: &Utterance, s: usize) -> bool {
    let tokens = &u.tokens;
    let sent = &u.sentences[s];
    (sent.first..sent.end).any(|i| {
        let t = &tokens[i];
        if t.is(Class::KIN) {
            return true;
        }
        if !t.capitalized || t.class != Class::NONE || t.digits {
            return false;
        }
        let closed = tokens
            .get(i + 1)
            .is_none_or(|n| n.break_before >= Break::Clause);
        let opened = i == sent.first || t.break_before >= Break::Clause;
        closed && opened && !is_discourse_word(&t.norm)
    })
}

/// Capitalised words that open a sentence with a comma without naming
/// anyone.
fn is_discourse_word(norm: &str) -> bool {
    matches!(
        norm,
        "слушайте"
            | "послушайте"
            | "знаете"
            | "смотрите"
            | "понимаете"
            | "девушка"
            | "мужчина"
            | "look"
            | "listen"
            | "honestly"
            | "seriously"
            | "anyway"
            | "thanks"
            | "спасибо"
            | "честно"
            | "кстати"
            | "секунду"
            | "минуту"
    )
}

/// Whether the utterance trails off, as speech does when the line drops:
/// it ends with an ellipsis, or (in unpunctuated ASR) with a cut-off
/// fragment.
fn trails_off(text: &str, u: &Utterance) -> bool {
    let trimmed = text.trim_end();
    if trimmed.ends_with("...") || trimmed.ends_with('…') {
        return true;
    }
    // Unpunctuated ASR cut mid-word: a last token of one or two letters that
    // is no known word ("после об", "вас плохо слышно ал").
    let punctuated = trimmed.ends_with(['.', '!', '?']);
    !punctuated
        && u.tokens
            .last()
            .is_some_and(|t| t.class == Class::NONE && !t.digits && t.norm.chars().count() <= 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(Kind, Basis)> {
        read_client(text)
            .signals
            .iter()
            .map(|s| (s.kind, s.basis))
            .collect()
    }

    fn has(text: &str, kind: Kind) -> bool {
        kinds(text).iter().any(|(k, _)| *k == kind)
    }

    fn last(text: &str) -> Option<Kind> {
        kinds(text)
            .iter()
            .rev()
            .find(|(k, _)| {
                matches!(
                    k,
                    Kind::Agree | Kind::Decline | Kind::OptOut | Kind::Conditional | Kind::Hedge
                )
            })
            .map(|(k, _)| *k)
    }

    #[test]
    fn negation_binds_to_what_follows() {
        assert_eq!(last("Нет, я с этим не согласна."), Some(Kind::Decline));
        assert_eq!(last("Я не против, звоните."), Some(Kind::Agree));
        assert_eq!(last("Не знаю даже."), Some(Kind::Hedge));
        assert_eq!(last("I'm not interested, sorry."), Some(Kind::Decline));
        assert_eq!(last("Of course not."), Some(Kind::Decline));
        assert_eq!(last("Ну конечно же нет"), Some(Kind::Decline));
        assert_eq!(last("yeah no"), Some(Kind::Decline));
        assert_eq!(last("Почему бы и нет."), Some(Kind::Agree));
        assert_eq!(last("why not"), Some(Kind::Agree));
        assert_eq!(last("I don't mind at all"), Some(Kind::Agree));
    }

    #[test]
    fn substrings_of_keywords_are_not_keywords() {
        assert_eq!(last("Когда-нибудь потом, всегда так."), None);
        assert_eq!(last("Я давно никуда не езжу."), None);
        assert_eq!(last("I saw it yesterday."), None);
    }

    #[test]
    fn negated_contact_is_refusal_or_opt_out() {
        assert_eq!(last("Не звоните мне."), Some(Kind::Decline));
        assert_eq!(last("И больше мне не звоните."), Some(Kind::OptOut));
        assert_eq!(
            last("Не надо мне больше звонить никогда"),
            Some(Kind::OptOut)
        );
        assert_eq!(last("don't call me again please"), Some(Kind::OptOut));
        assert_eq!(last("Не напоминайте ничего."), Some(Kind::Decline));
        assert_eq!(
            last("Удалите, пожалуйста, мой телефонный номер."),
            Some(Kind::OptOut)
        );
        assert_eq!(
            last("please remove me from your calling list"),
            Some(Kind::OptOut)
        );
        assert_eq!(last("No more calls, okay?"), Some(Kind::OptOut));
    }

    #[test]
    fn requests_versus_statements() {
        assert_eq!(
            kinds("Наберите меня в пятницу."),
            [(Kind::Agree, Basis::Request)]
        );
        assert_eq!(
            kinds("Just ring me next week."),
            [(Kind::Agree, Basis::Request)]
        );
        assert!(kinds("Вы мне постоянно звоните!").is_empty());
        assert!(kinds("I'll call you when I'm ready").is_empty());
        assert!(kinds("They call me every single day").is_empty());
        assert!(kinds("Они звонили вчера").is_empty());
    }

    #[test]
    fn timing_objection_is_not_a_refusal() {
        assert_eq!(
            last("Через три недели поздно, давайте через неделю"),
            Some(Kind::Agree)
        );
        assert!(!has(
            "Oh no need to wait so long, try me tomorrow",
            Kind::Decline
        ));
        assert!(has(
            "Oh no need to wait so long, try me tomorrow",
            Kind::TimingObjection
        ));
        let r = read_client("Месяц — долго. Через три месяца — рано, через два наберите.");
        assert!(r.periods.iter().any(|p| p.rejected));
    }

    #[test]
    fn conditions_make_the_decision_conditional() {
        assert_eq!(
            last("Если цена не вырастет, тогда звоните."),
            Some(Kind::Conditional)
        );
        assert_eq!(
            last("If my wife agrees, then sure."),
            Some(Kind::Conditional)
        );
        assert_eq!(last("Если честно, не надо."), Some(Kind::Decline));
        assert_eq!(
            last("Call me in a week, if that's okay."),
            Some(Kind::Agree)
        );
    }

    #[test]
    fn hedges() {
        assert_eq!(last("Хм, посмотрим."), Some(Kind::Hedge));
        assert_eq!(last("I need to think it over."), Some(Kind::Hedge));
        assert_eq!(last("Может быть. Не уверен."), Some(Kind::Hedge));
        assert_eq!(last("Perhaps, perhaps not."), Some(Kind::Hedge));
        assert!(!has("Я посмотрю ваше письмо.", Kind::Hedge));
    }

    #[test]
    fn asides_to_people_in_the_room_are_ignored() {
        assert!(
            kinds("Саша, да сейчас!.. Извините. Нет, спасибо.")
                .iter()
                .all(|(k, _)| *k == Kind::Decline)
        );
        assert_eq!(
            kinds("Да-да, иду! Простите, это я не вам."),
            Vec::<(Kind, Basis)>::new()
        );
        assert_eq!(
            last("Yes, sweetie, one minute! Sorry. No thanks."),
            Some(Kind::Decline)
        );
        // Addressing the manager is not an aside.
        assert_eq!(
            last("Да, девушка, позвоните через неделю."),
            Some(Kind::Agree)
        );
    }

    #[test]
    fn counter_proposals() {
        let r = read_client("Make it three weeks.");
        assert!(r.signals.iter().any(|s| s.basis == Basis::CounterProposal));
        let r = read_client("Лучше через месяц.");
        assert!(r.signals.iter().any(|s| s.basis == Basis::CounterProposal));
        let r = read_client("Через месяц я буду в отпуске.");
        assert!(r.signals.is_empty());
    }

    #[test]
    fn email_and_reconsider() {
        assert!(has("Скиньте лучше на почту", Kind::Email));
        assert!(has("Да, давайте. Хотя подождите", Kind::Reconsider));
        assert!(!has("No, I'm fine. Thanks though.", Kind::Reconsider));
    }

    #[test]
    fn questions_do_not_answer() {
        assert!(kinds("Да? А сколько это стоит?").is_empty());
    }

    #[test]
    fn trailing_off() {
        assert!(read_client("Yes, in a week, I'll be back from...").trails_off);
        assert!(read_client("да звоните только после об").trails_off);
        assert!(!read_client("да звоните").trails_off);
    }
}
