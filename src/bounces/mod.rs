//! Reading what comes back to the return path: a delivery status notification (RFC 3464), a
//! feedback report (RFC 5965 ARF), one of the common non-standard bounces, or an automatic
//! reply (RFC 3834). Pure functions over the raw bytes of one message: no I/O, no database.
//!
//! ```text
//!   raw bytes ──mail-parser──▶ Message
//!      │ a message/feedback-report part ─mail-auth─▶ Complaint
//!      │ a message/delivery-status part ───dsn.rs──▶ Bounce (format Dsn)
//!      │ from a mailer daemon, with a known text ──text.rs──▶ Bounce (Postfix, Exchange, …)
//!      │ an auto-reply header or subject ──autoreply.rs──▶ AutoReply
//!      └ anything else ───────────────────────────▶ Unknown (never guessed as a bounce)
//! ```
//!
//! The order matters: bounces themselves carry `Auto-Submitted: auto-replied` (Postfix,
//! Gmail), so the reports are read first and the auto-reply signs only after; a
//! delivery-status report that names no recipient stays unknown, never an auto-reply.
//!
//! `providers.rs` reads the providers' event webhooks (Postmark, Mailgun, SendGrid) into reports
//! after checking their credentials; `ses.rs` checks Amazon SNS messages' signatures and reads
//! the SES events they carry. `record.rs` then ties what was read to the delivery it
//! answers and records, through the store, what it calls for.

mod autoreply;
mod dsn;
mod message;
mod providers;
mod record;
mod ses;
mod text;

#[cfg(test)]
mod tests;

use std::fmt;

use mail_parser::MessageParser;

use crate::domain::EmailAddress;

pub use providers::{
    MAILGUN_WINDOW_MS, Refused, SeenTokens, mailgun_event, postmark_authorized, postmark_event,
    sendgrid_events,
};
pub use record::{Incoming, Notice, Recorded, Recorder};
pub use ses::{SnsKey, SnsKind, SnsMessage, SnsUrl, ses_event};

/// What one message returned to the envelope sender turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// A delivery status report: failed, delayed (or even delivered) recipients.
    Bounce(Bounce),
    /// A feedback report: someone (or their provider) reported the message.
    Complaint(Complaint),
    /// An automatic reply from a person's mailbox: not a bounce, not a complaint.
    AutoReply(AutoReply),
    /// Nothing this module recognises; kept for review, never acted on.
    Unknown {
        /// Why it was not recognised, for the person who reviews it.
        reason: String,
    },
}

/// A delivery status report with what matching needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounce {
    /// The shape it was read from.
    pub format: Format,
    /// One entry per recipient the report speaks of.
    pub recipients: Vec<Recipient>,
    /// The addresses the report was delivered to (the VERP return path, from `X-Original-To`,
    /// `Delivered-To`, `Envelope-To` and `To`), those that are valid addresses.
    pub envelope_to: Vec<EmailAddress>,
    /// The Message-ID of the message that failed, angle brackets included.
    pub original_message_id: Option<String>,
    /// The envelope id given at sending (`Original-Envelope-Id`, RFC 3461 ENVID).
    pub envelope_id: Option<String>,
    /// The host that wrote the report (`Reporting-MTA`, or the host a text bounce names).
    pub reporting_mta: Option<String>,
}

impl Bounce {
    /// The recipients that failed, each with whether the failure is hard or soft.
    pub fn failures(&self) -> impl Iterator<Item = (&Recipient, Severity)> {
        self.recipients
            .iter()
            .filter_map(|r| r.failure().map(|s| (r, s)))
    }
}

/// The shape a bounce was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// An RFC 3464 `message/delivery-status` part, whoever wrote it.
    Dsn,
    /// Postfix's plain-text bounce ("This is the mail system at host …").
    Postfix,
    /// Exchange's plain-text non-delivery report ("Delivery has failed to these recipients").
    Exchange,
    /// Gmail's and Google Workspace's plain-text failures ("Delivery to the following
    /// recipient failed permanently", "** Message not delivered **").
    Gmail,
    /// Yahoo's plain-text bounce ("Sorry, we were unable to deliver your message").
    Yahoo,
    /// qmail's plain-text bounce ("Hi. This is the qmail-send program").
    Qmail,
    /// Exim's plain-text bounce ("The following address(es) failed").
    Exim,
    /// The DragonFly Mail Agent's plain-text bounce ("This is the DragonFly Mail Agent").
    DragonFly,
}

