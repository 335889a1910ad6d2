//! Reading webhook JSON field by field, tolerantly (numbers may arrive as
//! strings, unknown fields are ignored) but precisely: every bad value is a
//! 422 naming its field.

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use serde_json::{Map, Value};

use kit::phone::{DefaultRegion, PhoneNumber};

use crate::errors::ApiError;

/// A webhook body: a JSON object.
pub struct Fields(Map<String, Value>);

impl Fields {
    /// Parses `body` as a JSON object (400 otherwise).
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => Ok(Self(map)),
            Ok(_) => Err(ApiError::malformed("the body must be a JSON object")),
            Err(e) => Err(ApiError::malformed(format!(
                "the body is not valid JSON: {e}"
            ))),
        }
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    /// A field as it is in the JSON (`None` when absent or null).
    pub fn raw(&self, name: &str) -> Option<&Value> {
        self.get(name)
    }

    /// A text or number field as text; `None` when absent, null or empty.
    pub fn text(&self, name: &str) -> Result<Option<String>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_owned())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(ApiError::invalid(
                name,
                format!("`{name}` must be a string or a number"),
            )),
        }
    }

    pub fn required_text(&self, name: &str) -> Result<String, ApiError> {
        self.text(name)?
            .ok_or_else(|| ApiError::invalid(name, format!("`{name}` is required")))
    }

    /// An identifier usable in a stream name (letters, digits, `-_.:`, at
    /// most 100 characters).
    pub fn id(&self, name: &str) -> Result<Option<String>, ApiError> {
        let Some(id) = self.text(name)? else {
            return Ok(None);
        };
        if id.len() > 100
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
        {
            return Err(ApiError::invalid(
                name,
                format!("`{name}` must be at most 100 letters, digits, -, _, . or :"),
            ));
        }
        Ok(Some(id))
    }

    pub fn phone(
        &self,
        name: &str,
        region: DefaultRegion,
    ) -> Result<Option<PhoneNumber>, ApiError> {
        let Some(text) = self.text(name)? else {
            return Ok(None);
        };
        PhoneNumber::parse(&text, region)
            .map(Some)
            .map_err(|e| ApiError::invalid(name, format!("`{name}` ({text}) {e}")))
    }

    pub fn required_phone(
        &self,
        name: &str,
        region: DefaultRegion,
    ) -> Result<PhoneNumber, ApiError> {
        self.phone(name, region)?
            .ok_or_else(|| ApiError::invalid(name, format!("`{name}` is required")))
    }

    /// A time in RFC 3339 (`2026-11-24T10:15:00+03:00`), or a civil time
    /// without offset (`2026-11-24 10:15:00`) read in `zone`.
    pub fn time(&self, name: &str, zone: &TimeZone) -> Result<Option<Timestamp>, ApiError> {
        let Some(text) = self.text(name)? else {
            return Ok(None);
        };
        if let Ok(ts) = text.parse::<Timestamp>() {
            return Ok(Some(ts));
        }
        text.replace(' ', "T")
            .parse::<DateTime>()
            .ok()
            .and_then(|civil| zone.to_timestamp(civil).ok())
            .map(Some)
            .ok_or_else(|| {
                ApiError::invalid(
                    name,
                    format!("`{name}` ({text}) is not a time like 2026-11-24T10:15:00+03:00"),
                )
            })
    }

    /// A non-negative whole number.
    pub fn count(&self, name: &str) -> Result<Option<u64>, ApiError> {
        let Some(text) = self.text(name)? else {
            return Ok(None);
        };
        text.parse::<u64>()
            .map(Some)
            .or_else(|_| match text.parse::<f64>() {
                Ok(f) if f >= 0.0 && f.is_finite() => Ok(Some(f.round() as u64)),
                _ => Err(()),
            })
            .map_err(|_| {
                ApiError::invalid(
                    name,
                    format!("`{name}` ({text}) must be a non-negative number"),
                )
            })
    }

    /// An http(s) URL.
    pub fn url(&self, name: &str) -> Result<Option<String>, ApiError> {
        let Some(text) = self.text(name)? else {
            return Ok(None);
        };
        if !(text.starts_with("https://") || text.starts_with("http://"))
            || text.len() > 2000
            || text.contains(char::is_whitespace)
        {
            return Err(ApiError::invalid(
                name,
                format!("`{name}` must be an http(s) URL"),
            ));
        }
        Ok(Some(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(json: &str) -> Fields {
        Fields::parse(json.as_bytes()).unwrap()
    }

    #[test]
    fn numbers_and_strings_are_both_text() {
        let f = fields(r#"{"a": 123, "b": " x ", "c": null, "d": "", "e": [1]}"#);
        assert_eq!(f.text("a").unwrap().as_deref(), Some("123"));
        assert_eq!(f.text("b").unwrap().as_deref(), Some("x"));
        assert_eq!(f.text("c").unwrap(), None);
        assert_eq!(f.text("d").unwrap(), None);
        assert_eq!(f.text("e").unwrap_err().field.as_deref(), Some("e"));
    }

    #[test]
    fn times_with_and_without_offset() {
        let msk = TimeZone::get("Europe/Moscow").unwrap();
        let f = fields(
            r#"{"a": "2026-11-24T10:15:00Z", "b": "2026-11-24 13:15:00", "c": "yesterday"}"#,
        );
        let expected: Timestamp = "2026-11-24T10:15:00Z".parse().unwrap();
        assert_eq!(f.time("a", &msk).unwrap(), Some(expected));
        assert_eq!(f.time("b", &msk).unwrap(), Some(expected));
        assert_eq!(f.time("c", &msk).unwrap_err().field.as_deref(), Some("c"));
    }

    #[test]
    fn bad_bodies_are_malformed() {
        assert!(Fields::parse(b"[1,2]").is_err());
        assert!(Fields::parse(b"{").is_err());
        assert!(Fields::parse(b"").is_err());
    }

    #[test]
    fn ids_are_restricted_to_stream_safe_characters() {
        let f = fields(
            r#"{"ok": "CA-12:3.x_y", "bad": "a/b", "long": "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"}"#,
        );
        assert_eq!(f.id("ok").unwrap().as_deref(), Some("CA-12:3.x_y"));
        assert!(f.id("bad").is_err());
        assert!(f.id("long").is_err());
    }
}
