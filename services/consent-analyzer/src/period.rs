//! Durations: the typed `remind_after` value and finding spoken periods in
//! an utterance ("через две недели", "дня через три", "in a couple of weeks",
//! "call me tomorrow", "через 10 дней"), with numbers as digits or words.

use std::fmt;
use std::sync::LazyLock;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::lexicon::{Class, WordMap};
use crate::tokens::{Break, Token, stem_word};

/// Unit of a [`Period`]. Weeks are kept as days (`P14D`), the form the
/// reminder scheduler and the labeled corpus use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeriodUnit {
    Minute,
    Hour,
    Day,
    Month,
    Year,
}

/// A calendar period, such as "two weeks" or "one hour". Serialises as an
/// ISO-8601 duration (`P14D`, `P1M`, `PT2H`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Period {
    pub amount: u32,
    pub unit: PeriodUnit,
}

impl Period {
    /// The default reminder period when the client agreed but nobody named
    /// one: a month.
    pub const DEFAULT: Period = Period::months(1);

    pub const fn minutes(n: u32) -> Self {
        Self {
            amount: n,
            unit: PeriodUnit::Minute,
        }
    }
    pub const fn hours(n: u32) -> Self {
        Self {
            amount: n,
            unit: PeriodUnit::Hour,
        }
    }
    pub const fn days(n: u32) -> Self {
        Self {
            amount: n,
            unit: PeriodUnit::Day,
        }
    }
    pub const fn weeks(n: u32) -> Self {
        Self::days(n.saturating_mul(7))
    }
    pub const fn months(n: u32) -> Self {
        Self {
            amount: n,
            unit: PeriodUnit::Month,
        }
    }
    pub const fn years(n: u32) -> Self {
        Self {
            amount: n,
            unit: PeriodUnit::Year,
        }
    }

    /// Parse an ISO-8601 duration with a single component (`P2W` is read as
    /// `P14D`).
    pub fn parse_iso(s: &str) -> Result<Self, PeriodParseError> {
        let err = || PeriodParseError(s.to_owned());
        let rest = s.strip_prefix('P').ok_or_else(err)?;
        let (time, rest) = match rest.strip_prefix('T') {
            Some(r) => (true, r),
            None => (false, rest),
        };
        if rest.len() < 2 {
            return Err(err());
        }
        let (num, unit) = rest.split_at(rest.len() - 1);
        let n: u32 = num.parse().map_err(|_| err())?;
        Ok(match (time, unit) {
            (false, "D") => Self::days(n),
            (false, "W") => Self::weeks(n),
            (false, "M") => Self::months(n),
            (false, "Y") => Self::years(n),
            (true, "H") => Self::hours(n),
            (true, "M") => Self::minutes(n),
            _ => return Err(err()),
        })
    }

    /// `amount_halves / 2` of `unit`, converting a fraction to the next
    /// smaller unit (`полтора месяца` → `P45D`, `полчаса` → `PT30M`).
    fn from_halves(halves: u32, unit: PeriodUnit) -> Option<Self> {
        if halves == 0 {
            return None;
        }
        if halves.is_multiple_of(2) {
            return Some(Self {
                amount: halves / 2,
                unit,
            });
        }
        Some(match unit {
            PeriodUnit::Minute => Self::minutes(halves.div_ceil(2)),
            PeriodUnit::Hour => Self::minutes(halves * 30),
            PeriodUnit::Day => Self::hours(halves * 12),
            PeriodUnit::Month => Self::days(halves * 15),
            PeriodUnit::Year => Self::months(halves * 6),
        })
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.amount;
        match self.unit {
            PeriodUnit::Minute => write!(f, "PT{n}M"),
            PeriodUnit::Hour => write!(f, "PT{n}H"),
            PeriodUnit::Day => write!(f, "P{n}D"),
            PeriodUnit::Month => write!(f, "P{n}M"),
            PeriodUnit::Year => write!(f, "P{n}Y"),
        }
    }
}

