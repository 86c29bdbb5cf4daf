//! Signed, stateless tokens for links in emails.
//!
//! ```text
//! token = base64url( version | purpose | subject (u64) | scope (u64) | expires (i64, 0 = never)
//!                    | binding (i64) | mac )
//! mac   = HMAC-SHA256(key, "sangha-token" | every field before it)[..16]
//! ```
//!
//! A token is bound to its purpose (a confirmation token cannot unsubscribe), carries its own
//! expiry, and is checked in constant time. 128 bits of MAC make guessing hopeless; the key
//! never leaves the server.
//!
//! A token is also bound to the one row it acts on: `binding` is a random secret stored with
//! that row (`link_secret` of a subscriber or a consent record). An id alone is not enough:
//! SQLite gave an erased person's id to the next signup, and a restore from a backup can do the
//! same on either database, so an old link must carry something a new row cannot have. A row
//! whose secret differs from the token's is treated as missing (see [`LinkTarget`]).
//!
//! Version 1 tokens (before the binding) are still read, with binding 0: rows that existed
//! before the binding keep secret 0 so the links already in their inboxes keep working, and
//! every row made since has a non-zero secret, so an old token can never reach it.
//!
//! Keys can be rotated: new tokens are signed with the current key only, and a token is
//! accepted when its MAC matches the current key or one of the keys it replaced
//! ([`TokenKey::verify_any`]), so links already sent keep working.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const VERSION: u8 = 2;
const MAC_LEN: usize = 16;
const BODY_LEN: usize = 1 + 1 + 8 + 8 + 8 + 8;
const TOKEN_LEN: usize = BODY_LEN + MAC_LEN;
/// Tokens made before the binding: no binding field, read as binding 0.
const V1_BODY_LEN: usize = 1 + 1 + 8 + 8 + 8;
const V1_TOKEN_LEN: usize = V1_BODY_LEN + MAC_LEN;
/// The longest text that can be a token (base64 of `TOKEN_LEN` bytes is 67 characters).
const MAX_TEXT_LEN: usize = 80;

/// What a token may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TokenPurpose {
    /// Confirms the subscriptions of one signup (subject = the signup's consent record id).
    Confirm = 1,
    /// Leaves one offering (subject = subscriber id, scope = offering id).
    Unsubscribe = 2,
    /// Opens the preferences page (subject = subscriber id).
    Preferences = 3,
}

/// The claims inside a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub purpose: TokenPurpose,
    pub subject: i64,
    pub scope: i64,
    /// Unix seconds after which the token is refused; 0 means it never expires.
    pub expires: i64,
    /// The `link_secret` of the row `subject` names (0 for rows older than the binding).
    pub binding: i64,
}

impl Token {
    /// The row this token acts on.
    pub fn target(&self) -> LinkTarget {
        LinkTarget {
            id: self.subject,
            secret: self.binding,
        }
    }
}

/// A row a link acts on: its id and the random secret stored with it. Store lookups by link
/// match both, so a link whose row was deleted matches nothing, even when its id is used again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkTarget {
    pub id: i64,
    pub secret: i64,
}

/// Why a token was refused; the text is what a person reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the link is not valid")]
    Malformed,
    #[error("the link is not valid")]
    BadSignature,
    #[error("the link is meant for something else")]
    WrongPurpose,
    #[error("the link has expired")]
    Expired,
}

/// The server's secret for signing tokens.
#[derive(Clone)]
pub struct TokenKey(Vec<u8>);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey([redacted])")
    }
}

impl TokenKey {
    /// Fewest bytes a key may have.
    pub const MIN_LEN: usize = 32;

    /// A new random key of [`TokenKey::MIN_LEN`] bytes.
    pub fn generate() -> Self {
        let mut bytes = vec![0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// A key from its base64 text; refuses one shorter than [`TokenKey::MIN_LEN`] bytes.
    pub fn from_base64(text: &str) -> Result<Self, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| {
                "must be base64 (for example from `openssl rand -base64 32`)".to_owned()
            })?;
        if bytes.len() < Self::MIN_LEN {
            return Err(format!("must decode to at least {} bytes", Self::MIN_LEN));
        }
        Ok(Self(bytes))
    }

