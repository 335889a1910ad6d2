//! The words the rules know, grouped by meaning.
//!
//! Lexicons are written as lemmas (and, where the Snowball stemmer does not
//! bring the inflected forms together, the few forms that matter) and are
//! compiled once, on first use, into stems. A token is then classified by
//! one hash lookup of its stem and one of its exact form; the resulting
//! [`Class`] bit set is all the rules look at, so adding a synonym is a
//! one-word change here and never a new rule.
//!
//! Keep the lists small and semantic. A phrase belongs here because of what
//! it means in any call ("no need", "почему бы и нет"), never because one
//! transcript happened to use it.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::LazyLock;

use crate::tokens::{Break, Token, stem_word};

/// A set of word classes (a bit set).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Class(u64);

impl Class {
    pub const NONE: Class = Class(0);
    /// Answer particles that say yes: да, ага, ладно, конечно, yes, sure, ok.
    pub const YES: Class = Class(1 << 0);
    /// Answer particles that say no: нет, неа, no, nope, nah.
    pub const NO: Class = Class(1 << 1);
    /// Negators that scope over the next word: не, ни, not, don't, never.
    pub const NEG: Class = Class(1 << 2);
    /// Need/necessity: надо, нужно, need, necessary (negated: a decline).
    pub const NEED: Class = Class(1 << 3);
    /// Verbs of contacting: позвонить, набрать, call, ring, contact.
    pub const CONTACT: Class = Class(1 << 4);
    /// Reminding, verb or noun: напомнить, напоминание, remind, reminder.
    pub const REMIND: Class = Class(1 << 5);
    /// Nouns for a call: звонок, callback.
    pub const CONTACT_NOUN: Class = Class(1 << 6);
    /// Written channels: почта, email, письмо, мессенджер.
    pub const EMAIL: Class = Class(1 << 7);
    /// One-word hedges: возможно, посмотрим, maybe, perhaps.
    pub const HEDGE: Class = Class(1 << 8);
    /// Conjunctions that make a clause conditional: если, if, unless.
    pub const COND: Class = Class(1 << 9);
    /// Markers of a change of mind when they open a clause: хотя, подождите,
    /// actually, wait.
    pub const CHANGE: Class = Class(1 << 10);
    /// Apologies: извините, простите, sorry, excuse.
    pub const APOLOGY: Class = Class(1 << 11);
    /// Objections to timing, not to the contact: рано, поздно, долго, far,
    /// long, soon.
    pub const TIMING: Class = Class(1 << 12);
    /// Words that turn a period into a counter-proposal: лучше, instead,
    /// rather, prefer.
    pub const PROPOSE: Class = Class(1 << 13);
    /// Fillers and discourse particles ASR keeps: ну, эээ, um, like.
    pub const FILLER: Class = Class(1 << 14);
    /// Subject pronouns for whom a contact verb is a statement, not a
    /// request: я, они, I, we, they.
    pub const SUBJECT: Class = Class(1 << 15);
    /// The speaker as object: мне, меня, me, us.
    pub const ME: Class = Class(1 << 16);
    /// Kinship and endearment addresses: мам, honey, dad.
    pub const KIN: Class = Class(1 << 17);
    /// "Again / any more": больше, никогда, again, anymore, ever.
    pub const AGAIN: Class = Class(1 << 18);
    /// Verbs of removing: удалить, убрать, remove, delete.
    pub const REMOVE: Class = Class(1 << 19);
    /// What gets removed: номер, база, список, number, list.
    pub const LIST: Class = Class(1 << 20);
    /// Words of a hearing check or a dropped line: алло, слышно, hear.
    pub const HEARING: Class = Class(1 << 21);
    /// Copulas after which "fine" describes the speaker, not the offer:
    /// are, am, I'm, feel.
    pub const COPULA: Class = Class(1 << 22);
    /// Words that introduce a different subject of a contact verb in a
    /// purpose clause: чтобы.
    pub const PURPOSE: Class = Class(1 << 23);
    /// Forms that describe the current call or past calls, not an offer of
    /// a future one: звоню, звонили, calling, called.
    pub const CURRENT_CALL: Class = Class(1 << 24);
    /// Verbs of stopping: хватит, перестаньте, stop, quit (with a contact
    /// verb: an opt-out).
    pub const STOP: Class = Class(1 << 25);
    /// Intensifiers that may sit inside a set phrase without changing it:
    /// "not *really* interested", "не *очень* нужно", "не *совсем* уверена".
    pub const INTENSIFIER: Class = Class(1 << 26);

