//! RFC 3464 delivery status notifications: the fields of a `message/delivery-status` part
//! (and its RFC 6533 `message/global-delivery-status` twin).
//!
//! The part is a block of per-message fields, then one block per recipient, blocks separated
//! by blank lines; a field may continue on lines that start with white space, and (as some
//! gateways write it) on lines that are no field at all.

use mail_parser::{Message, MimeHeaders};

use super::message::{envelope_to, original_message_id};
use super::{Action, Bounce, Format, Recipient, ReportedAddress, StatusCode};

/// A bounce from the message's delivery-status part, when it has one naming a recipient.
pub(super) fn bounce(message: &Message<'_>) -> Option<Bounce> {
    let part = message.parts.iter().find(|p| {
        p.is_content_type("message", "delivery-status")
            || p.is_content_type("message", "global-delivery-status")
    })?;
    let text = String::from_utf8_lossy(part.contents());
    let mut blocks = blocks(&text).into_iter();
    let per_message = blocks.next().unwrap_or_default();
    let recipients: Vec<Recipient> = blocks.filter_map(|b| recipient(&b)).collect();
    if recipients.is_empty() {
        return None;
    }
    Some(Bounce {
        format: Format::Dsn,
        recipients,
        envelope_to: envelope_to(message),
        original_message_id: original_message_id(message),
        envelope_id: field(&per_message, "Original-Envelope-Id").map(str::to_owned),
        reporting_mta: field(&per_message, "Reporting-MTA").map(|v| typed_value(v).to_owned()),
    })
}

type Block = Vec<(String, String)>;

/// The blocks of fields, each field unfolded. A line that is not a field (no `name:` before
/// it) continues the field before it, as Symantec's gateway writes a multi-line
/// `Diagnostic-Code`; such a line with no field before it is skipped.
fn blocks(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut current: Block = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !current.is_empty() {
                blocks.push(std::mem::take(&mut current));
            }
            continue;
        }
        let field = line
            .split_once(':')
            .filter(|(name, _)| !line.starts_with([' ', '\t']) && is_field_name(name.trim_end()));
        match field {
            Some((name, value)) => {
                current.push((name.trim().to_owned(), value.trim().to_owned()));
            }
            None => {
                if let Some((_, value)) = current.last_mut() {
                    value.push(' ');
                    value.push_str(line.trim());
                }
            }
        }
    }
    if !current.is_empty() {
        blocks.push(current);
    }
    blocks
}

/// Whether a text is a field name (RFC 5322 §3.6.8: printable ASCII, no space or colon).
fn is_field_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

/// The first value of a field, by case-insensitive name, if not empty.
fn field<'a>(block: &'a Block, name: &str) -> Option<&'a str> {
    block
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// The value after an RFC 3464 type (`dns; mx.example.org` → `mx.example.org`).
fn typed_value(value: &str) -> &str {
    match value.split_once(';') {
        Some((_, rest)) => rest.trim(),
        None => value.trim(),
    }
}

/// One recipient block; `None` when it names no recipient.
fn recipient(block: &Block) -> Option<Recipient> {
    let address = field(block, "Final-Recipient")
        .or_else(|| field(block, "Original-Recipient"))
        .and_then(ReportedAddress::read)?;
    let diagnostic = field(block, "Diagnostic-Code").map(|v| typed_value(v).to_owned());
    let status = field(block, "Status")
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse::<StatusCode>().ok())
        .or_else(|| diagnostic.as_deref().and_then(StatusCode::find_in));
    let action = field(block, "Action").and_then(Action::parse);
    // RFC 3464 makes both fields required; when one is missing the other stands for it.
    let (action, status) = match (action, status) {
        (Some(a), Some(s)) => (a, s),
        (Some(a), None) => (a, StatusCode::unspecified(implied_class(a))),
        (None, Some(s)) => (implied_action(s.class()), s),
        (None, None) => return None,
    };
    Some(Recipient {
        address,
        action,
        status,
        diagnostic,
        remote_mta: field(block, "Remote-MTA").map(|v| typed_value(v).to_owned()),
    })
}

/// The status class an action implies: the host gave up (5), is retrying (4), or succeeded.
fn implied_class(action: Action) -> u8 {
    match action {
        Action::Failed => 5,
        Action::Delayed => 4,
        Action::Delivered | Action::Relayed | Action::Expanded => 2,
    }
}

/// The action a status class implies.
fn implied_action(class: u8) -> Action {
    match class {
        5 => Action::Failed,
        4 => Action::Delayed,
        _ => Action::Delivered,
    }
}
