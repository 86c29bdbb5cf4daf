//! Building RFC 5322 messages with lettre: multipart/alternative with a text and an HTML part,
//! headers encoded by lettre (RFC 2047 for non-ASCII subjects and names).

use lettre::Message;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use rand::RngCore;

/// A rendered email.
#[derive(Debug, Clone)]
pub struct EmailContent {
    pub subject: String,
    pub html: String,
    pub text: String,
}

/// A fresh Message-ID, `<32 hex digits@domain>`, fixed when the delivery row is written so a
/// retry carries the same one.
pub fn new_message_id(domain: &str) -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("<{hex}@{domain}>")
}

/// Builds the message. The Date header is stamped now, at hand-off to the transport.
/// `extra` headers are added as given (names are ASCII; values are encoded by lettre).
pub fn build_message(
    from: &Mailbox,
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
    let mut builder = Message::builder();
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
                        .body(content.text),
                )
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_HTML)
                        .body(content.html),
                ),
        )
}
