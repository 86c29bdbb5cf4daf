//! What came back about sent mail: bounces, complaints and auto-replies, one row per recipient a
//! report names, and what each made us do (suppress, unsubscribe, count) in the same
//! transaction that records it, so a report is acted on exactly once.

use sqlx::Row;

use super::leaving::add_suppression;
use super::subscribers::{ConsentMeta, insert_consent};
use super::{Store, word, word_opt};
use crate::clock::Millis;
use crate::domain::{
    BounceAction, BounceKind, BounceSource, ConsentSource, EmailAddress, MatchedBy,
    SuppressionReason,
};

/// The delivery a report answers, as matching and the policy read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BouncedDelivery {
    pub id: i64,
    pub message_id: String,
    pub subscriber_id: i64,
    pub send_id: Option<i64>,
    pub email: String,
}

/// One recipient of one report, as it is to be recorded.
#[derive(Debug, Clone)]
pub struct NewBounce<'a> {
    pub source: BounceSource,
    /// The same report arriving again (by another source) has the same key; see the migration.
    pub dedup_key: &'a str,
    pub kind: BounceKind,
    pub recipient: Option<&'a str>,
    pub status: Option<&'a str>,
    pub diagnostic: Option<&'a str>,
    /// The delivery it answers and how it was found; `None`: kept for review only.
    pub matched: Option<(&'a BouncedDelivery, MatchedBy)>,
    pub raw: Option<&'a str>,
}

/// When soft bounces suppress an address: `limit` of them (on distinct deliveries) received
/// since `since`.
#[derive(Debug, Clone, Copy)]
pub struct SoftBounceRule {
    pub limit: u32,
    pub since: Millis,
}

/// A recorded report, as `bounces list` and `bounces show` tell it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BounceRow {
    pub id: i64,
    pub received_at: Millis,
    pub source: BounceSource,
    pub kind: BounceKind,
    pub recipient: Option<String>,
    pub status: Option<String>,
    pub diagnostic: Option<String>,
    pub delivery_id: Option<i64>,
    pub subscriber_id: Option<i64>,
    pub send_id: Option<i64>,
    pub matched_by: Option<MatchedBy>,
    pub action: BounceAction,
    /// The report as it came; `None` in lists, and once it is older than `bounces.keep_days`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
}

/// How many deliveries of one send bounced (hard or soft) or drew a complaint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct BounceCounts {
    pub bounced: i64,
    pub complained: i64,
}

/// A delivery and its person's address, as [`bounced_delivery`] reads it, under `$filter`.
macro_rules! delivery_sql {
    ($filter:literal) => {
        concat!(
            "SELECT d.id, d.message_id, d.subscriber_id, d.send_id, s.email
             FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id WHERE ",
            $filter
        )
    };
}

fn bounced_delivery(row: &sqlx::any::AnyRow) -> Result<BouncedDelivery, sqlx::Error> {
    Ok(BouncedDelivery {
        id: row.try_get("id")?,
        message_id: row.try_get("message_id")?,
        subscriber_id: row.try_get("subscriber_id")?,
        send_id: row.try_get("send_id")?,
        email: row.try_get("email")?,
    })
}

fn bounce_row(row: &sqlx::any::AnyRow, with_raw: bool) -> Result<BounceRow, sqlx::Error> {
    Ok(BounceRow {
        id: row.try_get("id")?,
        received_at: row.try_get("received_at")?,
        source: word(row, "source")?,
        kind: word(row, "kind")?,
        recipient: row.try_get("recipient")?,
        status: row.try_get("status")?,
        diagnostic: row.try_get("diagnostic")?,
        delivery_id: row.try_get("delivery_id")?,
        subscriber_id: row.try_get("subscriber_id")?,
        send_id: row.try_get("send_id")?,
        matched_by: word_opt(row, "matched_by")?,
        action: word(row, "action")?,
        raw: if with_raw { row.try_get("raw")? } else { None },
    })
}

