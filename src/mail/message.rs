//! Building RFC 5322 messages with lettre: multipart/alternative with a text and an HTML part,
//! headers encoded by lettre (RFC 2047 for non-ASCII subjects and names).

use lettre::address::Envelope;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::{Address, Message};

/// A rendered email.
#[derive(Debug, Clone)]
pub struct EmailContent {
    pub subject: String,
    pub html: String,
    pub text: String,
}

/// Builds the message, with `sender` as its envelope sender (the Return-Path bounces go to).
/// The Date header is stamped now, at hand-off to the transport. `extra` headers are added as
/// given (names are ASCII; values are encoded by lettre).
pub fn build_message(
    from: &Mailbox,
    sender: &Address,
    mut to: Mailbox,
    message_id: &str,
    content: EmailContent,
    extra: Vec<(&'static str, String)>,
) -> Result<Message, lettre::error::Error> {
    // A subject is one line: anything a template or a person slipped in to break it goes.
    let subject: String = content
        .subject
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    // A display name is kept to one line as well: lettre panics on a line break in it.
    to.name = to.name.map(|name| {
        name.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    });
    let envelope = Envelope::new(Some(sender.clone()), vec![to.email.clone()])?;
    let mut builder = Message::builder().envelope(envelope);
    for (name, value) in extra {
        let value: String = value.chars().filter(|c| !c.is_control()).collect();
        builder = builder.raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str(name),
            value,
        ));
    }
    builder
        .from(from.clone())
        .to(to)
        .subject(subject.trim())
        .message_id(Some(message_id.to_owned()))
        .date_now()
        .multipart(
            MultiPart::alternative()
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_PLAIN)
                        .body(crlf_line_endings(content.text)),
                )
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_HTML)
                        .body(crlf_line_endings(content.html)),
                ),
        )
}

/// A plain-text notice to the owner (an alert), from `from` to `to`, marked
/// `Auto-Submitted: auto-generated` (RFC 3834) so that no vacation reply answers it.
pub fn build_notice(
    from: &Mailbox,
    to: lettre::Address,
    message_id: &str,
    subject: &str,
    text: String,
) -> Result<Message, lettre::error::Error> {
    let subject: String = subject
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    Message::builder()
        .from(from.clone())
        .to(Mailbox::new(None, to))
        .subject(subject.trim())
        .message_id(Some(message_id.to_owned()))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("Auto-Submitted"),
            "auto-generated".to_owned(),
        ))
        .date_now()
        .singlepart(
            SinglePart::builder()
                .header(ContentType::TEXT_PLAIN)
                .body(crlf_line_endings(text)),
        )
}

/// `text` with every line ending as CRLF, in one pass, so lettre finds nothing to change
/// (its own pass inserts each `\r` in place; measured: BENCHMARKS.md, "Measurements behind the code"). Given CRLF
/// already, it copies nothing.
fn crlf_line_endings(text: String) -> String {
    let mut out: Option<String> = None;
    let mut copied = 0;
    for (i, _) in text.match_indices('\n') {
        if i > 0 && text.as_bytes()[i - 1] == b'\r' {
            continue;
        }
        let out = out.get_or_insert_with(|| String::with_capacity(text.len() + text.len() / 32));
        out.push_str(&text[copied..i]);
        out.push_str("\r\n");
        copied = i + 1;
    }
    match out {
        None => text,
        Some(mut out) => {
            out.push_str(&text[copied..]);
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::crlf_line_endings;

    #[test]
    fn line_endings_become_crlf_once() {
        assert_eq!(crlf_line_endings("a\nb\r\nc\n".into()), "a\r\nb\r\nc\r\n");
        assert_eq!(crlf_line_endings("\n\nä\n".into()), "\r\n\r\nä\r\n");
        assert_eq!(crlf_line_endings("no break".into()), "no break");
        assert_eq!(crlf_line_endings("a\r\n".into()), "a\r\n");
        assert_eq!(crlf_line_endings("\r\nx\ny".into()), "\r\nx\r\ny");
        assert_eq!(crlf_line_endings(String::new()), "");
    }
}
