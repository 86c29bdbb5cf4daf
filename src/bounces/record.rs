//! Ties each report to the delivery it answers and records what it calls for: the VERP tag of
//! the address it came back to first, then the provider's id of the message (found in the
//! relay's reply to the recipient's deliveries), then the original Message-ID it quotes. An unmatched
//! report is kept for review and acts on nothing. A bounce of a send's delivery counts towards
//! that send's failures, and a send whose failures pass the threshold pauses itself.

use sha2::{Digest, Sha256};

use crate::clock::{Clock, Millis};
use crate::config::Config;
use crate::domain::{BounceAction, BounceKind, BounceSource, EmailAddress, MatchedBy};
use crate::links::Links;
use crate::store::{BouncedDelivery, NewBounce, SoftBounceRule, Store};

use super::{Action, FeedbackType, Report, Severity, parse};

/// The most of a report's text kept for review (a bounce may carry the whole returned email).
const RAW_LIMIT: usize = 256 * 1024;

/// What one report says of one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub kind: BounceKind,
    /// The address that failed or complained, as the report names it.
    pub recipient: Option<String>,
    /// The RFC 3463 status (`5.1.1`), or the provider's type.
    pub status: Option<String>,
    /// The server's words (`550 5.1.1 <x@example.org>: user unknown`).
    pub diagnostic: Option<String>,
}

/// One report as it arrived, however it came: a message (a DSN, a feedback report, an
/// auto-reply) or a provider's event.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub source: BounceSource,
    /// Identifies the report itself (a hash of the message, or the provider's event id): the
    /// same report arriving twice is recorded once.
    pub report_key: String,
    /// The addresses the report was delivered to: a VERP address among them names the delivery.
    pub envelope_to: Vec<String>,
    /// The original message's Message-ID, as quoted in the report.
    pub original_message_id: Option<String>,
    /// The provider's own id of the message (Postmark's `MessageID`), as its relay named it in
    /// the reply to our delivery (`250 Ok: queued as ID`).
    pub provider_id: Option<String>,
    /// The report as it came, kept for `bounces.keep_days`.
    pub raw: Option<String>,
    pub notices: Vec<Notice>,
}

