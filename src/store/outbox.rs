//! The outbox: the one writer of delivery rows.
//!
//! A row is written for a confirmation ([`enqueue_confirmations`], in the signup's
//! transaction), for a block of a send's recipients ([`Store::fan_out_batch`], and the same
//! statement with a zone filter for a send at a local time, [`Store::fan_out_zone`]), and for a
//! course lesson ([`enqueue_lesson`], in the transaction that moves the person on).
//!
//! Message-IDs are made here, when the row is written, as `<prefix.subscriber_id@domain>`:
//! the prefix is the send's (80 random bits, unique per send: migration 0007) or, for a
//! confirmation, a fresh one. A retry reads the row, so it carries the same Message-ID. The
//! SQL expression below and [`message_id`] write the same text (tested).
//!
//! Fan-out is set-based and resumable: each block inserts the deliveries of the next block of
//! subscriber ids with one `INSERT … SELECT`, and the unique (send_id, subscriber_id) index
//! makes a repeat harmless. The conflict clause names no index on purpose: on PostgreSQL a
//! named target only absorbs clashes on that index.

use rand::Rng;
use sqlx::Row;

use super::Store;
use crate::clock::Millis;
use crate::domain::DeliveryStatus;

/// A fresh Message-ID prefix: 80 random bits as 20 hex digits.
pub fn new_message_id_prefix() -> String {
    let mut bytes = [0u8; 10];
    rand::rng().fill_bytes(&mut bytes);
    crate::domain::hex(&bytes)
}

/// The Message-ID of a delivery, `<prefix.subscriber_id@domain>`.
pub fn message_id(prefix: &str, subscriber_id: i64, domain: &str) -> String {
    format!("<{prefix}.{subscriber_id}@{domain}>")
}

/// [`message_id`] in SQL, over a prefix, a subscriber id column and a domain.
macro_rules! message_id_sql {
    ($prefix:literal, $subscriber:literal, $domain:literal) => {
        concat!(
            "'<' || ",
            $prefix,
            " || '.' || ",
            $subscriber,
            " || '@' || ",
            $domain,
            " || '>'"
        )
    };
}

/// The rows of one block of a send, with `$1` … `$10` as bound by [`insert_block`].
macro_rules! insert_block_sql {
    ($join:literal, $filter:literal) => {
        concat!(
            "INSERT INTO deliveries
                 (kind, subscriber_id, send_id, message_id, next_attempt_at, created_at,
                  status, last_error)
             SELECT 'send', sub.subscriber_id, $1, ",
            message_id_sql!("$2", "sub.subscriber_id", "$3"),
            ", $4, $5, $6, $7
             FROM subscriptions sub ",
            $join,
            " WHERE sub.offering_id = $8 AND sub.status = 'confirmed'
               AND sub.subscriber_id > $9 AND sub.subscriber_id <= $10 ",
            $filter,
            " ON CONFLICT DO NOTHING"
        )
    };
}

/// The last subscriber id of the next block, `$1` … `$3` (and the zone's `$4`, `$5`).
macro_rules! block_end_sql {
    ($join:literal, $filter:literal) => {
        concat!(
            "SELECT MAX(subscriber_id) FROM (
                 SELECT sub.subscriber_id FROM subscriptions sub ",
            $join,
            " WHERE sub.offering_id = $1 AND sub.status = 'confirmed' AND sub.subscriber_id > $2 ",
            $filter,
            " ORDER BY sub.subscriber_id LIMIT $3) AS block"
        )
    };
}

/// Which of an offering's confirmed subscribers a block takes.
#[derive(Debug, Clone, Copy)]
enum Recipients<'a> {
    All,
    /// Those whose zone (or `default`, for those who gave none) is `zone`.
    InZone {
        zone: &'a str,
        default: &'a str,
    },
}

/// What the rows of a block are written as.
#[derive(Debug, Clone, Copy)]
struct BlockRows<'a> {
    send_id: i64,
    offering_id: i64,
    prefix: &'a str,
    domain: &'a str,
    due: Millis,
    /// `Some(why)`: written already `skipped`, so the send reports them.
    skip_reason: Option<&'a str>,
}

