//! What every kind of report reads from the message around it: the addresses it was delivered
//! to, the Message-ID of the message it answers, and ARF reports through `mail-auth`.

use std::borrow::Cow;

use mail_auth::report::{Feedback, FeedbackType as ArfType};
use mail_parser::{Addr, Address, HeaderValue, Message, MessageParser, MimeHeaders, PartType};

use super::{Complaint, FeedbackType, ReportedAddress};
use crate::domain::EmailAddress;

/// The `report-type` of a `multipart/report` message, lowercased.
pub(super) fn report_type(message: &Message<'_>) -> Option<String> {
    let ct = message.root_part().content_type()?;
    if !ct.ctype().eq_ignore_ascii_case("multipart")
        || !ct
            .subtype()
            .is_some_and(|s| s.eq_ignore_ascii_case("report"))
    {
        return None;
    }
    ct.attribute("report-type").map(|t| t.to_ascii_lowercase())
}

/// The header's values as text, each unfolded and trimmed (any number of instances).
pub(super) fn header_texts(message: &Message<'_>, name: &str) -> Vec<String> {
    let root = message.root_part();
    let raw = message.raw_message();
    root.headers
        .iter()
        .filter(|h| h.name().eq_ignore_ascii_case(name))
        .filter_map(|h| raw.get(h.offset_start as usize..h.offset_end as usize))
        .map(|bytes| unfold(&String::from_utf8_lossy(bytes)))
        .collect()
}

/// The first value of a header as text.
pub(super) fn header_text(message: &Message<'_>, name: &str) -> Option<String> {
    header_texts(message, name).into_iter().next()
}

