//! Bounces without a delivery-status part (or with an empty one): the plain-text notices of
//! Postfix, Exchange, Gmail and Google Workspace, Yahoo, qmail, Exim and the DragonFly Mail Agent. Read only from a mail system's own sender (a null return path, a
//! `MAILER-DAEMON`/`postmaster` address or a bounce subject), so that a person who forwards
//! or quotes a bounce is never taken for one.
//!
//! Each shape opens with a sentence of its own; the recipients follow it, one address per
//! line (`<a@b>:`, `a@b`) or after a shape's own words, each with the paragraph that explains
//! it, up to the copy of the returned message. A notice that names no recipient in its text
//! (Google Workspace) names them in an `X-Failed-Recipients` header.

use mail_parser::{Message, MimeHeaders};

use super::message::{
    bracketed, envelope_to, from, header_text, header_texts, original_message_id,
};
use super::{Action, Bounce, Format, Recipient, ReportedAddress, StatusCode};

/// A known plain-text bounce.
struct Shape {
    format: Format,
    /// The opening sentence, lowercased.
    opening: &'static str,
    /// What the shape says of its recipients.
    action: Action,
    /// Text before the reporting host's name, lowercased (`this is the mail system at host `).
    host_after: Option<&'static str>,
    /// Words, lowercased, that a recipient follows on the same line (`… your mail to <a@b>.`).
    recipient_after: Option<&'static str>,
}

const SHAPES: &[Shape] = &[
    Shape {
        format: Format::Postfix,
        opening: "this is the mail system at host",
        action: Action::Failed,
        host_after: Some("this is the mail system at host "),
        recipient_after: None,
    },
    Shape {
        format: Format::Qmail,
        opening: "this is the qmail-send program",
        action: Action::Failed,
        host_after: Some("this is the qmail-send program at "),
        recipient_after: None,
    },
    Shape {
        format: Format::Exchange,
        opening: "delivery has failed to these recipients or groups",
        action: Action::Failed,
        host_after: Some("generating server: "),
        recipient_after: None,
    },
    Shape {
        format: Format::Gmail,
        opening: "delivery to the following recipient failed permanently",
        action: Action::Failed,
        host_after: None,
        recipient_after: None,
    },
    Shape {
        format: Format::Gmail,
        opening: "delivery to the following recipient has been delayed",
        action: Action::Delayed,
        host_after: None,
        recipient_after: None,
    },
    Shape {
        format: Format::Yahoo,
        opening: "unable to deliver your message to the following address",
        action: Action::Failed,
        host_after: None,
        recipient_after: None,
    },
    Shape {
        format: Format::Exim,
        opening: "the following address(es) failed",
        action: Action::Failed,
        host_after: None,
        recipient_after: None,
    },
    Shape {
        format: Format::Gmail,
        opening: "** message not delivered **",
        action: Action::Failed,
        host_after: None,
        recipient_after: None,
    },
    Shape {
        format: Format::DragonFly,
        opening: "this is the dragonfly mail agent",
        action: Action::Failed,
        host_after: Some(" at "),
        recipient_after: Some("there was an error delivering your mail to "),
    },
];

/// Postfix's delay warning opens like its bounce and says this instead.
const WARNING: &str = "this is a warning only";

/// Subjects mail systems give their bounces, lowercased.
const SUBJECTS: &[&str] = &[
    "undelivered mail returned to sender",
    "delayed mail (still being retried)",
    "undeliverable:",
    "delivery status notification",
    "failure notice",
    "mail delivery failed",
    "delivery failure",
    "returned mail:",
    "mail delivery subsystem",
];

/// Local parts of the addresses mail systems send bounces from.
const DAEMONS: &[&str] = &["mailer-daemon", "mailerdaemon", "mail-daemon", "postmaster"];

