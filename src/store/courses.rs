//! Courses: lessons stored as sends of a course offering (one per day, `sends.lesson_day`),
//! and each person's progress through each course (`course_progress`).
//!
//! ```text
//!  confirmed ──start──► active ──lesson due──► delivery row + next lesson ──► … ──► finished
//!                        │  ▲                   (one transaction, see record_lesson)
//!                 pause  ▼  │ resume
//!                       paused
//! ```
//!
//! A lesson send is never fanned out: it is stored with `fanout_done_at` set and status
//! `sending`, and the course step adds one delivery per person when their day comes. The
//! scheduler's `finish_sends` marks it `done` whenever nothing of it is pending; adding a
//! delivery turns it back to `sending` in the same transaction (and [`Store::reopen_lessons`]
//! repairs a send that a concurrent `finish_sends` closed anyway), so workers claim it.
//!
//! Every change of a progress row is conditional on the `version` it was computed from, so
//! two schedulers, or a scheduler and a pause from the preferences page, never both move
//! one person on: a lesson is recorded at most once per person.

use serde::Serialize;
use sqlx::Row;

use super::{Store, outbox};
use crate::clock::Millis;
use crate::domain::{DeliveryStatus, SendStatus, SubscriptionStatus};

pub use crate::domain::CourseState;

/// The current version of one lesson of a course.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLesson {
    pub send_id: i64,
    pub day: i64,
    pub hash: String,
    /// When the first version of this day was stored: a lesson added after a person's day
    /// for it had long passed is not theirs.
    pub first_stored_at: Millis,
}

/// A checked lesson file, to be stored.
#[derive(Debug, Clone)]
pub struct NewLesson {
    pub offering_id: i64,
    pub day: i64,
    pub subject: String,
    pub preheader: Option<String>,
    pub html_template: String,
    pub text_template: String,
    pub source_path: String,
    pub hash: String,
}

/// One person's progress row, with what the course step needs to move it on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub subscriber_id: i64,
    pub offering_id: i64,
    pub state: CourseState,
    pub started_at: Millis,
    /// `YYYY-MM-DD`, the local day 0.
    pub anchor_date: String,
    pub last_day: Option<i64>,
    pub next_day: Option<i64>,
    pub next_at: Option<Millis>,
    pub paused_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    pub version: i64,
    /// The subscriber's own zone, if they gave one.
    pub timezone: Option<String>,
    /// The subscription as it is now, and when it was (last) confirmed.
    pub subscription_confirmed: bool,
    pub confirmed_at: Option<Millis>,
}

/// What a progress row becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgressChange {
    pub state: CourseState,
    pub started_at: Millis,
    pub anchor_date: String,
    pub last_day: Option<i64>,
    pub next_day: Option<i64>,
    pub next_at: Option<Millis>,
    pub paused_at: Option<Millis>,
    pub finished_at: Option<Millis>,
}

impl ProgressChange {
    /// The row as it is, ready to be changed.
    pub fn from(p: &Progress) -> Self {
        Self {
            state: p.state,
            started_at: p.started_at,
            anchor_date: p.anchor_date.clone(),
            last_day: p.last_day,
            next_day: p.next_day,
            next_at: p.next_at,
            paused_at: p.paused_at,
            finished_at: p.finished_at,
        }
    }

    /// Moves on to `next` (a lesson day and when it is due), or finishes.
    pub fn with_next(mut self, next: Option<(i64, Millis)>, now: Millis) -> Self {
        match next {
            Some((day, at)) => {
                self.state = CourseState::Active;
                self.next_day = Some(day);
                self.next_at = Some(at);
                self.finished_at = None;
            }
            None => {
                self.state = CourseState::Finished;
                self.next_day = None;
                self.next_at = None;
                self.finished_at = Some(self.finished_at.unwrap_or(now));
            }
        }
        self
    }
}

/// A confirmed subscription to a course that has no progress row yet.
#[derive(Debug, Clone)]
pub struct CourseStarter {
    pub subscriber_id: i64,
    pub confirmed_at: Millis,
    pub timezone: Option<String>,
}

/// The delivery a due lesson becomes.
#[derive(Debug, Clone)]
pub struct LessonDelivery {
    pub send_id: i64,
    /// When the lesson fell due for this person (the delivery's first attempt time).
    pub due_at: Millis,
    /// `Some(why)`: recorded as skipped instead of sent.
    pub skipped: Option<String>,
}