/// One recipient of a delivery status report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The address delivery was attempted to (`Final-Recipient`, else `Original-Recipient`).
    pub address: ReportedAddress,
    /// What the reporting host did (RFC 3464 §2.3.3).
    pub action: Action,
    /// The RFC 3463 status (`5.1.1`).
    pub status: StatusCode,
    /// The remote server's answer or the reporting host's explanation, unfolded.
    pub diagnostic: Option<String>,
    /// The host that gave the answer (`Remote-MTA`).
    pub remote_mta: Option<String>,
}

impl Recipient {
    /// Hard or soft when delivery failed; `None` when it did not (delayed, delivered, relayed).
    pub fn failure(&self) -> Option<Severity> {
        match (self.action, self.status.class()) {
            (Action::Failed, 5) => Some(Severity::Hard),
            (Action::Failed, 4) => Some(Severity::Soft),
            _ => None,
        }
    }
}

/// How final a failure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// A permanent failure (5.x.x): the address will not work.
    Hard,
    /// A transient failure (4.x.x) the reporting host gave up on.
    Soft,
}

/// What the reporting host did for a recipient (RFC 3464 §2.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Not delivered, and no further attempts will be made.
    Failed,
    /// Not delivered yet; the host keeps trying.
    Delayed,
    /// Delivered to the recipient's mailbox.
    Delivered,
    /// Handed on to a system that does not report delivery.
    Relayed,
    /// Delivered and forwarded on to other addresses.
    Expanded,
}

impl Action {
    /// The action a DSN field names, case-insensitively.
    pub fn parse(word: &str) -> Option<Self> {
        let word = word.trim();
        [
            ("failed", Self::Failed),
            ("delayed", Self::Delayed),
            ("delivered", Self::Delivered),
            ("relayed", Self::Relayed),
            ("expanded", Self::Expanded),
        ]
        .into_iter()
        .find(|(w, _)| word.eq_ignore_ascii_case(w))
        .map(|(_, a)| a)
    }
}

/// An RFC 3463 enhanced status code: `class.subject.detail`, the class 2, 4 or 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatusCode {
    class: u8,
    subject: u16,
    detail: u16,
}

impl StatusCode {
    /// The code for a class with nothing more said (`5.0.0`).
    fn unspecified(class: u8) -> Self {
        Self {
            class,
            subject: 0,
            detail: 0,
        }
    }

    /// 2 (success), 4 (persistent transient failure) or 5 (permanent failure).
    pub fn class(&self) -> u8 {
        self.class
    }

    /// The subject: 1 addressing, 2 mailbox, 3 mail system, 4 network, 5 protocol, 6 content,
    /// 7 security or policy.
    pub fn subject(&self) -> u16 {
        self.subject
    }

    /// The detail within the subject.
    pub fn detail(&self) -> u16 {
        self.detail
    }

    /// The first enhanced status code in a text (`… 550 5.1.1 <a@b>: …`), else the class of
    /// its first SMTP reply code (`550` gives `5.0.0`).
    fn find_in(text: &str) -> Option<Self> {
        let words = || {
            text.split(|c: char| !(c.is_ascii_digit() || c == '.'))
                .map(|w| w.trim_end_matches('.'))
        };
        words().find_map(|w| w.parse().ok()).or_else(|| {
            words()
                .find(|w| w.len() == 3 && (w.starts_with('4') || w.starts_with('5')))
                .map(|w| Self::unspecified(w.as_bytes()[0] - b'0'))
        })
    }
}

/// A text that is not an RFC 3463 status code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a status code (class.subject.detail): {0:?}")]
pub struct NotAStatusCode(String);

impl std::str::FromStr for StatusCode {
    type Err = NotAStatusCode;

    fn from_str(s: &str) -> Result<Self, NotAStatusCode> {
        let bad = || NotAStatusCode(s.to_owned());
        let mut parts = s.trim().split('.');
        let number = |p: Option<&str>| -> Result<u16, NotAStatusCode> {
            let p = p.ok_or_else(bad)?;
            if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            p.parse().map_err(|_| bad())
        };
        let class = number(parts.next())?;
        let subject = number(parts.next())?;
        let detail = number(parts.next())?;
        if parts.next().is_some() || ![2, 4, 5].contains(&class) {
            return Err(bad());
        }
        Ok(Self {
            class: class as u8,
            subject,
            detail,
        })
    }
}

impl fmt::Display for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// An address as a report gives it: parsed where it is a valid address, else as written
/// (reports carry redacted, local-only or non-Internet addresses too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportedAddress {
    /// A valid address.
    Valid(EmailAddress),
    /// Text that is not a valid address, trimmed.
    Malformed(String),
}

