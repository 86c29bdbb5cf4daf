//! Sends: one scheduled email of an offering, fanned out into one delivery per confirmed
//! subscriber.
//!
//! ```text
//!  scheduled ──due──► sending ──no pending deliveries left──► done
//!      │                 │  ▲
//!      └──► paused ◄─────┘  └── resume
//!      └──────────────► cancelled (pending deliveries cancelled)
//! ```
//!
//! The deliveries of a send are written by the outbox (`store/outbox.rs`): each batch inserts
//! the next block of subscriber ids and moves `fanout_cursor` in the same transaction, so no
//! recipient list is ever held in memory and a crash resumes where the last batch ended.

use serde::Serialize;
use sqlx::Row;

use super::alerts::NewAlert;
use super::{DeliveryCounts, Store};
use crate::clock::Millis;
use crate::domain::{AlertKind, DeliveryStatus, RelayFault};

/// A send to write; the content was checked before.
#[derive(Debug, Clone)]
pub struct NewSend {
    pub offering_id: i64,
    pub subject: String,
    pub preheader: Option<String>,
    pub html_template: String,
    pub text_template: String,
    pub source_path: String,
    pub send_at: Millis,
    /// For a send at a local time of day in each subscriber's zone: the time and the date.
    pub local: Option<(crate::domain::TimeOfDay, jiff::civil::Date)>,
    /// Zones whose local time had passed when it was scheduled get it at once.
    pub send_late: bool,
    /// The recurring schedule this send is an occurrence of, and the file it used.
    pub recurrence_id: Option<i64>,
    pub content_file: Option<String>,
    /// Never shown in the offering's public archive or feed.
    pub private: bool,
}

pub use crate::domain::SendStatus;

/// A send as `sends list` and `sends show` print it.
#[derive(Debug, Clone, Serialize)]
pub struct SendSummary {
    pub id: i64,
    pub offering: String,
    pub offering_name: String,
    pub status: SendStatus,
    pub subject: String,
    pub source_path: String,
    pub send_at: Millis,
    pub created_at: Millis,
    pub fanout_done_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    pub paused_reason: Option<String>,
    pub counts: DeliveryCounts,
    /// For a send at a local time in each zone: "HH:MM on YYYY-MM-DD".
    pub local: Option<String>,
    /// Attempts cut short by a dying worker: each may have reached the server, so at most
    /// this many recipients may have the message twice (always with the same Message-ID).
    pub interrupted: i64,
}

/// The stored templates of a send, for the workers.
#[derive(Debug, Clone)]
pub struct SendContent {
    pub id: i64,
    pub offering_id: i64,
    pub subject: String,
    pub preheader: Option<String>,
    pub html_template: String,
    pub text_template: String,
    pub send_at: Millis,
    /// Kept out of the public archive (`schedule --private`).
    pub private: bool,
}

/// A `sends` row of the columns [`Store::send_content`] selects, read.
pub(super) fn send_content_of(r: &sqlx::any::AnyRow) -> Result<SendContent, sqlx::Error> {
    Ok(SendContent {
        id: r.try_get("id")?,
        offering_id: r.try_get("offering_id")?,
        subject: r.try_get("subject")?,
        preheader: r.try_get("preheader")?,
        html_template: r.try_get("html_template")?,
        text_template: r.try_get("text_template")?,
        send_at: r.try_get("send_at")?,
        private: r.try_get::<i64, _>("private")? != 0,
    })
}

/// What happened to a send's recipients that did not get it, grouped by reason.
#[derive(Debug, Clone, Serialize)]
pub struct FailureGroup {
    pub status: DeliveryStatus,
    /// Set when nothing reached the relay (see migration 0010).
    pub failure_kind: Option<RelayFault>,
    pub error: String,
    pub count: i64,
}

/// What `sangha sends retry` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOutcome {
    NoSuchSend,
    /// A cancelled send stays cancelled.
    Cancelled,
    Retried {
        /// Failed deliveries put back to pending.
        failed: u64,
        /// Pending deliveries waiting out a relay failure's backoff, now due at once.
        waiting: u64,
    },
}

impl Store {
    /// Writes a new send and returns its id.
    pub async fn create_send(&self, send: &NewSend, now: Millis) -> Result<i64, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        insert_send(&mut conn, send, now).await
    }
}