impl Store {
    /// The delivery with this id, if it (and its person) still exist.
    pub async fn delivery_for_bounce(
        &self,
        id: i64,
    ) -> Result<Option<BouncedDelivery>, sqlx::Error> {
        sqlx::query(delivery_sql!("d.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(bounced_delivery)
            .transpose()
    }

    /// The delivery that carried this Message-ID (`<…>` as the header wrote it).
    pub async fn delivery_by_message_id(
        &self,
        message_id: &str,
    ) -> Result<Option<BouncedDelivery>, sqlx::Error> {
        sqlx::query(delivery_sql!("d.message_id = $1"))
            .bind(message_id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(bounced_delivery)
            .transpose()
    }

    /// The latest delivery to `email` whose relay reply (`250 Ok: queued as ID`) holds
    /// `provider_id`: found through the person (`subscribers.email` is indexed, and so are a
    /// person's deliveries), so deliveries need no column or index of their own for it.
    pub async fn delivery_by_provider_id(
        &self,
        email: &EmailAddress,
        provider_id: &str,
    ) -> Result<Option<BouncedDelivery>, sqlx::Error> {
        let mut pattern = String::from("%");
        for c in provider_id.chars() {
            if matches!(c, '\\' | '%' | '_') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('%');
        sqlx::query(delivery_sql!(
            "s.email = $1 AND d.smtp_reply LIKE $2 ESCAPE '\\' ORDER BY d.id DESC LIMIT 1"
        ))
        .bind(email.as_str())
        .bind(pattern)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(bounced_delivery)
        .transpose()
    }

    /// Records one recipient of a report and does what it calls for, in one transaction:
    /// a hard bounce suppresses the address (`email_hash`) and the person leaves every
    /// offering; a complaint does the same and is recorded as leaving; a soft bounce is
    /// counted, and suppresses once `soft` says so. Returns `None` when the same report was
    /// recorded before (nothing is done twice), else its id and what was done.
    pub async fn record_bounce(
        &self,
        bounce: &NewBounce<'_>,
        email_hash: Option<&str>,
        soft: SoftBounceRule,
        now: Millis,
    ) -> Result<Option<(i64, BounceAction)>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let (delivery, matched_by) = match bounce.matched {
            Some((d, by)) => (Some(d), Some(by)),
            None => (None, None),
        };
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO bounces (received_at, source, dedup_key, kind, recipient, status,
                 diagnostic, delivery_id, subscriber_id, send_id, matched_by, action, raw)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'none', $12)
             ON CONFLICT (dedup_key) DO NOTHING
             RETURNING id",
        )
        .bind(now)
        .bind(bounce.source.as_str())
        .bind(bounce.dedup_key)
        .bind(bounce.kind.as_str())
        .bind(bounce.recipient)
        .bind(bounce.status)
        .bind(bounce.diagnostic)
        .bind(delivery.map(|d| d.id))
        .bind(delivery.map(|d| d.subscriber_id))
        .bind(delivery.and_then(|d| d.send_id))
        .bind(matched_by.map(MatchedBy::as_str))
        .bind(bounce.raw)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(id) = id else {
            return Ok(None);
        };
        let action = match (delivery, email_hash) {
            (None, _) | (_, None) => BounceAction::Unmatched,
            (Some(d), Some(hash)) => match bounce.kind {
                BounceKind::Hard => {
                    leave_everything(&mut tx, d.subscriber_id, None, now).await?;
                    add_suppression(&mut tx, hash, SuppressionReason::Bounced, now).await?;
                    BounceAction::Suppressed
                }
                BounceKind::Complaint => {
                    leave_everything(&mut tx, d.subscriber_id, Some("unsubscribe"), now).await?;
                    add_suppression(&mut tx, hash, SuppressionReason::Complained, now).await?;
                    BounceAction::Unsubscribed
                }
                BounceKind::Soft => {
                    let soft_bounces: i64 = sqlx::query_scalar(
                        "SELECT COUNT(DISTINCT delivery_id) FROM bounces
                         WHERE subscriber_id = $1 AND kind = 'soft' AND received_at >= $2",
                    )
                    .bind(d.subscriber_id)
                    .bind(soft.since)
                    .fetch_one(&mut *tx)
                    .await?;
                    if soft_bounces >= i64::from(soft.limit) {
                        leave_everything(&mut tx, d.subscriber_id, None, now).await?;
                        add_suppression(&mut tx, hash, SuppressionReason::Bounced, now).await?;
                        BounceAction::Suppressed
                    } else {
                        BounceAction::Counted
                    }
                }
                BounceKind::Delayed | BounceKind::AutoReply | BounceKind::Unknown => {
                    BounceAction::None
                }
            },
        };
        sqlx::query("UPDATE bounces SET action = $2 WHERE id = $1")
            .bind(id)
            .bind(action.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some((id, action)))
    }

    /// Reports received since `since`, newest first, without their raw text.
    pub async fn bounces_since(
        &self,
        since: Millis,
        limit: i64,
    ) -> Result<Vec<BounceRow>, sqlx::Error> {
        let rows =
            sqlx::query("SELECT * FROM bounces WHERE received_at >= $1 ORDER BY id DESC LIMIT $2")
                .bind(since)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(|r| bounce_row(r, false)).collect()
    }

    /// One report with its raw text (if still kept).
    pub async fn bounce(&self, id: i64) -> Result<Option<BounceRow>, sqlx::Error> {
        sqlx::query("SELECT * FROM bounces WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(|r| bounce_row(r, true))
            .transpose()
    }

    /// One person's reports, newest first, without their raw text.
    pub async fn subscriber_bounces(
        &self,
        subscriber_id: i64,
    ) -> Result<Vec<BounceRow>, sqlx::Error> {
        let rows = sqlx::query("SELECT * FROM bounces WHERE subscriber_id = $1 ORDER BY id DESC")
            .bind(subscriber_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| bounce_row(r, false)).collect()
    }

    /// How many of a send's deliveries bounced or drew a complaint.
    pub async fn send_bounce_counts(&self, send_id: i64) -> Result<BounceCounts, sqlx::Error> {
        let row = sqlx::query(
            "SELECT
                 COUNT(DISTINCT CASE WHEN kind IN ('hard', 'soft') THEN delivery_id END) AS bounced,
                 COUNT(DISTINCT CASE WHEN kind = 'complaint' THEN delivery_id END) AS complained
             FROM bounces WHERE send_id = $1",
        )
        .bind(send_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(BounceCounts {
            bounced: row.try_get("bounced")?,
            complained: row.try_get("complained")?,
        })
    }

    /// Clears the raw text of reports received before `before`; returns how many.
    pub async fn forget_bounce_reports(&self, before: Millis) -> Result<u64, sqlx::Error> {
        Ok(
            sqlx::query("UPDATE bounces SET raw = NULL WHERE received_at < $1 AND raw IS NOT NULL")
                .bind(before)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }
}

/// The person leaves every offering; `consent` names the consent record to write (a
/// complaint is a person's own act; a bounce is not).
async fn leave_everything(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    subscriber_id: i64,
    consent: Option<&str>,
    now: Millis,
) -> Result<(), sqlx::Error> {
    let left: Vec<i64> = sqlx::query_scalar(
        "UPDATE subscriptions SET status = 'unsubscribed', unsubscribed_at = $2, updated_at = $2
         WHERE subscriber_id = $1 AND status <> 'unsubscribed'
         RETURNING offering_id",
    )
    .bind(subscriber_id)
    .bind(now)
    .fetch_all(&mut **tx)
    .await?;
    if let Some(action) = consent
        && !left.is_empty()
    {
        let slugs = super::leaving::slugs_of(tx, &left).await?;
        let meta = ConsentMeta {
            ip: None,
            user_agent: Some("spam complaint (feedback report)".to_owned()),
            text_hash: String::new(),
            source: ConsentSource::Email,
        };
        insert_consent(tx, subscriber_id, action, now, &meta, &slugs).await?;
    }
    Ok(())
}
