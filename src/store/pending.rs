//! Signups nobody confirmed: the one reminder each gets, and forgetting the people who never
//! confirmed (migration 0013).
//!
//! ```text
//!  signup ──(reminder_after)──► one reminder ──(delete_after, from the last signup)──► deleted
//!     └── confirmed, left or suppressed meanwhile: no reminder; confirmed: never deleted
//! ```
//!
//! A reminder is a delivery of kind `confirmation` for the same signup, with a row in
//! `signup_reminders` that names it; it is queued under the same mailbox cooldown and domain
//! cap as the first confirmation ([`super::subscribers::queue_confirmations`]).

use std::collections::HashMap;

use sqlx::Row;

use super::Store;
use super::sql::Sql;
use super::subscribers::{Asked, queue_confirmations};
use crate::clock::Millis;
use crate::domain::EmailAddress;

/// A signup that may be reminded: the person's latest consent record, unconfirmed.
#[derive(Debug, Clone)]
pub struct ReminderCandidate {
    /// The signup (consent record) the reminder asks to confirm.
    pub consent_id: i64,
    pub subscriber_id: i64,
    pub signed_up_at: Millis,
    pub email: EmailAddress,
}

/// A reminder to queue, as the scheduler decided it.
#[derive(Debug, Clone)]
pub struct Reminder {
    pub candidate: ReminderCandidate,
    /// A keyed hash of the inbox (the cooldown is per mailbox).
    pub mailbox_key: String,
    /// On the suppression list: no email, and the signup is never reminded.
    pub suppressed: bool,
}

/// The limits a reminder is queued under, the same as a first confirmation's.
#[derive(Debug, Clone, Copy)]
pub struct ReminderLimits {
    pub cooldown_ms: i64,
    pub domain_cap_per_hour: Option<u32>,
}

/// What `sangha subscribers list --status pending` shows of a person's wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiting {
    /// The person's latest signup.
    pub signed_up_at: Millis,
    /// When that signup's reminder was queued, if it was.
    pub reminded_at: Option<Millis>,
}

/// The condition that consent `c` is its person's latest record, nobody confirmed it, and an
/// offering is still pending: the only signups reminded.
const STILL_WAITING: &str = "c.action = 'signup'
    AND NOT EXISTS (SELECT 1 FROM consents later
                    WHERE later.subscriber_id = c.subscriber_id
                      AND (later.at > c.at OR (later.at = c.at AND later.id > c.id)))
    AND EXISTS (SELECT 1 FROM subscriptions sub
                WHERE sub.subscriber_id = c.subscriber_id AND sub.status = 'pending')
    AND NOT EXISTS (SELECT 1 FROM signup_reminders r WHERE r.consent_id = c.id)";