/// Where one person is in one course, for `subscribers show`, the preferences page and the
/// data download.
#[derive(Debug, Clone, Serialize)]
pub struct CourseStatus {
    pub offering: String,
    pub offering_name: String,
    pub state: CourseState,
    /// Whether the person's subscription to the course is confirmed now (someone who left is
    /// marked `left` when their next lesson comes).
    pub subscribed: bool,
    /// Lessons the course has now.
    pub lessons: i64,
    /// Lessons handed to the mail server for this person, waiting in the outbox, and
    /// skipped (fell due while the service was down beyond the grace window).
    pub sent: i64,
    pub queued: i64,
    pub missed: i64,
    pub started_at: Millis,
    pub anchor_date: String,
    pub last_day: Option<i64>,
    pub next_day: Option<i64>,
    /// The place of the next lesson in the course (1 is the first).
    pub next_lesson: Option<i64>,
    pub next_at: Option<Millis>,
    pub paused_at: Option<Millis>,
    pub finished_at: Option<Millis>,
}

/// A read of progress rows: the columns `progress_from_row` reads, then `$filter` (a `WHERE`
/// clause with its order and limit).
macro_rules! select_progress {
    ($filter:literal) => {
        concat!(
            "SELECT p.subscriber_id, p.offering_id, p.state, p.started_at, \
             p.anchor_date, p.last_day, p.next_day, p.next_at, p.paused_at, p.finished_at, \
             p.version, s.timezone, sub.status AS subscription_status, sub.confirmed_at
             FROM course_progress p
             JOIN subscribers s ON s.id = p.subscriber_id
             LEFT JOIN subscriptions sub
                    ON sub.subscriber_id = p.subscriber_id AND sub.offering_id = p.offering_id
             ",
            $filter
        )
    };
}

fn progress_from_row(r: &sqlx::any::AnyRow) -> Result<Progress, sqlx::Error> {
    let status: Option<SubscriptionStatus> = super::word_opt(r, "subscription_status")?;
    Ok(Progress {
        subscriber_id: r.try_get("subscriber_id")?,
        offering_id: r.try_get("offering_id")?,
        state: super::word(r, "state")?,
        started_at: r.try_get("started_at")?,
        anchor_date: r.try_get("anchor_date")?,
        last_day: r.try_get("last_day")?,
        next_day: r.try_get("next_day")?,
        next_at: r.try_get("next_at")?,
        paused_at: r.try_get("paused_at")?,
        finished_at: r.try_get("finished_at")?,
        version: r.try_get("version")?,
        timezone: r.try_get("timezone")?,
        subscription_confirmed: status == Some(SubscriptionStatus::Confirmed),
        confirmed_at: r.try_get("confirmed_at")?,
    })
}

/// Writes `change` if the row is still at `version`. True when written.
async fn change_progress_on(
    conn: &mut sqlx::AnyConnection,
    p: &Progress,
    change: &ProgressChange,
    now: Millis,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE course_progress SET state = $4, started_at = $5, anchor_date = $6, last_day = $7,
             next_day = $8, next_at = $9, paused_at = $10, finished_at = $11, updated_at = $12,
             version = version + 1
         WHERE subscriber_id = $1 AND offering_id = $2 AND version = $3",
    )
    .bind(p.subscriber_id)
    .bind(p.offering_id)
    .bind(p.version)
    .bind(change.state.as_str())
    .bind(change.started_at)
    .bind(&change.anchor_date)
    .bind(change.last_day)
    .bind(change.next_day)
    .bind(change.next_at)
    .bind(change.paused_at)
    .bind(change.finished_at)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

