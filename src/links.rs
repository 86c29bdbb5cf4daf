//! Links that go into emails, each carrying a signed token (see `domain::token`), and the
//! keyed hash of addresses on the suppression list.
//!
//! Both depend on the token key, which can be rotated (`tokens.previous_keys`): links are
//! signed with the current key and accepted under any configured key; the suppression list is
//! written with the current key's hash and checked against the hash under every key
//! ([`Links::email_hashes`]), so an address erased before a rotation stays suppressed after it.

use lettre::Address;

use crate::clock::Millis;
use crate::domain::{
    BounceTag, EmailAddress, LinkTarget, Token, TokenError, TokenKey, TokenPurpose,
};

/// Makes and checks the signed links in emails and pages (confirm, unsubscribe, preferences).
#[derive(Debug, Clone)]
pub struct Links {
    base_url: String,
    /// The current key first (it signs), then the keys it replaced (they only verify).
    keys: Vec<TokenKey>,
    confirm_ttl_secs: i64,
}

impl Links {
    /// Links under `base_url`, signed with `key`; confirmation links live `confirm_ttl_hours`.
    pub fn new(base_url: &str, key: TokenKey, confirm_ttl_hours: u32) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            keys: vec![key],
            confirm_ttl_secs: i64::from(confirm_ttl_hours) * 3600,
        }
    }

    /// Also accepts links signed with these earlier keys (`tokens.previous_keys`), and
    /// recognises suppression-list entries written under them.
    pub fn with_previous_keys(mut self, previous: Vec<TokenKey>) -> Self {
        self.keys.truncate(1);
        self.keys.extend(previous);
        self
    }

    /// The key that signs new links.
    fn key(&self) -> &TokenKey {
        &self.keys[0]
    }

    /// The site's public URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The public web copy of a send in its offering's archive (no token: it names no one).
    pub fn archive_send_url(&self, offering_slug: &str, send_id: i64) -> String {
        format!("{}/archive/{offering_slug}/{send_id}", self.base_url)
    }

    /// The page listing an offering's archived sends.
    pub fn archive_url(&self, offering_slug: &str) -> String {
        format!("{}/archive/{offering_slug}", self.base_url)
    }

    /// How many days a confirmation link lives, rounded up, as the email says.
    pub fn confirm_ttl_days(&self) -> i64 {
        (self.confirm_ttl_secs + 86_399) / 86_400
    }

    /// The confirmation token of a signup (its consent record); it expires a fixed time after
    /// the signup, so a retried email carries the same link.
    pub fn confirm_token(&self, consent: LinkTarget, signed_up_at: Millis) -> String {
        self.key().sign(&Token {
            purpose: TokenPurpose::Confirm,
            subject: consent.id,
            scope: 0,
            expires: signed_up_at.div_euclid(1000) + self.confirm_ttl_secs,
            binding: consent.secret,
        })
    }

    /// The confirmation URL of a signup.
    pub fn confirm_url(&self, consent: LinkTarget, signed_up_at: Millis) -> String {
        format!(
            "{}/confirm/{}",
            self.base_url,
            self.confirm_token(consent, signed_up_at)
        )
    }

    /// The one-click unsubscribe link of one offering for one person. It never expires: a
    /// person must be able to leave from an email of any age.
    pub fn unsubscribe_url(&self, subscriber: LinkTarget, offering_id: i64) -> String {
        let token = self.key().sign(&Token {
            purpose: TokenPurpose::Unsubscribe,
            subject: subscriber.id,
            scope: offering_id,
            expires: 0,
            binding: subscriber.secret,
        });
        format!("{}/unsubscribe/{token}", self.base_url)
    }

    /// The preferences page of one person (does not expire either).
    pub fn preferences_url(&self, subscriber: LinkTarget) -> String {
        format!(
            "{}/preferences/{}",
            self.base_url,
            self.preferences_token(subscriber)
        )
    }

    /// The token of a subscriber's preferences page.
    pub fn preferences_token(&self, subscriber: LinkTarget) -> String {
        self.key().sign(&Token {
            purpose: TokenPurpose::Preferences,
            subject: subscriber.id,
            scope: 0,
            expires: 0,
            binding: subscriber.secret,
        })
    }

    /// The suppression-list hash of an address under the current key: what is WRITTEN when
    /// someone is erased or suppressed.
    pub fn email_hash(&self, email: &EmailAddress) -> String {
        self.key().email_hash(email.as_str())
    }

    /// The key of an address's confirmation cooldown: a keyed hash of its mailbox (lowercased,
    /// without a `+tag`), so that spellings of one inbox share one cooldown and nothing
    /// readable is kept about whoever asked.
    pub fn mailbox_key(&self, email: &EmailAddress) -> String {
        self.key().email_hash(&email.mailbox())
    }

    /// The hash of an address under every configured key, current first: what a suppression
    /// CHECK looks for, so entries written before a key rotation are still recognised.
    pub fn email_hashes(&self, email: &EmailAddress) -> Vec<String> {
        let mut hashes: Vec<String> = Vec::with_capacity(self.keys.len());
        for key in &self.keys {
            let hash = key.email_hash(email.as_str());
            if !hashes.contains(&hash) {
                hashes.push(hash);
            }
        }
        hashes
    }

    /// The envelope sender (VERP) of one delivery: `local+TAG@domain` under the return path
    /// `local@domain`, so that a bounce names the delivery it answers by the address it comes
    /// back to (see [`BounceTag`]).
    pub fn bounce_address(
        &self,
        return_path: &Address,
        delivery_id: i64,
        message_id: &str,
    ) -> Address {
        let tag = self.key().bounce_tag(delivery_id, message_id);
        let local = format!("{}+{tag}", return_path.user());
        Address::new(local, return_path.domain())
            .expect("a tag of digits, a dash and hex keeps a valid address valid")
    }

    /// The tag of `address` when it looks like a VERP address (`local+TAG@domain`); whether
    /// the tag is genuine is for [`Links::bounce_tag_matches`] to say, once the delivery it
    /// names is read. The local part and the domain are not compared with the configured
    /// return path: the MAC alone decides, so bounces of mail sent before the return path was
    /// changed still match.
    pub fn bounce_tag_of(address: &str) -> Option<BounceTag> {
        let address = address.trim().trim_start_matches('<').trim_end_matches('>');
        let (local, _domain) = address.rsplit_once('@')?;
        let (_user, tag) = local.rsplit_once('+')?;
        tag.parse().ok()
    }

    /// Whether `tag` was made under one of the configured keys for a delivery with this
    /// Message-ID.
    pub fn bounce_tag_matches(&self, tag: &BounceTag, message_id: &str) -> bool {
        tag.matches(&self.keys, message_id)
    }

    /// Checks a token taken from a URL for `purpose` at `now_secs`, under the current key or
    /// any previous one.
    pub fn verify(
        &self,
        token: &str,
        purpose: TokenPurpose,
        now_secs: i64,
    ) -> Result<Token, TokenError> {
        TokenKey::verify_any(&self.keys, token, purpose, now_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email() -> EmailAddress {
        EmailAddress::parse("radha@example.org").unwrap()
    }

    #[test]
    fn links_are_signed_with_the_current_key_and_accepted_under_previous_ones() {
        let old = TokenKey::generate();
        let new = TokenKey::generate();
        let before = Links::new("https://example.org/", old.clone(), 1);
        let after = Links::new("https://example.org", new.clone(), 1).with_previous_keys(vec![old]);
        let person = LinkTarget { id: 7, secret: 99 };
        let token = before.preferences_token(person);
        assert_eq!(
            after
                .verify(&token, TokenPurpose::Preferences, 0)
                .unwrap()
                .target(),
            person
        );
        let fresh = after.preferences_token(person);
        assert!(new.verify(&fresh, TokenPurpose::Preferences, 0).is_ok());
        assert!(
            before.verify(&fresh, TokenPurpose::Preferences, 0).is_err(),
            "new links are signed with the new key only"
        );
    }

    #[test]
    fn suppression_hashes_cover_every_key_and_writes_use_the_current_one() {
        let old = TokenKey::generate();
        let new = TokenKey::generate();
        let before = Links::new("https://example.org", old.clone(), 1);
        let after = Links::new("https://example.org", new, 1).with_previous_keys(vec![old]);
        let written_before = before.email_hash(&email());
        let checked_after = after.email_hashes(&email());
        assert_eq!(checked_after.len(), 2);
        assert_eq!(checked_after[0], after.email_hash(&email()));
        assert!(checked_after.contains(&written_before));
        assert_eq!(before.email_hashes(&email()), vec![written_before]);
    }

    #[test]
    fn a_bounce_address_fits_an_address_and_names_its_delivery_under_any_key() {
        let old = TokenKey::generate();
        let links = Links::new("https://example.org", old.clone(), 1);
        let return_path: Address = "bounces@mail.example.org".parse().unwrap();
        let address = links.bounce_address(&return_path, 4711, "<p.3@example.org>");
        let text = address.to_string();
        assert!(text.starts_with("bounces+4711-"), "{text}");
        assert!(text.ends_with("@mail.example.org"), "{text}");
        let longest = links.bounce_address(&return_path, i64::MAX, "<p.3@example.org>");
        assert!(longest.user().len() <= 64, "{longest}");

        let tag = Links::bounce_tag_of(&text.to_uppercase()).unwrap();
        assert_eq!(tag.delivery_id, 4711);
        assert!(links.bounce_tag_matches(&tag, "<p.3@example.org>"));
        assert!(!links.bounce_tag_matches(&tag, "<p.4@example.org>"));
        let rotated = Links::new("https://example.org", TokenKey::generate(), 1)
            .with_previous_keys(vec![old]);
        assert!(rotated.bounce_tag_matches(&tag, "<p.3@example.org>"));
        let stranger = Links::new("https://example.org", TokenKey::generate(), 1);
        assert!(!stranger.bounce_tag_matches(&tag, "<p.3@example.org>"));

        assert_eq!(Links::bounce_tag_of(&format!("<{text}>")), Some(tag));
        // Under another return path the tag still reads; its MAC alone decides.
        assert_eq!(
            Links::bounce_tag_of(&text.replace("bounces+", "old+")),
            Some(tag)
        );
        for other in [
            "bounces@mail.example.org",
            "someone@mail.example.org",
            "bounces+junk@mail.example.org",
            "bounces+4711-00@mail.example.org",
        ] {
            assert_eq!(Links::bounce_tag_of(other), None, "{other}");
        }
    }
}
