//! Alerts for the owner: raised once per event (the `key` of a row is unique, so a repeat
//! inserts nothing), logged when raised, and emailed from their own row, which is their
//! outbox: claimed with a lease, marked emailed, or given a later attempt.

use sqlx::Row;

use super::{Store, word};
use crate::clock::Millis;
use crate::domain::AlertKind;

/// The key of the open late-queue alert; it takes its row id when the queue catches up.
const QUEUE_LATE_KEY: &str = "queue_late";

/// An event to tell the owner of.
#[derive(Debug, Clone)]
pub struct NewAlert {
    pub kind: AlertKind,
    /// Names the event: raising the same key again does nothing.
    pub key: String,
    pub send_id: Option<i64>,
    /// One line: the email's subject.
    pub summary: String,
    /// What happened and what to do: the email's body.
    pub detail: String,
}

/// One alert as stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AlertRow {
    pub id: i64,
    pub kind: AlertKind,
    pub send_id: Option<i64>,
    pub summary: String,
    pub detail: String,
    pub raised_at: Millis,
    /// When the condition ended (a late queue that caught up).
    pub cleared_at: Option<Millis>,
    /// When the owner's relay took the email.
    pub emailed_at: Option<Millis>,
    pub attempts: i64,
    pub last_error: Option<String>,
}

impl AlertRow {
    fn from_row(row: &sqlx::any::AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            kind: word(row, "kind")?,
            send_id: row.try_get("send_id")?,
            summary: row.try_get("summary")?,
            detail: row.try_get("detail")?,
            raised_at: row.try_get("raised_at")?,
            cleared_at: row.try_get("cleared_at")?,
            emailed_at: row.try_get("emailed_at")?,
            attempts: row.try_get("attempts")?,
            last_error: row.try_get("last_error")?,
        })
    }
}

/// The columns [`AlertRow::from_row`] reads.
macro_rules! alert_columns {
    () => {
        "id, kind, send_id, summary, detail, raised_at, cleared_at, emailed_at, attempts, last_error"
    };
}

/// Inserts `alert` unless its key was raised before, and logs it when new; returns its id
/// when new. Runs on whatever connection it is given, so a caller can raise in the
/// transaction that made the event.
pub(super) async fn raise_on(
    conn: &mut sqlx::AnyConnection,
    alert: &NewAlert,
    now: Millis,
) -> Result<Option<i64>, sqlx::Error> {
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO alerts (key, kind, send_id, summary, detail, raised_at, next_attempt_at)
         VALUES ($1, $2, $3, $4, $5, $6, $6)
         ON CONFLICT DO NOTHING
         RETURNING id",
    )
    .bind(&alert.key)
    .bind(alert.kind.as_str())
    .bind(alert.send_id)
    .bind(&alert.summary)
    .bind(&alert.detail)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(id) = id {
        tracing::warn!(alert = id, kind = %alert.kind, send = alert.send_id,
            "alert: {}", alert.summary);
    }
    Ok(id)
}

impl Store {
    /// Raises `alert` once: `None` when its key was raised before.
    pub async fn raise_alert(
        &self,
        alert: &NewAlert,
        now: Millis,
    ) -> Result<Option<i64>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        raise_on(&mut conn, alert, now).await
    }

    /// Raises the late-queue alert when the longest-waiting due delivery has waited `late_ms`
    /// or more, and closes it once none has: a later delay is a new alert. Returns the id of
    /// an alert raised now.
    pub async fn watch_queue(
        &self,
        now: Millis,
        late_ms: Millis,
    ) -> Result<Option<i64>, sqlx::Error> {
        let queue = self.due_queue(now).await?;
        match queue.oldest_due_at {
            Some(oldest) if now - oldest >= late_ms => {
                let minutes = (now - oldest) / 60_000;
                let alert = NewAlert {
                    kind: AlertKind::QueueLate,
                    key: QUEUE_LATE_KEY.to_owned(),
                    send_id: None,
                    summary: format!("emails have waited {minutes} minutes to go out"),
                    detail: format!(
                        "{due} deliveries are due, and the longest-waiting one has waited \
                         {minutes} minutes (alerts.queue_late_minutes is {limit}). Is `sangha \
                         serve` running with its workers, and does the relay take mail? \
                         `sangha doctor` checks the relay; `sangha sends list` shows the sends.",
                        due = queue.due,
                        limit = late_ms / 60_000,
                    ),
                };
                self.raise_alert(&alert, now).await
            }
            _ => {
                // A read first: the check runs often, and an UPDATE is a write even of no rows.
                let open: Option<i64> = sqlx::query_scalar("SELECT id FROM alerts WHERE key = $1")
                    .bind(QUEUE_LATE_KEY)
                    .fetch_optional(&self.pool)
                    .await?;
                if let Some(id) = open {
                    sqlx::query(
                        "UPDATE alerts SET key = $2, cleared_at = $3 WHERE id = $1 AND key = $4",
                    )
                    .bind(id)
                    .bind(format!("{QUEUE_LATE_KEY}:{id}"))
                    .bind(now)
                    .bind(QUEUE_LATE_KEY)
                    .execute(&self.pool)
                    .await?;
                    tracing::info!(alert = id, "alert over: the queue caught up");
                }
                Ok(None)
            }
        }
    }

    /// Takes the next alert to email (raised after `since`, due, not leased) for `lease_ms`.
    pub async fn claim_alert(
        &self,
        now: Millis,
        since: Millis,
        lease_ms: Millis,
    ) -> Result<Option<AlertRow>, sqlx::Error> {
        let row = sqlx::query(concat!(
            "UPDATE alerts SET lease_until = $2, attempts = attempts + 1
             WHERE id = (SELECT id FROM alerts
                         WHERE emailed_at IS NULL AND next_attempt_at <= $1 AND raised_at > $3
                           AND (lease_until IS NULL OR lease_until <= $1)
                         ORDER BY id LIMIT 1)
               AND emailed_at IS NULL AND (lease_until IS NULL OR lease_until <= $1)
             RETURNING ",
            alert_columns!()
        ))
        .bind(now)
        .bind(now + lease_ms)
        .bind(since)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(AlertRow::from_row).transpose()
    }

    /// Records that the owner's relay took alert `id`.
    pub async fn alert_emailed(&self, id: i64, now: Millis) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE alerts SET emailed_at = $2, lease_until = NULL, last_error = NULL WHERE id = $1",
        )
        .bind(id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records why alert `id` could not be emailed, and when to try again.
    pub async fn alert_not_emailed(
        &self,
        id: i64,
        next_attempt_at: Millis,
        error: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE alerts SET next_attempt_at = $2, lease_until = NULL, last_error = $3
             WHERE id = $1",
        )
        .bind(id)
        .bind(next_attempt_at)
        .bind(error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The alerts raised since `since`, newest first.
    pub async fn alerts_since(&self, since: Millis) -> Result<Vec<AlertRow>, sqlx::Error> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            alert_columns!(),
            " FROM alerts WHERE raised_at >= $1 ORDER BY raised_at DESC, id DESC"
        ))
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(AlertRow::from_row).collect()
    }
}