    pub const fn union(self, other: Class) -> Class {
        Class(self.0 | other.0)
    }

    pub const fn intersects(self, other: Class) -> bool {
        self.0 & other.0 != 0
    }
}

impl std::ops::BitOr for Class {
    type Output = Class;
    fn bitor(self, rhs: Class) -> Class {
        self.union(rhs)
    }
}

/// Entries matched by stem: every form the Snowball stemmer maps to the
/// same stem belongs to the class.
const BY_STEM: &[(Class, &[&str])] = &[
    // Answer particles are matched by form (below), except the short
    // adjective "согласен", whose forms the stemmer does not join.
    (Class::YES, &["согласен", "согласна", "согласны"]),
    (Class::NO, &["нет", "no", "nope", "nah"]),
    (
        Class::NEG,
        &[
            "не", "ни", "not", "dont", "doesnt", "didnt", "never", "cant", "wont", "isnt", "wasnt",
            "shouldnt", "wouldnt",
        ],
    ),
    (
        Class::NEED,
        &[
            "надо",
            "нужно",
            "нужен",
            "нужна",
            "нужны",
            "требуется",
            "need",
            "needed",
            "necessary",
        ],
    ),
    (
        Class::CONTACT,
        &[
            "звонить",
            "звоните",
            "позвонить",
            "позвоните",
            "перезвонить",
            "перезвоните",
            "созвониться",
            "созвонимся",
            "набрать",
            "наберите",
            "набирать",
            "набирайте",
            "звякнуть",
            "звякните",
            "связаться",
            "свяжитесь",
            "названивать",
            "названивайте",
            "сообщить",
            "сообщите",
            "ping",
            "notify",
            "call",
            "ring",
            "phone",
            "contact",
        ],
    ),
    (
        Class::REMIND,
        &[
            "напомнить",
            "напомните",
            "напоминать",
            "напоминайте",
            "напоминание",
            "напоминания",
            "remind",
            "reminder",
        ],
    ),
    (Class::CONTACT_NOUN, &["звонок", "звонки", "callback"]),
    (
        Class::EMAIL,
        &[
            "почта",
            "почту",
            "email",
            "mail",
            "письмо",
            "письменном",
            "письменно",
            "мессенджер",
            "ватсап",
            "телеграм",
            "whatsapp",
            "telegram",
            "messenger",
            "text",
            "sms",
            "смс",
            "эсэмэс",
        ],
    ),
    (
        Class::HEDGE,
        &[
            "возможно",
            "maybe",
            "perhaps",
            "possibly",
            "unsure",
            "undecided",
            "посоветоваться",
            "посоветуюсь",
            "depends",
            "зависит",
        ],
    ),
    (Class::COND, &["если", "if", "unless", "provided"]),
    (
        Class::CHANGE,
        &[
            "подождите",
            "погодите",
            "подожди",
            "стоп",
            "though",
            "actually",
            "wait",
        ],
    ),
    (Class::APOLOGY, &["извините", "sorry", "excuse", "pardon"]),
    (
        Class::TIMING,
        &[
            "рано",
            "поздно",
            "долго",
            "много",
            "далеко",
            "far",
            "long",
            "soon",
            "late",
            "early",
        ],
    ),
    (
        Class::PROPOSE,
        &[
            "лучше",
            "вместо",
            "пусть",
            "instead",
            "rather",
            "prefer",
            "better",
        ],
    ),
    (
        Class::FILLER,
        &[
            "ну",
            "эээ",
            "ээ",
            "э",
            "эм",
            "хм",
            "ой",
            "ах",
            "а",
            "о",
            "вот",
            "типа",
            "же",
            "уж",
            "так",
            "только",
            "тогда",
            "just",
            "like",
            "um",
            "uh",
            "hmm",
            "hm",
            "er",
            "oh",
            "so",
            "then",
            "well",
            "please",
            "пожалуйста",
            "и",
            "and",
            "ли",
        ],
    ),
    (
        Class::SUBJECT,
        &[
            "я", "он", "она", "они", "i", "ill", "im", "ive", "id", "we", "weve", "they", "theyll",
            "theyre", "he", "hes", "she", "shes", "someone", "nobody", "everyone",
        ],
    ),
    (Class::ME, &["мне", "меня", "нам", "нас", "me", "us"]),
    (
        Class::KIN,
        &[
            "мама",
            "мам",
            "папа",
            "пап",
            "мамочка",
            "honey",
            "sweetie",
            "darling",
            "babe",
            "mom",
            "mommy",
            "dad",
            "daddy",
        ],
    ),
    (
        Class::AGAIN,
        &["больше", "никогда", "впредь", "again", "anymore", "ever"],
    ),
    (
        Class::REMOVE,
        &[
            "удалить",
            "удалите",
            "убрать",
            "уберите",
            "вычеркнуть",
            "вычеркните",
            "исключить",
            "исключите",
            "забыть",
            "забудьте",
            "forget",
            "remove",
            "delete",
            "erase",
        ],
    ),
    (
        Class::LIST,
        &[
            "номер",
            "база",
            "базы",
            "список",
            "лист",
            "number",
            "list",
            "database",
            "contacts",
            "records",
        ],
    ),
    (
        Class::HEARING,
        &[
            "алло",
            "слышно",
            "слышите",
            "слышу",
            "связь",
            "hello",
            "hear",
            "breaking",
        ],
    ),
    (
        Class::COPULA,
        &["are", "am", "im", "were", "feel", "doing", "всё", "все"],
    ),
    (Class::PURPOSE, &["чтобы", "чтоб"]),
    (
        Class::INTENSIFIER,
        &[
            "really",
            "quite",
            "so",
            "very",
            "too",
            "totally",
            "entirely",
            "that",
            "all",
            "очень",
            "совсем",
            "особо",
            "особенно",
            "сильно",
            "вообще",
            "прям",
            "прямо",
            "так",
            "уж",
            "уже",
            "пока",
            "еще",
            "точно",
        ],
    ),
    (
        Class::STOP,
        &[
            "хватит",
            "перестаньте",
            "перестань",
            "прекратите",
            "прекрати",
            "запрещаю",
            "stop",
            "quit",
            "cease",
        ],
    ),
];

