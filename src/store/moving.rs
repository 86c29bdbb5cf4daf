//! Moving in: people from another newsletter tool's export, each with the status and the
//! consent that tool recorded.
//!
//! Unlike the owner's own list (`import.rs`), every person carries their own status, consent
//! time, IP and source, so a batch is written person by person, in one transaction:
//!
//! ```text
//! confirmed    ──► subscriber (name, zone filled in) ─► subscriptions confirmed
//!                  (a pending one is confirmed, one the person left stays left)
//!                  ─► an `import` consent at the old tool's consent time, with its IP
//! unsubscribed ──► subscriber (address only) ─► subscriptions unsubscribed at the old
//!                  tool's time, unless the person confirmed or signed up here after it
//!                  ─► an `unsubscribe` consent record
//! suppressed   ──► the keyed hash on the suppression list; an existing subscriber leaves
//!                  every offering; nothing readable is kept about someone new
//! ```
//!
//! Each write says whether it changed anything, so running the same import again changes
//! nothing and records nothing.

use std::collections::HashSet;

use sha2::{Digest, Sha256};
use sqlx::Row;

use super::leaving::add_suppression;
use super::sql::Sql;
use super::{Offering, Store};
use crate::clock::Millis;
use crate::domain::{EmailAddress, SubscriberName, SuppressionReason, Timezone};

/// What the old tool says of a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MovedStatus {
    /// Subscribed and confirmed there: confirmed here, their consent carried over.
    Confirmed,
    /// Left there: kept as unsubscribed, so they are never mailed and never brought back.
    Unsubscribed,
    /// Cleaned, bounced or blocklisted there: on the suppression list here.
    Suppressed(SuppressionReason),
}

/// One person of another tool's export, validated.
#[derive(Debug, Clone)]
pub struct MovedPerson {
    pub email: EmailAddress,
    /// The suppression-list hash under the current token key (what a suppression writes).
    pub email_hash: String,
    /// The hashes under every key (what a suppression check looks for).
    pub email_hashes: Vec<String>,
    pub name: Option<SubscriberName>,
    pub timezone: Option<Timezone>,
    /// Ids of active offerings, each once (empty for a suppressed person).
    pub offering_ids: Vec<i64>,
    pub status: MovedStatus,
    /// When the old tool recorded the consent (or the unsubscribe); the import time when it
    /// did not say.
    pub at: Millis,
    /// The IP the old tool recorded the consent from.
    pub ip: Option<String>,
    /// What the consent record says it came from (`mailchimp import of x.csv: OPTIN_TIME …`).
    pub source: String,
}

/// What one batch of moved people did, in people.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MovedCounts {
    /// Got at least one confirmed subscription they did not have.
    pub confirmed: u64,
    /// Left at least one offering they had not left here (or were added as having left).
    pub unsubscribed: u64,
    /// Put on the suppression list (or already on it, for a suppressed row).
    pub suppressed: u64,
    /// Nothing new: already as the file says.
    pub unchanged: u64,
    /// Confirmed in the file, but had left every such offering here: they stay left.
    pub kept_unsubscribed: u64,
    /// On the suppression list here (erased, bounced, complained): left out.
    pub already_suppressed: u64,
}

impl MovedCounts {
    /// Adds the counts of another batch.
    pub fn add(&mut self, other: MovedCounts) {
        self.confirmed += other.confirmed;
        self.unsubscribed += other.unsubscribed;
        self.suppressed += other.suppressed;
        self.unchanged += other.unchanged;
        self.kept_unsubscribed += other.kept_unsubscribed;
        self.already_suppressed += other.already_suppressed;
    }
}

