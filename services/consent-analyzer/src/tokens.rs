//! Normalisation, tokenising and stemming of one utterance.
//!
//! Transcripts arrive either as edited text (capitals, punctuation, «quotes»,
//! dashes) or as raw ASR output (lowercase, no punctuation, split or repeated
//! words). The tokenizer keeps what the rules need from both:
//!
//! * words, lowercased, `ё` folded to `е`, apostrophes dropped (`don't` →
//!   `dont`, which is also how ASR spells it), hyphenated compounds split
//!   (`да-да` → `да`, `да`);
//! * the Snowball stem of each word (Russian for Cyrillic words, English for
//!   Latin ones), so the lexicons can be written as lemmas instead of every
//!   inflected form;
//! * where sentences and clauses end, whether a sentence was a question or an
//!   exclamation, and whether a word was capitalised (a name used as an
//!   address marks a remark meant for someone else in the room);
//! * byte spans into the original text, so evidence quotes the client's own
//!   words.

use std::sync::LazyLock;

use rust_stemmers::{Algorithm, Stemmer};

use crate::lexicon::{self, Class};

static RUSSIAN: LazyLock<Stemmer> = LazyLock::new(|| Stemmer::create(Algorithm::Russian));
static ENGLISH: LazyLock<Stemmer> = LazyLock::new(|| Stemmer::create(Algorithm::English));

/// What separates a token from the one before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Break {
    /// Whitespace, quotes or a hyphen inside a compound.
    None,
    /// A comma, colon, bracket.
    Clause,
    /// A free-standing dash: `Полгода — это много`.
    Dash,
    /// `.`, `!`, `?`, `…`, `;`.
    Sentence,
}

/// One word of an utterance.
#[derive(Debug, Clone)]
pub struct Token {
    /// Lowercased, `ё`→`е`, apostrophes removed.
    pub norm: String,
    /// Snowball stem of `norm` (digits are kept as they are).
    pub stem: String,
    /// Byte range of the word in the original text.
    pub start: usize,
    pub end: usize,
    /// Index of the sentence and of the clause (counted over the whole
    /// utterance) the token belongs to.
    pub sentence: usize,
    pub clause: usize,
    /// What separated this token from the previous one.
    pub break_before: Break,
    /// First letter was upper case in the original.
    pub capitalized: bool,
    /// The word is all ASCII digits.
    pub digits: bool,
    /// Lexicon classes of the word (see [`lexicon::Class`]).
    pub class: Class,
    /// Bits of the phrase lists with a phrase starting with this word (see
    /// [`lexicon::PhraseList`]).
    pub heads: u32,
}

impl Token {
    /// Whether the word belongs to any of `classes`.
    pub fn is(&self, classes: Class) -> bool {
        self.class.intersects(classes)
    }
}

/// One sentence, as a token range plus how it ended.
#[derive(Debug, Clone)]
pub struct Sentence {
    /// Token range `first..end`.
    pub first: usize,
    pub end: usize,
    /// Byte range in the original text, trailing punctuation included.
    pub start_byte: usize,
    pub end_byte: usize,
    /// Ended with `!` (possibly among other marks, `!..`).
    pub exclamation: bool,
    /// Ended with `?`.
    pub question: bool,
}

/// A tokenised utterance.
#[derive(Debug, Clone, Default)]
pub struct Utterance {
    pub tokens: Vec<Token>,
    pub sentences: Vec<Sentence>,
}

impl Utterance {
    /// The original text of sentence `s`, trimmed.
    pub fn sentence_text<'a>(&self, text: &'a str, s: usize) -> &'a str {
        let sent = &self.sentences[s];
        text.get(sent.start_byte..sent.end_byte)
            .unwrap_or("")
            .trim()
    }

    /// Whether tokens `a` and `b` are in the same clause.
    pub fn same_clause(&self, a: usize, b: usize) -> bool {
        self.tokens[a].clause == self.tokens[b].clause
    }

    /// Token range of the clause holding token `i`.
    pub fn clause_range(&self, i: usize) -> std::ops::Range<usize> {
        let c = self.tokens[i].clause;
        let mut a = i;
        while a > 0 && self.tokens[a - 1].clause == c {
            a -= 1;
        }
        let mut b = i + 1;
        while b < self.tokens.len() && self.tokens[b].clause == c {
            b += 1;
        }
        a..b
    }
}

