//! Offerings: declared in `config.toml`, mirrored into the database so subscriptions can refer
//! to them and history survives an offering's removal.

use std::time::{Duration, Instant};

use sqlx::Row;

use super::Store;
use super::sql::Sql;
use crate::clock::Millis;
use crate::domain::{OfferingKind, Slug};

/// An offering as stored: a newsletter or a course people subscribe to.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Offering {
    pub id: i64,
    pub slug: String,
    pub name: String,
    pub description: String,
    pub kind: OfferingKind,
    pub public: bool,
}

/// An offering as the configuration declares it, for [`Store::sync_offerings`].
#[derive(Debug, Clone, Copy)]
pub struct DeclaredOffering<'a> {
    pub slug: &'a str,
    pub name: &'a str,
    pub description: &'a str,
    pub kind: OfferingKind,
    pub public: bool,
}

/// An offering with how many people are in each state, for `sangha offerings list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OfferingSummary {
    #[serde(flatten)]
    pub offering: Offering,
    pub active: bool,
    pub pending: i64,
    pub confirmed: i64,
    pub unsubscribed: i64,
}

/// How long [`Store::active_offerings`] answers from what it last read. Another process that
/// syncs a changed configuration is seen by this one within this time.
pub const OFFERINGS_FRESH: Duration = Duration::from_secs(1);

/// The active offerings and when they were read.
#[derive(Debug)]
pub(super) struct Cached {
    read_at: Instant,
    offerings: Vec<Offering>,
}

fn offering_from_row(row: &sqlx::any::AnyRow) -> Result<Offering, sqlx::Error> {
    Ok(Offering {
        id: row.try_get("id")?,
        slug: row.try_get("slug")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        kind: super::word(row, "kind")?,
        public: row.try_get::<i64, _>("public")? != 0,
    })
}

impl Store {
    /// Makes the database agree with the configured offerings: new ones are added, changed
    /// ones updated, and ones no longer configured marked inactive (never deleted).
    pub async fn sync_offerings(
        &self,
        offerings: &[DeclaredOffering<'_>],
        now: Millis,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        for o in offerings {
            sqlx::query(
                "INSERT INTO offerings (slug, name, description, kind, public, active, created_at)
                 VALUES ($1, $2, $3, $4, $5, 1, $6)
                 ON CONFLICT (slug) DO UPDATE SET
                     name = excluded.name, description = excluded.description,
                     kind = excluded.kind, public = excluded.public, active = 1",
            )
            .bind(o.slug)
            .bind(o.name)
            .bind(o.description.trim())
            .bind(o.kind.as_str())
            .bind(i64::from(o.public))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        let slugs: Vec<&str> = offerings.iter().map(|o| o.slug).collect();
        let mut sql = Sql::new("UPDATE offerings SET active = 0", 0);
        if !slugs.is_empty() {
            sql = sql.push(" WHERE slug NOT IN (").list(slugs.len()).push(")");
        }
        let mut query = sqlx::query(sql.build());
        for slug in &slugs {
            query = query.bind(*slug);
        }
        query.execute(&mut *tx).await?;
        tx.commit().await?;
        *self.offerings.lock().expect("offerings cache lock") = None;
        Ok(())
    }

    /// Active offerings in the order they were declared.
    ///
    /// Every signup and every confirmation email needs them, and they change only when a
    /// process syncs its configuration, so they are read at most once per [`OFFERINGS_FRESH`]
    /// (and again at once after this store synced them).
    pub async fn active_offerings(&self) -> Result<Vec<Offering>, sqlx::Error> {
        if let Some(cached) = self
            .offerings
            .lock()
            .expect("offerings cache lock")
            .as_ref()
            && cached.read_at.elapsed() < OFFERINGS_FRESH
        {
            return Ok(cached.offerings.clone());
        }
        let read_at = Instant::now();
        let rows = sqlx::query(
            "SELECT id, slug, name, description, kind, public FROM offerings
             WHERE active = 1 ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        let offerings = rows
            .iter()
            .map(offering_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        *self.offerings.lock().expect("offerings cache lock") = Some(Cached {
            read_at,
            offerings: offerings.clone(),
        });
        Ok(offerings)
    }

    /// The offering with this slug, if any.
    pub async fn offering_by_slug(&self, slug: &Slug) -> Result<Option<Offering>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT id, slug, name, description, kind, public FROM offerings
             WHERE slug = $1 AND active = 1",
        )
        .bind(slug.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(offering_from_row).transpose()
    }

    /// An offering by id, active or not (a send keeps pointing at it).
    pub async fn offering_by_id(&self, id: i64) -> Result<Option<Offering>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT id, slug, name, description, kind, public FROM offerings WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(offering_from_row).transpose()
    }

    /// Every offering, active or not, with subscriber counts by state.
    pub async fn offering_summaries(&self) -> Result<Vec<OfferingSummary>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT o.id, o.slug, o.name, o.description, o.kind, o.public, o.active,
                    COUNT(CASE WHEN s.status = 'pending' THEN 1 END) AS pending,
                    COUNT(CASE WHEN s.status = 'confirmed' THEN 1 END) AS confirmed,
                    COUNT(CASE WHEN s.status = 'unsubscribed' THEN 1 END) AS unsubscribed
             FROM offerings o LEFT JOIN subscriptions s ON s.offering_id = o.id
             GROUP BY o.id, o.slug, o.name, o.description, o.kind, o.public, o.active
             ORDER BY o.active DESC, o.id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(OfferingSummary {
                    offering: offering_from_row(row)?,
                    active: row.try_get::<i64, _>("active")? != 0,
                    pending: row.try_get("pending")?,
                    confirmed: row.try_get("confirmed")?,
                    unsubscribed: row.try_get("unsubscribed")?,
                })
            })
            .collect()
    }
}