/// Entries matched by exact (normalised) form: invariable answer particles
/// (their stems collide: `договорились` with `договор`, `хорошо` with
/// `хорошего дня`), and words where the stem would lump in a word of
/// another meaning: `посмотрим` (we'll see) is a hedge,
/// `посмотрю` (I'll look) is not; `вы` is a subject only as itself.
///
/// `хотя` (хотите), `простите` (просто), `неа` (не), `дорогой` (дорого),
/// `беспокойте` (не беспокойтесь — "don't worry").
const BY_FORM: &[(Class, &[&str])] = &[
    (
        Class::HEDGE,
        &["посмотрим", "подумаю", "подумаем", "подумать"],
    ),
    (Class::SUBJECT, &["вы", "мы"]),
    (
        Class::YES,
        &[
            "да",
            "ага",
            "угу",
            "ок",
            "окей",
            "ладно",
            "хорошо",
            "конечно",
            "давайте",
            "давай",
            "можно",
            "валяйте",
            "валяй",
            "нормально",
            "отлично",
            "супер",
            "обязательно",
            "пожалуй",
            "договорились",
            "договоримся",
            "уговорили",
            "идет",
            "yes",
            "yeah",
            "yep",
            "yup",
            "yea",
            "ya",
            "sure",
            "ok",
            "okay",
            "alright",
            "absolutely",
            "definitely",
            "certainly",
            "mhm",
            "great",
            "perfect",
            "gladly",
            "fine",
        ],
    ),
    (Class::NO, &["неа"]),
    (Class::CHANGE, &["хотя"]),
    (Class::APOLOGY, &["простите"]),
    (
        Class::KIN,
        &["милый", "милая", "дорогой", "дорогая", "дорогуша"],
    ),
    (
        Class::CONTACT,
        &["беспокоить", "беспокойте", "побеспокоить"],
    ),
    (
        Class::CURRENT_CALL,
        &[
            "звоню",
            "звоним",
            "звонил",
            "звонила",
            "звонили",
            "звонят",
            "набираю",
            "беспокою",
            "беспокоим",
            "напоминаю",
            "напоминаем",
            "calling",
            "called",
            "calls",
        ],
    ),
];