impl Incoming {
    /// A message that came back to the return path (or was saved by hand), read with
    /// [`parse`]: each failed or delayed recipient of a bounce, a complaint, an auto-reply, or
    /// one unknown notice for the owner to read. A report is known again by its own
    /// Message-ID, or else by a hash of its bytes.
    pub fn from_message(raw: &[u8], source: BounceSource) -> Self {
        let report_key = mail_parser::MessageParser::default()
            .parse_headers(raw)
            .and_then(|m| m.message_id().map(|id| format!("message-id:{id}")))
            .unwrap_or_else(|| format!("sha256:{}", crate::domain::hex(&Sha256::digest(raw))));
        let text = String::from_utf8_lossy(raw);
        let raw_text = if text.len() > RAW_LIMIT {
            let mut end = RAW_LIMIT;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            format!(
                "{}\n[… {} more bytes not kept]",
                &text[..end],
                text.len() - end
            )
        } else {
            text.into_owned()
        };
        let unknown = |reason: String| Notice {
            kind: BounceKind::Unknown,
            recipient: None,
            status: None,
            diagnostic: Some(reason),
        };
        let (envelope_to, original_message_id, notices) = match parse(raw) {
            Report::Bounce(bounce) => {
                let mut notices: Vec<Notice> = bounce
                    .recipients
                    .iter()
                    .filter_map(|r| {
                        let kind = match (r.failure(), r.action) {
                            (Some(Severity::Hard), _) => BounceKind::Hard,
                            (Some(Severity::Soft), _) => BounceKind::Soft,
                            (None, Action::Delayed) => BounceKind::Delayed,
                            (None, _) => return None,
                        };
                        Some(Notice {
                            kind,
                            recipient: Some(r.address.as_str().to_owned()),
                            status: Some(r.status.to_string()),
                            diagnostic: r.diagnostic.clone(),
                        })
                    })
                    .collect();
                if notices.is_empty() {
                    notices.push(unknown(
                        "a delivery report that names no failed or delayed recipient".into(),
                    ));
                }
                (bounce.envelope_to, bounce.original_message_id, notices)
            }
            Report::Complaint(complaint) => {
                let kind = match complaint.feedback_type {
                    FeedbackType::Abuse
                    | FeedbackType::Fraud
                    | FeedbackType::Virus
                    | FeedbackType::Other => BounceKind::Complaint,
                    // "not spam" and an authentication failure report are no one's wish to leave.
                    FeedbackType::NotSpam | FeedbackType::AuthFailure => BounceKind::Unknown,
                };
                let mut envelope_to = complaint.envelope_to;
                // A feedback loop mails its report to the address the provider has on file;
                // the VERP address is the returned message's envelope sender.
                if let Some(from) = complaint
                    .original_mail_from
                    .as_ref()
                    .and_then(|a| a.valid())
                {
                    envelope_to.push(from.clone());
                }
                let notice = Notice {
                    kind,
                    recipient: complaint
                        .original_rcpt_to
                        .as_ref()
                        .map(|a| a.as_str().to_owned()),
                    status: Some(format!("feedback: {:?}", complaint.feedback_type).to_lowercase()),
                    diagnostic: complaint.user_agent.clone(),
                };
                (envelope_to, complaint.original_message_id, vec![notice])
            }
            Report::AutoReply(reply) => {
                let notice = Notice {
                    kind: BounceKind::AutoReply,
                    recipient: reply.from.as_ref().map(|a| a.as_str().to_owned()),
                    status: Some(format!("{:?}", reply.kind).to_lowercase()),
                    diagnostic: Some(reply.cue.clone()),
                };
                (reply.envelope_to, reply.original_message_id, vec![notice])
            }
            Report::Unknown { reason } => (Vec::new(), None, vec![unknown(reason)]),
        };
        Self {
            source,
            report_key,
            envelope_to: envelope_to.iter().map(|a| a.as_str().to_owned()).collect(),
            original_message_id,
            provider_id: None,
            raw: Some(raw_text),
            notices,
        }
    }
}

/// What became of one notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The row written; `None` when the same report was recorded before (and nothing was done
    /// again).
    pub id: Option<i64>,
    pub kind: BounceKind,
    pub matched_by: Option<MatchedBy>,
    pub action: Option<BounceAction>,
}

/// Records reports against the store, under the configured return path and policy.
#[derive(Debug, Clone)]
pub struct Recorder {
    store: Store,
    links: Links,
    clock: Clock,
    soft_limit: u32,
    soft_days: u32,
    pause_after_failures: u32,
    pause_failure_percent: u32,
    /// Complaints on this share of a send's deliveries alert the owner.
    complaint_percent: f64,
}

const DAY_MS: Millis = 86_400_000;

impl Recorder {
    /// A recorder with the policy of `config` (`[bounces]`, `worker.pause_*`).
    pub fn new(store: Store, links: Links, clock: Clock, config: &Config) -> Self {
        Self {
            store,
            links,
            clock,
            soft_limit: config.bounces.soft_limit,
            soft_days: config.bounces.soft_days,
            pause_after_failures: config.worker.pause_after_failures,
            pause_failure_percent: config.worker.pause_failure_percent,
            complaint_percent: config.alerts.complaint_percent,
        }
    }