/// Not an ISO-8601 duration this crate understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a single-component ISO-8601 duration: {0:?}")]
pub struct PeriodParseError(String);

impl std::str::FromStr for Period {
    type Err = PeriodParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_iso(s)
    }
}

impl Serialize for Period {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse_iso(&s).map_err(serde::de::Error::custom)
    }
}

/// A period found in an utterance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mention {
    /// The period, or `None` when the unit was left out ("не через неделю,
    /// а через две"): [`Mention::halves`] then holds the amount, and the unit
    /// comes from the period mentioned before it.
    pub period: Option<Period>,
    /// The amount in halves, for resolving an elided unit.
    pub halves: u32,
    /// The unit as spoken, with its multiplier (weeks are days × 7), for
    /// lending it to a following elided amount.
    pub scale: Option<(PeriodUnit, u32)>,
    /// Token range `first..end`.
    pub first: usize,
    pub end: usize,
    /// Directly negated: "не через неделю", "not in a week".
    pub negated: bool,
}

impl Mention {
    /// Resolve an elided unit with the unit of an earlier mention
    /// ("не через неделю, а через две" → two weeks).
    pub fn with_unit_of(&self, earlier: &Mention) -> Option<Period> {
        match (self.period, earlier.scale) {
            (Some(p), _) => Some(p),
            (None, Some((unit, mult))) => make(self.halves, unit, mult),
            (None, None) => None,
        }
    }
}

/// Number words, by normalised form, in halves (so `полтора` is 3).
static NUMBERS: LazyLock<WordMap<&'static str, u32>> = LazyLock::new(|| {
    let table: &[(u32, &[&str])] = &[
        (
            1,
            &[
                "один",
                "одна",
                "одну",
                "одно",
                "одного",
                "одной",
                "one",
                "a",
                "an",
            ],
        ),
        (2, &["два", "две", "двух", "двум", "two"]),
        (3, &["три", "трех", "трем", "тремя", "three"]),
        (4, &["четыре", "четырех", "четырьмя", "four"]),
        (5, &["пять", "пяти", "пятью", "five"]),
        (6, &["шесть", "шести", "six"]),
        (7, &["семь", "семи", "seven"]),
        (8, &["восемь", "восьми", "eight"]),
        (9, &["девять", "девяти", "nine"]),
        (10, &["десять", "десяти", "ten"]),
        (11, &["одиннадцать", "одиннадцати", "eleven"]),
        (12, &["двенадцать", "двенадцати", "twelve"]),
        (13, &["тринадцать", "тринадцати", "thirteen"]),
        (14, &["четырнадцать", "четырнадцати", "fourteen"]),
        (15, &["пятнадцать", "пятнадцати", "fifteen"]),
        (16, &["шестнадцать", "шестнадцати", "sixteen"]),
        (17, &["семнадцать", "семнадцати", "seventeen"]),
        (18, &["восемнадцать", "восемнадцати", "eighteen"]),
        (19, &["девятнадцать", "девятнадцати", "nineteen"]),
        (20, &["двадцать", "двадцати", "twenty"]),
        (30, &["тридцать", "тридцати", "thirty"]),
        (40, &["сорок", "сорока", "forty"]),
        (50, &["пятьдесят", "пятидесяти", "fifty"]),
        (60, &["шестьдесят", "шестидесяти", "sixty"]),
        (70, &["семьдесят", "семидесяти", "seventy"]),
        (80, &["восемьдесят", "восьмидесяти", "eighty"]),
        (90, &["девяносто", "ninety"]),
        (100, &["сто", "ста", "hundred"]),
        // Approximate quantities people use for periods.
        (2, &["пару", "пара", "пары", "парочку", "парочка", "couple"]),
        (3, &["несколько", "нескольких", "few", "several"]),
    ];
    let mut m = WordMap::default();
    for (n, words) in table {
        for w in *words {
            m.insert(*w, n * 2);
        }
    }
    m.insert("полтора", 3);
    m.insert("полторы", 3);
    m
});