impl Store {
    /// Signups made in (`from`, `to`] that may get their reminder, oldest first, after the
    /// signup `after` (its time and consent id) in that order, at most `limit`.
    pub async fn reminder_candidates(
        &self,
        from: Millis,
        to: Millis,
        after: (Millis, i64),
        limit: u32,
    ) -> Result<Vec<ReminderCandidate>, sqlx::Error> {
        let sql = Sql::new(
            "SELECT c.id, c.subscriber_id, c.at, s.email
             FROM consents c JOIN subscribers s ON s.id = c.subscriber_id
             WHERE c.at > $1 AND c.at <= $2 AND (c.at > $3 OR (c.at = $3 AND c.id > $4)) AND ",
            5,
        )
        .push(STILL_WAITING)
        .push(" ORDER BY c.at, c.id LIMIT $5")
        .build();
        let rows = sqlx::query(sql)
            .bind(from)
            .bind(to)
            .bind(after.0)
            .bind(after.1)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let email: String = row.try_get("email")?;
                Ok(ReminderCandidate {
                    consent_id: row.try_get("id")?,
                    subscriber_id: row.try_get("subscriber_id")?,
                    signed_up_at: row.try_get("at")?,
                    email: EmailAddress::parse(&email).map_err(super::decode_error)?,
                })
            })
            .collect()
    }

    /// Queues the reminders of signups still waiting, in one transaction: each signup is
    /// claimed in `signup_reminders` first (so two schedulers cannot both remind it), a
    /// suppressed address keeps its claim with no email, and one whose inbox is in its
    /// cooldown is let go, to be tried at a later step. Returns how many emails were queued.
    pub async fn queue_reminders(
        &self,
        reminders: &[Reminder],
        limits: ReminderLimits,
        now: Millis,
    ) -> Result<u64, sqlx::Error> {
        if reminders.is_empty() {
            return Ok(0);
        }
        let _turn = self.write_turn().await;
        let mut tx = self.pool.begin().await?;
        // Claim first: a write at once takes SQLite's write lock (a read-then-write transaction
        // can fail to upgrade). The claim re-checks that each signup is still waiting.
        let sql = Sql::new(
            "INSERT INTO signup_reminders (consent_id, subscriber_id, delivery_id, sent_at)
             SELECT c.id, c.subscriber_id, NULL, $1 FROM consents c
             WHERE c.id IN (",
            1,
        )
        .list(reminders.len())
        .push(") AND ")
        .push(STILL_WAITING)
        .push(" ON CONFLICT DO NOTHING RETURNING consent_id")
        .build();
        let mut query = sqlx::query_scalar::<_, i64>(sql).bind(now);
        for r in reminders {
            query = query.bind(r.candidate.consent_id);
        }
        let claimed: Vec<i64> = query.fetch_all(&mut *tx).await?;
        let mut mailboxes = std::collections::HashSet::new();
        let mut asked: Vec<Asked<'_>> = Vec::new();
        let mut let_go: Vec<i64> = Vec::new();
        for r in reminders {
            let c = &r.candidate;
            if !claimed.contains(&c.consent_id) || r.suppressed {
                continue;
            }
            if !mailboxes.insert(r.mailbox_key.as_str()) {
                // A second spelling of one inbox in this batch waits for the cooldown.
                let_go.push(c.consent_id);
                continue;
            }
            asked.push(Asked {
                subscriber_id: c.subscriber_id,
                consent_id: c.consent_id,
                mailbox_key: &r.mailbox_key,
                email: &c.email,
                cooldown_ms: limits.cooldown_ms,
                domain_cap_per_hour: limits.domain_cap_per_hour,
            });
        }
        let queued = queue_confirmations(&mut tx, &asked, &self.message_id_domain, now).await?;
        for &(i, delivery_id) in &queued {
            sqlx::query("UPDATE signup_reminders SET delivery_id = $2 WHERE consent_id = $1")
                .bind(asked[i].consent_id)
                .bind(delivery_id)
                .execute(&mut *tx)
                .await?;
        }
        let_go.extend(
            (0..asked.len())
                .filter(|i| !queued.iter().any(|(q, _)| q == i))
                .map(|i| asked[i].consent_id),
        );
        if !let_go.is_empty() {
            let sql = Sql::new("DELETE FROM signup_reminders WHERE consent_id IN (", 0)
                .list(let_go.len())
                .push(")")
                .build();
            let mut query = sqlx::query(sql);
            for id in &let_go {
                query = query.bind(*id);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(queued.len() as u64)
    }

    /// Deletes up to `limit` people who never confirmed and whose last signup was at or
    /// before `signed_up_before`, with everything about them (subscriptions, consent records,
    /// deliveries, reminders and bounces, by cascade and as erasure does). Unlike erasure it
    /// adds nothing to the suppression list: they leave no trace, and an entry they already
    /// had stays. Returns how many were deleted; a batch smaller than `limit` was the last.
    ///
    /// "Never confirmed": no subscription was ever confirmed and every consent record is a
    /// signup or an unsubscribe (an import, a confirmation or a change of preferences keeps
    /// the person).
    pub async fn forget_unconfirmed(
        &self,
        signed_up_before: Millis,
        limit: u32,
    ) -> Result<u64, sqlx::Error> {
        let _turn = self.write_turn().await;
        let mut tx = self.pool.begin().await?;
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT s.id FROM subscribers s
             WHERE s.id IN (SELECT c.subscriber_id FROM consents c
                            WHERE c.action = 'signup' AND c.at <= $1)
               AND NOT EXISTS (SELECT 1 FROM consents c WHERE c.subscriber_id = s.id
                               AND (c.action NOT IN ('signup', 'unsubscribe') OR c.at > $1))
               AND NOT EXISTS (SELECT 1 FROM subscriptions sub WHERE sub.subscriber_id = s.id
                               AND (sub.status = 'confirmed' OR sub.confirmed_at IS NOT NULL))
             ORDER BY s.id LIMIT $2",
        )
        .bind(signed_up_before)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        if ids.is_empty() {
            tx.rollback().await?;
            return Ok(0);
        }
        // Reports that name the address but matched none of the person's deliveries (theirs
        // go with the person, by cascade), as erasure does.
        let sql = Sql::new(
            "DELETE FROM bounces WHERE lower(recipient) IN
                 (SELECT lower(email) FROM subscribers WHERE id IN (",
            0,
        )
        .list(ids.len())
        .push("))")
        .build();
        let mut query = sqlx::query(sql);
        for id in &ids {
            query = query.bind(*id);
        }
        query.execute(&mut *tx).await?;
        let sql = Sql::new("DELETE FROM subscribers WHERE id IN (", 0)
            .list(ids.len())
            .push(")")
            .build();
        let mut query = sqlx::query(sql);
        for id in &ids {
            query = query.bind(*id);
        }
        let gone = query.execute(&mut *tx).await?.rows_affected();
        tx.commit().await?;
        Ok(gone)
    }

    /// Forgets confirmation cooldowns that are over (a keyed hash of an inbox and a time),
    /// so an inbox nobody signs up with again leaves nothing behind.
    pub async fn forget_cooldowns(&self, ended_before: Millis) -> Result<u64, sqlx::Error> {
        Ok(
            sqlx::query("DELETE FROM confirmation_cooldowns WHERE sent_at <= $1")
                .bind(ended_before)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    /// How long each person with a pending subscription has waited since their latest
    /// signup, and whether that signup was reminded, by subscriber id.
    pub async fn waiting_signups(&self) -> Result<HashMap<i64, Waiting>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT c.subscriber_id, c.at, r.delivery_id, r.sent_at
             FROM consents c LEFT JOIN signup_reminders r ON r.consent_id = c.id
             WHERE c.action = 'signup'
               AND EXISTS (SELECT 1 FROM subscriptions sub
                           WHERE sub.subscriber_id = c.subscriber_id AND sub.status = 'pending')
               AND NOT EXISTS (SELECT 1 FROM consents later
                               WHERE later.subscriber_id = c.subscriber_id
                                 AND later.action = 'signup'
                                 AND (later.at > c.at OR (later.at = c.at AND later.id > c.id)))",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let delivery: Option<i64> = row.try_get("delivery_id")?;
                let sent_at: Option<Millis> = row.try_get("sent_at")?;
                Ok((
                    row.try_get("subscriber_id")?,
                    Waiting {
                        signed_up_at: row.try_get("at")?,
                        reminded_at: delivery.and(sent_at),
                    },
                ))
            })
            .collect()
    }
}
