//! Input types: a call transcript as a list of speaker turns.
//!
//! The wire shape is the one transcription produces and the CLI reads:
//! `{"turns": [{"speaker": "manager"|"client", "text": "..."}]}`. Unknown keys
//! are ignored so richer upstream records (ids, timestamps, language tags)
//! deserialise without ceremony.

use serde::{Deserialize, Serialize};

/// Who said a turn. Only the client's words can decide consent; the
/// manager's turns only tell what a "yes" answered and which period was
/// offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Speaker {
    /// The call-centre side (also accepted as `agent` or `operator`).
    #[serde(alias = "agent", alias = "operator")]
    Manager,
    /// The person called (also accepted as `customer`).
    #[serde(alias = "customer")]
    Client,
}

/// One utterance of one speaker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    pub speaker: Speaker,
    pub text: String,
}

impl Turn {
    /// A manager turn.
    pub fn manager(text: impl Into<String>) -> Self {
        Self {
            speaker: Speaker::Manager,
            text: text.into(),
        }
    }

    /// A client turn.
    pub fn client(text: impl Into<String>) -> Self {
        Self {
            speaker: Speaker::Client,
            text: text.into(),
        }
    }
}

/// A whole call, in speaking order. `turns` must be present (a record
/// without it is malformed input, most likely a typo upstream); an empty list
/// or one without client turns is a valid call that the engine answers with
/// `unclear` ("no client turns").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transcript {
    pub turns: Vec<Turn>,
}

impl Transcript {
    pub fn new(turns: Vec<Turn>) -> Self {
        Self { turns }
    }
}

impl From<Vec<Turn>> for Transcript {
    fn from(turns: Vec<Turn>) -> Self {
        Self { turns }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wire_shape_and_ignores_unknown_keys() {
        let t: Transcript = serde_json::from_str(
            r#"{"id": 7, "lang": "ru", "turns": [
                {"speaker": "manager", "text": "Напомнить?", "ts": 1.5},
                {"speaker": "customer", "text": "Да"}]}"#,
        )
        .unwrap();
        assert_eq!(t.turns.len(), 2);
        assert_eq!(t.turns[0].speaker, Speaker::Manager);
        assert_eq!(t.turns[1].speaker, Speaker::Client);
    }

    #[test]
    fn missing_turns_is_malformed_but_empty_turns_is_fine() {
        assert!(serde_json::from_str::<Transcript>(r#"{"id": "x"}"#).is_err());
        let t: Transcript = serde_json::from_str(r#"{"turns": []}"#).unwrap();
        assert!(t.turns.is_empty());
    }

    #[test]
    fn unknown_speaker_is_an_error() {
        let r: Result<Transcript, _> =
            serde_json::from_str(r#"{"turns": [{"speaker": "robot", "text": "hi"}]}"#);
        assert!(r.is_err());
    }
}