/// Unit words, by stem. A few stems carry their own amount: `полгода` is
/// six months, `fortnight` fourteen days.
static UNITS: LazyLock<WordMap<String, (PeriodUnit, u32)>> = LazyLock::new(|| {
    use PeriodUnit::*;
    // (unit, multiplier, words)
    let table: &[(PeriodUnit, u32, &[&str])] = &[
        (
            Minute,
            1,
            &[
                "минута",
                "минуту",
                "минут",
                "минутку",
                "minute",
                "minutes",
                "min",
                "mins",
            ],
        ),
        (
            Hour,
            1,
            &[
                "час",
                "часа",
                "часов",
                "часик",
                "часок",
                "hour",
                "hours",
                "hr",
                "hrs",
            ],
        ),
        (
            Day,
            1,
            &[
                "день",
                "дня",
                "дней",
                "денек",
                "денька",
                "деньков",
                "сутки",
                "суток",
                "day",
                "days",
            ],
        ),
        (
            Day,
            7,
            &[
                "неделя",
                "неделю",
                "недели",
                "недель",
                "неделе",
                "недельку",
                "недельки",
                "week",
                "weeks",
            ],
        ),
        (
            Month,
            1,
            &["месяц", "месяца", "месяцев", "месяцок", "month", "months"],
        ),
        (Year, 1, &["год", "года", "годик", "лет", "year", "years"]),
        (Month, 3, &["квартал", "quarter"]),
        (Day, 14, &["fortnight"]),
    ];
    let mut m = WordMap::default();
    for (unit, mult, words) in table {
        for w in *words {
            m.insert(stem_word(w), (*unit, *mult));
        }
    }
    m
});

/// Words that are a unit with a built-in amount (in halves of the unit):
/// `полгода` = ½ year, `полчаса` = ½ hour.
static HALF_UNITS: LazyLock<WordMap<&'static str, (PeriodUnit, u32)>> = LazyLock::new(|| {
    use PeriodUnit::*;
    WordMap::from_iter([
        ("полгода", (Year, 1)),
        ("полчаса", (Hour, 1)),
        ("полдня", (Day, 1)),
        ("полмесяца", (Month, 1)),
    ])
});

/// Prepositions that put a period in the future from now ("в течение
/// недели": within a week).
fn is_delay_preposition(norm: &str) -> bool {
    matches!(
        norm,
        "через" | "спустя" | "in" | "within" | "after" | "течение"
    )
}

/// Whether a token names a unit of time ("недели", "weeks", "полгода").
pub fn is_unit_word(t: &Token) -> bool {
    UNITS.contains_key(t.stem.as_str()) || HALF_UNITS.contains_key(t.norm.as_str())
}

/// Words that make an amount approximate; skipped between a preposition and
/// the number ("через где-то две недели", "in about a month").
fn is_approximator(t: &Token) -> bool {
    matches!(
        t.norm.as_str(),
        "примерно"
            | "около"
            | "где"
            | "то"
            | "about"
            | "around"
            | "roughly"
            | "approximately"
            | "maybe"
            | "like"
            | "just"
            | "another"
            | "чуть"
            | "еще"
            | "the"
            | "next"
    ) || t.is(Class::FILLER)
}

/// Words before a bare amount that make it a duration or a deadline rather
/// than a delay: "на две недели" (for two weeks), "за неделю" (a week
/// before), "for two weeks".
fn is_duration_preposition(norm: &str) -> bool {
    matches!(
        norm,
        "на" | "за" | "for" | "до" | "by" | "every" | "each" | "per"
    )
}

/// Words after an amount that put it in the past: "неделю назад", "two
/// weeks ago".
fn is_past_marker(norm: &str) -> bool {
    matches!(norm, "назад" | "ago" | "тому")
}