/// A bounce from the message's plain text, when a mail system sent it in a known shape.
pub(super) fn bounce(message: &Message<'_>) -> Option<Bounce> {
    if !from_mail_system(message) {
        return None;
    }
    let body: String = message
        .text_bodies()
        .filter(|p| !p.is_content_type("text", "html"))
        .filter_map(|p| p.text_contents())
        .collect::<Vec<_>>()
        .join("\n");
    let lines: Vec<&str> = body.lines().collect();
    let (shape, start) = SHAPES.iter().find_map(|shape| {
        lines
            .iter()
            .position(|l| l.to_ascii_lowercase().contains(shape.opening))
            .map(|at| (shape, at))
    })?;
    let region = region(&lines[start..]);
    let delayed = region
        .iter()
        .any(|l| l.to_ascii_lowercase().contains(WARNING));
    let action = if delayed {
        Action::Delayed
    } else {
        shape.action
    };
    let mut recipients = recipients(&region[1..], action, shape.recipient_after);
    if recipients.is_empty() {
        recipients = failed_recipients(message, &region[1..], action);
    }
    if recipients.is_empty() {
        return None;
    }
    Some(Bounce {
        format: shape.format,
        recipients,
        envelope_to: envelope_to(message),
        original_message_id: original_message_id(message)
            .or_else(|| quoted_message_id(&lines[start..])),
        envelope_id: None,
        reporting_mta: shape.host_after.and_then(|after| host(&region, after)),
    })
}

/// Whether the message comes from a mail system rather than a person.
fn from_mail_system(message: &Message<'_>) -> bool {
    let null_return_path = header_text(message, "Return-Path").is_some_and(|p| {
        p.trim_matches(|c: char| c == '<' || c == '>' || c.is_whitespace())
            .is_empty()
    });
    let daemon = from(message).is_some_and(|f| {
        let local = f
            .as_str()
            .split('@')
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        DAEMONS.contains(&local.as_str()) || local.starts_with("microsoftexchange")
    });
    let subject = message
        .subject()
        .map(|s| s.trim().to_ascii_lowercase())
        .is_some_and(|s| SUBJECTS.iter().any(|b| s.starts_with(b)));
    null_return_path || daemon || subject
}

/// The lines of the notice itself: up to the copy of the returned message.
fn region<'a>(lines: &[&'a str]) -> Vec<&'a str> {
    let ends = |line: &&str| {
        let l = line.trim().to_ascii_lowercase();
        [
            "--",
            "==",
            "original message",
            "received:",
            "return-path:",
            "message-id:",
        ]
        .iter()
        .any(|p| l.starts_with(p))
    };
    let end = lines
        .iter()
        .skip(1)
        .position(ends)
        .map_or(lines.len(), |i| i + 1);
    lines[..end].to_vec()
}