/// Writes a send row on `conn` (a pooled connection or a transaction).
pub(super) async fn insert_send(
    conn: &mut sqlx::AnyConnection,
    send: &NewSend,
    now: Millis,
) -> Result<i64, sqlx::Error> {
    {
        sqlx::query_scalar(
            "INSERT INTO sends (offering_id, subject, preheader, html_template, text_template,
                                source_path, send_at, created_at, message_id_prefix,
                                local_time, local_date, send_late, recurrence_id, content_file,
                                private)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
             RETURNING id",
        )
        .bind(send.offering_id)
        .bind(&send.subject)
        .bind(send.preheader.clone())
        .bind(&send.html_template)
        .bind(&send.text_template)
        .bind(&send.source_path)
        .bind(send.send_at)
        .bind(now)
        .bind(super::new_message_id_prefix())
        .bind(send.local.map(|(time, _)| time.to_string()))
        .bind(send.local.map(|(_, date)| date.to_string()))
        .bind(i64::from(send.send_late))
        .bind(send.recurrence_id)
        .bind(send.content_file.clone())
        .bind(i64::from(send.private))
        .fetch_one(&mut *conn)
        .await
    }
}

impl Store {
    /// Marks sending sends whose every delivery is final as done. Returns their ids.
    pub async fn finish_sends(&self, now: Millis) -> Result<Vec<i64>, sqlx::Error> {
        sqlx::query_scalar(
            "UPDATE sends SET status = 'done', finished_at = $1
             WHERE status = 'sending' AND fanout_done_at IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM deliveries d
                               WHERE d.send_id = sends.id AND d.status = 'pending')
             RETURNING id",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await
    }

