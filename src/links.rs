//! Links that go into emails, each carrying a signed token (see `domain::token`).

use crate::clock::Millis;
use crate::domain::{EmailAddress, Token, TokenError, TokenKey, TokenPurpose};

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

    /// The one-click unsubscribe link of one offering for one person. It never expires: a
    /// person must be able to leave from an email of any age.
    pub fn unsubscribe_url(&self, subscriber_id: i64, offering_id: i64) -> String {
        let token = self.key.sign(&Token {
            purpose: TokenPurpose::Unsubscribe,
            subject: subscriber_id,
            scope: offering_id,
            expires: 0,
        });
        format!("{}/unsubscribe/{token}", self.base_url)
    }

    /// The preferences page of one person (does not expire either).
    pub fn preferences_url(&self, subscriber_id: i64) -> String {
        format!(
            "{}/preferences/{}",
            self.base_url,
            self.preferences_token(subscriber_id)
        )
    }

    pub fn preferences_token(&self, subscriber_id: i64) -> String {
        self.key.sign(&Token {
            purpose: TokenPurpose::Preferences,
            subject: subscriber_id,
            scope: 0,
            expires: 0,
        })
    }

    /// The suppression-list hash of an address.
    pub fn email_hash(&self, email: &EmailAddress) -> String {
        self.key.email_hash(email.as_str())
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