    /// The key as base64 text, as written in the configuration.
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.0)
    }

    fn mac(&self) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(b"sangha-token");
        mac
    }

    /// A keyed hash of an address (lowercased), for the suppression list: it recognises an
    /// address again without keeping it readable.
    pub fn email_hash(&self, email: &str) -> String {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(b"sangha-suppression");
        mac.update(email.to_lowercase().as_bytes());
        super::hex(&mac.finalize().into_bytes())
    }

    fn bounce_mac(&self, delivery_id: i64, message_id: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(b"sangha-bounce");
        mac.update(&delivery_id.to_be_bytes());
        mac.update(message_id.as_bytes());
        mac
    }

    /// The tag of a VERP return path for one delivery (see [`BounceTag`]).
    pub fn bounce_tag(&self, delivery_id: i64, message_id: &str) -> BounceTag {
        let full = self
            .bounce_mac(delivery_id, message_id)
            .finalize()
            .into_bytes();
        let mut mac = [0u8; BOUNCE_MAC_LEN];
        mac.copy_from_slice(&full[..BOUNCE_MAC_LEN]);
        BounceTag { delivery_id, mac }
    }

    /// Signs the claims into a URL-safe string.
    pub fn sign(&self, token: &Token) -> String {
        let mut body = [0u8; TOKEN_LEN];
        body[0] = VERSION;
        body[1] = token.purpose as u8;
        body[2..10].copy_from_slice(&token.subject.to_be_bytes());
        body[10..18].copy_from_slice(&token.scope.to_be_bytes());
        body[18..26].copy_from_slice(&token.expires.to_be_bytes());
        body[26..34].copy_from_slice(&token.binding.to_be_bytes());
        let mut mac = self.mac();
        mac.update(&body[..BODY_LEN]);
        let tag = mac.finalize().into_bytes();
        body[BODY_LEN..].copy_from_slice(&tag[..MAC_LEN]);
        URL_SAFE_NO_PAD.encode(body)
    }

    /// Checks a token for `purpose` at `now` (unix seconds). The MAC is compared in constant
    /// time before anything in the token is believed.
    pub fn verify(&self, text: &str, purpose: TokenPurpose, now: i64) -> Result<Token, TokenError> {
        Self::verify_any(std::slice::from_ref(self), text, purpose, now)
    }

    /// As [`TokenKey::verify`], accepting a MAC made with any of `keys` (the current key first,
    /// then the ones it replaced). Each comparison is a full constant-time comparison of the
    /// tag; the search stops only at a key whose tag matches completely, so a forged token
    /// costs the same whatever its bytes, and a token of a key not in `keys` is refused.
    pub fn verify_any(
        keys: &[TokenKey],
        text: &str,
        purpose: TokenPurpose,
        now: i64,
    ) -> Result<Token, TokenError> {
        if text.len() > MAX_TEXT_LEN {
            return Err(TokenError::Malformed);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| TokenError::Malformed)?;
        let body_len = match (bytes.len(), bytes.first()) {
            (TOKEN_LEN, Some(&VERSION)) => BODY_LEN,
            (V1_TOKEN_LEN, Some(1)) => V1_BODY_LEN,
            _ => return Err(TokenError::Malformed),
        };
        let signed_by_one_of_keys = keys.iter().any(|key| {
            let mut mac = key.mac();
            mac.update(&bytes[..body_len]);
            mac.verify_truncated_left(&bytes[body_len..]).is_ok()
        });
        if !signed_by_one_of_keys {
            return Err(TokenError::BadSignature);
        }
        let word = |range: std::ops::Range<usize>| {
            i64::from_be_bytes(bytes[range].try_into().expect("8 bytes"))
        };
        let token = Token {
            purpose: match bytes[1] {
                1 => TokenPurpose::Confirm,
                2 => TokenPurpose::Unsubscribe,
                3 => TokenPurpose::Preferences,
                _ => return Err(TokenError::Malformed),
            },
            subject: word(2..10),
            scope: word(10..18),
            expires: word(18..26),
            binding: if body_len == BODY_LEN {
                word(26..34)
            } else {
                0
            },
        };
        if token.purpose != purpose {
            return Err(TokenError::WrongPurpose);
        }
        if token.expires != 0 && now > token.expires {
            return Err(TokenError::Expired);
        }
        Ok(token)
    }
}

