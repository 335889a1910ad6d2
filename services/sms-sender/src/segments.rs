//! How many SMS parts a text takes. GSM 03.38 7-bit text fits 160 characters
//! in one part and 153 per part when split (the rest of each part holds the
//! concatenation header); characters of the extension table (`^{}\[~]|€` and
//! form feed) take two. Any character outside GSM-7 — a single Cyrillic
//! letter — makes the whole message UCS-2: 70 in one part, 67 per part,
//! counted in UTF-16 code units (an emoji takes two).

use kit::proto::events::v1::SmsEncoding;

/// GSM 03.38 basic character set.
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\u{1b}ÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// GSM 03.38 extension table (each takes an escape plus the character).
const GSM7_EXTENSION: &str = "\u{0c}^{}\\[~]|€";

/// The encoding and size of a text as an SMS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segments {
    pub encoding: SmsEncoding,
    /// Length in the encoding's units (septets or UTF-16 code units).
    pub units: usize,
    pub parts: u32,
}

/// Counts the parts of `text`.
pub fn count(text: &str) -> Segments {
    let mut septets = 0usize;
    let mut gsm7 = true;
    for c in text.chars() {
        if GSM7_BASIC.contains(c) {
            septets += 1;
        } else if GSM7_EXTENSION.contains(c) {
            septets += 2;
        } else {
            gsm7 = false;
            break;
        }
    }
    if gsm7 {
        let parts = if septets <= 160 {
            1
        } else {
            septets.div_ceil(153)
        };
        return Segments {
            encoding: SmsEncoding::Gsm7,
            units: septets,
            parts: parts.max(1) as u32,
        };
    }
    let units = text.encode_utf16().count();
    let parts = if units <= 70 { 1 } else { units.div_ceil(67) };
    Segments {
        encoding: SmsEncoding::Ucs2,
        units,
        parts: parts.max(1) as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latin_text_is_gsm7_with_160_then_153_per_part() {
        assert_eq!(
            count(&"a".repeat(160)),
            Segments {
                encoding: SmsEncoding::Gsm7,
                units: 160,
                parts: 1
            }
        );
        assert_eq!(count(&"a".repeat(161)).parts, 2);
        assert_eq!(count(&"a".repeat(306)).parts, 2);
        assert_eq!(count(&"a".repeat(307)).parts, 3);
        assert_eq!(count("").parts, 1);
    }

    #[test]
    fn extension_characters_count_twice() {
        let text = format!("{}€", "a".repeat(158));
        assert_eq!(count(&text).units, 160);
        assert_eq!(count(&format!("{text}a")).parts, 2);
        assert_eq!(count("{[]}").units, 8);
    }

    #[test]
    fn one_cyrillic_letter_makes_the_whole_message_ucs2() {
        let text = format!("{}ж", "a".repeat(69));
        assert_eq!(
            count(&text),
            Segments {
                encoding: SmsEncoding::Ucs2,
                units: 70,
                parts: 1
            }
        );
        assert_eq!(count(&format!("{text}a")).parts, 2);
        assert_eq!(count(&"ж".repeat(134)).parts, 2);
        assert_eq!(count(&"ж".repeat(135)).parts, 3);
    }

    #[test]
    fn an_emoji_takes_two_ucs2_units() {
        assert_eq!(count("🙂").units, 2);
        assert_eq!(count(&"🙂".repeat(35)).parts, 1);
        assert_eq!(count(&"🙂".repeat(36)).parts, 2);
    }
}