/// Stem one lowercased word with the stemmer of its script. Words with any
/// Cyrillic letter use the Russian stemmer, other alphabetic words the
/// English one; numbers and other scripts are returned as they are.
pub fn stem_word(norm: &str) -> String {
    if norm.chars().any(is_cyrillic) {
        RUSSIAN.stem(norm).into_owned()
    } else if norm.bytes().any(|b| b.is_ascii_alphabetic()) {
        ENGLISH.stem(norm).into_owned()
    } else {
        norm.to_owned()
    }
}

fn is_cyrillic(c: char) -> bool {
    matches!(c, '\u{0400}'..='\u{04FF}')
}

fn is_apostrophe(c: char) -> bool {
    matches!(c, '\'' | '’' | 'ʼ' | '`' | '‘')
}

fn is_hyphen(c: char) -> bool {
    matches!(c, '-' | '‐' | '‑')
}

/// Lowercase `c` into `out`, folding `ё` to `е` (the stemmers and the
/// lexicons only know `е`; ASR and people use both). ASCII and the Russian
/// alphabet take a fast path; other scripts go through Unicode tables.
fn push_norm(out: &mut String, c: char) {
    match c {
        'ё' | 'Ё' => out.push('е'),
        'а'..='я' => out.push(c),
        // 'А'..='Я' map to 'а'..='я' by a fixed offset.
        'А'..='Я' => out.push(char::from_u32(c as u32 + 0x20).unwrap_or(c)),
        c if c.is_ascii() => out.push(c.to_ascii_lowercase()),
        c => out.extend(c.to_lowercase()),
    }
}

/// Letters and digits, with a fast path for ASCII and Russian.
fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(c, 'а'..='я' | 'А'..='Я' | 'ё' | 'Ё')
        || (!c.is_ascii() && c.is_alphanumeric())
}

/// Tokenise one utterance.
pub fn tokenize(text: &str) -> Utterance {
    let mut tok = Tokenizer {
        text,
        out: Utterance::default(),
        pending: Break::None,
        sentence: 0,
        clause: 0,
        sentence_open: false,
        sentence_start: 0,
        sentence_first: 0,
        exclamation: false,
        question: false,
        punct_end: 0,
    };
    tok.run();
    tok.out
}

struct Tokenizer<'a> {
    text: &'a str,
    out: Utterance,
    /// Strongest break seen since the last word.
    pending: Break,
    sentence: usize,
    clause: usize,
    sentence_open: bool,
    sentence_start: usize,
    sentence_first: usize,
    exclamation: bool,
    question: bool,
    /// Byte offset just after the last punctuation mark of the current
    /// sentence's closing run.
    punct_end: usize,
}