/// The tag a VERP return path carries, `ID-MAC` (`bounces+1234-0f3a…@example.org`): the id of
/// the delivery a bounce answers, and 80 bits of MAC over that id and the delivery's
/// Message-ID. It is short (an address's local part holds at most 64 characters), digits and
/// lowercase hex only (mail systems may change the case of a local part), and bound to the
/// delivery's Message-ID, so a tag of a deleted delivery never names a new row with the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BounceTag {
    /// The delivery the bounced message was.
    pub delivery_id: i64,
    mac: [u8; BOUNCE_MAC_LEN],
}

const BOUNCE_MAC_LEN: usize = 10;

impl BounceTag {
    /// The longest tag: 19 digits, a dash and the MAC in hex.
    pub const MAX_LEN: usize = 19 + 1 + 2 * BOUNCE_MAC_LEN;

    /// Whether one of `keys` made this tag for a delivery with this Message-ID (compared in
    /// constant time).
    pub fn matches(&self, keys: &[TokenKey], message_id: &str) -> bool {
        keys.iter().any(|key| {
            key.bounce_mac(self.delivery_id, message_id)
                .verify_truncated_left(&self.mac)
                .is_ok()
        })
    }
}

impl std::fmt::Display for BounceTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.delivery_id, super::hex(&self.mac))
    }
}

impl std::str::FromStr for BounceTag {
    type Err = TokenError;

