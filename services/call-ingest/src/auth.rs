//! Who may post webhooks: per provider, a bearer token, an HMAC-SHA256
//! signature of the raw body, or both. A provider with neither configured
//! accepts nothing.

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use kit::api_error::{bearer, constant_time_eq};

use crate::errors::ApiError;

/// Header carrying `sha256=<hex of HMAC-SHA256(secret, raw body)>`.
pub const SIGNATURE_HEADER: &str = "x-callflow-signature";

/// Credentials accepted for one provider.
#[derive(Clone, Default)]
pub struct Credentials {
    pub bearer_token: Option<String>,
    pub hmac_secret: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        f.debug_struct("Credentials")
            .field("bearer_token", &self.bearer_token.as_ref().map(|_| "***"))
            .field("hmac_secret", &self.hmac_secret.as_ref().map(|_| "***"))
            .finish()
    }
}

impl Credentials {
    pub fn new(bearer_token: Option<String>, hmac_secret: Option<String>) -> Self {
        let present = |v: Option<String>| v.filter(|v| !v.is_empty());
        Self {
            bearer_token: present(bearer_token),
            hmac_secret: present(hmac_secret),
        }
    }

    /// Accepts the request when one configured method matches.
    pub fn check(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
        if self.bearer_token.is_none() && self.hmac_secret.is_none() {
            return Err(ApiError::unauthorized(
                "this webhook has no credentials configured, so it accepts nothing",
            ));
        }
        if let (Some(expected), Some(given)) = (&self.bearer_token, bearer(headers))
            && constant_time_eq(expected.as_bytes(), given.as_bytes())
        {
            return Ok(());
        }
        if let (Some(secret), Some(signature)) = (&self.hmac_secret, headers.get(SIGNATURE_HEADER))
        {
            let signature = signature.to_str().unwrap_or_default();
            let hex_digest = signature.strip_prefix("sha256=").unwrap_or(signature);
            if let Ok(digest) = hex::decode(hex_digest.trim()) {
                let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
                    .expect("HMAC takes any key length");
                mac.update(body);
                if mac.verify_slice(&digest).is_ok() {
                    return Ok(());
                }
            }
        }
        Err(ApiError::unauthorized(
            "missing or wrong credentials: send `Authorization: Bearer <token>` or `X-Callflow-Signature: sha256=<hex HMAC-SHA256 of the body>`",
        ))
    }
}

/// The signature header value for `body` under `secret` (for clients and tests).
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, v.parse().unwrap());
        }
        map
    }

    #[test]
    fn bearer_or_signature_is_accepted_and_nothing_else() {
        let both = Credentials::new(Some("t0ken".into()), Some("s3cret".into()));
        let body = br#"{"type":"e"}"#;
        assert!(
            both.check(&headers(&[("authorization", "Bearer t0ken")]), body)
                .is_ok()
        );
        assert!(
            both.check(&headers(&[("authorization", "bearer t0ken")]), body)
                .is_ok()
        );
        assert!(
            both.check(&headers(&[(SIGNATURE_HEADER, &sign("s3cret", body))]), body)
                .is_ok()
        );
        assert!(
            both.check(&headers(&[("authorization", "Bearer wrong")]), body)
                .is_err()
        );
        assert!(
            both.check(&headers(&[(SIGNATURE_HEADER, &sign("other", body))]), body)
                .is_err()
        );
        assert!(
            both.check(
                &headers(&[(SIGNATURE_HEADER, &sign("s3cret", b"tampered"))]),
                body
            )
            .is_err()
        );
        assert!(
            both.check(&headers(&[(SIGNATURE_HEADER, "sha256=zz")]), body)
                .is_err()
        );
        assert!(both.check(&HeaderMap::new(), body).is_err());
    }

    #[test]
    fn a_provider_without_credentials_accepts_nothing() {
        let none = Credentials::new(Some(String::new()), None);
        assert!(
            none.check(&headers(&[("authorization", "Bearer ")]), b"")
                .is_err()
        );
    }

    #[test]
    fn secrets_are_not_printed() {
        let creds = Credentials::new(Some("t0ken".into()), None);
        assert!(!format!("{creds:?}").contains("t0ken"));
    }
}
