//! Leaving and changing: unsubscribe, preferences, erasure and the suppression list.

use sqlx::Row;

use super::sql::Sql;
use super::subscribers::insert_consent;
use super::{ConsentMeta, Store, SubscriberDetail, decode_error};
use crate::clock::Millis;
use crate::domain::{EmailAddress, LinkTarget, SubscriberName, Timezone};

pub use crate::domain::SuppressionReason;

/// The subscriber a preferences link points at.
#[derive(Debug, Clone)]
pub struct SubscriberRef {
    pub id: i64,
    /// What links to this person are bound to (see `domain::LinkTarget`).
    pub link: LinkTarget,
    pub email: EmailAddress,
    pub name: Option<String>,
    pub timezone: Option<String>,
}

impl Store {
    /// The person a link points at: the subscriber with that id AND that link secret, so the
    /// link of an erased person matches nobody, even someone who was given the same id.
    pub async fn subscriber_by_link(
        &self,
        link: LinkTarget,
    ) -> Result<Option<SubscriberRef>, sqlx::Error> {
        self.subscriber_where("id = $1 AND link_secret = $2", link.id, Some(link.secret))
            .await
    }

    /// The person with this id.
    pub async fn subscriber_by_id(&self, id: i64) -> Result<Option<SubscriberRef>, sqlx::Error> {
        self.subscriber_where("id = $1", id, None).await
    }

    async fn subscriber_where(
        &self,
        condition: &'static str,
        id: i64,
        secret: Option<i64>,
    ) -> Result<Option<SubscriberRef>, sqlx::Error> {
        let sql = Sql::new(
            "SELECT id, email, name, timezone, link_secret FROM subscribers WHERE ",
            0,
        )
        .push(condition)
        .build();
        let mut query = sqlx::query(sql).bind(id);
        if let Some(secret) = secret {
            query = query.bind(secret);
        }
        let row = query.fetch_optional(&self.pool).await?;
        row.map(|r| {
            let email: String = r.try_get("email")?;
            Ok(SubscriberRef {
                id: r.try_get("id")?,
                link: LinkTarget {
                    id: r.try_get("id")?,
                    secret: r.try_get("link_secret")?,
                },
                email: EmailAddress::parse(&email).map_err(decode_error)?,
                name: r.try_get("name")?,
                timezone: r.try_get("timezone")?,
            })
        })
        .transpose()
    }