fn number_at(tokens: &[Token], i: usize) -> Option<(u32, usize)> {
    let t = tokens.get(i)?;
    if t.digits {
        let n: u32 = t.norm.parse().ok().filter(|&n| (1..=10_000).contains(&n))?;
        return Some((n * 2, 1));
    }
    // "half a year", "half an hour"
    if t.norm == "half" && matches!(tokens.get(i + 1).map(|t| t.norm.as_str()), Some("a" | "an")) {
        return Some((1, 2));
    }
    let mut value = *NUMBERS.get(t.norm.as_str())?;
    let mut used = 1;
    // "a couple of", "a few": the article belongs to the quantifier.
    if matches!(t.norm.as_str(), "a" | "an")
        && let Some(next) = tokens.get(i + 1)
        && matches!(next.norm.as_str(), "couple" | "few")
    {
        value = NUMBERS[next.norm.as_str()];
        used = 2;
    }
    // "couple of weeks"
    if tokens.get(i + used).is_some_and(|t| t.norm == "of")
        && matches!(tokens[i + used - 1].norm.as_str(), "couple")
    {
        used += 1;
    }
    // Compound tens: "двадцать один", "twenty one".
    if (40..=180).contains(&value)
        && value.is_multiple_of(20)
        && let Some(next) = tokens.get(i + used)
        && next.break_before == Break::None
        && let Some(&units) = NUMBERS.get(next.norm.as_str())
        && units <= 18
        && units.is_multiple_of(2)
        && !matches!(next.norm.as_str(), "a" | "an")
    {
        value += units;
        used += 1;
    }
    Some((value, used))
}

/// The unit at token `i`, as (unit, multiplier, tokens used). ASR sometimes
/// splits a unit word in two ("не дел" for "недель"); a split is repaired
/// when the joined form is a unit.
fn unit_at(tokens: &[Token], i: usize) -> Option<(PeriodUnit, u32, usize)> {
    let t = tokens.get(i)?;
    if let Some(&(u, m)) = UNITS.get(t.stem.as_str()) {
        return Some((u, m, 1));
    }
    let next = tokens.get(i + 1)?;
    if next.break_before != Break::None || t.norm.chars().count() > 4 {
        return None;
    }
    let joined = format!("{}{}", t.norm, next.norm);
    let &(u, m) = UNITS.get(stem_word(&joined).as_str())?;
    Some((u, m, 2))
}

fn make(halves: u32, unit: PeriodUnit, mult: u32) -> Option<Period> {
    Period::from_halves(halves.saturating_mul(mult), unit)
}

/// A relative day ("завтра", "tomorrow") or "next <unit>" at token `i`, as
/// (unit, multiplier, tokens used); the amount is one.
fn relative_at(tokens: &[Token], i: usize) -> Option<(PeriodUnit, u32, usize)> {
    let t = &tokens[i];
    let next = |k: usize| tokens.get(i + k).map(|t| t.norm.as_str());
    match t.norm.as_str() {
        "завтра" | "tomorrow" => Some((PeriodUnit::Day, 1, 1)),
        "послезавтра" => Some((PeriodUnit::Day, 2, 1)),
        "day" if next(1) == Some("after") && next(2) == Some("tomorrow") => {
            Some((PeriodUnit::Day, 2, 3))
        }
        "next" | "следующей" | "следующем" | "следующий" | "следующую" =>
        {
            let (unit, mult, used) = unit_at(tokens, i + 1)?;
            Some((unit, mult, 1 + used))
        }
        _ => None,
    }
}

/// All periods mentioned in `tokens`, in order.
pub fn find(tokens: &[Token]) -> Vec<Mention> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if let Some(m) = mention_at(tokens, i) {
            i = m.end;
            out.push(m);
        } else {
            i += 1;
        }
    }
    out
}

