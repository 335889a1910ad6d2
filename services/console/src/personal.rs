//! Personal data as a viewer may see it: numbers keep their country, the
//! operator code and the last two digits (`+7 912 *** ** 89`), names their
//! first letter, free text (transcripts, evidence) is withheld. Which fields
//! of an event are personal is read from the `.proto` files' own
//! `(callflow.options.v1.personal)` marks, so a new event type is masked
//! without a change here.

use kit::proto::prost_reflect::{ExtensionDescriptor, Kind, MessageDescriptor};
use serde_json::Value;

use crate::auth::User;

/// What a withheld free text reads as.
pub const WITHHELD: &str = "[personal data: hidden from viewers]";

/// `+7 912 *** ** 89` for `+79121234589`; other numbers keep their first
/// four and last two characters.
pub fn mask_phone(phone: &str) -> String {
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    if phone.starts_with("+7") && digits.len() == 11 {
        return format!("+7 {} *** ** {}", &digits[1..4], &digits[9..]);
    }
    let chars: Vec<char> = phone.chars().collect();
    if chars.len() <= 6 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 2..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 6))
}

/// A name: its first letter.
pub fn mask_name(name: &str) -> String {
    match name.chars().next() {
        Some(first) => format!("{first}***"),
        None => String::new(),
    }
}

fn looks_like_phone(text: &str) -> bool {
    let digits = text.chars().filter(char::is_ascii_digit).count();
    digits >= 7
        && text
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '(' | ')'))
}

fn mask_string(text: &str) -> String {
    if text == kit::contacts::FORGOTTEN || text.is_empty() {
        text.to_owned()
    } else if looks_like_phone(text) {
        mask_phone(text)
    } else if text.split_whitespace().count() <= 3 && text.chars().count() <= 40 {
        // A short value of a personal field is a name or the like.
        text.split_whitespace()
            .map(mask_name)
            .collect::<Vec<_>>()
            .join(" ")
    } else {
        WITHHELD.into()
    }
}

/// A phone number for `user`: in full for operators.
pub fn phone_for(user: &User, phone: &str) -> String {
    if user.can_change() {
        phone.to_owned()
    } else {
        mask_phone(phone)
    }
}

/// A name for `user`: in full for operators.
pub fn name_for(user: &User, name: &str) -> String {
    if user.can_change() {
        name.to_owned()
    } else {
        mask_string(name)
    }
}

fn personal_extension() -> ExtensionDescriptor {
    kit::proto::descriptors()
        .get_extension_by_name("callflow.options.v1.personal")
        .expect("options.proto is compiled")
}

/// Masks the personal fields of `payload`, an event of type `event_type`
/// as [`kit::json::payload`] gives it.
pub fn mask_payload(event_type: &str, payload: &mut Value) {
    let pool = kit::proto::descriptors();
    if let Some(message) = pool.get_message_by_name(&format!("callflow.events.v1.{event_type}")) {
        mask_message(&message, &personal_extension(), payload);
    }
}

fn mask_message(message: &MessageDescriptor, personal: &ExtensionDescriptor, value: &mut Value) {
    let Value::Object(map) = value else { return };
    for field in message.fields() {
        let Some(value) = map.get_mut(field.name()) else {
            continue;
        };
        let is_personal = field.options().get_extension(personal).as_bool() == Some(true);
        match field.kind() {
            Kind::Message(nested) => match value {
                Value::Array(items) => items
                    .iter_mut()
                    .for_each(|item| mask_message(&nested, personal, item)),
                other => mask_message(&nested, personal, other),
            },
            _ if is_personal => mask_value(value),
            _ => {}
        }
    }
}

fn mask_value(value: &mut Value) {
    match value {
        Value::String(text) => *text = mask_string(text),
        Value::Array(items) => items.iter_mut().for_each(mask_value),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_keep_country_operator_and_last_digits() {
        assert_eq!(mask_phone("+79121234589"), "+7 912 *** ** 89");
        assert_eq!(mask_phone("+4930123456"), "+493*****56");
    }

    #[test]
    fn personal_fields_of_an_event_are_masked_and_others_kept() {
        let mut payload = json!({
            "provider": "exolve",
            "call_id": "c-1",
            "client_phone": "+79161234567",
            "turns": [{"role": "CLIENT", "text": "Да, напомните мне через месяц, пожалуйста"}],
            "language": "ru",
        });
        mask_payload("TranscriptReady", &mut payload);
        assert_eq!(payload["client_phone"], "+7 916 *** ** 67");
        assert_eq!(payload["turns"][0]["text"], WITHHELD);
        assert_eq!(payload["turns"][0]["role"], "CLIENT");
        assert_eq!(payload["call_id"], "c-1");

        let mut lead =
            json!({"name": "Ирина Петрова", "phone": "+79991112233", "site": "shop.example"});
        mask_payload("LeadReceived", &mut lead);
        assert_eq!(lead["name"], "И*** П***");
        assert_eq!(lead["phone"], "+7 999 *** ** 33");
        assert_eq!(lead["site"], "shop.example");
    }
}