/// The last subscriber id of the block after `after`, or `None` when none is left.
async fn block_end(
    conn: &mut sqlx::AnyConnection,
    offering_id: i64,
    recipients: Recipients<'_>,
    after: i64,
    limit: u32,
) -> Result<Option<i64>, sqlx::Error> {
    let query = match recipients {
        Recipients::All => sqlx::query_scalar(block_end_sql!("", "")),
        Recipients::InZone { .. } => sqlx::query_scalar(block_end_sql!(
            "JOIN subscribers s ON s.id = sub.subscriber_id",
            "AND COALESCE(s.timezone, $4) = $5"
        )),
    };
    let mut query = query.bind(offering_id).bind(after).bind(i64::from(limit));
    if let Recipients::InZone { zone, default } = recipients {
        query = query.bind(default.to_owned()).bind(zone.to_owned());
    }
    query.fetch_one(conn).await
}

/// Writes the deliveries of the subscribers in (`after`, `upto`].
async fn insert_block(
    conn: &mut sqlx::AnyConnection,
    rows: BlockRows<'_>,
    recipients: Recipients<'_>,
    after: i64,
    upto: i64,
    now: Millis,
) -> Result<u64, sqlx::Error> {
    let query = match recipients {
        Recipients::All => sqlx::query(insert_block_sql!("", "")),
        Recipients::InZone { .. } => sqlx::query(insert_block_sql!(
            "JOIN subscribers s ON s.id = sub.subscriber_id",
            "AND COALESCE(s.timezone, $11) = $12"
        )),
    };
    let mut query = query
        .bind(rows.send_id)
        .bind(rows.prefix.to_owned())
        .bind(rows.domain.to_owned())
        .bind(rows.due)
        .bind(now)
        .bind(initial_status(rows.skip_reason.is_some()))
        .bind(rows.skip_reason.map(str::to_owned))
        .bind(rows.offering_id)
        .bind(after)
        .bind(upto);
    if let Recipients::InZone { zone, default } = recipients {
        query = query.bind(default.to_owned()).bind(zone.to_owned());
    }
    Ok(query.execute(conn).await?.rows_affected())
}

impl Store {
    /// Creates the deliveries of the next `limit` confirmed subscribers of a send, in one
    /// transaction that also moves the send's cursor. Returns how many rows were added, or
    /// `None` once the fan-out is complete (or the send was paused or cancelled meanwhile).
    pub async fn fan_out_batch(
        &self,
        send_id: i64,
        now: Millis,
        limit: u32,
    ) -> Result<Option<u64>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        // Writing first takes SQLite's write lock at once (a read-then-write transaction can
        // fail to upgrade) and on PostgreSQL locks the send row against a second scheduler.
        let Some(row) = sqlx::query(
            "UPDATE sends SET status = 'sending'
             WHERE id = $1 AND status IN ('scheduled', 'sending') AND fanout_done_at IS NULL
             RETURNING offering_id, fanout_cursor, message_id_prefix",
        )
        .bind(send_id)
        .fetch_optional(&mut *tx)
        .await?
        else {
            tx.rollback().await?;
            return Ok(None);
        };
        let offering_id: i64 = row.try_get("offering_id")?;
        let cursor: i64 = row.try_get("fanout_cursor")?;
        let prefix: String = row.try_get("message_id_prefix")?;
        let Some(upper) = block_end(&mut tx, offering_id, Recipients::All, cursor, limit).await?
        else {
            sqlx::query("UPDATE sends SET fanout_done_at = $2 WHERE id = $1")
                .bind(send_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(None);
        };
        let rows = BlockRows {
            send_id,
            offering_id,
            prefix: &prefix,
            domain: &self.message_id_domain,
            due: now,
            skip_reason: None,
        };
        let inserted = insert_block(&mut tx, rows, Recipients::All, cursor, upper, now).await?;
        sqlx::query("UPDATE sends SET fanout_cursor = $2 WHERE id = $1")
            .bind(send_id)
            .bind(upper)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(inserted))
    }

    /// Creates the deliveries of one zone of a local-time send, due at `due`, in blocks of
    /// `limit`. With a `skip_reason` they are created already `skipped`, so the send reports
    /// them. A repeat (a second scheduler, or a restart before [`Store::finish_fan_out`])
    /// adds nothing. Returns how many rows were added.
    #[allow(clippy::too_many_arguments)]
    pub async fn fan_out_zone(
        &self,
        send_id: i64,
        zone: &str,
        default: &str,
        due: Millis,
        skip_reason: Option<&str>,
        now: Millis,
        limit: u32,
    ) -> Result<u64, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        let Some(row) =
            sqlx::query("SELECT offering_id, message_id_prefix FROM sends WHERE id = $1")
                .bind(send_id)
                .fetch_optional(&mut *conn)
                .await?
        else {
            return Ok(0);
        };
        let offering_id: i64 = row.try_get("offering_id")?;
        let prefix: String = row.try_get("message_id_prefix")?;
        let recipients = Recipients::InZone { zone, default };
        let rows = BlockRows {
            send_id,
            offering_id,
            prefix: &prefix,
            domain: &self.message_id_domain,
            due,
            skip_reason,
        };
        let mut after = 0;
        let mut inserted = 0;
        while let Some(upper) = block_end(&mut conn, offering_id, recipients, after, limit).await? {
            inserted += insert_block(&mut conn, rows, recipients, after, upper, now).await?;
            after = upper;
        }
        Ok(inserted)
    }
}

