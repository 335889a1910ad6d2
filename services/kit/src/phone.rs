//! Phone numbers: a [`PhoneNumber`] is a valid number in E.164 form once
//! parsed, so nothing downstream has to check it again.
//!
//! Parsing uses the `phonenumber` crate (Google's libphonenumber metadata)
//! after a Russian-specific normalisation: phonenumber 0.3.10 strips the
//! leading 8 of every Russian national number that starts with 8 (8-800 toll
//! free, 812 Saint Petersburg, 843 Kazan…), turning `+78005553535` into the
//! invalid `+7005553535` (its issue #76). Those numbers are checked here
//! against the Russian numbering plan instead.

use std::fmt;
use std::str::FromStr;

use phonenumber::country::Id as Region;

/// What kind of line a number is, as far as the numbering plan tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LineKind {
    Mobile,
    FixedLine,
    /// Mobile or fixed, the plan does not say (for example in the US).
    FixedOrMobile,
    TollFree,
    Other,
}

/// A valid phone number in E.164 form (`+79161234567`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PhoneNumber {
    e164: String,
    region: Option<Region>,
    kind: LineKind,
}

/// Why a text is not a phone number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("is empty")]
    Empty,
    #[error("holds characters that are not part of a phone number")]
    BadCharacters,
    #[error("has {0} digits; a phone number has at most 15")]
    TooLong(usize),
    #[error("is not a valid number")]
    Invalid,
}

/// The default region for numbers written without a country code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultRegion(pub Region);

impl FromStr for DefaultRegion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Region::from_str(&s.to_ascii_uppercase())
            .map(DefaultRegion)
            .map_err(|_| format!("`{s}` is not an ISO 3166 region code like RU or US"))
    }
}

impl Default for DefaultRegion {
    fn default() -> Self {
        DefaultRegion(Region::RU)
    }
}

impl PhoneNumber {
    /// Parses a number as people and providers write it (`+7 916 123-45-67`,
    /// `89161234567`, `79161234567`, `9161234567`), reading numbers without a
    /// country code as numbers of `default_region`.
    pub fn parse(input: &str, default_region: DefaultRegion) -> Result<Self, PhoneError> {
        let input = input.trim();
        if input.is_empty() {
            return Err(PhoneError::Empty);
        }
        let (plus, rest) = match input.strip_prefix('+') {
            Some(rest) => (true, rest),
            None => (false, input),
        };
        if !rest
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '(' | ')' | '.'))
        {
            return Err(PhoneError::BadCharacters);
        }
        let digits: String = rest.chars().filter(char::is_ascii_digit).collect();
        if digits.is_empty() {
            return Err(PhoneError::Empty);
        }
        if digits.len() > 15 {
            return Err(PhoneError::TooLong(digits.len()));
        }
        let international = if plus {
            Some(digits.clone())
        } else if default_region.0 == Region::RU {
            russian_international(&digits)
        } else {
            None
        };
        if let Some(national) = international.as_deref().and_then(|i| i.strip_prefix('7'))
            && national.len() == 10
            && national.starts_with('8')
        {
            return russian_eight_range(national);
        }
        let text = match &international {
            Some(international) => format!("+{international}"),
            None => digits,
        };
        let parsed =
            phonenumber::parse(Some(default_region.0), &text).map_err(|_| PhoneError::Invalid)?;
        if !phonenumber::is_valid(&parsed) {
            return Err(PhoneError::Invalid);
        }
        let kind = match parsed.number_type(&phonenumber::metadata::DATABASE) {
            phonenumber::Type::Mobile => LineKind::Mobile,
            phonenumber::Type::FixedLine => LineKind::FixedLine,
            phonenumber::Type::FixedLineOrMobile => LineKind::FixedOrMobile,
            phonenumber::Type::TollFree => LineKind::TollFree,
            _ => LineKind::Other,
        };
        Ok(Self {
            e164: parsed.format().mode(phonenumber::Mode::E164).to_string(),
            region: parsed.country().id(),
            kind,
        })
    }

    /// The number in E.164 form, `+` and digits.
    pub fn as_str(&self) -> &str {
        &self.e164
    }

    /// The digits without the `+` (what Exolve's API expects).
    pub fn digits(&self) -> &str {
        &self.e164[1..]
    }

    /// The region the number belongs to, when the plan tells it.
    pub fn region(&self) -> Option<Region> {
        self.region
    }

    pub fn kind(&self) -> LineKind {
        self.kind
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.e164)
    }
}

