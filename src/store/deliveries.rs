//! The outbox. A worker claims due rows by writing a lease (its claim id and an expiry) in one
//! statement; only the holder of the lease may record the result. A lease that runs out —
//! the worker crashed — makes the row claimable again.
//!
//! ```text
//!  pending ──claim (lease)──► sending ──ok──────────► sent
//!     ▲                          │ └─permanent──────► failed
//!     └──── transient: next_attempt_at = now + backoff
//! ```
//! ("sending" is not a stored state: it is a pending row with a live lease.)

use serde::Serialize;
use sqlx::Row;

use super::sql::Sql;
use super::{Backend, Store, decode_error, word, word_opt};
use crate::clock::Millis;
use crate::domain::{DeliveryKind, DeliveryStatus, LinkTarget, SubscriptionStatus};

/// The deliveries due now (see [`Store::due_queue`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueQueue {
    pub due: i64,
    /// When the longest-waiting one fell due; `None` when none is due.
    pub oldest_due_at: Option<Millis>,
}

/// A message the relay accepted, to be recorded as sent: the row, the lease it was claimed
/// under, and the relay's reply.
#[derive(Debug, Clone)]
pub struct HandOff {
    pub lease_id: std::sync::Arc<str>,
    pub id: i64,
    pub reply: String,
}

/// A row a worker holds the lease on, with its recipient.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub id: i64,
    pub kind: DeliveryKind,
    pub subscriber_id: i64,
    pub consent_id: Option<i64>,
    /// The send this delivery belongs to, its offering, and the recipient's subscription to
    /// it as it is now (a person who left after the fan-out is skipped).
    pub send_id: Option<i64>,
    pub offering_id: Option<i64>,
    pub subscription_status: Option<SubscriptionStatus>,
    pub message_id: String,
    /// Claims so far, this one included.
    pub attempts: i64,
    /// Earlier claims whose worker died before recording a result.
    pub interrupted: i64,
    /// When this attempt was due.
    pub due_at: Millis,
    /// Part of a send meant for a local time of day (late copies beyond the grace window are
    /// skipped, not sent at night).
    pub local_time_send: bool,
    pub email: String,
    pub name: Option<String>,
    /// The recipient's `link_secret`: unsubscribe and preferences links are bound to it.
    pub subscriber_secret: i64,
    /// For a confirmation, the signup it confirms (read with the claim; `None` once the
    /// signup is gone).
    pub signup: Option<ClaimedSignup>,
}

impl ClaimedDelivery {
    /// What the recipient's unsubscribe and preferences links are bound to.
    pub fn subscriber_link(&self) -> LinkTarget {
        LinkTarget {
            id: self.subscriber_id,
            secret: self.subscriber_secret,
        }
    }
}

/// The signup behind a claimed confirmation delivery, as its consent record has it.
#[derive(Debug, Clone)]
pub struct ClaimedSignup {
    pub at: Millis,
    /// The consent record's `link_secret`: the confirmation link is bound to it.
    pub secret: i64,
    /// Slugs of the offerings signed up for.
    pub offerings: Vec<String>,
}

/// What a confirmation email needs beyond the recipient.
#[derive(Debug, Clone)]
pub struct ConfirmationEmail {
    pub consent: LinkTarget,
    /// When the signup happened; the link expires a fixed time after it.
    pub signed_up_at: Millis,
    pub offerings: Vec<crate::store::Offering>,
    /// When this delivery is the signup's reminder: when the reminder was queued.
    pub reminded_at: Option<Millis>,
}

/// How many deliveries of a send are in each status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeliveryCounts {
    pub pending: i64,
    pub sent: i64,
    pub failed: i64,
    pub suppressed: i64,
    pub skipped: i64,
    pub cancelled: i64,
}

impl DeliveryCounts {
    pub(crate) fn add(&mut self, status: &str, n: i64) -> Result<(), sqlx::Error> {
        let slot = match status.parse::<DeliveryStatus>().map_err(decode_error)? {
            DeliveryStatus::Pending => &mut self.pending,
            DeliveryStatus::Sent => &mut self.sent,
            DeliveryStatus::Failed => &mut self.failed,
            DeliveryStatus::Suppressed => &mut self.suppressed,
            DeliveryStatus::Skipped => &mut self.skipped,
            DeliveryStatus::Cancelled => &mut self.cancelled,
        };
        *slot += n;
        Ok(())
    }

    /// All deliveries, whatever their status.
    pub fn total(&self) -> i64 {
        self.pending + self.sent + self.failed + self.suppressed + self.skipped + self.cancelled
    }
}

