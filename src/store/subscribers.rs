//! Subscribers, their subscriptions and the consent records of signup and confirmation.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;
use sqlx::Row;

use super::sql::Sql;
use super::{Store, outbox};
use crate::clock::Millis;
use crate::domain::{
    ConsentSource, EmailAddress, LinkTarget, SubscriberName, SubscriptionStatus, Timezone,
};
use crate::store::Offering;

/// Where a consent came from and what the person saw.
#[derive(Debug, Clone)]
pub struct ConsentMeta {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// Hex SHA-256 of the consent text shown next to the button.
    pub text_hash: String,
    /// Where the consent was given.
    pub source: ConsentSource,
}

/// A validated signup, ready to be written.
#[derive(Debug, Clone)]
pub struct NewSignup {
    pub email: EmailAddress,
    /// A keyed hash of the address's mailbox (`EmailAddress::mailbox`): the confirmation
    /// cooldown is kept per mailbox, however the address is spelled.
    pub mailbox_key: String,
    pub name: Option<SubscriberName>,
    pub timezone: Option<Timezone>,
    pub offerings: Vec<Offering>,
    pub consent: ConsentMeta,
    /// No second confirmation email to one address within this many milliseconds.
    pub cooldown_ms: i64,
    /// At most this many confirmation emails to the address's domain in the past hour; more
    /// are queued for a later hour.
    pub domain_cap_per_hour: Option<u32>,
}

/// What a signup wrote: the subscriber and the consent its confirmation link names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignupOutcome {
    pub subscriber_id: i64,
    /// The signup's consent record, which its confirmation link names.
    pub consent: LinkTarget,
    /// False when every offering was already confirmed, or the address is in its cooldown.
    pub confirmation_queued: bool,
}

/// A signup waiting for its confirmation, as the confirm page shows it.
#[derive(Debug, Clone)]
pub struct PendingConfirmation {
    pub consent: LinkTarget,
    /// Whether any offering of the signup is still waiting for this confirmation (false once
    /// it was confirmed, or the person left those offerings since).
    pub waiting: bool,
    pub subscriber_id: i64,
    pub at: Millis,
    pub offerings: Vec<Offering>,
}

/// One subscription of a subscriber, as listed.
#[derive(Debug, Clone, Serialize)]
pub struct SubscriptionRow {
    pub offering: String,
    pub offering_name: String,
    pub status: SubscriptionStatus,
    pub created_at: Millis,
    pub confirmed_at: Option<Millis>,
    pub unsubscribed_at: Option<Millis>,
}

/// One consent record, as shown to the owner.
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

/// A subscriber in a listing.
#[derive(Debug, Clone, Serialize)]
pub struct SubscriberRow {
    pub id: i64,
    pub email: String,
    pub name: Option<String>,
    pub timezone: Option<String>,
    pub created_at: Millis,
    pub subscriptions: Vec<SubscriptionRow>,
}

/// A subscriber with subscriptions and consent history.
#[derive(Debug, Clone, Serialize)]
pub struct SubscriberDetail {
    #[serde(flatten)]
    pub subscriber: SubscriberRow,
    /// What links to this person are bound to; never shown (not in `--json` or a download).
    #[serde(skip)]
    pub link: LinkTarget,
    pub consents: Vec<ConsentRecord>,
    /// Where the person is in each course they have started.
    pub courses: Vec<super::CourseStatus>,
    /// Bounces and complaints of mail sent to them, newest first (without the raw reports).
    pub bounces: Vec<super::BounceRow>,
}

