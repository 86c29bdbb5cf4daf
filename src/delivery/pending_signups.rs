//! The scheduler's look at signups nobody confirmed: one reminder each after
//! `signup.confirmation_reminder_after_hours`, and deletion of the people who never confirmed
//! `signup.unconfirmed_delete_after_days` after their last signup (the store's rules:
//! `store::pending`). It looks every few minutes, not at every scheduler step.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::clock::Millis;
use crate::config::Config;
use crate::links::Links;
use crate::store::{Reminder, ReminderLimits, Store};

/// How often signups are looked at: a reminder goes out at most this late.
const LOOK_EVERY_MS: Millis = 10 * 60_000;
/// A reminder this late after its time is not sent (the service was off): a reminder weeks
/// after a signup surprises more than it helps.
const REMIND_AT_MOST_LATE_MS: Millis = 7 * 86_400_000;
/// Signups read, or people deleted, per statement.
const BATCH: u32 = 500;

/// What one look did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PendingOutcome {
    pub reminders_queued: u64,
    pub people_deleted: u64,
}

/// Reminds and forgets signups nobody confirmed.
#[derive(Clone)]
pub struct PendingSignups {
    links: Links,
    /// `None`: no reminders.
    remind_after_ms: Option<Millis>,
    /// `None`: nobody is deleted.
    delete_after_ms: Option<Millis>,
    limits: ReminderLimits,
    next_look_at: Arc<AtomicI64>,
}

impl PendingSignups {
    /// The rules of `config`'s `[signup]`, with `links` for the mailbox keys and the
    /// suppression list.
    pub fn new(config: &Config, links: Links) -> Self {
        let signup = &config.signup;
        Self {
            links,
            remind_after_ms: Some(i64::from(signup.confirmation_reminder_after_hours) * 3_600_000)
                .filter(|ms| *ms > 0),
            delete_after_ms: Some(i64::from(signup.unconfirmed_delete_after_days) * 86_400_000)
                .filter(|ms| *ms > 0),
            limits: ReminderLimits {
                cooldown_ms: i64::from(signup.confirmation_cooldown_minutes) * 60_000,
                domain_cap_per_hour: Some(signup.confirmations_per_domain_per_hour)
                    .filter(|cap| *cap > 0),
            },
            next_look_at: Arc::new(AtomicI64::new(Millis::MIN)),
        }
    }

    /// Reminds and deletes, when it is time to look again.
    pub async fn step(&self, store: &Store, now: Millis) -> anyhow::Result<PendingOutcome> {
        if now < self.next_look_at.load(Ordering::Relaxed) {
            return Ok(PendingOutcome::default());
        }
        self.next_look_at
            .store(now + LOOK_EVERY_MS, Ordering::Relaxed);
        let mut outcome = PendingOutcome::default();
        if let Some(after) = self.remind_after_ms {
            outcome.reminders_queued = self.remind(store, now, after).await?;
        }
        if let Some(after) = self.delete_after_ms {
            loop {
                let deleted = store.forget_unconfirmed(now - after, BATCH).await?;
                outcome.people_deleted += deleted;
                if deleted < u64::from(BATCH) {
                    break;
                }
            }
            store
                .forget_cooldowns(now - self.limits.cooldown_ms)
                .await?;
        }
        if outcome != PendingOutcome::default() {
            tracing::info!(
                reminders = outcome.reminders_queued,
                deleted = outcome.people_deleted,
                "looked at signups nobody confirmed"
            );
        }
        Ok(outcome)
    }

    /// Queues the reminders of signups made between `after` and `after` plus
    /// [`REMIND_AT_MOST_LATE_MS`] ago, a batch at a time.
    async fn remind(&self, store: &Store, now: Millis, after: Millis) -> anyhow::Result<u64> {
        let (from, to) = (now - after - REMIND_AT_MOST_LATE_MS, now - after);
        let mut cursor = (Millis::MIN, 0);
        let mut queued = 0;
        loop {
            let candidates = store.reminder_candidates(from, to, cursor, BATCH).await?;
            let Some(last) = candidates.last() else {
                break;
            };
            cursor = (last.signed_up_at, last.consent_id);
            let full = candidates.len() == BATCH as usize;
            let mut reminders = Vec::with_capacity(candidates.len());
            for candidate in candidates {
                let suppressed = store
                    .suppression(&self.links.email_hashes(&candidate.email))
                    .await?
                    .is_some();
                reminders.push(Reminder {
                    mailbox_key: self.links.mailbox_key(&candidate.email),
                    suppressed,
                    candidate,
                });
            }
            queued += store.queue_reminders(&reminders, self.limits, now).await?;
            if !full {
                break;
            }
        }
        Ok(queued)
    }
}