impl Tokenizer<'_> {
    fn run(&mut self) {
        let text = self.text;
        let mut chars = text.char_indices().peekable();
        let mut word = String::new();
        let mut word_start = 0usize;
        let mut word_end = 0usize;
        let mut capitalized = false;
        while let Some((i, c)) = chars.next() {
            let next = chars.peek().map(|&(_, n)| n);
            if is_word_char(c) {
                if word.is_empty() {
                    word_start = i;
                    capitalized = c.is_uppercase();
                }
                push_norm(&mut word, c);
                word_end = i + c.len_utf8();
                continue;
            }
            let inside_word = !word.is_empty() && next.is_some_and(is_word_char);
            if is_apostrophe(c) && inside_word {
                // don't → dont, I'll → ill: the ASR spelling.
                continue;
            }
            if !word.is_empty() {
                self.push_word(std::mem::take(&mut word), word_start, word_end, capitalized);
            }
            match c {
                '.' | '!' | '?' | '…' | ';' => {
                    self.pending = Break::Sentence;
                    self.exclamation |= c == '!';
                    self.question |= c == '?';
                    self.punct_end = i + c.len_utf8();
                }
                c if is_hyphen(c) && inside_word => {
                    // A compound: да-да, стоп-лист, uh-huh. No break.
                }
                '—' | '–' | '-' | '‐' | '‑' => self.raise(Break::Dash),
                ',' | ':' | '(' | ')' | '[' | ']' => self.raise(Break::Clause),
                _ => {}
            }
        }
        if !word.is_empty() {
            self.push_word(word, word_start, word_end, capitalized);
        }
        self.close_sentence();
    }

    fn raise(&mut self, b: Break) {
        if b > self.pending {
            self.pending = b;
        }
    }

    fn close_sentence(&mut self) {
        if !self.sentence_open {
            return;
        }
        let last_end = self.out.tokens.last().map_or(0, |t| t.end);
        self.out.sentences.push(Sentence {
            first: self.sentence_first,
            end: self.out.tokens.len(),
            start_byte: self.sentence_start,
            end_byte: self.punct_end.max(last_end),
            exclamation: self.exclamation,
            question: self.question,
        });
        self.sentence_open = false;
    }

    fn push_word(&mut self, norm: String, start: usize, end: usize, capitalized: bool) {
        let brk = if self.out.tokens.is_empty() {
            Break::Sentence
        } else {
            self.pending
        };
        if brk == Break::Sentence && self.sentence_open {
            self.close_sentence();
            self.sentence += 1;
        }
        if brk != Break::None && !self.out.tokens.is_empty() {
            self.clause += 1;
        }
        if !self.sentence_open {
            self.sentence_open = true;
            self.sentence_start = start;
            self.sentence_first = self.out.tokens.len();
            self.exclamation = false;
            self.question = false;
            self.punct_end = end;
        }
        self.pending = Break::None;
        let stem = stem_word(&norm);
        let digits = norm.bytes().all(|b| b.is_ascii_digit());
        let class = lexicon::classify(&norm, &stem);
        let heads = lexicon::phrase_heads(&stem);
        self.out.tokens.push(Token {
            norm,
            stem,
            start,
            end,
            sentence: self.sentence,
            clause: self.clause,
            break_before: brk,
            capitalized,
            digits,
            class,
            heads,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norms(u: &Utterance) -> Vec<&str> {
        u.tokens.iter().map(|t| t.norm.as_str()).collect()
    }

    #[test]
    fn words_are_split_lowercased_and_folded() {
        let u = tokenize("Ещё раз: Всё ХОРОШО, don't worry!");
        assert_eq!(norms(&u), ["еще", "раз", "все", "хорошо", "dont", "worry"]);
        assert!(u.tokens[2].capitalized);
        assert_eq!(u.tokens[2].break_before, Break::Clause);
    }

    #[test]
    fn compounds_split_without_a_break() {
        let u = tokenize("Да-да, стоп-лист");
        assert_eq!(norms(&u), ["да", "да", "стоп", "лист"]);
        assert_eq!(u.tokens[1].break_before, Break::None);
        assert_eq!(u.tokens[2].break_before, Break::Clause);
    }

    #[test]
    fn sentences_know_how_they_ended() {
        let text = "Коля, иду!.. Извините. Что? ну да";
        let u = tokenize(text);
        assert_eq!(u.sentences.len(), 4);
        assert!(u.sentences[0].exclamation && !u.sentences[0].question);
        assert_eq!(u.sentence_text(text, 0), "Коля, иду!..");
        assert!(u.sentences[2].question);
        assert_eq!(u.sentence_text(text, 3), "ну да");
    }

    #[test]
    fn free_dash_is_a_clause_break() {
        let u = tokenize("Полгода — это много");
        assert_eq!(u.tokens[1].break_before, Break::Dash);
        assert!(!u.same_clause(0, 1));
        assert_eq!(u.clause_range(2), 1..3);
    }

    #[test]
    fn stems_use_the_script_of_the_word() {
        assert_eq!(stem_word("напомните"), "напомн");
        assert_eq!(stem_word("calling"), "call");
        assert_eq!(stem_word("42"), "42");
    }

    #[test]
    fn empty_and_punctuation_only_text() {
        assert!(tokenize("").tokens.is_empty());
        let u = tokenize(" ...!? — ");
        assert!(u.tokens.is_empty());
        assert!(u.sentences.is_empty());
    }
}