pub(super) fn split_slugs(joined: &str) -> Vec<String> {
    joined
        .split(';')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Store {
    /// Writes one signup; see [`Store::record_signups`].
    pub async fn record_signup(
        &self,
        signup: &NewSignup,
        now: Millis,
    ) -> Result<SignupOutcome, sqlx::Error> {
        self.record_signups(std::slice::from_ref(signup), now)
            .await?
            .pop()
            .ok_or(sqlx::Error::RowNotFound)
    }

    /// Writes signups in one transaction, each as if alone and in order: for each, the
    /// subscriber (an existing one keeps the name and zone they had), a pending subscription
    /// per offering not already confirmed, the consent record, and — unless the address had a
    /// confirmation within the cooldown, or its domain reached the hourly cap — the
    /// confirmation delivery. No mail is sent here; a worker picks the deliveries up.
    ///
    /// The signups are written a round at a time, a few statements per round whatever its
    /// size (group commit: [`super::SignupWriter`] hands over the signups that arrived while
    /// the last transaction ran). A round holds each address once, so an address signed up
    /// twice in one batch is written twice, the second time seeing the first.
    pub async fn record_signups(
        &self,
        signups: &[NewSignup],
        now: Millis,
    ) -> Result<Vec<SignupOutcome>, sqlx::Error> {
        let mut outcomes: Vec<Option<SignupOutcome>> = vec![None; signups.len()];
        let _turn = self.write_turn().await;
        let mut tx = self.pool.begin().await?;
        for round in rounds(signups) {
            for chunk in round.chunks(ROUND_MAX) {
                let batch: Vec<&NewSignup> = chunk.iter().map(|&i| &signups[i]).collect();
                let written = write_round(&mut tx, &batch, &self.message_id_domain, now).await?;
                for (&i, outcome) in chunk.iter().zip(written) {
                    outcomes[i] = Some(outcome);
                }
            }
        }
        tx.commit().await?;
        outcomes
            .into_iter()
            .map(|o| o.ok_or(sqlx::Error::RowNotFound))
            .collect()
    }

    /// As [`Store::record_signups`], with one answer per signup: when the batch fails as a
    /// whole, each signup is written again on its own, so one that cannot be written fails
    /// alone and the others still get through.
    pub async fn record_signups_or_each(
        &self,
        signups: &[NewSignup],
        now: Millis,
    ) -> Vec<Result<SignupOutcome, sqlx::Error>> {
        match self.record_signups(signups, now).await {
            Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
            Err(e) if signups.len() > 1 => {
                tracing::warn!(
                    error = %e,
                    signups = signups.len(),
                    "a batch of signups failed; writing each alone"
                );
                let mut answers = Vec::with_capacity(signups.len());
                for signup in signups {
                    answers.push(self.record_signup(signup, now).await);
                }
                answers
            }
            Err(e) => vec![Err(e)],
        }
    }

    /// The signup a confirmation link points at, if it still exists: the consent record with
    /// that id AND that link secret, so the link of an erased signup matches nothing.
    pub async fn pending_confirmation(
        &self,
        consent: LinkTarget,
    ) -> Result<Option<PendingConfirmation>, sqlx::Error> {
        let Some(row) = sqlx::query(
            "SELECT subscriber_id, at, offerings FROM consents
             WHERE id = $1 AND link_secret = $2 AND action = 'signup'",
        )
        .bind(consent.id)
        .bind(consent.secret)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let slugs = split_slugs(&row.try_get::<String, _>("offerings")?);
        let offerings = self.offerings_by_slugs(&slugs).await?;
        let subscriber_id: i64 = row.try_get("subscriber_id")?;
        let waiting = if offerings.is_empty() {
            false
        } else {
            let sql = Sql::new(
                "SELECT COUNT(*) FROM subscriptions
                 WHERE subscriber_id = $1 AND status = 'pending' AND offering_id IN (",
                1,
            )
            .list(offerings.len())
            .push(")")
            .build();
            let mut query = sqlx::query_scalar::<_, i64>(sql).bind(subscriber_id);
            for o in &offerings {
                query = query.bind(o.id);
            }
            query.fetch_one(&self.pool).await? > 0
        };
        Ok(Some(PendingConfirmation {
            consent,
            waiting,
            subscriber_id,
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
        consent: LinkTarget,
        meta: &ConsentMeta,
        now: Millis,
    ) -> Result<Option<PendingConfirmation>, sqlx::Error> {
        // Read first, outside the transaction: the consent row never changes, and a SQLite
        // transaction that reads before it writes can fail to upgrade its lock.
        let Some(signup) = self.pending_confirmation(consent).await? else {
            return Ok(None);
        };
        if signup.offerings.is_empty() {
            return Ok(Some(signup));
        }
        let mut tx = self.pool.begin().await?;
        let sql = Sql::new(
            "UPDATE subscriptions SET status = 'confirmed', confirmed_at = $2, updated_at = $2
             WHERE subscriber_id = $1 AND status = 'pending' AND offering_id IN (",
            2,
        )
        .list(signup.offerings.len())
        .push(") RETURNING offering_id")
        .build();
        let mut query = sqlx::query_scalar::<_, i64>(sql)
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
                let status = super::word(row, "status")?;
                out.last_mut()
                    .expect("pushed above")
                    .subscriptions
                    .push(SubscriptionRow {
                        offering: slug,
                        offering_name: row.try_get("offering_name")?,
                        status,
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
            "SELECT id, email, name, timezone, created_at, link_secret FROM subscribers
             WHERE email = $1",
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
            link: LinkTarget {
                id,
                secret: row.try_get("link_secret")?,
            },
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
                            status: super::word(r, "status")?,
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
            bounces: self.subscriber_bounces(id).await?,
        }))
    }
}

/// At most this many signups in one statement: with every offering chosen, a statement stays
/// far below both databases' limits on bound parameters.
const ROUND_MAX: usize = 128;

/// Positions of `signups` grouped so that no address appears twice in a group, in order: an
/// address's second signup goes to the second group, and so on.
fn rounds(signups: &[NewSignup]) -> Vec<Vec<usize>> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    for (i, signup) in signups.iter().enumerate() {
        let count = seen.entry(signup.email.as_str()).or_insert(0);
        if rounds.len() <= *count {
            rounds.push(Vec::new());
        }
        rounds[*count].push(i);
        *count += 1;
    }
    rounds
}

/// Writes signups of distinct addresses with one statement per step; see
/// [`Store::record_signups`].
async fn write_round(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    signups: &[&NewSignup],
    domain: &str,
    now: Millis,
) -> Result<Vec<SignupOutcome>, sqlx::Error> {
    if signups.is_empty() {
        return Ok(Vec::new());
    }
    let sql = Sql::new(
        "INSERT INTO subscribers (email, name, timezone, created_at) VALUES ",
        1,
    )
    .rows("(?, ?, ?, $1)", signups.len())
    .push(
        " ON CONFLICT (email) DO UPDATE SET
             name = COALESCE(subscribers.name, excluded.name),
             timezone = COALESCE(subscribers.timezone, excluded.timezone)
         RETURNING id, email",
    )
    .build();
    let mut query = sqlx::query(sql).bind(now);
    for signup in signups {
        query = query
            .bind(signup.email.as_str())
            .bind(signup.name.as_ref().map(|n| n.as_str().to_owned()))
            .bind(signup.timezone.as_ref().map(|t| t.as_str().to_owned()));
    }
    let mut ids: HashMap<String, i64> = HashMap::new();
    for row in query.fetch_all(&mut **tx).await? {
        ids.insert(row.try_get("email")?, row.try_get("id")?);
    }
    let subscriber_ids: Vec<i64> = signups
        .iter()
        .map(|s| ids.get(s.email.as_str()).copied())
        .collect::<Option<_>>()
        .ok_or(sqlx::Error::RowNotFound)?;

    // A new subscription starts pending; one that was left starts over; a pending or
    // confirmed one stays as it is.
    let pairs: Vec<(i64, i64)> = signups
        .iter()
        .zip(&subscriber_ids)
        .flat_map(|(s, &id)| s.offerings.iter().map(move |o| (id, o.id)))
        .collect();
    let mut pending: HashSet<(i64, i64)> = HashSet::new();
    if !pairs.is_empty() {
        let sql = Sql::new(
            "INSERT INTO subscriptions (subscriber_id, offering_id, status, created_at, updated_at)
             VALUES ",
            1,
        )
        .rows("(?, ?, 'pending', $1, $1)", pairs.len())
        .push(
            " ON CONFLICT (subscriber_id, offering_id) DO UPDATE SET
                 status = 'pending', updated_at = excluded.updated_at, unsubscribed_at = NULL
             WHERE subscriptions.status = 'unsubscribed'",
        )
        .build();
        let mut query = sqlx::query(sql).bind(now);
        for (subscriber, offering) in &pairs {
            query = query.bind(*subscriber).bind(*offering);
        }
        query.execute(&mut **tx).await?;

        let sql = Sql::new(
            "SELECT subscriber_id, offering_id FROM subscriptions
             WHERE status = 'pending' AND subscriber_id IN (",
            0,
        )
        .list(subscriber_ids.len())
        .push(")")
        .build();
        let mut query = sqlx::query(sql);
        for id in &subscriber_ids {
            query = query.bind(*id);
        }
        for row in query.fetch_all(&mut **tx).await? {
            pending.insert((row.try_get("subscriber_id")?, row.try_get("offering_id")?));
        }
    }

    let sql = Sql::new(
        "INSERT INTO consents (subscriber_id, action, at, ip, user_agent, offerings, text_hash, source)
         VALUES ",
        1,
    )
    .rows("(?, 'signup', $1, ?, ?, ?, ?, ?)", signups.len())
    .push(" RETURNING id, subscriber_id, link_secret")
    .build();
    let mut query = sqlx::query(sql).bind(now);
    for (signup, id) in signups.iter().zip(&subscriber_ids) {
        let slugs: Vec<&str> = signup.offerings.iter().map(|o| o.slug.as_str()).collect();
        query = query
            .bind(*id)
            .bind(signup.consent.ip.clone())
            .bind(signup.consent.user_agent.clone())
            .bind(slugs.join(";"))
            .bind(signup.consent.text_hash.clone())
            .bind(signup.consent.source.as_str());
    }
    let mut consents: HashMap<i64, LinkTarget> = HashMap::new();
    for row in query.fetch_all(&mut **tx).await? {
        let consent = LinkTarget {
            id: row.try_get("id")?,
            secret: row.try_get("link_secret")?,
        };
        consents.insert(row.try_get("subscriber_id")?, consent);
    }
    let consents: Vec<LinkTarget> = subscriber_ids
        .iter()
        .map(|id| consents.get(id).copied())
        .collect::<Option<_>>()
        .ok_or(sqlx::Error::RowNotFound)?;

    // Who may get a confirmation: someone with a pending offering whose inbox is out of its
    // cooldown (a second spelling of an inbox in this round waits for it like any other).
    let mut mailboxes: HashSet<&str> = HashSet::new();
    let mut positions: Vec<usize> = Vec::new();
    let mut asked: Vec<Asked<'_>> = Vec::new();
    for (k, signup) in signups.iter().enumerate() {
        let id = subscriber_ids[k];
        let wants_one = signup
            .offerings
            .iter()
            .any(|o| pending.contains(&(id, o.id)));
        if wants_one && mailboxes.insert(signup.mailbox_key.as_str()) {
            positions.push(k);
            asked.push(Asked {
                subscriber_id: id,
                consent_id: consents[k].id,
                mailbox_key: &signup.mailbox_key,
                email: &signup.email,
                cooldown_ms: signup.cooldown_ms,
                domain_cap_per_hour: signup.domain_cap_per_hour,
            });
        }
    }
    let mut claimed: Vec<usize> = queue_confirmations(tx, &asked, domain, now)
        .await?
        .into_iter()
        .map(|(i, _)| positions[i])
        .collect();
    claimed.sort_unstable();

    Ok((0..signups.len())
        .map(|k| SignupOutcome {
            subscriber_id: subscriber_ids[k],
            consent: consents[k],
            confirmation_queued: claimed.binary_search(&k).is_ok(),
        })
        .collect())
}

/// A confirmation email someone may get (at signup, or as a reminder): whether it is queued
/// depends on their inbox's cooldown and their domain's hourly cap.
pub(super) struct Asked<'a> {
    pub subscriber_id: i64,
    /// The signup it asks to confirm.
    pub consent_id: i64,
    /// A keyed hash of the inbox: the cooldown is kept per mailbox, however it is spelled.
    pub mailbox_key: &'a str,
    pub email: &'a EmailAddress,
    /// No second confirmation email to one inbox within this many milliseconds.
    pub cooldown_ms: i64,
    /// At most this many confirmation emails to the address's domain in the past hour.
    pub domain_cap_per_hour: Option<u32>,
}

/// Queues the confirmation emails of those in `asked` whose inbox is out of its cooldown, each
/// due within its domain's hourly cap. `asked` holds each mailbox once. Returns the positions
/// in `asked` that were queued, with their delivery ids.
///
/// The cooldown is claimed per mailbox with a conditional upsert, so two transactions racing
/// for one inbox, however they spell it, cannot both queue an email.
pub(super) async fn queue_confirmations(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    asked: &[Asked<'_>],
    domain: &str,
    now: Millis,
) -> Result<Vec<(usize, i64)>, sqlx::Error> {
    let mut by_cooldown: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (i, a) in asked.iter().enumerate() {
        by_cooldown.entry(a.cooldown_ms).or_default().push(i);
    }
    if let Some(longest) = by_cooldown.keys().next_back() {
        sqlx::query("DELETE FROM confirmation_cooldowns WHERE sent_at <= $1")
            .bind(now - longest)
            .execute(&mut **tx)
            .await?;
    }
    let mut claimed: Vec<usize> = Vec::new();
    for (cooldown_ms, candidates) in &by_cooldown {
        let sql = Sql::new(
            "INSERT INTO confirmation_cooldowns (mailbox_key, sent_at) VALUES ",
            2,
        )
        .rows("(?, $1)", candidates.len())
        .push(
            " ON CONFLICT (mailbox_key) DO UPDATE SET sent_at = excluded.sent_at
             WHERE confirmation_cooldowns.sent_at <= $2
             RETURNING mailbox_key",
        )
        .build();
        let mut query = sqlx::query_scalar::<_, String>(sql)
            .bind(now)
            .bind(now - cooldown_ms);
        for &i in candidates {
            query = query.bind(asked[i].mailbox_key);
        }
        let keys: HashSet<String> = query.fetch_all(&mut **tx).await?.into_iter().collect();
        claimed.extend(
            candidates
                .iter()
                .filter(|&&i| keys.contains(asked[i].mailbox_key)),
        );
    }
    claimed.sort_unstable();

    // The domain cap: a confirmation over this hour's share waits for a later hour, in the
    // order asked, and is never dropped (dropping it let a flood silence a domain's real
    // visitors). The cap is soft: two transactions racing at the limit may both pass.
    let mut scheduled_by_domain: HashMap<&str, i64> = HashMap::new();
    let mut confirmations: Vec<outbox::Confirmation> = Vec::with_capacity(claimed.len());
    for &i in &claimed {
        let a = &asked[i];
        let mut at = now;
        if let Some(cap) = a.domain_cap_per_hour.filter(|cap| *cap > 0) {
            let domain = a.email.domain();
            let scheduled = match scheduled_by_domain.get(domain) {
                Some(n) => *n,
                None => confirmations_to_domain_due_after(tx, domain, now - HOUR_MS).await?,
            };
            scheduled_by_domain.insert(domain, scheduled + 1);
            let hours_later = (scheduled / i64::from(cap)).min(MAX_HELD_HOURS);
            if hours_later > 0 {
                tracing::warn!(
                    domain,
                    scheduled,
                    hours_later,
                    "confirmation cap for this domain reached; the email waits"
                );
                at = now + hours_later * HOUR_MS;
            }
        }
        confirmations.push(outbox::Confirmation {
            subscriber_id: a.subscriber_id,
            consent_id: a.consent_id,
            due: at,
        });
    }
    let ids = outbox::enqueue_confirmations(tx, &confirmations, domain, now).await?;
    claimed
        .into_iter()
        .map(|i| {
            ids.get(&asked[i].consent_id)
                .map(|&id| (i, id))
                .ok_or(sqlx::Error::RowNotFound)
        })
        .collect()
}

const HOUR_MS: i64 = 3_600_000;

/// The longest a confirmation waits for its domain's cap: a day, well inside the link's life.
const MAX_HELD_HOURS: i64 = 24;

/// Confirmation emails to addresses at `domain` due after `since` (sent in the past hour, or
/// waiting for a later one). Every such email was queued within the last `MAX_HELD_HOURS`
/// before that, which bounds the rows read through the index on `created_at`.
async fn confirmations_to_domain_due_after(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    domain: &str,
    since: Millis,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id
         WHERE d.kind = 'confirmation' AND d.created_at > $1 AND d.next_attempt_at > $2
           AND s.email LIKE $3 ESCAPE '\\'",
    )
    .bind(since - MAX_HELD_HOURS * HOUR_MS)
    .bind(since)
    .bind(format!("%@{}", like_escape(domain)))
    .fetch_one(&mut **tx)
    .await
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
    .bind(meta.source.as_str())
    .fetch_one(&mut **tx)
    .await
}
