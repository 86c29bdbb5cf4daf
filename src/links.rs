//! Links that go into emails, each carrying a signed token (see `domain::token`).

use crate::clock::Millis;
use crate::domain::{Token, TokenError, TokenKey, TokenPurpose};

#[derive(Debug, Clone)]
pub struct Links {
    base_url: String,
    key: TokenKey,
    confirm_ttl_secs: i64,
}

impl Links {
    pub fn new(base_url: &str, key: TokenKey, confirm_ttl_hours: u32) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            key,
            confirm_ttl_secs: i64::from(confirm_ttl_hours) * 3600,
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn confirm_ttl_days(&self) -> i64 {
        (self.confirm_ttl_secs + 86_399) / 86_400
    }

    /// The confirmation token of a signup; it expires a fixed time after the signup, so a
    /// retried email carries the same link.
    pub fn confirm_token(&self, consent_id: i64, signed_up_at: Millis) -> String {
        self.key.sign(&Token {
            purpose: TokenPurpose::Confirm,
            subject: consent_id,
            scope: 0,
            expires: signed_up_at.div_euclid(1000) + self.confirm_ttl_secs,
        })
    }

    pub fn confirm_url(&self, consent_id: i64, signed_up_at: Millis) -> String {
        format!(
            "{}/confirm/{}",
            self.base_url,
            self.confirm_token(consent_id, signed_up_at)
        )
    }

    /// Checks a token taken from a URL for `purpose` at `now_secs`.
    pub fn verify(
        &self,
        token: &str,
        purpose: TokenPurpose,
        now_secs: i64,
    ) -> Result<Token, TokenError> {
        self.key.verify(token, purpose, now_secs)
    }
}
