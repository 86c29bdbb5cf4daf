//! Email providers' event webhooks (Postmark, Mailgun, SendGrid): checking that a request comes
//! from the provider, and reading its bounce and complaint events into [`Incoming`] reports.
//! Pure functions of the request's bytes and headers (and, for Mailgun, the time and the tokens
//! seen), so the web layer only answers with what they decide.
//!
//! Events that say nothing about a failure (delivered, opened, clicked…) read as no report.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine;
use hmac::{Hmac, Mac};
use p256::ecdsa::signature::Verifier;
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::{Incoming, Notice};
use crate::clock::Millis;
use crate::domain::{BounceKind, BounceSource};

/// Why a webhook request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Not shown to come from the provider: missing or wrong credentials or signature, a stale
    /// timestamp, a replayed token (401).
    #[error("{0}")]
    Unauthorized(&'static str),
    /// Signed, but not an event body we can read (400); says what is wrong.
    #[error("{0}")]
    Malformed(String),
}

fn malformed(what: impl std::fmt::Display) -> Refused {
    Refused::Malformed(what.to_string())
}

/// Whether an `Authorization` header carries Postmark's configured basic auth credentials
/// (compared in constant time).
pub fn postmark_authorized(authorization: Option<&str>, username: &str, password: &str) -> bool {
    let Some(encoded) = authorization.and_then(|h| {
        h.strip_prefix("Basic ")
            .or_else(|| h.strip_prefix("basic "))
    }) else {
        return false;
    };
    let Ok(given) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let expected = format!("{username}:{password}");
    bool::from(given.ct_eq(expected.as_bytes()))
}

/// One Postmark webhook body: a `Bounce` or `SpamComplaint` record as a report, any other record
/// type as none.
pub fn postmark_event(body: &[u8]) -> Result<Option<Incoming>, Refused> {
    /// The fields of a bounce or spam complaint record that we read.
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Record {
        record_type: String,
        #[serde(rename = "ID")]
        id: Option<Value>,
        #[serde(rename = "Type", default)]
        kind: Option<String>,
        #[serde(rename = "MessageID")]
        message_id: Option<String>,
        email: Option<String>,
        description: Option<String>,
        details: Option<String>,
    }
    let record: Record = serde_json::from_slice(body).map_err(malformed)?;
    let kind = match record.record_type.as_str() {
        "SpamComplaint" => BounceKind::Complaint,
        "Bounce" => postmark_kind(record.kind.as_deref().unwrap_or("")),
        _ => return Ok(None),
    };
    let id = match &record.id {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(malformed("a Postmark bounce needs its ID")),
    };
    let diagnostic = [record.description, record.details]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" — ");
    Ok(Some(Incoming {
        source: BounceSource::Postmark,
        report_key: format!("postmark:{id}"),
        envelope_to: Vec::new(),
        original_message_id: None,
        provider_id: record.message_id.filter(|m| !m.is_empty()),
        raw: Some(String::from_utf8_lossy(body).into_owned()),
        notices: vec![Notice {
            kind,
            recipient: record.email,
            status: record.kind.or(Some(record.record_type)),
            diagnostic: Some(diagnostic).filter(|d| !d.is_empty()),
        }],
    }))
}

/// Postmark's bounce `Type` as a kind: only what names the address as dead is hard; a block or a
/// DNS failure counts as soft; a delay, an auto-reply and the rest act on nothing.
fn postmark_kind(kind: &str) -> BounceKind {
    match kind {
        "HardBounce" | "BadEmailAddress" => BounceKind::Hard,
        "SoftBounce" | "DnsError" | "Blocked" => BounceKind::Soft,
        "Transient" => BounceKind::Delayed,
        "AutoResponder" | "ChallengeVerification" => BounceKind::AutoReply,
        "SpamComplaint" => BounceKind::Complaint,
        _ => BounceKind::Unknown,
    }
}

/// How long a Mailgun signature stays good, either side of now; a token is remembered as long.
pub const MAILGUN_WINDOW_MS: Millis = 5 * 60 * 1000;

/// Mailgun tokens already accepted, in memory until they are older than
/// [`MAILGUN_WINDOW_MS`]: a request signed earlier than that is refused by its timestamp anyway,
/// so nothing older needs remembering.
#[derive(Debug, Default)]
pub struct SeenTokens {
    /// Token → its request's timestamp.
    seen: Mutex<HashMap<String, Millis>>,
}