/// FNV-1a: the lexicon keys are short words, looked up for every token;
/// SipHash's DoS resistance buys nothing for a fixed, trusted key set.
#[derive(Default)]
pub struct Fnv(u64);

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A hash map keyed by words.
pub type WordMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;

struct Tables {
    by_stem: WordMap<String, Class>,
    by_form: WordMap<&'static str, Class>,
}

static TABLES: LazyLock<Tables> = LazyLock::new(|| {
    let mut by_stem: WordMap<String, Class> = WordMap::default();
    for (class, words) in BY_STEM {
        for w in *words {
            let e = by_stem.entry(stem_word(w)).or_default();
            *e = e.union(*class);
        }
    }
    let mut by_form: WordMap<&'static str, Class> = WordMap::default();
    for (class, words) in BY_FORM {
        for w in *words {
            let e = by_form.entry(*w).or_default();
            *e = e.union(*class);
        }
    }
    Tables { by_stem, by_form }
});

/// Classes of one word, from its normalised form and its stem.
pub fn classify(norm: &str, stem: &str) -> Class {
    let t = &*TABLES;
    let a = t.by_stem.get(stem).copied().unwrap_or_default();
    let b = t.by_form.get(norm).copied().unwrap_or_default();
    a | b
}

/// Bits of the phrase lists that have a phrase starting with `stem`.
pub fn phrase_heads(stem: &str) -> u32 {
    HEADS.get(stem).copied().unwrap_or(0)
}

static HEADS: LazyLock<WordMap<String, u32>> = LazyLock::new(|| {
    let p = &*PHRASES;
    let mut heads: WordMap<String, u32> = WordMap::default();
    for list in [
        &p.opt_out,
        &p.decline,
        &p.agree,
        &p.hedge,
        &p.aside,
        &p.change,
        &p.not_conditional,
        &p.contact,
        &p.propose,
        &p.identity_answer,
        &p.not_yes,
        &p.dropped,
        &p.identity,
        &p.polite,
    ] {
        for phrase in &list.phrases {
            if let Some(first) = phrase.stems.first() {
                *heads.entry(first.clone()).or_default() |= list.bit;
            }
        }
    }
    heads
});

/// A multi-word expression, compiled to stems.
#[derive(Debug, Clone)]
pub struct Phrase {
    pub stems: Vec<String>,
}

impl Phrase {
    /// How many tokens the phrase covers when it matches at token `i`
    /// (ending before `end`). Commas may fall between its words ("no,
    /// thanks"), sentence ends may not, and up to two intensifiers or object
    /// pronouns may sit inside it ("not *really* interested", "не *очень*
    /// нужно", "keep *me* posted").
    pub fn match_len(&self, tokens: &[Token], i: usize, end: usize) -> Option<usize> {
        let end = end.min(tokens.len());
        let mut j = i;
        let mut skipped = 0;
        for (k, stem) in self.stems.iter().enumerate() {
            loop {
                let t = tokens.get(j).filter(|_| j < end)?;
                if k > 0 && t.break_before > Break::Clause {
                    return None;
                }
                if t.stem == *stem {
                    break;
                }
                let skippable = t.is(Class::INTENSIFIER | Class::ME)
                    || matches!(t.norm.as_str(), "you" | "вас" | "вам");
                if k == 0 || skipped == 2 || !skippable {
                    return None;
                }
                skipped += 1;
                j += 1;
            }
            j += 1;
        }
        Some(j - i)
    }
}

/// One phrase lexicon. Each list has its own bit; a token carries the bits
/// of the lists with a phrase starting with its stem ([`Token::heads`]), so
/// matching skips, in one AND, every token that starts no phrase.
#[derive(Debug, Clone)]
pub struct PhraseList {
    pub bit: u32,
    pub phrases: Vec<Phrase>,
}