/// The address a line opens with, and the text after it when the address ends in `:`.
fn address_line(line: &str) -> Option<(ReportedAddress, &str)> {
    let line = line.trim();
    let (first, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim();
    let (first, said) = match first.strip_suffix(':') {
        Some(address) => (address, rest),
        None => {
            let noise = rest.is_empty() || rest.starts_with('(') || rest.starts_with("<mailto:");
            if !noise {
                return None;
            }
            (first, "")
        }
    };
    match ReportedAddress::read(first)? {
        valid @ ReportedAddress::Valid(_) => Some((valid, said)),
        ReportedAddress::Malformed(_) => None,
    }
}

/// The valid address on a line after a shape's words for it (`… your mail to <a@b>.`).
fn address_after(line: &str, words: &str) -> Option<ReportedAddress> {
    // Lowercasing ASCII keeps every byte where it was, so the offset holds in `line`.
    let at = line.to_ascii_lowercase().find(words)?;
    let rest = line.get(at + words.len()..)?.trim().trim_end_matches('.');
    ReportedAddress::read(rest).filter(|a| a.valid().is_some())
}

/// The recipients of a notice, each once, with the paragraph that explains it.
fn recipients(lines: &[&str], action: Action, after: Option<&str>) -> Vec<Recipient> {
    let mut entries: Vec<(ReportedAddress, Vec<String>)> = Vec::new();
    let mut open = false;
    for line in lines {
        // An indented line inside a paragraph continues it, even when it opens with the
        // address (Postfix folds `said: 550 5.1.1` / `    <a@b>: Recipient address rejected`).
        let continues = open
            && line.starts_with([' ', '\t'])
            && entries.last().is_some_and(|(_, p)| !p.is_empty());
        let found = || {
            address_line(line).or_else(|| {
                after
                    .and_then(|words| address_after(line, words))
                    .map(|a| (a, ""))
            })
        };
        if !continues && let Some((address, said)) = found() {
            let text = (!said.is_empty()).then(|| said.to_owned());
            entries.push((address, text.into_iter().collect()));
            open = true;
        } else if line.trim().is_empty() {
            // A blank line right after the address opens its paragraph; a later one ends it.
            open = open && entries.last().is_some_and(|(_, p)| p.is_empty());
        } else if open && let Some((_, paragraph)) = entries.last_mut() {
            paragraph.push(line.trim().to_owned());
        }
    }
    let coded = |text: &Option<String>| text.as_deref().and_then(StatusCode::find_in);
    let mut merged: Vec<(ReportedAddress, Option<String>)> = Vec::new();
    for (address, paragraph) in entries {
        let own = (!paragraph.is_empty()).then(|| paragraph.join(" "));
        match merged.iter_mut().find(|(a, _)| *a == address) {
            // Exchange names each recipient twice: the second time with the server's answer.
            Some((_, seen)) => {
                if coded(seen).is_none() && coded(&own).is_some() {
                    *seen = own;
                }
            }
            None => merged.push((address, own)),
        }
    }
    let fallback = first_coded_paragraph(lines);
    merged
        .into_iter()
        .map(|(address, own)| {
            let (diagnostic, status) = match (coded(&own), &fallback) {
                (Some(status), _) => (own, status),
                (None, Some((paragraph, status))) => (Some(paragraph.clone()), *status),
                (None, None) => (own, StatusCode::unspecified(default_class(action))),
            };
            let status = match (action, status.class()) {
                // A warning's verdict is "still trying", whatever code its text quotes.
                (Action::Delayed, 5) => StatusCode::unspecified(4),
                _ => status,
            };
            Recipient {
                address,
                action,
                status,
                diagnostic,
                remote_mta: None,
            }
        })
        .collect()
}

/// The recipients an `X-Failed-Recipients` header names, for a notice whose text names none;
/// each with the notice's coded paragraph, else the answer it quotes (`The response was:`).
fn failed_recipients(message: &Message<'_>, lines: &[&str], action: Action) -> Vec<Recipient> {
    let mut addresses: Vec<ReportedAddress> = Vec::new();
    for value in header_texts(message, "X-Failed-Recipients") {
        for address in value.split(',').filter_map(ReportedAddress::read) {
            if address.valid().is_some() && !addresses.contains(&address) {
                addresses.push(address);
            }
        }
    }
    let (diagnostic, status) = match first_coded_paragraph(lines) {
        Some((paragraph, status)) => (Some(paragraph), status),
        None => (
            quoted_response(lines),
            StatusCode::unspecified(default_class(action)),
        ),
    };
    addresses
        .into_iter()
        .map(|address| Recipient {
            address,
            action,
            status,
            diagnostic: diagnostic.clone(),
            remote_mta: None,
        })
        .collect()
}

/// The paragraph after a line that ends `the response was:`, unfolded.
fn quoted_response(lines: &[&str]) -> Option<String> {
    let at = lines
        .iter()
        .position(|l| l.trim().to_ascii_lowercase().ends_with("the response was:"))?;
    let paragraph: Vec<&str> = lines[at + 1..]
        .iter()
        .map(|l| l.trim())
        .skip_while(|l| l.is_empty())
        .take_while(|l| !l.is_empty())
        .collect();
    (!paragraph.is_empty()).then(|| paragraph.join(" "))
}

/// The class a shape's action stands for when its text gives no code.
fn default_class(action: Action) -> u8 {
    match action {
        Action::Delayed => 4,
        _ => 5,
    }
}

/// The first paragraph of the notice that holds a status code, unfolded, with its code.
fn first_coded_paragraph(lines: &[&str]) -> Option<(String, StatusCode)> {
    lines
        .split(|l| l.trim().is_empty())
        .map(|p| p.iter().map(|l| l.trim()).collect::<Vec<_>>().join(" "))
        .find_map(|p| StatusCode::find_in(&p).map(|s| (p, s)))
}

/// The host named after `after` (lowercased) on a line, without a final dot.
fn host(lines: &[&str], after: &str) -> Option<String> {
    lines.iter().find_map(|line| {
        let at = line.to_ascii_lowercase().find(after)?;
        let rest = line.get(at + after.len()..)?;
        let host = rest.split_whitespace().next()?.trim_end_matches(['.', ',']);
        (!host.is_empty()).then(|| host.to_owned())
    })
}

/// The Message-ID of a returned message copied into the text after the notice.
fn quoted_message_id(lines: &[&str]) -> Option<String> {
    const NAME: &str = "message-id:";
    lines.iter().find_map(|line| {
        let line = line.trim();
        let name = line.get(..NAME.len())?;
        if !name.eq_ignore_ascii_case(NAME) {
            return None;
        }
        bracketed(line.get(NAME.len()..)?)
    })
}
