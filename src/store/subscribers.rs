//! Subscribers, their subscriptions and the consent records of signup and confirmation.

use serde::Serialize;
use sqlx::Row;

use super::{Store, placeholders};
use crate::clock::Millis;
use crate::domain::{EmailAddress, SubscriberName, SubscriptionStatus, Timezone};
use crate::store::Offering;

/// Where a consent came from and what the person saw.
#[derive(Debug, Clone)]
pub struct ConsentMeta {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// Hex SHA-256 of the consent text shown next to the button.
    pub text_hash: String,
    /// `form` or `api`.
    pub source: &'static str,
}

/// A validated signup, ready to be written.
#[derive(Debug, Clone)]
pub struct NewSignup {
    pub email: EmailAddress,
    pub name: Option<SubscriberName>,
    pub timezone: Option<Timezone>,
    pub offerings: Vec<Offering>,
    pub consent: ConsentMeta,
    /// Message-ID for the confirmation email, should one be queued.
    pub message_id: String,
    /// No second confirmation email to one address within this many milliseconds.
    pub cooldown_ms: i64,
    /// At most this many confirmation emails to the address's domain in the past hour.
    pub domain_cap_per_hour: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignupOutcome {
    pub subscriber_id: i64,
    pub consent_id: i64,
    /// False when every offering was already confirmed, or the address is in its cooldown.
    pub confirmation_queued: bool,
}

/// A signup waiting for its confirmation, as the confirm page shows it.
#[derive(Debug, Clone)]
pub struct PendingConfirmation {
    pub consent_id: i64,
    pub subscriber_id: i64,
    pub at: Millis,
    pub offerings: Vec<Offering>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SubscriptionRow {
    pub offering: String,
    pub offering_name: String,
    pub status: SubscriptionStatus,
    pub created_at: Millis,
    pub confirmed_at: Option<Millis>,
    pub unsubscribed_at: Option<Millis>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConsentRecord {
    pub action: String,
    pub at: Millis,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub offerings: Vec<String>,
    pub text_hash: String,
    pub source: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SubscriberRow {
    pub id: i64,
    pub email: String,
    pub name: Option<String>,
    pub timezone: Option<String>,
    pub created_at: Millis,
    pub subscriptions: Vec<SubscriptionRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SubscriberDetail {
    #[serde(flatten)]
    pub subscriber: SubscriberRow,
    pub consents: Vec<ConsentRecord>,
    /// Where the person is in each course they have started.
    pub courses: Vec<super::CourseStatus>,
}

fn status_of(word: &str) -> Result<SubscriptionStatus, sqlx::Error> {
    SubscriptionStatus::parse(word).map_err(|e| sqlx::Error::Decode(e.into()))
}

fn split_slugs(joined: &str) -> Vec<String> {
    joined
        .split(';')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Store {
    /// Writes a signup in one transaction: the subscriber (an existing one keeps the name and
    /// zone they had), a pending subscription per offering not already confirmed, the consent
    /// record, and — unless the address had a confirmation within the cooldown — the
    /// confirmation delivery. No mail is sent here; a worker picks the delivery up.
    pub async fn record_signup(
        &self,
        signup: &NewSignup,
        now: Millis,
    ) -> Result<SignupOutcome, sqlx::Error> {
        let _turn = self.write_turn().await;
        let mut tx = self.pool.begin().await?;
        let subscriber_id: i64 = sqlx::query_scalar(
            "INSERT INTO subscribers (email, name, timezone, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (email) DO UPDATE SET
                 name = COALESCE(subscribers.name, excluded.name),
                 timezone = COALESCE(subscribers.timezone, excluded.timezone)
             RETURNING id",
        )
        .bind(signup.email.as_str())
        .bind(signup.name.as_ref().map(|n| n.as_str().to_owned()))
        .bind(signup.timezone.as_ref().map(|t| t.as_str().to_owned()))
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;

        for offering in &signup.offerings {
            // A new subscription starts pending; one that was left starts over; a pending or
            // confirmed one stays as it is.
            sqlx::query(
                "INSERT INTO subscriptions (subscriber_id, offering_id, status, created_at, updated_at)
                 VALUES ($1, $2, 'pending', $3, $3)
                 ON CONFLICT (subscriber_id, offering_id) DO UPDATE SET
                     status = 'pending', updated_at = excluded.updated_at, unsubscribed_at = NULL
                 WHERE subscriptions.status = 'unsubscribed'",
            )
            .bind(subscriber_id)
            .bind(offering.id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }

        let ids: Vec<i64> = signup.offerings.iter().map(|o| o.id).collect();
        let sql = format!(
            "SELECT COUNT(*) FROM subscriptions
             WHERE subscriber_id = $1 AND status = 'pending' AND offering_id IN ({})",
            placeholders(1, ids.len())
        );
        let mut query = sqlx::query_scalar::<_, i64>(&sql).bind(subscriber_id);
        for id in &ids {
            query = query.bind(*id);
        }
        let pending = query.fetch_one(&mut *tx).await?;

        let slugs: Vec<&str> = signup.offerings.iter().map(|o| o.slug.as_str()).collect();
        let consent_id = insert_consent(
            &mut tx,
            subscriber_id,
            "signup",
            now,
            &signup.consent,
            &slugs.join(";"),
        )
        .await?;

        let mut confirmation_queued = false;
        let domain_full = match signup.domain_cap_per_hour {
            Some(cap) if pending > 0 => {
                // A soft cap: two signups racing at the limit may both pass, which is fine.
                let pattern = format!("%@{}", like_escape(signup.email.domain()));
                let recent: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id
                     WHERE d.kind = 'confirmation' AND d.created_at > $1
                       AND s.email LIKE $2 ESCAPE '\\'",
                )
                .bind(now - 3_600_000)
                .bind(pattern)
                .fetch_one(&mut *tx)
                .await?;
                if recent >= i64::from(cap) {
                    tracing::warn!(
                        domain = signup.email.domain(),
                        recent,
                        "confirmation cap for this domain reached; no email queued"
                    );
                }
                recent >= i64::from(cap)
            }
            _ => false,
        };
        if pending > 0 && !domain_full {
            // The cooldown is claimed with a conditional update, so two signups racing for
            // the same address cannot both queue an email.
            let claimed = sqlx::query(
                "UPDATE subscribers SET confirmation_sent_at = $2
                 WHERE id = $1 AND (confirmation_sent_at IS NULL OR confirmation_sent_at <= $3)",
            )
            .bind(subscriber_id)
            .bind(now)
            .bind(now - signup.cooldown_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if claimed == 1 {
                sqlx::query(
                    "INSERT INTO deliveries
                         (kind, subscriber_id, consent_id, message_id, next_attempt_at, created_at)
                     VALUES ('confirmation', $1, $2, $3, $4, $4)",
                )
                .bind(subscriber_id)
                .bind(consent_id)
                .bind(&signup.message_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                confirmation_queued = true;
            }
        }
        tx.commit().await?;
        Ok(SignupOutcome {
            subscriber_id,
            consent_id,
            confirmation_queued,
        })
    }

    /// The signup a confirmation token points at, if it still exists.
    pub async fn pending_confirmation(
        &self,
        consent_id: i64,
    ) -> Result<Option<PendingConfirmation>, sqlx::Error> {
        let Some(row) = sqlx::query(
            "SELECT subscriber_id, at, offerings FROM consents WHERE id = $1 AND action = 'signup'",
        )
        .bind(consent_id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let slugs = split_slugs(&row.try_get::<String, _>("offerings")?);
        let offerings = self.offerings_by_slugs(&slugs).await?;
        Ok(Some(PendingConfirmation {
            consent_id,
            subscriber_id: row.try_get("subscriber_id")?,
            at: row.try_get("at")?,
            offerings,
        }))
    }

    async fn offerings_by_slugs(&self, slugs: &[String]) -> Result<Vec<Offering>, sqlx::Error> {
        let all = self.active_offerings().await?;
        Ok(all
            .into_iter()
            .filter(|o| slugs.iter().any(|s| s == &o.slug))
            .collect())
    }

    /// Confirms the still-pending subscriptions of one signup and records the confirmation.
    /// Confirming twice changes nothing the second time. Returns the signup, or `None` when it
    /// no longer exists (the person was erased).
    pub async fn confirm_signup(
        &self,
        consent_id: i64,
        meta: &ConsentMeta,
        now: Millis,
    ) -> Result<Option<PendingConfirmation>, sqlx::Error> {
        // Read first, outside the transaction: the consent row never changes, and a SQLite
        // transaction that reads before it writes can fail to upgrade its lock.
        let Some(signup) = self.pending_confirmation(consent_id).await? else {
            return Ok(None);
        };
        if signup.offerings.is_empty() {
            return Ok(Some(signup));
        }
        let mut tx = self.pool.begin().await?;
        let sql = format!(
            "UPDATE subscriptions SET status = 'confirmed', confirmed_at = $2, updated_at = $2
             WHERE subscriber_id = $1 AND status = 'pending' AND offering_id IN ({})
             RETURNING offering_id",
            placeholders(2, signup.offerings.len())
        );
        let mut query = sqlx::query_scalar::<_, i64>(&sql)
            .bind(signup.subscriber_id)
            .bind(now);
        for o in &signup.offerings {
            query = query.bind(o.id);
        }
        let confirmed = query.fetch_all(&mut *tx).await?;
        if !confirmed.is_empty() {
            let slugs: Vec<&str> = signup
                .offerings
                .iter()
                .filter(|o| confirmed.contains(&o.id))
                .map(|o| o.slug.as_str())
                .collect();
            insert_consent(
                &mut tx,
                signup.subscriber_id,
                "confirm",
                now,
                meta,
                &slugs.join(";"),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Some(signup))
    }

    /// Subscribers, optionally only those with a subscription to `offering` in `status`.
    pub async fn list_subscribers(
        &self,
        offering: Option<&str>,
        status: Option<SubscriptionStatus>,
    ) -> Result<Vec<SubscriberRow>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT s.id, s.email, s.name, s.timezone, s.created_at,
                    o.slug, o.name AS offering_name, sub.status, sub.created_at AS sub_created_at,
                    sub.confirmed_at, sub.unsubscribed_at
             FROM subscribers s
             LEFT JOIN subscriptions sub ON sub.subscriber_id = s.id
             LEFT JOIN offerings o ON o.id = sub.offering_id
             WHERE ($1 IS NULL AND $2 IS NULL) OR s.id IN (
                 SELECT f.subscriber_id FROM subscriptions f JOIN offerings fo ON fo.id = f.offering_id
                 WHERE ($1 IS NULL OR fo.slug = $1) AND ($2 IS NULL OR f.status = $2))
             ORDER BY s.email, o.id",
        )
        .bind(offering.map(str::to_owned))
        .bind(status.map(|s| s.as_str().to_owned()))
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<SubscriberRow> = Vec::new();
        for row in &rows {
            let id: i64 = row.try_get("id")?;
            if out.last().is_none_or(|s| s.id != id) {
                out.push(SubscriberRow {
                    id,
                    email: row.try_get("email")?,
                    name: row.try_get("name")?,
                    timezone: row.try_get("timezone")?,
                    created_at: row.try_get("created_at")?,
                    subscriptions: Vec::new(),
                });
            }
            let slug: Option<String> = row.try_get("slug")?;
            if let Some(slug) = slug {
                let status: String = row.try_get("status")?;
                out.last_mut()
                    .expect("pushed above")
                    .subscriptions
                    .push(SubscriptionRow {
                        offering: slug,
                        offering_name: row.try_get("offering_name")?,
                        status: status_of(&status)?,
                        created_at: row.try_get("sub_created_at")?,
                        confirmed_at: row.try_get("confirmed_at")?,
                        unsubscribed_at: row.try_get("unsubscribed_at")?,
                    });
            }
        }
        Ok(out)
    }

    /// One subscriber with every subscription and consent record.
    pub async fn subscriber_detail(
        &self,
        email: &EmailAddress,
    ) -> Result<Option<SubscriberDetail>, sqlx::Error> {
        let Some(row) = sqlx::query(
            "SELECT id, email, name, timezone, created_at FROM subscribers WHERE email = $1",
        )
        .bind(email.as_str())
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let id: i64 = row.try_get("id")?;
        let subs = sqlx::query(
            "SELECT o.slug, o.name, sub.status, sub.created_at, sub.confirmed_at, sub.unsubscribed_at
             FROM subscriptions sub JOIN offerings o ON o.id = sub.offering_id
             WHERE sub.subscriber_id = $1 ORDER BY o.id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let consents = sqlx::query(
            "SELECT action, at, ip, user_agent, offerings, text_hash, source
             FROM consents WHERE subscriber_id = $1 ORDER BY at, id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        Ok(Some(SubscriberDetail {
            subscriber: SubscriberRow {
                id,
                email: row.try_get("email")?,
                name: row.try_get("name")?,
                timezone: row.try_get("timezone")?,
                created_at: row.try_get("created_at")?,
                subscriptions: subs
                    .iter()
                    .map(|r| {
                        Ok(SubscriptionRow {
                            offering: r.try_get("slug")?,
                            offering_name: r.try_get("name")?,
                            status: status_of(&r.try_get::<String, _>("status")?)?,
                            created_at: r.try_get("created_at")?,
                            confirmed_at: r.try_get("confirmed_at")?,
                            unsubscribed_at: r.try_get("unsubscribed_at")?,
                        })
                    })
                    .collect::<Result<_, sqlx::Error>>()?,
            },
            consents: consents
                .iter()
                .map(|r| {
                    Ok(ConsentRecord {
                        action: r.try_get("action")?,
                        at: r.try_get("at")?,
                        ip: r.try_get("ip")?,
                        user_agent: r.try_get("user_agent")?,
                        offerings: split_slugs(&r.try_get::<String, _>("offerings")?),
                        text_hash: r.try_get("text_hash")?,
                        source: r.try_get("source")?,
                    })
                })
                .collect::<Result<_, sqlx::Error>>()?,
            courses: self.course_statuses(id).await?,
        }))
    }
}

/// Escapes `%`, `_` and `\` for a LIKE pattern with `ESCAPE '\'`.
fn like_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

pub(super) async fn insert_consent(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    subscriber_id: i64,
    action: &str,
    now: Millis,
    meta: &ConsentMeta,
    offerings: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO consents (subscriber_id, action, at, ip, user_agent, offerings, text_hash, source)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(subscriber_id)
    .bind(action)
    .bind(now)
    .bind(meta.ip.clone())
    .bind(meta.user_agent.clone())
    .bind(offerings)
    .bind(&meta.text_hash)
    .bind(meta.source)
    .fetch_one(&mut **tx)
    .await
}