/// Folded lines joined by one space, trimmed.
pub(super) fn unfold(text: &str) -> String {
    text.split(['\r', '\n'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The addresses a report was delivered to: `X-Original-To`, `Delivered-To`, `Envelope-To`
/// and `To`, each valid address once, in that order.
pub(super) fn envelope_to(message: &Message<'_>) -> Vec<EmailAddress> {
    let mut found: Vec<EmailAddress> = Vec::new();
    let mut add = |text: &str| {
        if let Some(ReportedAddress::Valid(a)) = ReportedAddress::read(text)
            && !found.contains(&a)
        {
            found.push(a);
        }
    };
    for name in ["X-Original-To", "Delivered-To", "Envelope-To"] {
        for value in header_texts(message, name) {
            value.split(',').for_each(&mut add);
        }
    }
    for to in message.all_to() {
        addresses(to).for_each(&mut add);
    }
    found
}

/// Every address of an address header (groups flattened).
fn addresses<'a>(address: &'a Address<'_>) -> impl Iterator<Item = &'a str> {
    let list: Vec<&Addr<'_>> = match address {
        Address::List(list) => list.iter().collect(),
        Address::Group(groups) => groups.iter().flat_map(|g| g.addresses.iter()).collect(),
    };
    list.into_iter().filter_map(|a| a.address.as_deref())
}

/// The first `From` address.
pub(super) fn from(message: &Message<'_>) -> Option<ReportedAddress> {
    message
        .from()
        .and_then(|f| addresses(f).next())
        .and_then(ReportedAddress::read)
}

/// A Message-ID as written in a header: angle brackets included.
pub(super) fn bracketed(id: &str) -> Option<String> {
    let id = id
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim();
    (!id.is_empty() && !id.contains(char::is_whitespace)).then(|| format!("<{id}>"))
}

/// The message a report returns or quotes: the `message/rfc822` part or the
/// `text/rfc822-headers` part, whichever comes first.
fn returned_headers<'a>(message: &'a Message<'a>) -> Option<Message<'a>> {
    message.parts.iter().find_map(|part| match &part.body {
        PartType::Message(inner) => MessageParser::new().parse_headers(inner.raw_message()),
        PartType::Text(text) if part.is_content_type("text", "rfc822-headers") => match text {
            Cow::Borrowed(t) => MessageParser::new().parse_headers(t.as_bytes()),
            Cow::Owned(t) => MessageParser::new()
                .parse_headers(t.as_bytes())
                .map(Message::into_owned),
        },
        _ => None,
    })
}

/// The Message-ID of the message a report answers: from the returned message or its headers,
/// else the report's `In-Reply-To`, else the last of its `References`.
pub(super) fn original_message_id(message: &Message<'_>) -> Option<String> {
    returned_headers(message)
        .and_then(|m| m.message_id().and_then(bracketed))
        .or_else(|| replied_to(message))
}

/// The Message-ID a message says it answers (`In-Reply-To`, else the last `References`).
pub(super) fn replied_to(message: &Message<'_>) -> Option<String> {
    let ids = |value: &HeaderValue<'_>| -> Vec<String> {
        match value {
            HeaderValue::Text(t) => vec![t.to_string()],
            HeaderValue::TextList(list) => list.iter().map(|t| t.to_string()).collect(),
            _ => Vec::new(),
        }
    };
    ids(message.in_reply_to())
        .first()
        .and_then(|id| bracketed(id))
        .or_else(|| {
            ids(message.references())
                .last()
                .and_then(|id| bracketed(id))
        })
}

/// The report's own `Return-Path` address of the returned message, for a complaint whose
/// report leaves out `Original-Mail-From`.
fn returned_return_path(message: &Message<'_>) -> Option<ReportedAddress> {
    let returned = returned_headers(message)?;
    let value = header_text(&returned, "Return-Path")?;
    ReportedAddress::read(&value)
}

/// An ARF feedback report (a `message/feedback-report` part), read by `mail-auth`, or
/// Microsoft's older complaint without one.
pub(super) fn complaint(raw: &[u8], message: &Message<'_>) -> Option<Complaint> {
    let has_part = message
        .parts
        .iter()
        .any(|p| p.is_content_type("message", "feedback-report"));
    if !has_part {
        return microsoft_complaint(message);
    }
    let feedback = Feedback::parse_rfc5322(raw).ok()?;
    let text = |v: Option<&str>| {
        v.map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    Some(Complaint {
        feedback_type: match feedback.feedback_type() {
            ArfType::Abuse => FeedbackType::Abuse,
            ArfType::Fraud => FeedbackType::Fraud,
            ArfType::Virus => FeedbackType::Virus,
            ArfType::Other => FeedbackType::Other,
            ArfType::NotSpam => FeedbackType::NotSpam,
            ArfType::AuthFailure => FeedbackType::AuthFailure,
        },
        original_rcpt_to: feedback.original_rcpt_to().and_then(ReportedAddress::read),
        original_mail_from: feedback
            .original_mail_from()
            .and_then(ReportedAddress::read)
            .or_else(|| returned_return_path(message)),
        original_message_id: original_message_id(message),
        user_agent: text(feedback.user_agent()),
        reporting_mta: text(feedback.reporting_mta()),
        envelope_to: envelope_to(message),
    })
}

/// The header Microsoft's junk-mail reporting program (JMRP, Hotmail and Outlook.com) puts on
/// the copy of a message someone reported, naming who reported it.
const MICROSOFT_REPORTER: &str = "X-HmXmrOriginalRecipient";

/// A complaint in Microsoft's older shape: no feedback-report part, only the reported message
/// returned whole, with the reporter in its `X-HmXmrOriginalRecipient` header.
fn microsoft_complaint(message: &Message<'_>) -> Option<Complaint> {
    let returned = returned_headers(message)?;
    let reporter = header_text(&returned, MICROSOFT_REPORTER)?;
    Some(Complaint {
        feedback_type: FeedbackType::Abuse,
        original_rcpt_to: ReportedAddress::read(&reporter),
        original_mail_from: header_text(&returned, "Return-Path")
            .and_then(|v| ReportedAddress::read(&v)),
        original_message_id: returned.message_id().and_then(bracketed),
        user_agent: None,
        reporting_mta: None,
        envelope_to: envelope_to(message),
    })
}