impl PhraseList {
    /// Tokens covered by the longest phrase of the list matching at token
    /// `i` (ending before `end`).
    pub fn longest_match(&self, tokens: &[Token], i: usize, end: usize) -> Option<usize> {
        if tokens.get(i)?.heads & self.bit == 0 {
            return None;
        }
        self.phrases
            .iter()
            .filter_map(|p| p.match_len(tokens, i, end))
            .max()
    }
}

fn compile(bit: u32, list: &[&str]) -> PhraseList {
    let phrases = list
        .iter()
        .map(|p| Phrase {
            stems: p.split_whitespace().map(stem_word).collect(),
        })
        .collect();
    PhraseList { bit, phrases }
}

/// Phrase lexicons, grouped by meaning.
pub struct Phrases {
    /// Asking not to be contacted again, in fixed wording. (Structural
    /// opt-outs — "больше не звоните", "remove my number" — are rules.)
    pub opt_out: PhraseList,
    /// Declining: "не надо", "no need", "not interested".
    pub decline: PhraseList,
    /// Agreeing without a yes-word: "почему бы и нет", "sounds good".
    pub agree: PhraseList,
    /// Not deciding: "не знаю", "I'll think about it".
    pub hedge: PhraseList,
    /// "That was not for you": what came before was said to someone else.
    pub aside: PhraseList,
    /// Reconsidering: "hang on", "on second thought".
    pub change: PhraseList,
    /// Idioms with a conditional word that set no condition: "если честно".
    pub not_conditional: PhraseList,
    /// Multi-word contact verbs: "follow up", "check back", "reach out".
    pub contact: PhraseList,
    /// Multi-word counter-proposal openers: "make it", "how about".
    pub propose: PhraseList,
    /// Answers about who is speaking: "yes, speaking", "да, это я".
    pub identity_answer: PhraseList,
    /// Idioms where a yes-word is not a yes: "сколько можно".
    pub not_yes: PhraseList,
    /// Manager words that tell the line dropped: "связь пропала", "lost him".
    pub dropped: PhraseList,
    /// "That's okay": a polite no to an offer, unless a yes came first.
    pub polite: PhraseList,
    /// Manager questions about identity or audibility: "is this", "вы меня
    /// слышите", "удобно говорить".
    pub identity: PhraseList,
}