    /// Reads `ID-MAC`, in either case; anything else is [`TokenError::Malformed`].
    fn from_str(text: &str) -> Result<Self, TokenError> {
        let (id, mac_hex) = text.split_once('-').ok_or(TokenError::Malformed)?;
        if id.is_empty()
            || id.len() > 19
            || !id.bytes().all(|b| b.is_ascii_digit())
            || mac_hex.len() != 2 * BOUNCE_MAC_LEN
            || !mac_hex.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(TokenError::Malformed);
        }
        let delivery_id = id.parse().map_err(|_| TokenError::Malformed)?;
        let mut mac = [0u8; BOUNCE_MAC_LEN];
        for (i, byte) in mac.iter_mut().enumerate() {
            let pair = mac_hex.get(2 * i..2 * i + 2).ok_or(TokenError::Malformed)?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| TokenError::Malformed)?;
        }
        Ok(Self { delivery_id, mac })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn confirm(expires: i64) -> Token {
        Token {
            purpose: TokenPurpose::Confirm,
            subject: 42,
            scope: 0,
            expires,
            binding: 7,
        }
    }

    #[test]
    fn a_signed_token_verifies_until_it_expires() {
        let key = TokenKey::generate();
        let text = key.sign(&confirm(1_000));
        assert_eq!(text.len(), 67);
        assert_eq!(
            key.verify(&text, TokenPurpose::Confirm, 999),
            Ok(confirm(1_000))
        );
        assert_eq!(
            key.verify(&text, TokenPurpose::Confirm, 1_000),
            Ok(confirm(1_000))
        );
        assert_eq!(
            key.verify(&text, TokenPurpose::Confirm, 1_001),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn a_token_is_bound_to_its_purpose_and_key() {
        let key = TokenKey::generate();
        let text = key.sign(&confirm(0));
        assert_eq!(
            key.verify(&text, TokenPurpose::Unsubscribe, 0),
            Err(TokenError::WrongPurpose)
        );
        let other = TokenKey::generate();
        assert_eq!(
            other.verify(&text, TokenPurpose::Confirm, 0),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn every_flipped_bit_is_refused() {
        let key = TokenKey::generate();
        let text = key.sign(&confirm(0));
        let bytes = URL_SAFE_NO_PAD.decode(&text).unwrap();
        for i in 0..bytes.len() * 8 {
            let mut tampered = bytes.clone();
            tampered[i / 8] ^= 1 << (i % 8);
            let t = URL_SAFE_NO_PAD.encode(&tampered);
            assert!(key.verify(&t, TokenPurpose::Confirm, 0).is_err(), "bit {i}");
        }
        for junk in [
            "",
            "x",
            "%%%",
            &"A".repeat(56),
            &"A".repeat(67),
            &"A".repeat(500),
        ] {
            assert!(key.verify(junk, TokenPurpose::Confirm, 0).is_err());
        }
    }

    #[test]
    fn keys_round_trip_through_base64_and_short_keys_are_refused() {
        let key = TokenKey::generate();
        let again = TokenKey::from_base64(&key.to_base64()).unwrap();
        let text = key.sign(&confirm(0));
        assert!(again.verify(&text, TokenPurpose::Confirm, 0).is_ok());
        assert!(TokenKey::from_base64("c2hvcnQ=").is_err());
        assert!(TokenKey::from_base64("not base64!").is_err());
    }

    #[test]
    fn after_a_rotation_tokens_of_the_previous_key_still_verify() {
        let old = TokenKey::generate();
        let new = TokenKey::generate();
        let keys = [new.clone(), old.clone()];
        let before = old.sign(&confirm(0));
        let after = new.sign(&confirm(0));
        for text in [&before, &after] {
            assert_eq!(
                TokenKey::verify_any(&keys, text, TokenPurpose::Confirm, 0),
                Ok(confirm(0))
            );
        }
        let stranger = TokenKey::generate().sign(&confirm(0));
        assert_eq!(
            TokenKey::verify_any(&keys, &stranger, TokenPurpose::Confirm, 0),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            TokenKey::verify_any(&[], &after, TokenPurpose::Confirm, 0),
            Err(TokenError::BadSignature)
        );
        // Purpose and expiry are checked whichever key signed.
        assert_eq!(
            TokenKey::verify_any(&keys, &before, TokenPurpose::Unsubscribe, 0),
            Err(TokenError::WrongPurpose)
        );
        let expiring = old.sign(&confirm(10));
        assert_eq!(
            TokenKey::verify_any(&keys, &expiring, TokenPurpose::Confirm, 11),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn a_tampered_token_of_a_previous_key_is_refused() {
        let old = TokenKey::generate();
        let keys = [TokenKey::generate(), old.clone()];
        let bytes = URL_SAFE_NO_PAD.decode(old.sign(&confirm(0))).unwrap();
        for i in 0..bytes.len() * 8 {
            let mut tampered = bytes.clone();
            tampered[i / 8] ^= 1 << (i % 8);
            let t = URL_SAFE_NO_PAD.encode(&tampered);
            assert!(
                TokenKey::verify_any(&keys, &t, TokenPurpose::Confirm, 0).is_err(),
                "bit {i}"
            );
        }
    }

    /// A token as version 1 signed it (no binding), to show such links are still read.
    fn sign_v1(key: &TokenKey, token: &Token) -> String {
        let mut body = [0u8; V1_TOKEN_LEN];
        body[0] = 1;
        body[1] = token.purpose as u8;
        body[2..10].copy_from_slice(&token.subject.to_be_bytes());
        body[10..18].copy_from_slice(&token.scope.to_be_bytes());
        body[18..26].copy_from_slice(&token.expires.to_be_bytes());
        let mut mac = key.mac();
        mac.update(&body[..V1_BODY_LEN]);
        let tag = mac.finalize().into_bytes();
        body[V1_BODY_LEN..].copy_from_slice(&tag[..MAC_LEN]);
        URL_SAFE_NO_PAD.encode(body)
    }

    #[test]
    fn a_token_carries_the_binding_of_its_row_and_old_tokens_read_as_binding_zero() {
        let key = TokenKey::generate();
        let token = Token {
            binding: -5_000_000_000_123,
            ..confirm(0)
        };
        let read = key
            .verify(&key.sign(&token), TokenPurpose::Confirm, 0)
            .unwrap();
        assert_eq!(
            read.target(),
            LinkTarget {
                id: 42,
                secret: -5_000_000_000_123
            }
        );
        let old = sign_v1(&key, &token);
        assert_eq!(old.len(), 56);
        let read = key.verify(&old, TokenPurpose::Confirm, 0).unwrap();
        assert_eq!(
            read.binding, 0,
            "a version 1 token binds to legacy rows only"
        );
        // A version 1 body cannot be passed off as version 2, nor the other way round.
        let mut relabelled = URL_SAFE_NO_PAD.decode(&old).unwrap();
        relabelled[0] = VERSION;
        let relabelled = URL_SAFE_NO_PAD.encode(relabelled);
        assert!(key.verify(&relabelled, TokenPurpose::Confirm, 0).is_err());
        let mut tampered = URL_SAFE_NO_PAD.decode(key.sign(&token)).unwrap();
        tampered[0] = 1;
        let tampered = URL_SAFE_NO_PAD.encode(tampered);
        assert!(key.verify(&tampered, TokenPurpose::Confirm, 0).is_err());
    }

    #[test]
    fn a_bounce_tag_names_its_delivery_is_bound_to_its_message_id_and_survives_case_changes() {
        let key = TokenKey::generate();
        let tag = key.bounce_tag(1234, "<abc.7@example.org>");
        let text = tag.to_string();
        assert!(text.starts_with("1234-"), "{text}");
        assert_eq!(text.len(), 5 + 20);
        let read: BounceTag = text.parse().unwrap();
        assert_eq!(read, tag);
        assert_eq!(read.delivery_id, 1234);
        assert!(read.matches(std::slice::from_ref(&key), "<abc.7@example.org>"));
        let upper: BounceTag = text.to_uppercase().parse().unwrap();
        assert!(upper.matches(std::slice::from_ref(&key), "<abc.7@example.org>"));
        // Another row that got the same id has another Message-ID.
        assert!(!read.matches(std::slice::from_ref(&key), "<def.9@example.org>"));
        assert!(!read.matches(&[TokenKey::generate()], "<abc.7@example.org>"));
        // After a rotation the old key still recognises its tags.
        assert!(read.matches(&[TokenKey::generate(), key.clone()], "<abc.7@example.org>"));
        let longest = key.bounce_tag(i64::MAX, "x").to_string();
        assert_eq!(longest.len(), BounceTag::MAX_LEN);
        assert_eq!(longest.parse::<BounceTag>().unwrap().delivery_id, i64::MAX);
    }

    #[test]
    fn a_forged_or_mangled_bounce_tag_is_refused() {
        let key = TokenKey::generate();
        let keys = std::slice::from_ref(&key);
        let text = key.bounce_tag(77, "<m@example.org>").to_string();
        // Another delivery id under the same MAC.
        let moved = text.replacen("77-", "78-", 1);
        assert!(
            !moved
                .parse::<BounceTag>()
                .unwrap()
                .matches(keys, "<m@example.org>")
        );
        // Every changed hex digit of the MAC.
        for i in 3..text.len() {
            let mut bytes = text.clone().into_bytes();
            bytes[i] = if bytes[i] == b'0' { b'1' } else { b'0' };
            let changed = String::from_utf8(bytes).unwrap();
            assert!(
                changed
                    .parse::<BounceTag>()
                    .is_ok_and(|t| !t.matches(keys, "<m@example.org>")),
                "{changed}"
            );
        }
        for junk in [
            "",
            "-",
            "77",
            "77-",
            "-0123456789abcdef0123",
            "x7-0123456789abcdef0123",
            "77-0123456789abcdef012",
            "77-0123456789abcdef01234",
            "77-0123456789abcdef012g",
            "77-+123456789abcdef0123",
            "+77-0123456789abcdef0123",
            "99999999999999999999-0123456789abcdef0123",
            "77-é123456789abcdef0123",
        ] {
            assert_eq!(
                junk.parse::<BounceTag>(),
                Err(TokenError::Malformed),
                "{junk}"
            );
        }
    }
}
