//! Bulk import and export of subscribers.
//!
//! An import writes one batch of people per transaction with multi-row statements, so a million
//! rows take about a thousand transactions instead of millions of round trips:
//!
//! ```text
//! batch ──► read (outside the transaction): which hashes are suppressed, who exists already
//!           and with which subscriptions
//!       ──► plan in memory: new / updated / unchanged, subscriptions kept unsubscribed
//!       ──► one transaction: upsert subscribers ─► insert subscriptions ─► insert consents
//! ```
//!
//! The reads happen before the transaction because a SQLite transaction that reads before it
//! writes can fail to take the write lock when another writer got in between. Every write is
//! guarded by `ON CONFLICT`, so a signup racing with the import can only make the counts in the
//! report slightly off, never resubscribe someone who left.
//!
//! The multi-row statements write placeholders per dialect (`Sql::positional`): SQLite finds a named parameter such as `$7` by scanning a list, so
//! binding thousands of them is quadratic (it took over half the time of an import); its
//! anonymous `?` is bound by position.

use std::collections::{HashMap, HashSet};

use futures::StreamExt;
use futures::stream::BoxStream;
use sqlx::Row;

use super::sql::Sql;
use super::{Backend, Offering, Store};
use crate::clock::Millis;
use crate::domain::{EmailAddress, SubscriberName, SubscriptionStatus, Timezone};

/// Rows per multi-row statement. One size means one statement text, prepared once per
/// connection and reused for every batch; the shorter last statement of a batch is prepared,
/// used once and not kept. (Re-preparing a statement of a thousand rows for every batch cost
/// more than running it.)
const ROWS_PER_STATEMENT: usize = 250;

/// Bound values per row, at most (a confirmed subscription, a consent).
const MAX_VALUES_PER_ROW: usize = 5;

// Far below SQLite's limit of 32,766 bound parameters per statement and PostgreSQL's 65,535.
const _: () = assert!(ROWS_PER_STATEMENT * MAX_VALUES_PER_ROW <= 30_000);

/// One person of an import file, validated; rows repeating an address are merged before this.
#[derive(Debug, Clone)]
pub struct ImportedPerson {
    pub email: EmailAddress,
    /// The suppression-list hashes of `email` under every token key (`Links::email_hashes`);
    /// any of them on the list suppresses the person.
    pub email_hashes: Vec<String>,
    pub name: Option<SubscriberName>,
    pub timezone: Option<Timezone>,
    /// Ids of active offerings, each once.
    pub offering_ids: Vec<i64>,
}

/// What the owner states about the people of an import.
#[derive(Debug, Clone)]
pub struct ImportTerms {
    /// True: they consented elsewhere and are confirmed. False: they are pending and get no
    /// email until they sign up themselves.
    pub confirmed: bool,
    /// Where the consent was given, as the owner said it; recorded with each person.
    pub source: String,
    /// Hex SHA-256 of `source`.
    pub text_hash: String,
    /// The active offerings, to name them in consent records.
    pub offerings: Vec<Offering>,
}

/// What one batch did, counted in people except `kept_unsubscribed`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportCounts {
    /// New subscribers.
    pub imported: u64,
    /// Existing subscribers who got an offering, a confirmation, a name or a time zone.
    pub updated: u64,
    /// Existing subscribers the file had nothing new for.
    pub unchanged: u64,
    /// People on the suppression list (erased or bounced), left out.
    pub suppressed: u64,
    /// Subscriptions the file lists that the person had left: they stay unsubscribed.
    pub kept_unsubscribed: u64,
}

/// A subscriber as the database has it before the batch is written.
struct Existing {
    id: i64,
    has_name: bool,
    has_timezone: bool,
    subscriptions: Vec<(i64, SubscriptionStatus)>,
}

/// One person of the batch who will be written.
struct Planned<'p> {
    person: &'p ImportedPerson,
    /// Known when the person exists and needs no name or time zone filled in.
    id: Option<i64>,
    /// The person's offerings minus the ones they left.
    offering_ids: Vec<i64>,
}

/// One subscription of one subscriber, in export order (by email, then offering).
#[derive(Debug, Clone)]
pub struct ExportLine {
    pub subscriber_id: i64,
    pub email: String,
    pub name: Option<String>,
    pub timezone: Option<String>,
    pub created_at: Millis,
    /// The latest consent record that is not an unsubscribe: when, and through what.
    pub consent_at: Option<Millis>,
    pub consent_source: Option<String>,
    /// `None` for a subscriber without any subscription.
    pub subscription: Option<ExportSubscription>,
}