pub static PHRASES: LazyLock<Phrases> = LazyLock::new(|| Phrases {
    opt_out: compile(
        1,
        &[
            "стоп лист",
            "черный список",
            "do not call list",
            "dont call list",
            "do not call registry",
            "dont call registry",
            "do not call register",
            "take my number off",
            "take us off",
            "leave me alone",
            "оставьте меня в покое",
            "take me off",
            "lose my number",
            "забудьте мой номер",
            "unsubscribe",
        ],
    ),
    decline: compile(
        2,
        &[
            "не надо",
            "не нужно",
            "не нужен",
            "не нужна",
            "не нужны",
            "не стоит",
            "не требуется",
            "не интересно",
            "неинтересно",
            "не интересует",
            "не хочу",
            "не хочется",
            "не актуально",
            "неактуально",
            "нет смысла",
            "ни к чему",
            "не согласен",
            "не согласна",
            "не согласны",
            "забудьте",
            "передумал",
            "передумала",
            "обойдусь",
            "отказываюсь",
            "no need",
            "dont need",
            "do not need",
            "no longer need",
            "not interested",
            "no thanks",
            "no thank you",
            "not really",
            "im good",
            "i am good",
            "were good",
            "dont bother",
            "dont want",
            "do not want",
            "not necessary",
            "unnecessary",
            "forget it",
            "ill pass",
            "of course not",
            "certainly not",
            "absolutely not",
            "definitely not",
            "probably not",
            "changed my mind",
            "нет конечно",
            "нет конечно же",
            "ни в коем случае",
            "ни за что",
            "не хотелось бы",
            "не вижу смысла",
            "не подходит",
            "откажусь",
            "отказаться",
            "обойдемся",
            "не думаю",
            "скорее нет",
            "dont think so",
            "do not think so",
            "rather not",
            "id rather not",
            "please dont",
            "no dont",
            "im all set",
            "were all set",
            "no thats fine",
            "no thats okay",
            "no thats ok",
            "no thats alright",
            "no its fine",
            "no its okay",
            "no its ok",
            "no im fine",
            "no im okay",
            "нет все нормально",
            "нет все хорошо",
            "no way",
            "не собираюсь",
            "не планирую",
            "not going to",
            "not planning",
            "dont plan",
            "dont intend",
            "prefer you didnt",
            "prefer you dont",
            "prefer not",
            "rather you didnt",
            "rather you dont",
        ],
    ),
    agree: compile(
        4,
        &[
            "почему бы и нет",
            "почему бы нет",
            "почему нет",
            "не против",
            "не возражаю",
            "без проблем",
            "буду рад",
            "буду рада",
            "было бы неплохо",
            "было бы хорошо",
            "было бы удобно",
            "меня устраивает",
            "подойдет",
            "годится",
            "why not",
            "sounds good",
            "sounds great",
            "sounds fine",
            "that works",
            "works for me",
            "go ahead",
            "please do",
            "of course",
            "no problem",
            "no worries",
            "sure thing",
            "fine by me",
            "fine with me",
            "be helpful",
            "be great",
            "be nice",
            "be good",
            "id like that",
            "i would like that",
            "id appreciate",
            "lets do it",
            "lets do that",
            "dont mind",
            "uh huh",
            "нет проблем",
            "нет вопросов",
            "не откажусь",
            "не откажемся",
            "думаю да",
            "скорее да",
            "жду звонка",
            "жду вашего звонка",
            "буду ждать",
            "будем ждать",
            "not a problem",
            "i guess so",
            "guess so",
            "i suppose so",
            "sounds like a plan",
            "go for it",
            "look forward",
            "looking forward",
            "im good with",
            "im fine with",
            "im okay with",
            "im ok with",
            "good with that",
            "fine with that",
            "okay with that",
            "буду благодарен",
            "буду благодарна",
            "буду признателен",
            "буду признательна",
            "будьте добры",
            "would appreciate",
            "appreciate it",
            "that would help",
            "would be helpful",
            "you may",
            "you can",
            "feel free",
            "можете",
        ],
    ),
    hedge: compile(
        8,
        &[
            "не знаю",
            "не уверен",
            "не уверена",
            "не готов",
            "не готова",
            "не могу сказать",
            "не могу сейчас сказать",
            "трудно сказать",
            "сложно сказать",
            "может быть",
            "может и нет",
            "может нет",
            "видно будет",
            "не решил",
            "не решила",
            "надо подумать",
            "dont know",
            "do not know",
            "not sure",
            "not ready",
            "not certain",
            "cant say",
            "hard to say",
            "maybe not",
            "think about it",
            "think it over",
            "let me think",
            "well see",
            "we will see",
            "havent decided",
            "need to talk",
            "need to check",
            "it depends",
            "ill let you know",
            "i will let you know",
            "ill get back to you",
            "let me check",
            "have to ask",
            "need to ask",
            "maybe later",
            "может позже",
            "может потом",
            "как получится",
            "надо спросить",
            "спрошу",
            "сам перезвоню",
            "сама перезвоню",
            "сам позвоню",
            "сама позвоню",
            "сам наберу",
            "сама наберу",
            "я вам сообщу",
            "еще не решил",
            "еще не решила",
        ],
    ),
    aside: compile(
        16,
        &[
            "не вам",
            "not for you",
            "not to you",
            "not talking to you",
            "wasnt talking to you",
            "wasnt for you",
            "was not for you",
            "not meant for you",
            "wasnt meant for you",
        ],
    ),
    change: compile(
        32,
        &["hang on", "hold on", "on second thought", "а впрочем"],
    ),
    not_conditional: compile(
        64,
        &[
            "если честно",
            "если что",
            "если хотите",
            "if you want",
            "if you like",
            "if i may",
            "if thats ok",
            "if thats okay",
            "if thats alright",
            "if you dont mind",
            "если можно",
            "если не трудно",
            "если не сложно",
            "если вам не трудно",
            "если так надо",
            "если надо",
            "if you must",
            "if you have to",
        ],
    ),
    contact: compile(
        128,
        &[
            "follow up",
            "check back",
            "check in",
            "reach out",
            "touch base",
            "get back to",
            "circle back",
            "hit me up",
            "give me a call",
            "give me a ring",
            "give me a reminder",
            "give me a buzz",
            "give you a call",
            "give you a ring",
            "give you a reminder",
            "reach you",
            "get in touch",
            "let you know",
            "put me down",
            "sign me up",
            "set a reminder",
            "set up a reminder",
            "send me a reminder",
            "запишите меня",
            "keep posted",
            "keep updated",
            "keep informed",
            "держите в курсе",
            "держать в курсе",
            "heads up",
            "try me",
            "try again",
        ],
    ),
    propose: compile(
        256,
        &[
            "make it",
            "how about",
            "what about",
            "давайте лучше",
            "может",
        ],
    ),
    identity_answer: compile(
        512,
        &[
            "this is he",
            "this is she",
            "this is him",
            "this is her",
            "its me",
            "thats me",
            "speaking",
            "это я",
        ],
    ),
    not_yes: compile(1024, &["сколько можно", "да ну", "yeah right"]),
    dropped: compile(
        2048,
        &[
            "связь пропала",
            "положил трубку",
            "положила трубку",
            "положили трубку",
            "бросил трубку",
            "бросила трубку",
            "бросили трубку",
            "не слышно",
            "lost him",
            "lost her",
            "lost them",
            "lost the call",
            "lost the line",
            "hung up",
            "call dropped",
            "line went dead",
            "are you there",
            "can you hear me",
            "вы меня слышите",
        ],
    ),
    polite: compile(
        8192,
        &[
            "thats alright",
            "thats okay",
            "thats ok",
            "its okay",
            "its alright",
            "its ok",
        ],
    ),
    identity: compile(
        4096,
        &[
            "is this",
            "am i speaking",
            "speaking with",
            "can you hear",
            "are you there",
            "good time to talk",
            "это вы",
            "вы меня слышите",
            "удобно говорить",
            "можете говорить",
        ],
    ),
});