impl Store {
    /// True when someone is confirmed for the course or moving through it: only then are its
    /// lessons read.
    pub async fn course_has_people(&self, offering_id: i64) -> Result<bool, sqlx::Error> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM (
                 SELECT 1 FROM subscriptions WHERE offering_id = $1 AND status = 'confirmed'
                 UNION ALL
                 SELECT 1 FROM course_progress WHERE offering_id = $1 AND state = 'active'
                 LIMIT 1) AS one",
        )
        // Planned for this offering each time. A statement kept prepared gets PostgreSQL's
        // generic plan after five runs, which assumes an offering has its share of the
        // subscriptions and scans them for the first one: for a course nobody has joined,
        // every subscription of the other offerings, 7 ms at 100k people, once a second.
        .persistent(false)
        .bind(offering_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }

    /// The current version of each lesson of a course, by day.
    pub async fn current_lessons(
        &self,
        offering_id: i64,
    ) -> Result<Vec<StoredLesson>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT s.id, s.lesson_day, s.lesson_hash,
                    (SELECT MIN(v.created_at) FROM sends v
                     WHERE v.offering_id = s.offering_id AND v.lesson_day = s.lesson_day)
                        AS first_stored_at
             FROM sends s
             WHERE s.offering_id = $1 AND s.lesson_day IS NOT NULL
               AND s.lesson_superseded_at IS NULL AND s.status <> 'cancelled'
             ORDER BY s.lesson_day, s.id",
        )
        .bind(offering_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredLesson {
                    send_id: r.try_get("id")?,
                    day: r.try_get("lesson_day")?,
                    hash: r
                        .try_get::<Option<String>, _>("lesson_hash")?
                        .unwrap_or_default(),
                    first_stored_at: r.try_get("first_stored_at")?,
                })
            })
            .collect()
    }

    /// Stores a lesson (as a send that is never fanned out), superseding `replaces` if given.
    /// Returns the new send's id, or `None` when another process stored that day first.
    pub async fn store_lesson(
        &self,
        lesson: &NewLesson,
        replaces: Option<i64>,
        now: Millis,
    ) -> Result<Option<i64>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        if let Some(old) = replaces {
            let marked = sqlx::query(
                "UPDATE sends SET lesson_superseded_at = $2
                 WHERE id = $1 AND lesson_superseded_at IS NULL",
            )
            .bind(old)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if marked != 1 {
                tx.rollback().await?;
                return Ok(None);
            }
        }
        let inserted = sqlx::query_scalar::<_, i64>(
            "INSERT INTO sends (offering_id, status, subject, preheader, html_template,
                                text_template, source_path, send_at, created_at, fanout_done_at,
                                message_id_prefix, lesson_day, lesson_hash)
             VALUES ($1, 'sending', $2, $3, $4, $5, $6, $7, $7, $7, $8, $9, $10) RETURNING id",
        )
        .bind(lesson.offering_id)
        .bind(&lesson.subject)
        .bind(lesson.preheader.clone())
        .bind(&lesson.html_template)
        .bind(&lesson.text_template)
        .bind(&lesson.source_path)
        .bind(now)
        .bind(super::new_message_id_prefix())
        .bind(lesson.day)
        .bind(&lesson.hash)
        .fetch_one(&mut *tx)
        .await;
        match inserted {
            Ok(id) => {
                tx.commit().await?;
                Ok(Some(id))
            }
            Err(e) if super::is_unique_violation(&e) => {
                tx.rollback().await?;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Withdraws a lesson whose file is gone: its send is cancelled whatever its state (a
    /// lesson send is `done` whenever nothing of it is pending), with its pending deliveries.
    pub async fn withdraw_lesson(&self, send_id: i64, now: Millis) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE sends SET status = 'cancelled', finished_at = $2
             WHERE id = $1 AND lesson_day IS NOT NULL AND status <> 'cancelled'",
        )
        .bind(send_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE deliveries SET status = 'cancelled', lease_until = NULL
             WHERE send_id = $1 AND status = 'pending'",
        )
        .bind(send_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    /// Lesson sends that `finish_sends` closed while a delivery of them is pending go back to
    /// `sending`, so workers claim it. Returns how many were reopened.
    pub async fn reopen_lessons(&self) -> Result<u64, sqlx::Error> {
        Ok(sqlx::query(
            "UPDATE sends SET status = 'sending', finished_at = NULL
             WHERE lesson_day IS NOT NULL AND status = 'done'
               AND EXISTS (SELECT 1 FROM deliveries d
                           WHERE d.send_id = sends.id AND d.status = 'pending')",
        )
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Confirmed subscriptions to a course without a progress row, oldest first.
    pub async fn course_starters(
        &self,
        offering_id: i64,
        limit: u32,
    ) -> Result<Vec<CourseStarter>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT sub.subscriber_id, COALESCE(sub.confirmed_at, sub.updated_at) AS confirmed_at,
                    s.timezone
             FROM subscriptions sub JOIN subscribers s ON s.id = sub.subscriber_id
             WHERE sub.offering_id = $1 AND sub.status = 'confirmed'
               AND NOT EXISTS (SELECT 1 FROM course_progress p
                               WHERE p.subscriber_id = sub.subscriber_id
                                 AND p.offering_id = sub.offering_id)
             ORDER BY sub.subscriber_id LIMIT $2",
        )
        .bind(offering_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(CourseStarter {
                    subscriber_id: r.try_get("subscriber_id")?,
                    confirmed_at: r.try_get("confirmed_at")?,
                    timezone: r.try_get("timezone")?,
                })
            })
            .collect()
    }

    /// Creates a progress row; does nothing if one exists. True when created.
    pub async fn start_course(
        &self,
        subscriber_id: i64,
        offering_id: i64,
        change: &ProgressChange,
        now: Millis,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "INSERT INTO course_progress (subscriber_id, offering_id, state, started_at,
                 anchor_date, last_day, next_day, next_at, paused_at, finished_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (subscriber_id, offering_id) DO NOTHING",
        )
        .bind(subscriber_id)
        .bind(offering_id)
        .bind(change.state.as_str())
        .bind(change.started_at)
        .bind(&change.anchor_date)
        .bind(change.last_day)
        .bind(change.next_day)
        .bind(change.next_at)
        .bind(change.paused_at)
        .bind(change.finished_at)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The progress rows `sql` (made by `select_progress!`) selects with `values` bound.
    async fn progress_rows(
        &self,
        sql: &'static str,
        values: &[i64],
    ) -> Result<Vec<Progress>, sqlx::Error> {
        let mut query = sqlx::query(sql);
        for value in values {
            query = query.bind(*value);
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(progress_from_row).collect()
    }

    /// Active rows of a course whose next lesson is due, earliest first.
    pub async fn due_progress(
        &self,
        offering_id: i64,
        now: Millis,
        limit: u32,
    ) -> Result<Vec<Progress>, sqlx::Error> {
        let sql = select_progress!(
            "WHERE p.state = 'active' AND p.next_at <= $1 AND p.offering_id = $2
             ORDER BY p.next_at, p.subscriber_id LIMIT $3"
        );
        self.progress_rows(sql, &[now, offering_id, i64::from(limit)])
            .await
    }

    /// People who left a course and have confirmed it again since.
    pub async fn rejoined_progress(
        &self,
        offering_id: i64,
        limit: u32,
    ) -> Result<Vec<Progress>, sqlx::Error> {
        let sql = select_progress!(
            "WHERE p.offering_id = $1 AND p.state = 'left' AND sub.status = 'confirmed'
               AND sub.confirmed_at > p.paused_at
             ORDER BY p.subscriber_id LIMIT $2"
        );
        self.progress_rows(sql, &[offering_id, i64::from(limit)])
            .await
    }

    /// A page of the active and finished rows of a course (by subscriber id, after
    /// `after`), for recomputing their next lesson when the lessons change.
    pub async fn moving_progress(
        &self,
        offering_id: i64,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Progress>, sqlx::Error> {
        let sql = select_progress!(
            "WHERE p.offering_id = $1 AND p.state IN ('active', 'finished')
               AND p.subscriber_id > $2
             ORDER BY p.subscriber_id LIMIT $3"
        );
        self.progress_rows(sql, &[offering_id, after, i64::from(limit)])
            .await
    }

    /// One person's progress in one course.
    pub async fn course_progress(
        &self,
        subscriber_id: i64,
        offering_id: i64,
    ) -> Result<Option<Progress>, sqlx::Error> {
        let sql = select_progress!("WHERE p.subscriber_id = $1 AND p.offering_id = $2");
        let rows = self
            .progress_rows(sql, &[subscriber_id, offering_id])
            .await?;
        // The pair is the table's primary key: one row at most.
        Ok(rows.into_iter().next())
    }

    /// Writes `change` if the row is still as read. True when written.
    pub async fn change_progress(
        &self,
        p: &Progress,
        change: &ProgressChange,
        now: Millis,
    ) -> Result<bool, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        change_progress_on(&mut conn, p, change, now).await
    }

    /// Records a due lesson for one person and moves them on, in one transaction: the
    /// progress row first (refused if another process moved it meanwhile: then nothing is
    /// written), then the delivery (pending, or skipped with the reason). The unique
    /// (send_id, subscriber_id) index makes a repeat add nothing. True when recorded.
    pub async fn record_lesson(
        &self,
        p: &Progress,
        change: &ProgressChange,
        lesson: &LessonDelivery,
        now: Millis,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        // Writing first takes SQLite's write lock at once and locks the row on PostgreSQL.
        if !change_progress_on(&mut tx, p, change, now).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        let send = sqlx::query(
            "UPDATE sends SET
                 status = CASE WHEN status = 'done' THEN 'sending' ELSE status END,
                 finished_at = CASE WHEN status = 'done' THEN NULL ELSE finished_at END
             WHERE id = $1 RETURNING status, message_id_prefix",
        )
        .bind(lesson.send_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(send) = send else {
            tx.rollback().await?;
            return Ok(false);
        };
        let status: SendStatus = super::word(&send, "status")?;
        let prefix: String = send.try_get("message_id_prefix")?;
        let skipped = match (&lesson.skipped, status) {
            (Some(why), _) => Some(why.clone()),
            (None, SendStatus::Cancelled) => Some("the lesson was withdrawn".to_owned()),
            (None, _) => None,
        };
        let lesson = outbox::Lesson {
            subscriber_id: p.subscriber_id,
            send_id: lesson.send_id,
            prefix: &prefix,
            due: lesson.due_at,
            skipped: skipped.as_deref(),
        };
        outbox::enqueue_lesson(&mut tx, lesson, &self.message_id_domain, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Pauses an active course. Returns false if it was not active.
    pub async fn pause_course(
        &self,
        subscriber_id: i64,
        offering_id: i64,
        now: Millis,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE course_progress SET state = 'paused', paused_at = $3, next_at = NULL,
                 updated_at = $3, version = version + 1
             WHERE subscriber_id = $1 AND offering_id = $2 AND state = 'active'",
        )
        .bind(subscriber_id)
        .bind(offering_id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Where one person is in each course they have started.
    pub async fn course_statuses(
        &self,
        subscriber_id: i64,
    ) -> Result<Vec<CourseStatus>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT o.slug, o.name, p.offering_id, p.state, p.started_at, p.anchor_date,
                    sub.status AS subscription_status,
                    p.last_day, p.next_day, p.next_at, p.paused_at, p.finished_at,
                    (SELECT COUNT(*) FROM sends l
                     WHERE l.offering_id = p.offering_id AND l.lesson_day IS NOT NULL
                       AND l.lesson_superseded_at IS NULL AND l.status <> 'cancelled')
                        AS lessons,
                    (SELECT COUNT(*) FROM sends l
                     WHERE l.offering_id = p.offering_id AND l.lesson_day IS NOT NULL
                       AND l.lesson_superseded_at IS NULL AND l.status <> 'cancelled'
                       AND l.lesson_day <= p.next_day)
                        AS next_lesson
             FROM course_progress p JOIN offerings o ON o.id = p.offering_id
             LEFT JOIN subscriptions sub
                    ON sub.subscriber_id = p.subscriber_id AND sub.offering_id = p.offering_id
             WHERE p.subscriber_id = $1 ORDER BY o.id",
        )
        .bind(subscriber_id)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let offering_id: i64 = r.try_get("offering_id")?;
            let counts = sqlx::query(
                "SELECT d.status, COUNT(*) AS n FROM deliveries d JOIN sends l ON l.id = d.send_id
                 WHERE d.subscriber_id = $1 AND l.offering_id = $2 AND l.lesson_day IS NOT NULL
                 GROUP BY d.status",
            )
            .bind(subscriber_id)
            .bind(offering_id)
            .fetch_all(&self.pool)
            .await?;
            let (mut sent, mut queued, mut missed) = (0, 0, 0);
            for c in &counts {
                let n: i64 = c.try_get("n")?;
                match super::word(c, "status")? {
                    DeliveryStatus::Sent => sent += n,
                    DeliveryStatus::Pending => queued += n,
                    DeliveryStatus::Skipped => missed += n,
                    _ => {}
                }
            }
            let next_day: Option<i64> = r.try_get("next_day")?;
            out.push(CourseStatus {
                offering: r.try_get("slug")?,
                offering_name: r.try_get("name")?,
                state: super::word(r, "state")?,
                subscribed: super::word_opt(r, "subscription_status")?
                    == Some(SubscriptionStatus::Confirmed),
                lessons: r.try_get("lessons")?,
                sent,
                queued,
                missed,
                started_at: r.try_get("started_at")?,
                anchor_date: r.try_get("anchor_date")?,
                last_day: r.try_get("last_day")?,
                next_day,
                next_lesson: next_day
                    .map(|_| r.try_get::<i64, _>("next_lesson"))
                    .transpose()?,
                next_at: r.try_get("next_at")?,
                paused_at: r.try_get("paused_at")?,
                finished_at: r.try_get("finished_at")?,
            });
        }
        Ok(out)
    }
}