/// One subscription of an exported subscriber.
#[derive(Debug, Clone)]
pub struct ExportSubscription {
    pub offering: String,
    /// False once the offering is gone from the configuration.
    pub offering_active: bool,
    pub status: SubscriptionStatus,
    pub confirmed_at: Option<Millis>,
    pub unsubscribed_at: Option<Millis>,
}

impl Store {
    /// How many import batches to write at once: two on PostgreSQL (one connection each; the
    /// server's work then uses two cores), one on SQLite, which has a single writer.
    pub fn import_lanes(&self) -> usize {
        match self.backend {
            Backend::Sqlite => 1,
            Backend::Postgres => 2,
        }
    }

    /// Writes one batch of imported people in one transaction (see the module comment). The
    /// addresses in `people` must be distinct.
    pub async fn import_people(
        &self,
        people: &[ImportedPerson],
        terms: &ImportTerms,
        now: Millis,
    ) -> Result<ImportCounts, sqlx::Error> {
        let mut counts = ImportCounts::default();
        let suppressed = self.suppressed_among(people).await?;
        let existing = self.existing_among(people).await?;

        let mut writes = Vec::new();
        for person in people {
            if person
                .email_hashes
                .iter()
                .any(|hash| suppressed.contains(hash))
            {
                counts.suppressed += 1;
                continue;
            }
            let Some(before) = existing.get(person.email.as_str()) else {
                counts.imported += 1;
                writes.push(Planned {
                    person,
                    id: None,
                    offering_ids: person.offering_ids.clone(),
                });
                continue;
            };
            let mut offering_ids = Vec::with_capacity(person.offering_ids.len());
            let mut changed = false;
            for &offering in &person.offering_ids {
                match before.subscriptions.iter().find(|(o, _)| *o == offering) {
                    None => changed = true,
                    Some((_, SubscriptionStatus::Pending)) => changed |= terms.confirmed,
                    Some((_, SubscriptionStatus::Confirmed)) => {}
                    Some((_, SubscriptionStatus::Unsubscribed)) => {
                        // The person left this offering; an import does not bring them back.
                        counts.kept_unsubscribed += 1;
                        continue;
                    }
                }
                offering_ids.push(offering);
            }
            if offering_ids.is_empty() {
                // Nothing left to import: not even a name is added to someone who left.
                counts.unchanged += 1;
                continue;
            }
            let fills = (!before.has_name && person.name.is_some())
                || (!before.has_timezone && person.timezone.is_some());
            if !changed && !fills {
                counts.unchanged += 1;
                continue;
            }
            counts.updated += 1;
            writes.push(Planned {
                person,
                id: (!fills).then_some(before.id),
                offering_ids,
            });
        }
        if writes.is_empty() {
            return Ok(counts);
        }

        let mut tx = self.pool.begin().await?;
        let ids = upsert_subscribers(&mut tx, self.backend, &writes, now).await?;
        let id_of = |w: &Planned<'_>| -> Result<i64, sqlx::Error> {
            w.id.or_else(|| ids.get(w.person.email.as_str()).copied())
                .ok_or_else(|| {
                    sqlx::Error::Protocol(format!("no id returned for {}", w.person.email))
                })
        };
        let mut pairs = Vec::new();
        let mut consents = Vec::with_capacity(writes.len());
        for w in &writes {
            let id = id_of(w)?;
            let slugs: Vec<&str> = w
                .offering_ids
                .iter()
                .filter_map(|o| terms.offerings.iter().find(|x| x.id == *o))
                .map(|o| o.slug.as_str())
                .collect();
            pairs.extend(w.offering_ids.iter().map(|o| (id, *o)));
            consents.push((id, slugs.join(";")));
        }
        insert_subscriptions(&mut tx, self.backend, &pairs, terms.confirmed, now).await?;
        insert_import_consents(&mut tx, self.backend, &consents, terms, now).await?;
        tx.commit().await?;
        Ok(counts)
    }

    /// The hashes among `people` (each under every key) that are on the suppression list.
    async fn suppressed_among(
        &self,
        people: &[ImportedPerson],
    ) -> Result<HashSet<String>, sqlx::Error> {
        let mut found = HashSet::new();
        let hashes: Vec<&str> = people
            .iter()
            .flat_map(|p| p.email_hashes.iter().map(String::as_str))
            .collect();
        for chunk in hashes.chunks(ROWS_PER_STATEMENT) {
            let sql = Sql::positional(
                self.backend,
                "SELECT email_hash FROM suppressions WHERE email_hash IN (",
            )
            .list(chunk.len())
            .push(")")
            .build();
            let mut query = sqlx::query_scalar::<_, String>(sql).persistent(reused(chunk.len()));
            for hash in chunk {
                query = query.bind(*hash);
            }
            found.extend(query.fetch_all(&self.pool).await?);
        }
        Ok(found)
    }

    /// The people among `people` who are subscribers already, with their subscriptions.
    async fn existing_among(
        &self,
        people: &[ImportedPerson],
    ) -> Result<HashMap<String, Existing>, sqlx::Error> {
        let mut found: HashMap<String, Existing> = HashMap::new();
        for chunk in people.chunks(ROWS_PER_STATEMENT) {
            let sql = Sql::positional(
                self.backend,
                "SELECT s.id, s.email, s.name, s.timezone, sub.offering_id, sub.status
                 FROM subscribers s LEFT JOIN subscriptions sub ON sub.subscriber_id = s.id
                 WHERE s.email IN (",
            )
            .list(chunk.len())
            .push(")")
            .build();
            let mut query = sqlx::query(sql).persistent(reused(chunk.len()));
            for p in chunk {
                query = query.bind(p.email.as_str());
            }
            for row in query.fetch_all(&self.pool).await? {
                let email: String = row.try_get("email")?;
                let entry = match found.entry(email) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => e.insert(Existing {
                        id: row.try_get("id")?,
                        has_name: row.try_get::<Option<String>, _>("name")?.is_some(),
                        has_timezone: row.try_get::<Option<String>, _>("timezone")?.is_some(),
                        subscriptions: Vec::new(),
                    }),
                };
                let offering: Option<i64> = row.try_get("offering_id")?;
                if let Some(offering) = offering {
                    entry
                        .subscriptions
                        .push((offering, super::word(&row, "status")?));
                }
            }
        }
        Ok(found)
    }

    /// Every subscriber with each subscription, one line per subscription, ordered by email:
    /// a stream, so an export of any size holds one row at a time.
    pub fn export_lines(&self) -> BoxStream<'_, Result<ExportLine, sqlx::Error>> {
        sqlx::query(
            "SELECT s.id, s.email, s.name, s.timezone, s.created_at,
                    o.slug, o.active, sub.status, sub.confirmed_at, sub.unsubscribed_at,
                    c.at AS consent_at, c.source AS consent_source
             FROM subscribers s
             LEFT JOIN subscriptions sub ON sub.subscriber_id = s.id
             LEFT JOIN offerings o ON o.id = sub.offering_id
             LEFT JOIN consents c ON c.id = (
                 SELECT c2.id FROM consents c2
                 WHERE c2.subscriber_id = s.id AND c2.action <> 'unsubscribe'
                 ORDER BY c2.at DESC, c2.id DESC LIMIT 1)
             ORDER BY s.email, s.id, o.id",
        )
        .fetch(&self.pool)
        .map(|row| row.and_then(|row| export_line(&row)))
        .boxed()
    }
}