#[cfg(test)]
mod tests {
    use super::*;

    fn class_of(word: &str) -> Class {
        let norm = word.to_lowercase().replace('ё', "е");
        classify(&norm, &stem_word(&norm))
    }

    #[test]
    fn inflected_forms_share_a_class() {
        for w in ["напомните", "напомнить", "напомню"] {
            assert!(class_of(w).intersects(Class::REMIND), "{w}");
        }
        for w in ["звоните", "звонить", "позвоните", "позвони", "набирайте"]
        {
            assert!(class_of(w).intersects(Class::CONTACT), "{w}");
        }
        for w in ["calling", "call", "calls"] {
            assert!(class_of(w).intersects(Class::CONTACT), "{w}");
        }
    }

    #[test]
    fn words_that_merely_contain_a_keyword_do_not_match() {
        for w in [
            "когда",
            "никогда",
            "давно",
            "всегда",
            "дача",
            "yesterday",
            "today",
        ] {
            assert!(!class_of(w).intersects(Class::YES), "{w}");
        }
    }

    #[test]
    fn form_entries_keep_meanings_apart() {
        assert!(class_of("посмотрим").intersects(Class::HEDGE));
        assert!(!class_of("посмотрю").intersects(Class::HEDGE));
    }

    #[test]
    fn phrase_lists_have_distinct_bits() {
        let p = &*PHRASES;
        let bits = [
            p.opt_out.bit,
            p.decline.bit,
            p.agree.bit,
            p.hedge.bit,
            p.aside.bit,
            p.change.bit,
            p.not_conditional.bit,
            p.contact.bit,
            p.propose.bit,
            p.identity_answer.bit,
            p.not_yes.bit,
            p.dropped.bit,
            p.identity.bit,
            p.polite.bit,
        ];
        assert_eq!(
            bits.iter().fold(0, |a, b| a | b).count_ones() as usize,
            bits.len()
        );
    }
}
