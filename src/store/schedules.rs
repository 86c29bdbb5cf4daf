//! Local-time sends and recurring schedules.
//!
//! A local-time send is fanned out zone by zone: the recipients of one zone (a subscriber's
//! own, or the site's for those who gave none) get deliveries due at the local time in that
//! zone, so the workers' ordinary `next_attempt_at` does the waiting. Zone arithmetic stays in
//! Rust (jiff); SQL only groups by zone name.

use serde::Serialize;
use sqlx::Row;

use super::{NewSend, Store};
use crate::clock::Millis;
use crate::domain::{Every, RecurrenceStatus, TimeOfDay};
use jiff::civil::Date;

/// A recurring schedule as stored.
#[derive(Debug, Clone, Serialize)]
pub struct Recurrence {
    pub id: i64,
    pub offering_id: i64,
    pub offering: String,
    pub content_dir: String,
    pub every: Every,
    pub local_time: TimeOfDay,
    pub next_date: Date,
    pub status: RecurrenceStatus,
    pub note: Option<String>,
    /// Files of the folder already used by an occurrence.
    pub used: i64,
}

/// How a local-time send is doing in one zone.
#[derive(Debug, Clone, Serialize)]
pub struct ZoneProgress {
    pub zone: String,
    pub pending: i64,
    pub sent: i64,
    pub skipped: i64,
    pub failed: i64,
    pub first_due: Millis,
}

/// A send whose fan-out is due, with what a local-time send needs.
#[derive(Debug, Clone)]
pub struct DueSend {
    pub id: i64,
    /// The local time and date of a local-time send.
    pub local: Option<(TimeOfDay, Date)>,
    pub send_late: bool,
    pub created_at: Millis,
    /// An occurrence of a recurring send (created by the scheduler, not the owner).
    pub recurring: bool,
}