impl Store {
    /// Claims up to `limit` due deliveries for `lease_id` until `lease_until`, and returns them.
    /// PostgreSQL skips rows other workers are claiming at the same moment; SQLite has a single
    /// writer, so the same statement is already exclusive there.
    pub async fn claim_deliveries(
        &self,
        lease_id: &str,
        now: Millis,
        lease_until: Millis,
        limit: u32,
    ) -> Result<Vec<ClaimedDelivery>, sqlx::Error> {
        if self.backend == Backend::Sqlite && !self.any_due(now).await? {
            // An empty claim would still take the write turn and SQLite's write lock, and
            // make a signup batch wait behind it: during signups half the claims find nothing.
            return Ok(Vec::new());
        }
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = Sql::new(
            "UPDATE deliveries SET lease_until = $1, leased_by = $2, attempts = attempts + 1,
                 interrupted = interrupted + CASE WHEN lease_until IS NULL THEN 0 ELSE 1 END
             WHERE id IN (
                 SELECT id FROM deliveries
                 WHERE status = 'pending' AND next_attempt_at <= $3
                   AND (lease_until IS NULL OR lease_until < $3)
                   AND (send_id IS NULL OR EXISTS (
                        SELECT 1 FROM sends WHERE sends.id = deliveries.send_id
                                            AND sends.status = 'sending'))
                 ORDER BY next_attempt_at, id
                 LIMIT $4",
            4,
        )
        .push(lock)
        .push(") RETURNING id")
        .build();
        let turn = self.write_turn().await;
        let ids: Vec<i64> = sqlx::query_scalar(sql)
            .bind(lease_until)
            .bind(lease_id)
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        drop(turn);
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // Read the claimed rows back by primary key (no index serves `leased_by`). The shape
        // is chosen so that no plan can go wrong with stale statistics: no `status` predicate
        // (it invited PostgreSQL to scan the partial index of every pending row) and the
        // subscription looked up by its full primary key (a join on it was once planned as a
        // scan of the offering's whole subscriber list per row: 160 ms per batch of 200). The
        // signup of a confirmation is looked up the same way.
        let sql = Sql::new(
            "SELECT d.id, d.kind, d.subscriber_id, d.consent_id, d.send_id, d.message_id,
                    d.attempts, d.interrupted, d.next_attempt_at, s.email, s.name, s.link_secret, se.offering_id,
                    CASE WHEN se.local_time IS NULL THEN 0 ELSE 1 END AS local_time_send,
                    (SELECT sub.status FROM subscriptions sub
                      WHERE sub.subscriber_id = d.subscriber_id
                        AND sub.offering_id = se.offering_id) AS subscription_status,
                    (SELECT c.at FROM consents c
                      WHERE c.id = d.consent_id AND c.action = 'signup') AS signed_up_at,
                    (SELECT c.offerings FROM consents c
                      WHERE c.id = d.consent_id AND c.action = 'signup') AS signup_offerings,
                    (SELECT c.link_secret FROM consents c
                      WHERE c.id = d.consent_id AND c.action = 'signup') AS signup_secret
             FROM deliveries d
             JOIN subscribers s ON s.id = d.subscriber_id
             LEFT JOIN sends se ON se.id = d.send_id
             WHERE d.leased_by = $1 AND d.id IN (",
            1,
        )
        .list(ids.len())
        .push(") ORDER BY d.id")
        .build();
        let mut query = sqlx::query(sql).bind(lease_id);
        for id in &ids {
            query = query.bind(*id);
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                Ok(ClaimedDelivery {
                    id: row.try_get("id")?,
                    kind: word(row, "kind")?,
                    subscriber_id: row.try_get("subscriber_id")?,
                    consent_id: row.try_get("consent_id")?,
                    send_id: row.try_get("send_id")?,
                    offering_id: row.try_get("offering_id")?,
                    subscription_status: word_opt(row, "subscription_status")?,
                    message_id: row.try_get("message_id")?,
                    attempts: row.try_get("attempts")?,
                    interrupted: row.try_get("interrupted")?,
                    due_at: row.try_get("next_attempt_at")?,
                    local_time_send: row.try_get::<i64, _>("local_time_send")? != 0,
                    email: row.try_get("email")?,
                    name: row.try_get("name")?,
                    subscriber_secret: row.try_get("link_secret")?,
                    signup: match row.try_get::<Option<Millis>, _>("signed_up_at")? {
                        Some(at) => Some(ClaimedSignup {
                            at,
                            secret: row.try_get("signup_secret")?,
                            offerings: super::subscribers::split_slugs(
                                &row.try_get::<String, _>("signup_offerings")?,
                            ),
                        }),
                        None => None,
                    },
                })
            })
            .collect()
    }

    /// What the confirmation email of a claimed delivery needs, or `None` when its signup is
    /// gone, or when it is a reminder and none of the signup's offerings is pending any more
    /// (the person confirmed, left or was suppressed since). The offerings are the ones still
    /// active.
    pub async fn confirmation_email(
        &self,
        delivery: &ClaimedDelivery,
    ) -> Result<Option<ConfirmationEmail>, sqlx::Error> {
        let (Some(consent_id), Some(signup)) = (delivery.consent_id, &delivery.signup) else {
            return Ok(None);
        };
        let offerings: Vec<crate::store::Offering> = self
            .active_offerings()
            .await?
            .into_iter()
            .filter(|o| signup.offerings.contains(&o.slug))
            .collect();
        let reminded_at: Option<Millis> =
            sqlx::query_scalar("SELECT sent_at FROM signup_reminders WHERE delivery_id = $1")
                .bind(delivery.id)
                .fetch_optional(&self.pool)
                .await?;
        if reminded_at.is_some() {
            let consent = LinkTarget {
                id: consent_id,
                secret: signup.secret,
            };
            let waiting = self
                .pending_confirmation(consent)
                .await?
                .is_some_and(|p| p.waiting);
            if !waiting {
                return Ok(None);
            }
        }
        Ok(Some(ConfirmationEmail {
            consent: LinkTarget {
                id: consent_id,
                secret: signup.secret,
            },
            signed_up_at: signup.at,
            offerings,
            reminded_at,
        }))
    }

    /// Whether a pending delivery is due and not leased, by a read that needs no write lock.
    /// It may say yes for a delivery that the claim then skips (its send is paused).
    async fn any_due(&self, now: Millis) -> Result<bool, sqlx::Error> {
        let due: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM deliveries
             WHERE status = 'pending' AND next_attempt_at <= $1
               AND (lease_until IS NULL OR lease_until < $1)
             LIMIT 1",
        )
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(due.is_some())
    }