impl Store {
    /// Writes one batch of people from another tool in one transaction (see the module
    /// comment). `offerings` names the offerings in consent records.
    pub async fn import_moved(
        &self,
        people: &[MovedPerson],
        offerings: &[Offering],
        now: Millis,
    ) -> Result<MovedCounts, sqlx::Error> {
        let suppressed = self.suppressed_hashes(people).await?;
        let mut counts = MovedCounts::default();
        let mut tx = self.pool.begin().await?;
        for person in people {
            let on_list = person.email_hashes.iter().any(|h| suppressed.contains(h));
            match person.status {
                MovedStatus::Suppressed(reason) => {
                    suppress(&mut tx, person, reason, now).await?;
                    counts.suppressed += 1;
                }
                _ if on_list => counts.already_suppressed += 1,
                MovedStatus::Confirmed => match confirm(&mut tx, person, offerings, now).await? {
                    Outcome::Changed => counts.confirmed += 1,
                    Outcome::KeptLeft => counts.kept_unsubscribed += 1,
                    Outcome::Unchanged => counts.unchanged += 1,
                },
                MovedStatus::Unsubscribed => match leave(&mut tx, person, offerings, now).await? {
                    Outcome::Changed => counts.unsubscribed += 1,
                    Outcome::KeptLeft | Outcome::Unchanged => counts.unchanged += 1,
                },
            }
        }
        tx.commit().await?;
        Ok(counts)
    }

    /// The hashes among `people` (each under every key) that are on the suppression list.
    async fn suppressed_hashes(
        &self,
        people: &[MovedPerson],
    ) -> Result<HashSet<String>, sqlx::Error> {
        let hashes: Vec<&str> = people
            .iter()
            .flat_map(|p| p.email_hashes.iter().map(String::as_str))
            .collect();
        let mut found = HashSet::new();
        for chunk in hashes.chunks(250) {
            let sql = Sql::new(
                "SELECT email_hash FROM suppressions WHERE email_hash IN (",
                0,
            )
            .list(chunk.len())
            .push(")")
            .build();
            let mut query = sqlx::query_scalar::<_, String>(sql);
            for hash in chunk {
                query = query.bind(*hash);
            }
            found.extend(query.fetch_all(&self.pool).await?);
        }
        Ok(found)
    }
}

/// What writing one person did.
enum Outcome {
    Changed,
    /// Nothing written: the person had left every offering in question.
    KeptLeft,
    Unchanged,
}

type Tx<'t> = sqlx::Transaction<'t, sqlx::Any>;

async fn suppress(
    tx: &mut Tx<'_>,
    person: &MovedPerson,
    reason: SuppressionReason,
    now: Millis,
) -> Result<(), sqlx::Error> {
    add_suppression(tx, &person.email_hash, reason, now).await?;
    sqlx::query(
        "UPDATE subscriptions SET status = 'unsubscribed', unsubscribed_at = $2, updated_at = $2
         WHERE status <> 'unsubscribed'
           AND subscriber_id = (SELECT id FROM subscribers WHERE email = $1)",
    )
    .bind(person.email.as_str())
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn confirm(
    tx: &mut Tx<'_>,
    person: &MovedPerson,
    offerings: &[Offering],
    now: Millis,
) -> Result<Outcome, sqlx::Error> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO subscribers (email, name, timezone, created_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (email) DO UPDATE SET
             name = COALESCE(subscribers.name, excluded.name),
             timezone = COALESCE(subscribers.timezone, excluded.timezone)
         RETURNING id",
    )
    .bind(person.email.as_str())
    .bind(person.name.as_ref().map(SubscriberName::as_str))
    .bind(person.timezone.as_ref().map(Timezone::as_str))
    .bind(now)
    .fetch_one(&mut **tx)
    .await?;
    let mut confirmed = Vec::new();
    let mut left = 0;
    for &offering in &person.offering_ids {
        // A pending subscription is confirmed; a confirmed one stays as it is; one the person
        // left stays left (the WHERE guards it).
        let changed = sqlx::query(
            "INSERT INTO subscriptions
                 (subscriber_id, offering_id, status, created_at, updated_at, confirmed_at)
             VALUES ($1, $2, 'confirmed', $3, $3, $3)
             ON CONFLICT (subscriber_id, offering_id) DO UPDATE SET
                 status = 'confirmed', confirmed_at = excluded.confirmed_at,
                 updated_at = excluded.updated_at
             WHERE subscriptions.status = 'pending'",
        )
        .bind(id)
        .bind(offering)
        .bind(now)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if changed > 0 {
            confirmed.push(offering);
        } else if status_of(tx, id, offering).await?.as_deref() == Some("unsubscribed") {
            left += 1;
        }
    }
    if confirmed.is_empty() {
        return Ok(if left > 0 && left == person.offering_ids.len() {
            Outcome::KeptLeft
        } else {
            Outcome::Unchanged
        });
    }
    insert_consent(tx, id, "import", person, &slugs(offerings, &confirmed)).await?;
    Ok(Outcome::Changed)
}