/// A confirmation email to queue: for whom, for which signup, and when it is due.
#[derive(Debug, Clone, Copy)]
pub(super) struct Confirmation {
    pub subscriber_id: i64,
    pub consent_id: i64,
    pub due: Millis,
}

/// Queues confirmation emails in the signup's (or the reminder's) transaction, each with a
/// fresh Message-ID. Returns each one's delivery id by its consent id.
pub(super) async fn enqueue_confirmations(
    tx: &mut sqlx::AnyConnection,
    confirmations: &[Confirmation],
    domain: &str,
    now: Millis,
) -> Result<std::collections::HashMap<i64, i64>, sqlx::Error> {
    if confirmations.is_empty() {
        return Ok(std::collections::HashMap::new());
    }
    let sql = super::sql::Sql::new(
        "INSERT INTO deliveries
             (kind, subscriber_id, consent_id, message_id, next_attempt_at, created_at)
         VALUES ",
        1,
    )
    .rows("('confirmation', ?, ?, ?, ?, $1)", confirmations.len())
    .push(" RETURNING id, consent_id")
    .build();
    let mut query = sqlx::query(sql).bind(now);
    for c in confirmations {
        query = query
            .bind(c.subscriber_id)
            .bind(c.consent_id)
            .bind(message_id(
                &new_message_id_prefix(),
                c.subscriber_id,
                domain,
            ))
            .bind(c.due);
    }
    query
        .fetch_all(tx)
        .await?
        .iter()
        .map(|row| Ok((row.try_get("consent_id")?, row.try_get("id")?)))
        .collect()
}

/// One lesson to queue for one person.
#[derive(Debug, Clone, Copy)]
pub(super) struct Lesson<'a> {
    pub subscriber_id: i64,
    pub send_id: i64,
    /// The lesson send's Message-ID prefix.
    pub prefix: &'a str,
    /// When the lesson fell due for this person (capped at now).
    pub due: Millis,
    /// `Some(why)`: written already `skipped` (and stamped as finished now).
    pub skipped: Option<&'a str>,
}

/// Queues a lesson in the transaction that moves the person on. A repeat adds nothing.
pub(super) async fn enqueue_lesson(
    tx: &mut sqlx::AnyConnection,
    lesson: Lesson<'_>,
    domain: &str,
    now: Millis,
) -> Result<(), sqlx::Error> {
    sqlx::query(concat!(
        "INSERT INTO deliveries (kind, subscriber_id, send_id, message_id, status,
                                 next_attempt_at, created_at, last_error, sent_at)
         VALUES ('send', $1, $2, ",
        message_id_sql!("$3", "$1", "$4"),
        ", $5, $6, $7, $8, $9)
         ON CONFLICT DO NOTHING"
    ))
    .bind(lesson.subscriber_id)
    .bind(lesson.send_id)
    .bind(lesson.prefix.to_owned())
    .bind(domain.to_owned())
    .bind(initial_status(lesson.skipped.is_some()))
    .bind(lesson.due.min(now))
    .bind(now)
    .bind(lesson.skipped.map(str::to_owned))
    .bind(lesson.skipped.map(|_| now))
    .execute(tx)
    .await?;
    Ok(())
}

/// The word a new delivery row starts with: `skipped` when it is written only as a record.
fn initial_status(skipped: bool) -> &'static str {
    if skipped {
        DeliveryStatus::Skipped
    } else {
        DeliveryStatus::Pending
    }
    .as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_id_prefix_is_20_random_hex_digits() {
        let a = new_message_id_prefix();
        assert_eq!(a.len(), 20);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, new_message_id_prefix());
    }

    #[test]
    fn a_message_id_names_the_prefix_the_person_and_the_domain() {
        assert_eq!(
            message_id("ab12", 7, "mail.example"),
            "<ab12.7@mail.example>"
        );
    }
}