/// Russian habits for numbers written without `+`: a leading 8 is the trunk
/// prefix (`8 916…` is `+7 916…`), eleven digits starting with 7 already hold
/// the country code, ten digits are a national number.
fn russian_international(digits: &str) -> Option<String> {
    match (digits.len(), digits.as_bytes()[0]) {
        (11, b'8') => Some(format!("7{}", &digits[1..])),
        (11, b'7') => Some(digits.to_owned()),
        (10, _) => Some(format!("7{digits}")),
        _ => None,
    }
}

/// Russian national numbers starting with 8: 800–809 are non-geographic
/// (800 toll free), 811–879 are area codes of the north-west, the Volga,
/// the Urals and the south. 88x and 89x are not assigned.
fn russian_eight_range(national: &str) -> Result<PhoneNumber, PhoneError> {
    let second = national.as_bytes()[1];
    if !(b'0'..=b'7').contains(&second) {
        return Err(PhoneError::Invalid);
    }
    Ok(PhoneNumber {
        e164: format!("+7{national}"),
        region: Some(Region::RU),
        kind: if national.starts_with("800") {
            LineKind::TollFree
        } else {
            LineKind::FixedLine
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ru(input: &str) -> Result<String, PhoneError> {
        PhoneNumber::parse(input, DefaultRegion::default()).map(|p| p.as_str().to_owned())
    }

    #[test]
    fn russian_numbers_in_every_common_spelling() {
        for input in [
            "+79161234567",
            "+7 (916) 123-45-67",
            "89161234567",
            "8 916 123 45 67",
            "79161234567",
            "9161234567",
        ] {
            assert_eq!(ru(input).as_deref(), Ok("+79161234567"), "{input}");
        }
        let moscow = PhoneNumber::parse("+74951234567", DefaultRegion::default()).unwrap();
        assert_eq!(moscow.kind(), LineKind::FixedLine);
        assert_eq!(moscow.region(), Some(Region::RU));
    }

    /// Regression for phonenumber 0.3.10 issue #76: it turns these into
    /// `+7005553535` and `+7123456789`.
    #[test]
    fn russian_numbers_starting_with_eight_survive() {
        for input in [
            "88005553535",
            "+78005553535",
            "8 (800) 555-35-35",
            "8005553535",
        ] {
            assert_eq!(ru(input).as_deref(), Ok("+78005553535"), "{input}");
        }
        let toll_free = PhoneNumber::parse("88005553535", DefaultRegion::default()).unwrap();
        assert_eq!(toll_free.kind(), LineKind::TollFree);
        assert_eq!(ru("+7 812 345-67-89").as_deref(), Ok("+78123456789"));
        assert_eq!(ru("88432123456").as_deref(), Ok("+78432123456"));
        assert_eq!(ru("+78912345678"), Err(PhoneError::Invalid));
    }

    #[test]
    fn other_countries_keep_their_code() {
        assert_eq!(ru("+12025550123").as_deref(), Ok("+12025550123"));
        assert_eq!(ru("+447911123456").as_deref(), Ok("+447911123456"));
        let kz = PhoneNumber::parse("+77012345678", DefaultRegion::default()).unwrap();
        assert_eq!(kz.region(), Some(Region::KZ));
        let us = DefaultRegion::from_str("us").unwrap();
        assert_eq!(
            PhoneNumber::parse("(202) 555-0123", us).unwrap().as_str(),
            "+12025550123"
        );
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        assert_eq!(ru(""), Err(PhoneError::Empty));
        assert_eq!(ru("  "), Err(PhoneError::Empty));
        assert_eq!(ru("call me"), Err(PhoneError::BadCharacters));
        assert_eq!(ru("+7916123456789012"), Err(PhoneError::TooLong(16)));
        assert_eq!(ru("12345"), Err(PhoneError::Invalid));
        assert_eq!(ru("+70001234567"), Err(PhoneError::Invalid));
        assert!(DefaultRegion::from_str("XX").is_err());
    }
}