fn mention_at(tokens: &[Token], i: usize) -> Option<Mention> {
    let t = &tokens[i];
    let negated = i > 0 && tokens[i - 1].is(Class::NEG);
    let mention = |scale: Option<(PeriodUnit, u32)>, halves: u32, end: usize| Mention {
        period: scale.and_then(|(unit, mult)| make(halves, unit, mult)),
        halves,
        scale,
        first: i,
        end,
        negated,
    };
    if let Some((unit, mult, used)) = relative_at(tokens, i) {
        return Some(mention(Some((unit, mult)), 2, i + used));
    }
    if let Some(&(unit, halves)) = HALF_UNITS.get(t.norm.as_str()) {
        // "полгода": a unit with its own amount.
        return Some(mention(Some((unit, 1)), halves, i + 1));
    }
    if is_delay_preposition(&t.norm) {
        let mut j = i + 1;
        while j < tokens.len()
            && j < i + 4
            && tokens[j].break_before == Break::None
            && is_approximator(&tokens[j])
        {
            j += 1;
        }
        if let Some(&(unit, halves)) = tokens.get(j).and_then(|t| HALF_UNITS.get(t.norm.as_str())) {
            return Some(mention(Some((unit, 1)), halves, j + 1));
        }
        if let Some((halves, used)) = number_at(tokens, j) {
            let k = j + used;
            if let Some((unit, mult, u_used)) = unit_at(tokens, k) {
                if tokens
                    .get(k + u_used)
                    .is_some_and(|t| is_past_marker(&t.norm))
                {
                    return None;
                }
                return Some(mention(Some((unit, mult)), halves, k + u_used));
            }
            // "а через две": the unit comes from the period before. Only
            // with "через", and only when the number ends the clause, since
            // "in two" alone is rarely a period.
            let clause_ends = tokens.get(k).is_none_or(|n| n.break_before != Break::None);
            if t.norm == "через" && clause_ends {
                return Some(mention(None, halves, k));
            }
            return None;
        }
        // "через неделю", "через недельку": one unit; "через недели две":
        // the amount after a unit in the genitive.
        if let Some((unit, mult, used)) = unit_at(tokens, j) {
            let genitive = ["и", "а", "ев", "ей", "ов"]
                .iter()
                .any(|e| tokens[j].norm.ends_with(e));
            if genitive
                && let Some((halves, n_used)) = number_at(tokens, j + used)
                && tokens[j + used].break_before == Break::None
            {
                return Some(mention(Some((unit, mult)), halves, j + used + n_used));
            }
            return Some(mention(Some((unit, mult)), 2, j + used));
        }
        return None;
    }
    // Bare amount + unit ("two months", "пару дней") or the inverted Russian
    // approximation "дня через три".
    if tokens.get(i + 1).is_some_and(|t| t.norm == "через")
        && let Some(&(unit, mult)) = UNITS.get(t.stem.as_str())
        && let Some((halves, n_used)) = number_at(tokens, i + 2)
    {
        return Some(mention(Some((unit, mult)), halves, i + 2 + n_used));
    }
    if let Some((halves, used)) = number_at(tokens, i) {
        if matches!(t.norm.as_str(), "a" | "an" | "one") && t.break_before == Break::None && i > 0 {
            // "in a week" is handled with its preposition; a lone article
            // mid-clause ("for a week") is not an amount, unless the period
            // is counted from now ("call me a month from now").
            let from_now = unit_at(tokens, i + used).is_some_and(|(_, _, u)| {
                tokens
                    .get(i + used + u)
                    .is_some_and(|n| matches!(n.norm.as_str(), "from" | "later" | "спустя"))
            });
            if !tokens[i - 1].is(Class::FILLER) && !from_now {
                return None;
            }
        }
        let prev_is_duration = i > 0 && is_duration_preposition(&tokens[i - 1].norm);
        if let Some((unit, mult, u_used)) = unit_at(tokens, i + used) {
            let end = i + used + u_used;
            let past = tokens.get(end).is_some_and(|t| is_past_marker(&t.norm));
            if prev_is_duration || past {
                return None;
            }
            return Some(mention(Some((unit, mult)), halves, end));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::tokenize;

    fn periods(text: &str) -> Vec<String> {
        let u = tokenize(text);
        find(&u.tokens)
            .iter()
            .map(|m| {
                let p = m.period.map_or("?".to_owned(), |p| p.to_string());
                if m.negated { format!("!{p}") } else { p }
            })
            .collect()
    }

    #[test]
    fn iso_round_trip() {
        for s in ["P1M", "P14D", "PT2H", "PT30M", "P1Y"] {
            assert_eq!(Period::parse_iso(s).unwrap().to_string(), s);
        }
        assert_eq!(Period::parse_iso("P2W").unwrap(), Period::days(14));
        assert!(Period::parse_iso("P").is_err());
        assert!(Period::parse_iso("PT3D").is_err());
        assert!(Period::parse_iso("1M").is_err());
        assert_eq!(
            serde_json::to_string(&Period::hours(2)).unwrap(),
            "\"PT2H\""
        );
    }

    #[test]
    fn russian_periods_with_words_and_digits() {
        assert_eq!(periods("перезвоните через три недели"), ["P21D"]);
        assert_eq!(periods("давайте через 10 дней"), ["P10D"]);
        assert_eq!(periods("наберите через часик"), ["PT1H"]);
        assert_eq!(periods("ну через недельку"), ["P7D"]);
        assert_eq!(periods("через полгода"), ["P6M"]);
        assert_eq!(periods("через полтора месяца"), ["P45D"]);
        assert_eq!(periods("через двадцать один день"), ["P21D"]);
        assert_eq!(periods("где-то через пару месяцев"), ["P2M"]);
        assert_eq!(periods("недели через две"), ["P14D"]);
        assert_eq!(periods("пару дней подождите"), ["P2D"]);
        assert_eq!(periods("позвоните завтра"), ["P1D"]);
        assert_eq!(periods("на следующей неделе"), ["P7D"]);
        assert_eq!(periods("через недели две"), ["P14D"]);
        assert_eq!(periods("в течение месяца"), ["P1M"]);
    }

    #[test]
    fn english_periods() {
        assert_eq!(periods("call me in like a couple weeks"), ["P14D"]);
        assert_eq!(periods("in about three months"), ["P3M"]);
        assert_eq!(periods("try again in half an hour"), ["PT30M"]);
        assert_eq!(periods("in 2 hours"), ["PT2H"]);
        assert_eq!(periods("make it four months"), ["P4M"]);
        assert_eq!(periods("next week works"), ["P7D"]);
        assert_eq!(periods("the day after tomorrow"), ["P2D"]);
        assert_eq!(periods("in a fortnight"), ["P14D"]);
        assert_eq!(periods("in twenty five days"), ["P25D"]);
        assert_eq!(periods("call me a month from now"), ["P1M"]);
    }

    #[test]
    fn durations_deadlines_and_past_are_not_delays() {
        assert!(periods("я уезжаю на две недели").is_empty());
        assert!(periods("we were away for two weeks").is_empty());
        assert!(periods("две недели назад").is_empty());
        assert!(periods("three days ago").is_empty());
        assert!(periods("в конце месяца").is_empty());
        assert!(periods("in the middle of it").is_empty());
    }

    #[test]
    fn negated_and_elided() {
        assert_eq!(periods("не через неделю, а через две"), ["!P7D", "?"]);
        let u = tokenize("не через неделю, а через две");
        let m = find(&u.tokens);
        assert_eq!(m[1].with_unit_of(&m[0]), Some(Period::days(14)));
    }

    #[test]
    fn split_asr_unit_is_repaired() {
        assert_eq!(periods("звоните через пару не дел"), ["P14D"]);
    }
}