async fn leave(
    tx: &mut Tx<'_>,
    person: &MovedPerson,
    offerings: &[Offering],
    now: Millis,
) -> Result<Outcome, sqlx::Error> {
    // Only the address: nothing more is needed to never mail someone who left.
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO subscribers (email, created_at) VALUES ($1, $2)
         ON CONFLICT (email) DO UPDATE SET email = subscribers.email
         RETURNING id",
    )
    .bind(person.email.as_str())
    .bind(now)
    .fetch_one(&mut **tx)
    .await?;
    let mut left = Vec::new();
    for &offering in &person.offering_ids {
        // A subscription the person confirmed, or asked for, here after they left the old
        // tool is theirs to keep: the later word wins.
        let changed = sqlx::query(
            "INSERT INTO subscriptions
                 (subscriber_id, offering_id, status, created_at, updated_at, unsubscribed_at)
             VALUES ($1, $2, 'unsubscribed', $3, $3, $4)
             ON CONFLICT (subscriber_id, offering_id) DO UPDATE SET
                 status = 'unsubscribed', unsubscribed_at = excluded.unsubscribed_at,
                 updated_at = excluded.updated_at
             WHERE subscriptions.status <> 'unsubscribed'
               AND COALESCE(subscriptions.confirmed_at, subscriptions.created_at)
                   <= excluded.unsubscribed_at",
        )
        .bind(id)
        .bind(offering)
        .bind(now)
        .bind(person.at)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if changed > 0 {
            left.push(offering);
        }
    }
    if left.is_empty() {
        return Ok(Outcome::Unchanged);
    }
    insert_consent(tx, id, "unsubscribe", person, &slugs(offerings, &left)).await?;
    Ok(Outcome::Changed)
}

async fn status_of(
    tx: &mut Tx<'_>,
    subscriber: i64,
    offering: i64,
) -> Result<Option<String>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT status FROM subscriptions WHERE subscriber_id = $1 AND offering_id = $2",
    )
    .bind(subscriber)
    .bind(offering)
    .fetch_optional(&mut **tx)
    .await?;
    row.map(|r| r.try_get("status")).transpose()
}

/// `a;b` for the given offering ids.
fn slugs(offerings: &[Offering], ids: &[i64]) -> String {
    ids.iter()
        .filter_map(|id| offerings.iter().find(|o| o.id == *id))
        .map(|o| o.slug.as_str())
        .collect::<Vec<_>>()
        .join(";")
}

/// The consent record of a moved person: the old tool's time and IP; the owner imported it,
/// so no user agent.
async fn insert_consent(
    tx: &mut Tx<'_>,
    subscriber: i64,
    action: &str,
    person: &MovedPerson,
    offerings: &str,
) -> Result<(), sqlx::Error> {
    let text_hash = crate::domain::hex(&Sha256::digest(person.source.as_bytes()));
    sqlx::query(
        "INSERT INTO consents (subscriber_id, action, at, ip, user_agent, offerings, text_hash, source)
         VALUES ($1, $2, $3, $4, NULL, $5, $6, $7)",
    )
    .bind(subscriber)
    .bind(action)
    .bind(person.at)
    .bind(person.ip.as_deref())
    .bind(offerings)
    .bind(text_hash)
    .bind(person.source.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(())
}