    /// Stops new claims for a send. Returns false if it was not scheduled or sending.
    pub async fn pause_send(&self, id: i64, reason: &str) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE sends SET status = 'paused', paused_reason = $2
             WHERE id = $1 AND status IN ('scheduled', 'sending')",
        )
        .bind(id)
        .bind(reason)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Puts back the deliveries of a send that failed before anything reached the relay (a
    /// connection, TLS or the login: `failure_kind` is set), or with `all_failed` every failed
    /// one, and makes the ones waiting out such a failure due now. A send that was done or
    /// paused goes on sending. Suppressed and skipped deliveries are never put back.
    ///
    /// `attempts` restarts at 1, not 0: a delivery of a send at local time whose first
    /// attempt is late beyond the grace window is skipped as missed, and a retry the owner asked
    /// for is not a first attempt.
    pub async fn retry_send(
        &self,
        id: i64,
        all_failed: bool,
        now: Millis,
    ) -> Result<RetryOutcome, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let status: Option<String> = sqlx::query_scalar("SELECT status FROM sends WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let status = status.map(|s| s.parse::<SendStatus>()).transpose();
        match status.map_err(super::decode_error)? {
            None => return Ok(RetryOutcome::NoSuchSend),
            Some(SendStatus::Cancelled) => return Ok(RetryOutcome::Cancelled),
            Some(_) => {}
        }
        let failed = sqlx::query(
            "UPDATE deliveries SET status = 'pending', attempts = 1, next_attempt_at = $2,
                 last_error = NULL, failure_kind = NULL, sent_at = NULL, lease_until = NULL
             WHERE send_id = $1 AND status = 'failed' AND (failure_kind IS NOT NULL OR $3)",
        )
        .bind(id)
        .bind(now)
        .bind(all_failed)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let waiting = sqlx::query(
            "UPDATE deliveries SET attempts = 1, next_attempt_at = $2
             WHERE send_id = $1 AND status = 'pending' AND failure_kind IS NOT NULL
               AND lease_until IS NULL AND next_attempt_at > $2",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if failed + waiting > 0 {
            sqlx::query(
                "UPDATE sends SET paused_reason = NULL, finished_at = NULL,
                     status = CASE WHEN fanout_cursor > 0 OR fanout_done_at IS NOT NULL
                                   THEN 'sending' ELSE 'scheduled' END
                 WHERE id = $1 AND status IN ('done', 'paused')",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(RetryOutcome::Retried { failed, waiting })
    }

    /// Continues a paused send where it stopped.
    pub async fn resume_send(&self, id: i64) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE sends SET paused_reason = NULL,
                 status = CASE WHEN fanout_cursor > 0 OR fanout_done_at IS NOT NULL
                               THEN 'sending' ELSE 'scheduled' END
             WHERE id = $1 AND status = 'paused'",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Cancels a send and every delivery of it not yet sent. Returns false if it had ended.
    pub async fn cancel_send(&self, id: i64, now: Millis) -> Result<bool, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE sends SET status = 'cancelled', finished_at = $2
             WHERE id = $1 AND status IN ('scheduled', 'sending', 'paused')",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE deliveries SET status = 'cancelled', lease_until = NULL
             WHERE send_id = $1 AND status = 'pending'",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// How many of a send's deliveries failed or bounced, and how many were tried, when the
    /// failures reach `min_failures` and `percent` of what was tried; `None` below that.
    async fn failing_share(
        &self,
        id: i64,
        min_failures: u32,
        percent: u32,
    ) -> Result<Option<(i64, i64)>, sqlx::Error> {
        let counts = self.send_counts(id).await?;
        // A delivery the relay took and that bounced later is counted as failed.
        let bounced = self.send_bounce_counts(id).await?.bounced;
        let tried = counts.failed + counts.suppressed + counts.sent;
        let failed = counts.failed + counts.suppressed + bounced;
        Ok(
            (failed >= i64::from(min_failures) && failed * 100 >= tried * i64::from(percent))
                .then_some((failed, tried)),
        )
    }

    /// Pauses a send whose failures passed `min_failures` and `percent` of what was tried, and
    /// raises the owner's alert in the same transaction (one per time it pauses).
    pub async fn pause_send_if_failing(
        &self,
        id: i64,
        min_failures: u32,
        percent: u32,
        now: Millis,
    ) -> Result<bool, sqlx::Error> {
        let Some((failed, tried)) = self.failing_share(id, min_failures, percent).await? else {
            return Ok(false);
        };
        let reason = format!(
            "paused automatically: {failed} of {tried} deliveries failed or bounced \
             (threshold {percent}% after {min_failures}); see the failures below, then \
             `sangha sends resume {id}`, or `sangha sends retry {id}` to try the failed ones \
             again"
        );
        let mut tx = self.pool.begin().await?;
        let subject: Option<String> = sqlx::query_scalar(
            "UPDATE sends SET status = 'paused', paused_reason = $2
             WHERE id = $1 AND status IN ('scheduled', 'sending')
             RETURNING subject",
        )
        .bind(id)
        .bind(&reason)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(subject) = subject else {
            return Ok(false);
        };
        // The how-manyth time it paused: only the one transaction that paused it counts.
        let before: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM alerts WHERE send_id = $1 AND kind = $2")
                .bind(id)
                .bind(AlertKind::SendPaused.as_str())
                .fetch_one(&mut *tx)
                .await?;
        let alert = NewAlert {
            kind: AlertKind::SendPaused,
            key: format!("send_paused:{id}:{}", before + 1),
            send_id: Some(id),
            summary: format!("send {id} paused itself: {failed} of {tried} deliveries failed"),
            detail: format!(
                "The send {id} (\"{subject}\") stopped sending: {failed} of {tried} deliveries \
                 failed or bounced, past the threshold of {percent}% after {min_failures} \
                 (worker.pause_failure_percent, worker.pause_after_failures). Nobody else gets \
                 it until you act. `sangha sends show {id}` lists the failures; then \
                 `sangha sends resume {id}`, or `sangha sends retry {id}` to try the failed ones \
                 again."
            ),
        };
        super::alerts::raise_on(&mut tx, &alert, now).await?;
        tx.commit().await?;
        tracing::warn!(send = id, failed, tried, "send paused: too many failures");
        Ok(true)
    }

    /// Raises the owner's alert, once per send, when bounces reported after a send could no
    /// longer pause (it had finished) bring its failures past `min_failures` and `percent`.
    pub async fn alert_if_send_bounces_pass(
        &self,
        id: i64,
        min_failures: u32,
        percent: u32,
        now: Millis,
    ) -> Result<Option<i64>, sqlx::Error> {
        let Some((failed, tried)) = self.failing_share(id, min_failures, percent).await? else {
            return Ok(None);
        };
        let alert = NewAlert {
            kind: AlertKind::SendBounces,
            key: format!("send_bounces:{id}"),
            send_id: Some(id),
            summary: format!("send {id}: {failed} of {tried} deliveries failed or bounced"),
            detail: format!(
                "Bounce reports about the send {id} bring its failures to {failed} of {tried}, \
                 past the threshold of {percent}% after {min_failures}. A share this high hurts \
                 how mailbox providers treat your mail. The bounced addresses are suppressed as \
                 the bounce policy says; `sangha sends show {id}` and `sangha bounces list` \
                 show what came back."
            ),
        };
        self.raise_alert(&alert, now).await
    }

    /// Raises the owner's alert, once per send, when its complaints reach `percent` of the
    /// deliveries the relay took.
    pub async fn alert_if_send_complaints_pass(
        &self,
        id: i64,
        percent: f64,
        now: Millis,
    ) -> Result<Option<i64>, sqlx::Error> {
        let complained = self.send_bounce_counts(id).await?.complained;
        let sent = self.send_counts(id).await?.sent;
        #[allow(clippy::cast_precision_loss)] // counts of people, far below 2^52
        let passed = complained > 0 && complained as f64 * 100.0 >= sent as f64 * percent;
        if !passed {
            return Ok(None);
        }
        let alert = NewAlert {
            kind: AlertKind::SendComplaints,
            key: format!("send_complaints:{id}"),
            send_id: Some(id),
            summary: format!("send {id}: {complained} of {sent} recipients marked it as spam"),
            detail: format!(
                "{complained} of the {sent} people the send {id} reached reported it as spam, \
                 at or past alerts.complaint_percent ({percent}%). Mailbox providers start \
                 filtering a sender around 0.3%. Each of them is unsubscribed from everything \
                 and suppressed; `sangha bounces list` shows the reports."
            ),
        };
        self.raise_alert(&alert, now).await
    }

    /// How many of a send's deliveries are in each status.
    pub async fn send_counts(&self, id: i64) -> Result<DeliveryCounts, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS n FROM deliveries WHERE send_id = $1 GROUP BY status",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let mut counts = DeliveryCounts::default();
        for row in &rows {
            counts.add(&row.try_get::<String, _>("status")?, row.try_get("n")?)?;
        }
        Ok(counts)
    }

    /// How many deliveries of each send that is not done (sending or paused) are in each
    /// status, in one grouped count, for the metrics.
    pub async fn unfinished_send_counts(&self) -> Result<Vec<(i64, DeliveryCounts)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT d.send_id, d.status, COUNT(*) AS n
             FROM sends s JOIN deliveries d ON d.send_id = s.id
             WHERE s.status IN ('sending', 'paused')
             GROUP BY d.send_id, d.status
             ORDER BY d.send_id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<(i64, DeliveryCounts)> = Vec::new();
        for row in &rows {
            let id: i64 = row.try_get("send_id")?;
            if out.last().is_none_or(|(last, _)| *last != id) {
                out.push((id, DeliveryCounts::default()));
            }
            let (_, counts) = out.last_mut().expect("pushed above");
            counts.add(&row.try_get::<String, _>("status")?, row.try_get("n")?)?;
        }
        Ok(out)
    }

    /// How many of a send's deliveries were interrupted (the `interrupted` column summed).
    pub async fn send_interruptions(&self, id: i64) -> Result<i64, sqlx::Error> {
        let n: Option<i64> = sqlx::query_scalar(
            "SELECT CAST(SUM(interrupted) AS BIGINT) FROM deliveries WHERE send_id = $1",
        )
        .bind(id)
        .fetch_one(&self.pool)
        .await?;
        Ok(n.unwrap_or(0))
    }

    /// The stored content of a send.
    pub async fn send_content(&self, id: i64) -> Result<Option<SendContent>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT id, offering_id, subject, preheader, html_template, text_template, send_at,
                    private
             FROM sends WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(send_content_of).transpose()
    }

    /// Every send, newest first, or one.
    pub async fn send_summaries(&self, only: Option<i64>) -> Result<Vec<SendSummary>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT s.id, o.slug, o.name, s.status, s.subject, s.source_path, s.send_at,
                    s.created_at, s.fanout_done_at, s.finished_at, s.paused_reason,
                    s.local_time, s.local_date
             FROM sends s JOIN offerings o ON o.id = s.offering_id
             WHERE $1 IS NULL OR s.id = $1
             ORDER BY s.send_at DESC, s.id DESC",
        )
        .bind(only)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: i64 = r.try_get("id")?;
            out.push(SendSummary {
                id,
                offering: r.try_get("slug")?,
                offering_name: r.try_get("name")?,
                status: super::word(r, "status")?,
                subject: r.try_get("subject")?,
                source_path: r.try_get("source_path")?,
                send_at: r.try_get("send_at")?,
                created_at: r.try_get("created_at")?,
                fanout_done_at: r.try_get("fanout_done_at")?,
                finished_at: r.try_get("finished_at")?,
                paused_reason: r.try_get("paused_reason")?,
                counts: self.send_counts(id).await?,
                interrupted: self.send_interruptions(id).await?,
                local: r
                    .try_get::<Option<String>, _>("local_time")?
                    .zip(r.try_get::<Option<String>, _>("local_date")?)
                    .map(|(t, d)| format!("{t} on {d}")),
            });
        }
        Ok(out)
    }

    /// The reasons recipients of a send did not get it, most common first, by their full text
    /// (the 5,000 most common; `sends show` groups them further).
    pub async fn send_failures(&self, id: i64) -> Result<Vec<FailureGroup>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT status, failure_kind, COALESCE(last_error, '') AS error, COUNT(*) AS n
             FROM deliveries
             WHERE send_id = $1 AND (status IN ('failed', 'suppressed', 'skipped')
                                     OR (status = 'pending' AND last_error IS NOT NULL))
             GROUP BY status, failure_kind, COALESCE(last_error, '')
             ORDER BY n DESC LIMIT 5000",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(FailureGroup {
                    status: super::word(r, "status")?,
                    failure_kind: super::word_opt(r, "failure_kind")?,
                    error: r.try_get("error")?,
                    count: r.try_get("n")?,
                })
            })
            .collect()
    }
}