impl SeenTokens {
    /// Remembers `token`; false when it was seen before (a replay).
    fn first_time(&self, token: &str, timestamp: Millis, now: Millis) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.retain(|_, at| now - *at <= MAILGUN_WINDOW_MS);
        seen.insert(token.to_owned(), timestamp).is_none()
    }
}

/// One Mailgun webhook body: its signature checked with `signing_key` (HMAC-SHA256 of timestamp
/// and token), its timestamp within [`MAILGUN_WINDOW_MS`] of `now`, its token new; then a
/// `failed` or `complained` event as a report, any other event as none.
pub fn mailgun_event(
    body: &[u8],
    signing_key: &str,
    now: Millis,
    seen: &SeenTokens,
) -> Result<Option<Incoming>, Refused> {
    #[derive(Deserialize)]
    struct Body {
        signature: Option<Signature>,
        #[serde(rename = "event-data")]
        event_data: Option<Value>,
    }
    #[derive(Deserialize)]
    struct Signature {
        timestamp: Value,
        token: String,
        signature: String,
    }
    let body: Body = serde_json::from_slice(body).map_err(malformed)?;
    let Some(signature) = body.signature else {
        return Err(Refused::Unauthorized("no signature"));
    };
    let timestamp = match &signature.timestamp {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return Err(Refused::Unauthorized("no signature timestamp")),
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(signing_key.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(timestamp.as_bytes());
    mac.update(signature.token.as_bytes());
    let expected = crate::domain::hex(&mac.finalize().into_bytes());
    let given = signature.signature.to_ascii_lowercase();
    if !bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
        return Err(Refused::Unauthorized("wrong signature"));
    }
    let signed_at = timestamp
        .parse::<i64>()
        .ok()
        .and_then(|s| s.checked_mul(1000))
        .ok_or(Refused::Unauthorized("unreadable signature timestamp"))?;
    if (now - signed_at).abs() > MAILGUN_WINDOW_MS {
        return Err(Refused::Unauthorized("signature timestamp too old"));
    }
    if !seen.first_time(&signature.token, signed_at, now) {
        return Err(Refused::Unauthorized("signature token used before"));
    }
    let Some(event) = body.event_data else {
        return Err(malformed("no event-data"));
    };
    mailgun_report(&event)
}

/// A Mailgun `event-data` object as a report.
fn mailgun_report(event: &Value) -> Result<Option<Incoming>, Refused> {
    let text = |pointer: &str| {
        event
            .pointer(pointer)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let Some(name) = text("/event") else {
        return Err(malformed("event-data has no event"));
    };
    let kind = match name.as_str() {
        "complained" => BounceKind::Complaint,
        "failed" => match (text("/severity").as_deref(), text("/reason").as_deref()) {
            // Given up after retrying a temporary failure: a soft bounce, not a dead address.
            (Some("permanent"), Some("old")) => BounceKind::Soft,
            (Some("permanent"), _) => BounceKind::Hard,
            // Mailgun tries again: a delay, until it says otherwise.
            (Some("temporary"), _) => BounceKind::Delayed,
            _ => BounceKind::Unknown,
        },
        _ => return Ok(None),
    };
    let Some(id) = text("/id") else {
        return Err(malformed("event-data has no id"));
    };
    // Mailgun's event ids are unique within a day; with the event's own time, for good.
    let at = event
        .pointer("/timestamp")
        .map(Value::to_string)
        .unwrap_or_default();
    let code = event
        .pointer("/delivery-status/code")
        .filter(|c| !c.is_null())
        .map(|c| c.as_str().map_or_else(|| c.to_string(), str::to_owned));
    let diagnostic = [
        code.clone(),
        text("/delivery-status/description"),
        text("/delivery-status/message"),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(" ");
    Ok(Some(Incoming {
        source: BounceSource::Mailgun,
        report_key: format!("mailgun:{id}:{at}"),
        envelope_to: Vec::new(),
        original_message_id: text("/message/headers/message-id"),
        provider_id: None,
        raw: Some(event.to_string()),
        notices: vec![Notice {
            kind,
            recipient: text("/recipient"),
            status: code.or(text("/severity")).or(Some(name)),
            diagnostic: Some(diagnostic).filter(|d| !d.is_empty()),
        }],
    }))
}

/// One SendGrid event webhook body: its ECDSA signature (over the timestamp header and the raw
/// body) checked with `key`; then each bounce, dropped, deferred or spamreport event as a report.
pub fn sendgrid_events(
    body: &[u8],
    signature: Option<&str>,
    timestamp: Option<&str>,
    key: &p256::ecdsa::VerifyingKey,
) -> Result<Vec<Incoming>, Refused> {
    let (Some(signature), Some(timestamp)) = (signature, timestamp) else {
        return Err(Refused::Unauthorized("no signature"));
    };
    let signature = base64::engine::general_purpose::STANDARD
        .decode(signature.trim())
        .ok()
        .and_then(|der| p256::ecdsa::Signature::from_der(&der).ok())
        .ok_or(Refused::Unauthorized("unreadable signature"))?;
    let mut signed = Vec::with_capacity(timestamp.len() + body.len());
    signed.extend_from_slice(timestamp.as_bytes());
    signed.extend_from_slice(body);
    key.verify(&signed, &signature)
        .map_err(|_| Refused::Unauthorized("wrong signature"))?;
    let events: Vec<Value> = serde_json::from_slice(body).map_err(malformed)?;
    let mut reports = Vec::new();
    for event in &events {
        if let Some(report) = sendgrid_report(event)? {
            reports.push(report);
        }
    }
    Ok(reports)
}

/// One SendGrid event as a report.
fn sendgrid_report(event: &Value) -> Result<Option<Incoming>, Refused> {
    let text = |key: &str| {
        event
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let Some(name) = text("event") else {
        return Err(malformed("an event without `event`"));
    };
    let reason = text("reason");
    let kind = match name.as_str() {
        "bounce" => match text("type").as_deref() {
            Some("blocked") => BounceKind::Soft,
            _ => BounceKind::Hard,
        },
        "deferred" => BounceKind::Delayed,
        "spamreport" => BounceKind::Complaint,
        // SendGrid did not even try: because of its own lists, or an invalid address.
        "dropped" => match reason.as_deref() {
            Some("Bounced Address" | "Invalid") => BounceKind::Hard,
            Some("Spam Reporting Address") => BounceKind::Complaint,
            _ => BounceKind::Unknown,
        },
        _ => return Ok(None),
    };
    let Some(id) = text("sg_event_id") else {
        return Err(malformed(format!("a {name} event without sg_event_id")));
    };
    // `sg_message_id` is the id of the relay's reply (`250 Ok: queued as ID`), then filter data.
    let provider_id = text("sg_message_id")
        .map(|m| m.split('.').next().unwrap_or_default().to_owned())
        .filter(|m| !m.is_empty());
    let diagnostic = [text("response"), reason.clone()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    Ok(Some(Incoming {
        source: BounceSource::Sendgrid,
        report_key: format!("sendgrid:{id}"),
        envelope_to: Vec::new(),
        original_message_id: text("smtp-id"),
        provider_id,
        raw: Some(event.to_string()),
        notices: vec![Notice {
            kind,
            recipient: text("email"),
            status: text("status").or(text("type")).or(Some(name)),
            diagnostic: Some(diagnostic).filter(|d| !d.is_empty()),
        }],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postmark_types_map_to_kinds_that_act_only_on_dead_addresses() {
        assert_eq!(postmark_kind("HardBounce"), BounceKind::Hard);
        assert_eq!(postmark_kind("SoftBounce"), BounceKind::Soft);
        assert_eq!(postmark_kind("Transient"), BounceKind::Delayed);
        assert_eq!(postmark_kind("AutoResponder"), BounceKind::AutoReply);
        assert_eq!(postmark_kind("SpamNotification"), BounceKind::Unknown);
    }

    #[test]
    fn basic_auth_must_match_both_parts() {
        let header = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        assert!(postmark_authorized(
            Some(&header("pm:secret")),
            "pm",
            "secret"
        ));
        assert!(!postmark_authorized(
            Some(&header("pm:secreT")),
            "pm",
            "secret"
        ));
        assert!(!postmark_authorized(Some(&header("pm:")), "pm", "secret"));
        assert!(!postmark_authorized(Some("Bearer x"), "pm", "secret"));
        assert!(!postmark_authorized(None, "pm", "secret"));
    }

    #[test]
    fn a_token_is_refused_the_second_time_and_forgotten_after_the_window() {
        let seen = SeenTokens::default();
        assert!(seen.first_time("t", 1_000, 1_000));
        assert!(!seen.first_time("t", 1_000, 2_000));
        assert!(seen.first_time("u", 1_000, 2_000));
        let later = 1_000 + MAILGUN_WINDOW_MS + 1;
        assert!(seen.first_time("other", later, later));
        assert_eq!(seen.seen.lock().unwrap().len(), 1, "old tokens are dropped");
    }
}