fn export_line(row: &sqlx::any::AnyRow) -> Result<ExportLine, sqlx::Error> {
    let slug: Option<String> = row.try_get("slug")?;
    let subscription = match slug {
        None => None,
        Some(offering) => Some(ExportSubscription {
            offering,
            offering_active: row.try_get::<i64, _>("active")? != 0,
            status: super::word(row, "status")?,
            confirmed_at: row.try_get("confirmed_at")?,
            unsubscribed_at: row.try_get("unsubscribed_at")?,
        }),
    };
    Ok(ExportLine {
        subscriber_id: row.try_get("id")?,
        email: row.try_get("email")?,
        name: row.try_get("name")?,
        timezone: row.try_get("timezone")?,
        created_at: row.try_get("created_at")?,
        consent_at: row.try_get("consent_at")?,
        consent_source: row.try_get("consent_source")?,
        subscription,
    })
}

/// Whether a statement of `rows` rows has the one size worth keeping prepared.
fn reused(rows: usize) -> bool {
    rows == ROWS_PER_STATEMENT
}

/// Creates the new people and fills in a missing name or time zone of existing ones (an
/// existing name is never overwritten). Returns the ids by address.
async fn upsert_subscribers(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    backend: Backend,
    writes: &[Planned<'_>],
    now: Millis,
) -> Result<HashMap<String, i64>, sqlx::Error> {
    let upserts: Vec<&ImportedPerson> = writes
        .iter()
        .filter(|w| w.id.is_none())
        .map(|w| w.person)
        .collect();
    let mut ids = HashMap::with_capacity(upserts.len());
    for chunk in upserts.chunks(ROWS_PER_STATEMENT) {
        let sql = Sql::positional(
            backend,
            "INSERT INTO subscribers (email, name, timezone, created_at) VALUES ",
        )
        .rows("(?, ?, ?, ?)", chunk.len())
        .push(
            " ON CONFLICT (email) DO UPDATE SET
                 name = COALESCE(subscribers.name, excluded.name),
                 timezone = COALESCE(subscribers.timezone, excluded.timezone)
             RETURNING id, email",
        )
        .build();
        let mut query = sqlx::query(sql).persistent(reused(chunk.len()));
        for person in chunk {
            query = query
                .bind(person.email.as_str())
                .bind(person.name.as_ref().map(SubscriberName::as_str))
                .bind(person.timezone.as_ref().map(Timezone::as_str))
                .bind(now);
        }
        for row in query.fetch_all(&mut **tx).await? {
            ids.insert(row.try_get::<String, _>("email")?, row.try_get("id")?);
        }
    }
    Ok(ids)
}

/// New subscriptions start pending, or confirmed when the owner stated the consent. An
/// existing subscription is never moved backwards: a confirmed one stays confirmed, and one the
/// person left stays unsubscribed (the `WHERE` of the update guards this even against a race).
async fn insert_subscriptions(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    backend: Backend,
    pairs: &[(i64, i64)],
    confirmed: bool,
    now: Millis,
) -> Result<(), sqlx::Error> {
    for chunk in pairs.chunks(ROWS_PER_STATEMENT) {
        let sql = if confirmed {
            Sql::positional(
                backend,
                "INSERT INTO subscriptions
                     (subscriber_id, offering_id, status, created_at, updated_at, confirmed_at)
                 VALUES ",
            )
            .rows("(?, ?, 'confirmed', ?, ?, ?)", chunk.len())
            .push(
                " ON CONFLICT (subscriber_id, offering_id) DO UPDATE SET
                     status = 'confirmed', confirmed_at = excluded.confirmed_at,
                     updated_at = excluded.updated_at
                 WHERE subscriptions.status = 'pending'",
            )
        } else {
            Sql::positional(
                backend,
                "INSERT INTO subscriptions (subscriber_id, offering_id, status, created_at, updated_at)
                 VALUES ",
            )
            .rows("(?, ?, 'pending', ?, ?)", chunk.len())
            .push(" ON CONFLICT (subscriber_id, offering_id) DO NOTHING")
        };
        let mut query = sqlx::query(sql.build()).persistent(reused(chunk.len()));
        for (subscriber, offering) in chunk {
            query = query.bind(*subscriber).bind(*offering).bind(now).bind(now);
            if confirmed {
                query = query.bind(now);
            }
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// One `import` consent record per person written: the stated source, its hash, and the
/// offerings imported for them. No IP or user agent: the owner, not the person, is acting.
async fn insert_import_consents(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    backend: Backend,
    consents: &[(i64, String)],
    terms: &ImportTerms,
    now: Millis,
) -> Result<(), sqlx::Error> {
    for chunk in consents.chunks(ROWS_PER_STATEMENT) {
        let sql = Sql::positional(
            backend,
            "INSERT INTO consents
                 (subscriber_id, action, at, ip, user_agent, offerings, text_hash, source)
             VALUES ",
        )
        .rows("(?, 'import', ?, NULL, NULL, ?, ?, ?)", chunk.len())
        .build();
        let mut query = sqlx::query(sql).persistent(reused(chunk.len()));
        for (subscriber, slugs) in chunk {
            query = query
                .bind(*subscriber)
                .bind(now)
                .bind(slugs.as_str())
                .bind(terms.text_hash.as_str())
                .bind(terms.source.as_str());
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}