    /// Matches and records every notice of one report, pauses a send its bounces push past
    /// the failure threshold, and alerts the owner of a send whose bounces or complaints pass
    /// their share.
    pub async fn record(&self, report: &Incoming) -> Result<Vec<Recorded>, sqlx::Error> {
        let now = self.clock.now_ms();
        let delivery = self.delivery_of(report).await?;
        let rule = SoftBounceRule {
            limit: self.soft_limit,
            since: now - i64::from(self.soft_days) * DAY_MS,
        };
        let mut recorded = Vec::with_capacity(report.notices.len());
        for (i, notice) in report.notices.iter().enumerate() {
            let dedup_key = match &delivery {
                Some((d, _)) => format!("delivery:{}:{}", d.id, notice.kind),
                None => format!("report:{}:{i}", report.report_key),
            };
            let email_hash = delivery
                .as_ref()
                .and_then(|(d, _)| EmailAddress::parse(&d.email).ok())
                .map(|email| self.links.email_hash(&email));
            let bounce = NewBounce {
                source: report.source,
                dedup_key: &dedup_key,
                kind: notice.kind,
                recipient: notice.recipient.as_deref(),
                status: notice.status.as_deref(),
                diagnostic: notice.diagnostic.as_deref(),
                matched: delivery.as_ref().map(|(d, by)| (d, *by)),
                raw: report.raw.as_deref(),
            };
            let done = self
                .store
                .record_bounce(&bounce, email_hash.as_deref(), rule, now)
                .await?;
            if let Some((id, action)) = done {
                tracing::info!(bounce = id, kind = %notice.kind, action = %action,
                    delivery = delivery.as_ref().map(|(d, _)| d.id), "report recorded");
            }
            recorded.push(Recorded {
                id: done.map(|(id, _)| id),
                kind: notice.kind,
                matched_by: delivery.as_ref().map(|(_, by)| *by),
                action: done.map(|(_, action)| action),
            });
        }
        if let Some((d, _)) = &delivery
            && let Some(send_id) = d.send_id
        {
            let new = |kinds: &[BounceKind]| {
                recorded
                    .iter()
                    .any(|r| r.id.is_some() && kinds.contains(&r.kind))
            };
            if new(&[BounceKind::Hard, BounceKind::Soft]) {
                let paused = self
                    .store
                    .pause_send_if_failing(
                        send_id,
                        self.pause_after_failures,
                        self.pause_failure_percent,
                        now,
                    )
                    .await?;
                // A send that could pause told the owner so; one that had finished cannot.
                if !paused {
                    self.store
                        .alert_if_send_bounces_pass(
                            send_id,
                            self.pause_after_failures,
                            self.pause_failure_percent,
                            now,
                        )
                        .await?;
                }
            }
            if new(&[BounceKind::Complaint]) {
                self.store
                    .alert_if_send_complaints_pass(send_id, self.complaint_percent, now)
                    .await?;
            }
        }
        Ok(recorded)
    }

    /// The delivery a report answers: by the VERP tag of an address it was delivered to
    /// (checked against that delivery's Message-ID), else by the provider's id of the message
    /// among the deliveries to a recipient it names, else by the Message-ID it quotes.
    async fn delivery_of(
        &self,
        report: &Incoming,
    ) -> Result<Option<(BouncedDelivery, MatchedBy)>, sqlx::Error> {
        for address in &report.envelope_to {
            let Some(tag) = Links::bounce_tag_of(address) else {
                continue;
            };
            if let Some(d) = self.store.delivery_for_bounce(tag.delivery_id).await?
                && self.links.bounce_tag_matches(&tag, &d.message_id)
            {
                return Ok(Some((d, MatchedBy::Verp)));
            }
            tracing::warn!(
                delivery = tag.delivery_id,
                "a report came back to a tag that names no delivery of ours"
            );
        }
        if let Some(provider_id) = report.provider_id.as_deref().map(str::trim)
            && !provider_id.is_empty()
        {
            for recipient in report.notices.iter().filter_map(|n| n.recipient.as_deref()) {
                let Ok(email) = EmailAddress::parse(recipient) else {
                    continue;
                };
                if let Some(d) = self
                    .store
                    .delivery_by_provider_id(&email, provider_id)
                    .await?
                {
                    return Ok(Some((d, MatchedBy::ProviderId)));
                }
            }
        }
        if let Some(id) = &report.original_message_id {
            let id = id.trim().trim_start_matches('<').trim_end_matches('>');
            if !id.is_empty()
                && let Some(d) = self
                    .store
                    .delivery_by_message_id(&format!("<{id}>"))
                    .await?
            {
                return Ok(Some((d, MatchedBy::MessageId)));
            }
        }
        Ok(None)
    }

    /// Clears the raw text of reports older than `bounces.keep_days`.
    pub async fn forget_old_reports(&self, keep_days: u32) -> Result<u64, sqlx::Error> {
        let before = self.clock.now_ms() - i64::from(keep_days) * DAY_MS;
        self.store.forget_bounce_reports(before).await
    }
}