impl ReportedAddress {
    /// Reads `rfc822; a@b`, `<a@b>` or `a@b`.
    fn read(text: &str) -> Option<Self> {
        let text = text.trim();
        let text = match text.split_once(';') {
            Some((kind, rest)) if !kind.contains('@') => rest.trim(),
            _ => text,
        };
        let text = text.trim_start_matches('<').trim_end_matches('>').trim();
        if text.is_empty() {
            return None;
        }
        Some(match EmailAddress::parse(text) {
            Ok(address) => Self::Valid(address),
            Err(_) => Self::Malformed(text.to_owned()),
        })
    }

    /// The valid address, if it is one.
    pub fn valid(&self) -> Option<&EmailAddress> {
        match self {
            Self::Valid(address) => Some(address),
            Self::Malformed(_) => None,
        }
    }

    /// The address as text.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Valid(address) => address.as_str(),
            Self::Malformed(text) => text,
        }
    }
}

/// A feedback report (RFC 5965): a person marked the message as spam, or a provider reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Complaint {
    /// What kind of report it is (`Feedback-Type`).
    pub feedback_type: FeedbackType,
    /// Who received the reported message (`Original-Rcpt-To`); providers often redact it.
    pub original_rcpt_to: Option<ReportedAddress>,
    /// The envelope sender of the reported message (`Original-Mail-From`, else the returned
    /// message's `Return-Path`): the VERP address it was sent from.
    pub original_mail_from: Option<ReportedAddress>,
    /// The Message-ID of the reported message, angle brackets included.
    pub original_message_id: Option<String>,
    /// The software that wrote the report (`User-Agent`).
    pub user_agent: Option<String>,
    /// The host that wrote the report (`Reporting-MTA`).
    pub reporting_mta: Option<String>,
    /// The addresses the report was delivered to, those that are valid addresses.
    pub envelope_to: Vec<EmailAddress>,
}

/// The `Feedback-Type` of an ARF report (RFC 5965 §7.3, RFC 6591).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedbackType {
    /// Unsolicited mail: the "this is spam" button.
    Abuse,
    /// Fraud or phishing.
    Fraud,
    /// The message carried a virus.
    Virus,
    /// Any other kind of feedback.
    Other,
    /// The reporter says it is not spam.
    NotSpam,
    /// An authentication failure report (RFC 6591), not a person's complaint.
    AuthFailure,
}

/// An automatic reply from a mailbox (vacation, out of office, challenge-response).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoReply {
    /// Which kind of automatic reply.
    pub kind: AutoReplyKind,
    /// The header or subject that gave it away (`Auto-Submitted: auto-replied`).
    pub cue: String,
    /// Who sent the reply (`From`).
    pub from: Option<ReportedAddress>,
    /// The Message-ID it answers (`In-Reply-To`, else the last of `References`).
    pub original_message_id: Option<String>,
    /// The addresses the reply was delivered to, those that are valid addresses.
    pub envelope_to: Vec<EmailAddress>,
}

/// The kinds of automatic reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoReplyKind {
    /// A vacation or out-of-office notice.
    OutOfOffice,
    /// A challenge-response system asking the sender to prove they are a person.
    Challenge,
    /// Another automatic reply (RFC 3834 `Auto-Submitted: auto-replied`, `X-Autoreply`, …).
    Other,
}

/// What a raw message returned to the envelope sender is; never panics, whatever the bytes.
pub fn parse(raw: &[u8]) -> Report {
    let Some(message) = MessageParser::new().parse(raw) else {
        return unknown("not an email message: no header was found");
    };
    if let Some(complaint) = message::complaint(raw, &message) {
        return Report::Complaint(complaint);
    }
    if let Some(bounce) = dsn::bounce(&message) {
        return Report::Bounce(bounce);
    }
    if let Some(bounce) = text::bounce(&message) {
        return Report::Bounce(bounce);
    }
    let report_type = message::report_type(&message);
    // A mail system's report, though it says `auto-replied`, is never a person's auto-reply.
    if report_type.as_deref() == Some("delivery-status") {
        return unknown("a delivery status report that names no recipient this reader found");
    }
    if let Some(reply) = autoreply::auto_reply(&message) {
        return Report::AutoReply(reply);
    }
    if report_type.is_some_and(|t| t == "disposition-notification") {
        return unknown("a read receipt (RFC 8098 disposition notification)");
    }
    unknown(
        "no delivery status, feedback report, known bounce text or auto-reply sign: \
         a message from a person, or an unknown kind of report",
    )
}

fn unknown(reason: &str) -> Report {
    Report::Unknown {
        reason: reason.to_owned(),
    }
}
