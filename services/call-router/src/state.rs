//! Where a call stands, carried by the PBX: the router keeps no per-call
//! row, it hands the state back in every answer as a signed token and gets
//! it with the next step. Any replica can take any step, a step costs no
//! read of its own, and a token that was tampered with, belongs to another
//! call or comes from another deployment (another secret) is recognised and
//! answered with the fallback.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use kit::proto::events::v1::CallerKind;

/// Format of the state; a token of another format is refused.
const FORMAT: u8 = 1;

/// A call's progress through its scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallState {
    #[serde(rename = "f")]
    pub format: u8,
    /// The call this state belongs to.
    pub call: String,
    /// The scenario, and the step waiting for the PBX's result. `None`: the
    /// call is on the fallback.
    pub scenario: Option<String>,
    pub step: String,
    /// Decisions taken so far: numbers the events of each decision, so a
    /// step the PBX repeats records nothing twice.
    pub seq: u32,
    /// Tries of the current menu or code entry, from 1.
    #[serde(default)]
    pub attempt: u32,
    /// Position in the current dial chain.
    #[serde(default)]
    pub chain: usize,
    /// The targets (names) of the dial in progress.
    #[serde(default)]
    pub dialling: Option<Dialling>,
    #[serde(default)]
    pub caller: Option<Caller>,
    #[serde(default)]
    pub masking: Option<MaskingState>,
    /// Who answered and when (ms from the call's start).
    #[serde(default)]
    pub answered: Option<(i32, u64)>,
    /// The call ended.
    #[serde(default)]
    pub ended: bool,
    /// Events of fallback answers not yet known to be durable (base64 of
    /// the protobuf `NewEvent`), in order: the database was stalled when
    /// they were answered. The next step writes them ahead of its own, so
    /// the call's stream keeps its order whichever copy lands first (ids
    /// are fixed, the store keeps one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unwritten: Vec<String>,
}

/// The dial the PBX is performing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dialling {
    pub target: String,
    pub role: i32,
    pub number: String,
    /// ms from the call's start when the dial was asked for (the time to
    /// answer adds the dial's own wait).
    pub at_ms: u64,
}

/// Who the directory said the caller is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Caller {
    pub kind: i32,
    #[serde(default)]
    pub client_name: String,
    #[serde(default)]
    pub order_id: String,
    #[serde(default)]
    pub shop: Option<ShopLine>,
    #[serde(default)]
    pub courier_id: String,
    #[serde(default)]
    pub store_phone: String,
}

impl Caller {
    pub fn kind(&self) -> CallerKind {
        CallerKind::try_from(self.kind).unwrap_or(CallerKind::Unspecified)
    }
}

/// The shop of a client's order: where to put them through, and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShopLine {
    pub shop_id: String,
    pub name: String,
    pub phone: String,
    /// `HH:MM-HH:MM`, empty: always open.
    pub open_hours: String,
    pub time_zone: String,
}

/// A masked call in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct MaskingState {
    pub code_entered: bool,
    pub order_found: bool,
    pub phone_found: bool,
    pub caller_role: String,
    pub order_code: String,
    pub session_id: String,
    pub operator_requested: bool,
    pub counterpart_reached: bool,
}

impl CallState {
    pub fn new(call: &str, scenario: Option<&str>, step: &str) -> Self {
        Self {
            format: FORMAT,
            call: call.to_owned(),
            scenario: scenario.map(str::to_owned),
            step: step.to_owned(),
            seq: 0,
            attempt: 0,
            chain: 0,
            dialling: None,
            caller: None,
            masking: None,
            answered: None,
            ended: false,
            unwritten: Vec::new(),
        }
    }
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BadState {
    #[error("the state token is not one this router issued")]
    Forged,
    #[error("the state token is of another call")]
    OtherCall,
    #[error("the state token cannot be read")]
    Unreadable,
}

/// Signs and checks state tokens with the deployment's secret.
#[derive(Clone)]
pub struct Sealer {
    key: Vec<u8>,
}

type HmacSha256 = Hmac<Sha256>;

/// Bytes of the signature kept in a token: 128 bits are plenty against
/// forgery and keep the token short.
const TAG_LEN: usize = 16;

impl Sealer {
    pub fn new(secret: &str) -> Self {
        Self {
            key: secret.as_bytes().to_vec(),
        }
    }

    fn tag(&self, body: &[u8]) -> Vec<u8> {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(body);
        mac.finalize().into_bytes()[..TAG_LEN].to_vec()
    }

    /// `base64url(json).base64url(tag)`.
    pub fn seal(&self, state: &CallState) -> String {
        let body = serde_json::to_vec(state).expect("a state serializes");
        let tag = self.tag(&body);
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&body),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// The state in `token`, if this router sealed it for `call_id`.
    pub fn open(&self, token: &str, call_id: &str) -> Result<CallState, BadState> {
        let (body, tag) = token.split_once('.').ok_or(BadState::Forged)?;
        let body = URL_SAFE_NO_PAD.decode(body).map_err(|_| BadState::Forged)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| BadState::Forged)?;
        if !kit::api_error::constant_time_eq(&self.tag(&body), &tag) {
            return Err(BadState::Forged);
        }
        let state: CallState = serde_json::from_slice(&body).map_err(|_| BadState::Unreadable)?;
        if state.format != FORMAT {
            return Err(BadState::Unreadable);
        }
        if state.call != call_id {
            return Err(BadState::OtherCall);
        }
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_state_opens_only_for_its_call_and_secret() {
        let sealer = Sealer::new("secret");
        let mut state = CallState::new("pbx-1", Some("marketplace"), "client_menu");
        state.seq = 3;
        let token = sealer.seal(&state);
        assert_eq!(sealer.open(&token, "pbx-1").unwrap(), state);
        assert_eq!(sealer.open(&token, "pbx-2"), Err(BadState::OtherCall));
        assert_eq!(
            Sealer::new("other").open(&token, "pbx-1"),
            Err(BadState::Forged)
        );
        let (body, tag) = token.split_once('.').unwrap();
        let mut json: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).unwrap()).unwrap();
        json["step"] = "order_shop".into();
        let tampered = format!(
            "{}.{tag}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&json).unwrap())
        );
        assert_eq!(sealer.open(&tampered, "pbx-1"), Err(BadState::Forged));
        assert_eq!(sealer.open("garbage", "pbx-1"), Err(BadState::Forged));
    }
}