    /// Records many hand-offs of one lease in few statements: `sent` holds (id, reply).
    /// Rows whose lease was lost meanwhile are left alone. Returns how many were recorded.
    pub async fn mark_deliveries_sent(
        &self,
        lease_id: &str,
        now: Millis,
        sent: &[(i64, String)],
    ) -> Result<u64, sqlx::Error> {
        let rows: Vec<HandOff> = sent
            .iter()
            .map(|(id, reply)| HandOff {
                lease_id: lease_id.into(),
                id: *id,
                reply: reply.clone(),
            })
            .collect();
        self.record_hand_offs(now, &rows).await
    }

    /// Records hand-offs of any leases in few statements (one per 500): each row is marked
    /// sent if it is still held by the lease it names. Returns how many were recorded.
    pub async fn record_hand_offs(
        &self,
        now: Millis,
        rows: &[HandOff],
    ) -> Result<u64, sqlx::Error> {
        let mut done = 0;
        let _turn = self.write_turn().await;
        for chunk in rows.chunks(500) {
            // VALUES columns are called column1, column2, column3 in both SQLite and
            // PostgreSQL.
            //
            // A row still leased is pending: only a claim sets `lease_until`, and every
            // statement that records an outcome or cancels clears it. The status is not named
            // here on purpose: `status = 'pending'` let PostgreSQL read the rows through the
            // partial index `deliveries_due`, every pending row of the send filtered by lease,
            // and statistics taken while the table was nearly empty priced that as nothing.
            // At 100k recipients that took 40 ms per 200 rows instead of 3 by primary key.
            let sql = Sql::new(
                "UPDATE deliveries SET status = 'sent', sent_at = $1, smtp_reply = v.column2,
                     lease_until = NULL, last_error = NULL
                 FROM (VALUES ",
                1,
            )
            .rows("(?, ?, ?)", chunk.len())
            .push(
                ") AS v
                 WHERE deliveries.id = v.column1 AND deliveries.leased_by = v.column3
                   AND deliveries.lease_until IS NOT NULL",
            )
            .build();
            let mut query = sqlx::query(sql).bind(now);
            for row in chunk {
                query = query
                    .bind(row.id)
                    .bind(row.reply.clone())
                    .bind(row.lease_id.to_string());
            }
            done += query.execute(&self.pool).await?.rows_affected();
        }
        Ok(done)
    }

    /// Gives claimed rows back untouched (a stopping worker that did not start them): they
    /// are claimable at once, and the claim does not count as an attempt.
    pub async fn release_deliveries(&self, lease_id: &str, ids: &[i64]) -> Result<(), sqlx::Error> {
        if ids.is_empty() {
            return Ok(());
        }
        let sql = Sql::new(
            "UPDATE deliveries SET lease_until = NULL, attempts = attempts - 1
             WHERE leased_by = $1 AND lease_until IS NOT NULL AND id IN (",
            1,
        )
        .list(ids.len())
        .push(")")
        .build();
        let mut query = sqlx::query(sql).bind(lease_id);
        for id in ids {
            query = query.bind(*id);
        }
        let _turn = self.write_turn().await;
        query.execute(&self.pool).await?;
        Ok(())
    }

    /// Extends the lease of rows a worker still holds until `lease_until`: a batch that takes
    /// longer than half its lease (a slow or rate-limited relay) keeps its rows, so no other
    /// worker takes them over and sends them again. Rows already recorded are left alone.
    /// Returns the ids still held; one missing was taken over (its lease had run out) and must
    /// not be sent by this worker.
    pub async fn extend_leases(
        &self,
        lease_id: &str,
        ids: &[i64],
        lease_until: Millis,
    ) -> Result<Vec<i64>, sqlx::Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = Sql::new(
            "UPDATE deliveries SET lease_until = $2
             WHERE leased_by = $1 AND lease_until IS NOT NULL AND id IN (",
            2,
        )
        .list(ids.len())
        .push(") RETURNING id")
        .build();
        let mut query = sqlx::query_scalar(sql).bind(lease_id).bind(lease_until);
        for id in ids {
            query = query.bind(*id);
        }
        let _turn = self.write_turn().await;
        query.fetch_all(&self.pool).await
    }

    /// Puts the row back for another attempt at `next_attempt_at`. `failure_kind` names a
    /// failure before anything reached the relay (`connect`, `tls`, `auth`), else `None`.
    pub async fn mark_delivery_retry(
        &self,
        id: i64,
        lease_id: &str,
        next_attempt_at: Millis,
        error: &str,
        failure_kind: Option<&str>,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE deliveries SET next_attempt_at = $3, last_error = $4, lease_until = NULL,
                 failure_kind = $5
             WHERE id = $1 AND leased_by = $2 AND status = 'pending'",
        )
        .bind(id)
        .bind(lease_id)
        .bind(next_attempt_at)
        .bind(error)
        .bind(failure_kind)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Ends the row in a final state other than `sent` (failed, suppressed, skipped);
    /// `failure_kind` as for [`Store::mark_delivery_retry`].
    pub async fn mark_delivery_final(
        &self,
        id: i64,
        lease_id: &str,
        status: DeliveryStatus,
        now: Millis,
        error: &str,
        failure_kind: Option<&str>,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE deliveries SET status = $3, last_error = $4, sent_at = $5, lease_until = NULL,
                 failure_kind = $6
             WHERE id = $1 AND leased_by = $2 AND status = 'pending'",
        )
        .bind(id)
        .bind(lease_id)
        .bind(status.as_str())
        .bind(error)
        .bind(now)
        .bind(failure_kind)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deliveries by state, optionally of one kind.
    pub async fn delivery_counts(
        &self,
        kind: Option<DeliveryKind>,
    ) -> Result<DeliveryCounts, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS n FROM deliveries WHERE ($1 IS NULL OR kind = $1)
             GROUP BY status",
        )
        .bind(kind.map(|k| k.as_str().to_owned()))
        .fetch_all(&self.pool)
        .await?;
        let mut counts = DeliveryCounts::default();
        for row in &rows {
            counts.add(&row.try_get::<String, _>("status")?, row.try_get("n")?)?;
        }
        Ok(counts)
    }

    /// The due deliveries a worker could claim now (their send, if any, is sending): how many,
    /// and when the longest-waiting one fell due. One count over the partial index
    /// `deliveries_due`, for the metrics.
    pub async fn due_queue(&self, now: Millis) -> Result<DueQueue, sqlx::Error> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS due, MIN(next_attempt_at) AS oldest FROM deliveries
             WHERE status = 'pending' AND next_attempt_at <= $1
               AND (send_id IS NULL OR EXISTS (
                    SELECT 1 FROM sends WHERE sends.id = deliveries.send_id
                                        AND sends.status = 'sending'))",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(DueQueue {
            due: row.try_get("due")?,
            oldest_due_at: row.try_get("oldest")?,
        })
    }
}
