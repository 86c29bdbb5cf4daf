//! Automatic replies from a person's mailbox, which are not bounces: RFC 3834
//! `Auto-Submitted: auto-replied`, the older `X-Autoreply`-style headers, Exchange's inbox-rule
//! headers, vacation and out-of-office subjects, and challenge-response systems.
//!
//! Read only after the reports: a bounce is `auto-replied` too (Postfix, Gmail), and
//! `Auto-Submitted: auto-generated` alone is not a reply at all.

use mail_parser::{Message, MimeHeaders};

use super::message::{envelope_to, from, header_text, header_texts, replied_to};
use super::{AutoReply, AutoReplyKind};

/// Words of out-of-office and vacation subjects, lowercased.
const OUT_OF_OFFICE: &[&str] = &[
    "out of office",
    "out of the office",
    "automatic reply",
    "auto-reply",
    "autoreply",
    "auto reply",
    "abwesenheitsnotiz",
    "automatische antwort",
    "réponse automatique",
    "respuesta automática",
    "risposta automatica",
    "on vacation",
    "on holiday",
    "away from the office",
];

/// Prefixes of a person's reply or forward, whose subject quotes someone else's.
const REPLY_PREFIXES: &[&str] = &["re:", "aw:", "sv:", "fw:", "fwd:", "wg:", "tr:", "rv:"];

/// Phrases of challenge-response requests, lowercased.
const CHALLENGE: &[&str] = &[
    "confirm you are human",
    "confirm that you are human",
    "confirm you are a human",
    "confirm that you are a human",
    "verify you are human",
    "verify that you are human",
    "verify you are a human",
    "verify that you are a human",
    "prove you are human",
    "challenge-response",
    "challenge/response",
    "sender verification",
    "verify your email address to deliver",
];

/// An automatic reply, when the message carries a sign of one.
pub(super) fn auto_reply(message: &Message<'_>) -> Option<AutoReply> {
    let (kind, cue) = challenge(message)
        .map(|cue| (AutoReplyKind::Challenge, cue))
        .or_else(|| out_of_office(message).map(|cue| (AutoReplyKind::OutOfOffice, cue)))
        .or_else(|| auto_header(message))?;
    Some(AutoReply {
        kind,
        cue,
        from: from(message),
        original_message_id: replied_to(message),
        envelope_to: envelope_to(message),
    })
}

/// The subject, when it is not a person's reply to or forward of another message.
fn own_subject(message: &Message<'_>) -> Option<String> {
    let subject = message.subject()?.trim().to_lowercase();
    (!REPLY_PREFIXES.iter().any(|p| subject.starts_with(p))).then_some(subject)
}

/// A challenge-response request: an `X-Challenge…` header or a request to prove a person sent.
fn challenge(message: &Message<'_>) -> Option<String> {
    let header = message.root_part().headers.iter().find(|h| {
        let name = h.name().to_ascii_lowercase();
        name.starts_with("x-challenge") || name.starts_with("x-boxbe")
    });
    if let Some(h) = header {
        return Some(format!("{} header", h.name()));
    }
    let subject = own_subject(message).unwrap_or_default();
    let body = message
        .text_bodies()
        .filter(|p| !p.is_content_type("text", "html"))
        .filter_map(|p| p.text_contents())
        .next()
        .unwrap_or_default()
        .to_lowercase();
    CHALLENGE
        .iter()
        .find(|phrase| subject.contains(*phrase) || body.contains(*phrase))
        .map(|phrase| format!("asks the sender to \"{phrase}\""))
}

/// A vacation or out-of-office subject.
fn out_of_office(message: &Message<'_>) -> Option<String> {
    let subject = own_subject(message)?;
    OUT_OF_OFFICE
        .iter()
        .any(|w| subject.contains(w))
        .then(|| format!("Subject: {}", message.subject().unwrap_or_default().trim()))
}

/// An automatic-reply header: RFC 3834 or one of the older conventions. A Sieve vacation
/// reply says so in a comment (`auto-replied (vacation)`).
fn auto_header(message: &Message<'_>) -> Option<(AutoReplyKind, String)> {
    let value = |name: &str| header_text(message, name).map(|v| v.to_ascii_lowercase());
    if let Some(v) = value("Auto-Submitted")
        && v.starts_with("auto-replied")
    {
        let kind = if v.contains("vacation") {
            AutoReplyKind::OutOfOffice
        } else {
            AutoReplyKind::Other
        };
        return Some((kind, format!("Auto-Submitted: {v}")));
    }
    if value("Precedence").is_some_and(|v| v.trim() == "auto_reply") {
        return Some((AutoReplyKind::Other, "Precedence: auto_reply".to_owned()));
    }
    let names = [
        "X-Autoreply",
        "X-Autorespond",
        "X-Autoresponder",
        "X-Auto-Response-Suppress",
        "X-MS-Exchange-Inbox-Rules-Loop",
    ];
    names.iter().find_map(|name| {
        let v = header_texts(message, name).into_iter().next()?;
        Some((AutoReplyKind::Other, format!("{name}: {v}")))
    })
}