impl Store {
    /// Sends whose fan-out is due, with their local-time settings.
    pub async fn due_sends(&self, now: Millis) -> Result<Vec<DueSend>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT id, local_time, local_date, send_late, created_at, recurrence_id FROM sends
             WHERE status IN ('scheduled', 'sending') AND fanout_done_at IS NULL AND send_at <= $1
             ORDER BY send_at, id",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let time: Option<TimeOfDay> = super::word_opt(r, "local_time")?;
                let date: Option<Date> = super::word_opt(r, "local_date")?;
                Ok(DueSend {
                    id: r.try_get("id")?,
                    local: time.zip(date),
                    send_late: r.try_get::<i64, _>("send_late")? != 0,
                    created_at: r.try_get("created_at")?,
                    recurring: r.try_get::<Option<i64>, _>("recurrence_id")?.is_some(),
                })
            })
            .collect()
    }

    /// Whether a scheduled send's time has come: one indexed lookup (`sends_due`), cheap
    /// enough for the scheduler to ask ten times a second.
    pub async fn has_due_send(&self, now: Millis) -> Result<bool, sqlx::Error> {
        let due: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM sends WHERE status = 'scheduled' AND send_at <= $1 LIMIT 1",
        )
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(due.is_some())
    }

    /// The zones of the confirmed subscribers of a send's offering (`default` for those with
    /// none), with how many people each.
    pub async fn send_zones(
        &self,
        send_id: i64,
        default: &str,
    ) -> Result<Vec<(String, i64)>, sqlx::Error> {
        let offering_id: i64 = sqlx::query_scalar("SELECT offering_id FROM sends WHERE id = $1")
            .bind(send_id)
            .fetch_one(&self.pool)
            .await?;
        self.offering_zones(offering_id, default).await
    }

    /// The zones of the confirmed subscribers of an offering, with how many people each.
    pub async fn offering_zones(
        &self,
        offering_id: i64,
        default: &str,
    ) -> Result<Vec<(String, i64)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT COALESCE(s.timezone, $2) AS zone, COUNT(*) AS n
             FROM subscriptions sub JOIN subscribers s ON s.id = sub.subscriber_id
             WHERE sub.offering_id = $1 AND sub.status = 'confirmed'
             GROUP BY COALESCE(s.timezone, $2) ORDER BY zone",
        )
        .bind(offering_id)
        .bind(default)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("zone")?, r.try_get("n")?)))
            .collect()
    }

    /// Ends the fan-out of a send (every zone done).
    pub async fn finish_fan_out(&self, send_id: i64, now: Millis) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE sends SET status = 'sending', fanout_done_at = $2
             WHERE id = $1 AND fanout_done_at IS NULL AND status IN ('scheduled', 'sending')",
        )
        .bind(send_id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Progress of a send zone by zone.
    pub async fn zone_progress(
        &self,
        send_id: i64,
        default: &str,
    ) -> Result<Vec<ZoneProgress>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT COALESCE(s.timezone, $2) AS zone, d.status, COUNT(*) AS n,
                    MIN(d.created_at) AS first_created, MIN(d.next_attempt_at) AS first_due
             FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id
             WHERE d.send_id = $1
             GROUP BY COALESCE(s.timezone, $2), d.status ORDER BY first_due, zone",
        )
        .bind(send_id)
        .bind(default)
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<ZoneProgress> = Vec::new();
        for r in &rows {
            let zone: String = r.try_get("zone")?;
            let n: i64 = r.try_get("n")?;
            let due: Millis = r.try_get("first_due")?;
            let entry = match out.iter_mut().position(|z| z.zone == zone) {
                Some(i) => &mut out[i],
                None => {
                    out.push(ZoneProgress {
                        zone: zone.clone(),
                        pending: 0,
                        sent: 0,
                        skipped: 0,
                        failed: 0,
                        first_due: due,
                    });
                    out.last_mut().expect("pushed")
                }
            };
            entry.first_due = entry.first_due.min(due);
            match r.try_get::<String, _>("status")?.as_str() {
                "pending" => entry.pending += n,
                "sent" => entry.sent += n,
                "skipped" | "cancelled" => entry.skipped += n,
                _ => entry.failed += n,
            }
        }
        out.sort_by_key(|z| z.first_due);
        Ok(out)
    }

    /// Records a recurring send of a content folder; returns its id.
    pub async fn create_recurrence(
        &self,
        offering_id: i64,
        content_dir: &str,
        every: Every,
        local_time: TimeOfDay,
        first_date: Date,
        now: Millis,
    ) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(
            "INSERT INTO recurrences (offering_id, content_dir, every, local_time, next_date, created_at)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(offering_id)
        .bind(content_dir)
        .bind(every.as_str())
        .bind(local_time.to_string())
        .bind(first_date.to_string())
        .bind(now)
        .fetch_one(&self.pool)
        .await
    }

    /// Recurring schedules, active first; `only_active` for the scheduler.
    pub async fn recurrences(&self, only_active: bool) -> Result<Vec<Recurrence>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT r.id, r.offering_id, o.slug, r.content_dir, r.every, r.local_time,
                    r.next_date, r.status, r.note,
                    (SELECT COUNT(*) FROM sends s WHERE s.recurrence_id = r.id) AS used
             FROM recurrences r JOIN offerings o ON o.id = r.offering_id
             WHERE $1 = 0 OR r.status = 'active'
             ORDER BY r.status, r.id",
        )
        .bind(i64::from(only_active))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Recurrence {
                    id: r.try_get("id")?,
                    offering_id: r.try_get("offering_id")?,
                    offering: r.try_get("slug")?,
                    content_dir: r.try_get("content_dir")?,
                    every: super::word(r, "every")?,
                    local_time: super::word(r, "local_time")?,
                    next_date: super::word(r, "next_date")?,
                    status: super::word(r, "status")?,
                    note: r.try_get("note")?,
                    used: r.try_get("used")?,
                })
            })
            .collect()
    }

    /// The content files a recurrence has used.
    pub async fn recurrence_files(&self, id: i64) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT content_file FROM sends WHERE recurrence_id = $1 AND content_file IS NOT NULL",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
    }

    /// Creates the send of one occurrence and moves the recurrence to its next date, in one
    /// transaction. Returns `None` if that occurrence exists already (another scheduler won).
    pub async fn create_occurrence(
        &self,
        recurrence_id: i64,
        date: Date,
        next_date: Date,
        send: &NewSend,
        now: Millis,
    ) -> Result<Option<i64>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let moved = sqlx::query(
            "UPDATE recurrences SET next_date = $3 WHERE id = $1 AND next_date = $2 AND status = 'active'",
        )
        .bind(recurrence_id)
        .bind(date.to_string())
        .bind(next_date.to_string())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        let id = super::sends::insert_send(&mut tx, send, now).await?;
        tx.commit().await?;
        Ok(Some(id))
    }

    /// Moves a recurrence past an occurrence that is not sent, noting why.
    pub async fn skip_occurrence(
        &self,
        recurrence_id: i64,
        date: Date,
        next_date: Date,
        note: &str,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE recurrences SET next_date = $3,
                 note = CASE WHEN note IS NULL THEN $4 ELSE note || '; ' || $4 END
             WHERE id = $1 AND next_date = $2 AND status = 'active'",
        )
        .bind(recurrence_id)
        .bind(date.to_string())
        .bind(next_date.to_string())
        .bind(note)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Ends a recurrence (out of content, or cancelled by the owner).
    pub async fn end_recurrence(
        &self,
        id: i64,
        status: RecurrenceStatus,
        note: &str,
        now: Millis,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE recurrences SET status = $2, finished_at = $4,
                 note = CASE WHEN note IS NULL THEN $3 ELSE note || '; ' || $3 END
             WHERE id = $1 AND status = 'active'",
        )
        .bind(id)
        .bind(status.as_str())
        .bind(note)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