    /// Unsubscribes from one offering, or from all of them when `offering_id` is `None`.
    /// Returns the ids of the offerings left now; leaving again changes nothing.
    pub async fn unsubscribe(
        &self,
        subscriber_id: i64,
        offering_id: Option<i64>,
        meta: &ConsentMeta,
        now: Millis,
    ) -> Result<Vec<i64>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let left: Vec<i64> = sqlx::query_scalar(
            "UPDATE subscriptions SET status = 'unsubscribed', unsubscribed_at = $3, updated_at = $3
             WHERE subscriber_id = $1 AND ($2 IS NULL OR offering_id = $2)
               AND status <> 'unsubscribed'
             RETURNING offering_id",
        )
        .bind(subscriber_id)
        .bind(offering_id)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        if !left.is_empty() {
            let slugs = slugs_of(&mut tx, &left).await?;
            insert_consent(&mut tx, subscriber_id, "unsubscribe", now, meta, &slugs).await?;
        }
        tx.commit().await?;
        Ok(left)
    }

    /// Sets name, time zone and exactly the given offerings (confirmed: the person is acting
    /// from a link in their own inbox). Offerings not listed are left.
    pub async fn update_preferences(
        &self,
        subscriber_id: i64,
        name: Option<&SubscriberName>,
        timezone: Option<&Timezone>,
        offering_ids: &[i64],
        meta: &ConsentMeta,
        now: Millis,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE subscribers SET name = $2, timezone = $3 WHERE id = $1")
            .bind(subscriber_id)
            .bind(name.map(|n| n.as_str().to_owned()))
            .bind(timezone.map(|t| t.as_str().to_owned()))
            .execute(&mut *tx)
            .await?;
        for id in offering_ids {
            sqlx::query(
                "INSERT INTO subscriptions
                     (subscriber_id, offering_id, status, created_at, updated_at, confirmed_at)
                 VALUES ($1, $2, 'confirmed', $3, $3, $3)
                 ON CONFLICT (subscriber_id, offering_id) DO UPDATE SET
                     status = 'confirmed', updated_at = excluded.updated_at,
                     confirmed_at = excluded.confirmed_at, unsubscribed_at = NULL
                 WHERE subscriptions.status <> 'confirmed'",
            )
            .bind(subscriber_id)
            .bind(*id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        let mut sql = Sql::new(
            "UPDATE subscriptions SET status = 'unsubscribed', unsubscribed_at = $2, updated_at = $2
             WHERE subscriber_id = $1 AND status <> 'unsubscribed'",
            2,
        );
        if !offering_ids.is_empty() {
            sql = sql
                .push(" AND offering_id NOT IN (")
                .list(offering_ids.len())
                .push(")");
        }
        let mut query = sqlx::query(sql.build()).bind(subscriber_id).bind(now);
        for id in offering_ids {
            query = query.bind(*id);
        }
        query.execute(&mut *tx).await?;
        let slugs = slugs_of(&mut tx, offering_ids).await?;
        insert_consent(&mut tx, subscriber_id, "preferences", now, meta, &slugs).await?;
        tx.commit().await
    }

    /// Everything kept about one person, for the "download my data" link.
    pub async fn subscriber_data(
        &self,
        subscriber_id: i64,
    ) -> Result<Option<SubscriberDetail>, sqlx::Error> {
        let Some(s) = self.subscriber_by_id(subscriber_id).await? else {
            return Ok(None);
        };
        self.subscriber_detail(&s.email).await
    }

    /// Removes the person and everything about them (subscriptions, consent records,
    /// deliveries), keeping only the keyed hash of the address on the suppression list.
    pub async fn erase_subscriber(
        &self,
        subscriber_id: i64,
        email_hash: &str,
        now: Millis,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        // Reports that name the address but matched none of the person's deliveries (theirs
        // go with the person, by cascade).
        sqlx::query(
            "DELETE FROM bounces WHERE lower(recipient) =
                 (SELECT lower(email) FROM subscribers WHERE id = $1)",
        )
        .bind(subscriber_id)
        .execute(&mut *tx)
        .await?;
        let gone = sqlx::query("DELETE FROM subscribers WHERE id = $1")
            .bind(subscriber_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        add_suppression(&mut tx, email_hash, SuppressionReason::Erased, now).await?;
        tx.commit().await?;
        Ok(gone == 1)
    }

    /// A recipient the server said does not exist: leaves every offering and is suppressed.
    pub async fn suppress_subscriber(
        &self,
        subscriber_id: i64,
        email_hash: &str,
        reason: SuppressionReason,
        now: Millis,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE subscriptions SET status = 'unsubscribed', unsubscribed_at = $2, updated_at = $2
             WHERE subscriber_id = $1 AND status <> 'unsubscribed'",
        )
        .bind(subscriber_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        add_suppression(&mut tx, email_hash, reason, now).await?;
        tx.commit().await
    }

    /// Why and since when an address (its hash under each key) is on the suppression list.
    pub async fn suppression(
        &self,
        email_hashes: &[String],
    ) -> Result<Option<(SuppressionReason, Millis)>, sqlx::Error> {
        let sql = Sql::new(
            "SELECT reason, created_at FROM suppressions WHERE email_hash IN (",
            0,
        )
        .list(email_hashes.len())
        .push(") ORDER BY created_at DESC LIMIT 1");
        let mut query = sqlx::query(sql.build());
        for hash in email_hashes {
            query = query.bind(hash);
        }
        let Some(row) = query.fetch_optional(&self.pool).await? else {
            return Ok(None);
        };
        Ok(Some((
            super::word(&row, "reason")?,
            row.try_get("created_at")?,
        )))
    }

    /// Takes an address off the suppression list where a bounce or a complaint put it (the
    /// person confirmed again from their own inbox); an erasure or the owner's entry stays.
    pub async fn lift_bounce_suppression(
        &self,
        email_hashes: &[String],
    ) -> Result<u64, sqlx::Error> {
        let sql = Sql::new(
            "DELETE FROM suppressions WHERE reason IN ('bounced', 'complained')
             AND email_hash IN (",
            0,
        )
        .list(email_hashes.len())
        .push(")");
        let mut query = sqlx::query(sql.build());
        for hash in email_hashes {
            query = query.bind(hash);
        }
        Ok(query.execute(&self.pool).await?.rows_affected())
    }

    /// True when the address with this hash is on the suppression list.
    pub async fn is_suppressed(&self, email_hash: &str) -> Result<bool, sqlx::Error> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM suppressions WHERE email_hash = $1")
            .bind(email_hash)
            .fetch_one(&self.pool)
            .await?;
        Ok(n > 0)
    }
}

pub(super) async fn add_suppression(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    email_hash: &str,
    reason: SuppressionReason,
    now: Millis,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO suppressions (email_hash, reason, created_at) VALUES ($1, $2, $3)
         ON CONFLICT (email_hash) DO NOTHING",
    )
    .bind(email_hash)
    .bind(reason.as_str())
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// `a;b` for the given offering ids, for consent records.
pub(super) async fn slugs_of(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    ids: &[i64],
) -> Result<String, sqlx::Error> {
    if ids.is_empty() {
        return Ok(String::new());
    }
    let sql = Sql::new("SELECT slug FROM offerings WHERE id IN (", 0)
        .list(ids.len())
        .push(") ORDER BY id")
        .build();
    let mut query = sqlx::query_scalar::<_, String>(sql);
    for id in ids {
        query = query.bind(*id);
    }
    Ok(query.fetch_all(&mut **tx).await?.join(";"))
}
