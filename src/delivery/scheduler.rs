//! The scheduler: turns sends whose time has come into deliveries (set-based, in batches, see
//! `store::sends`), and marks sends done once every delivery is final. It keeps no state of its
//! own, so running it in more than one process is harmless.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::clock::{Clock, Millis};
use crate::config::Config;
use crate::courses::Courses;
use crate::domain::RecurrenceStatus;
use crate::store::{DueSend, Store};

/// How often the scheduler loop looks for a send that just fell due.
const DUE_CHECK: Duration = Duration::from_millis(100);
/// How often the text of bounce reports older than `bounces.keep_days` is looked for.
const FORGET_EVERY_MS: Millis = 3_600_000;

/// What one scheduler step did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScheduleOutcome {
    pub deliveries_created: u64,
    pub sends_finished: usize,
}

/// Creates deliveries for due sends, recurring occurrences and course lessons.
#[derive(Clone)]
pub struct Scheduler {
    store: Store,
    clock: Clock,
    batch_size: u32,
    /// The zone of subscribers who gave none.
    default_zone: String,
    grace_ms: Millis,
    warn_below: u32,
    /// How long the raw text of a bounce report is kept (`bounces.keep_days`).
    keep_reports_ms: Millis,
    /// When the text of old bounce reports is next looked for: the step runs every fraction
    /// of a second, the forgetting once an hour (an UPDATE is a write, even of no rows).
    next_forget_at: Arc<AtomicI64>,
    /// Moves each person through the courses.
    courses: super::CourseStep,
    /// Reminds and forgets signups nobody confirmed (set by
    /// [`Scheduler::with_pending_signups`]).
    pending_signups: Option<super::PendingSignups>,
    /// Woken after every fan-out batch, so workers start on a big send while the rest of
    /// its deliveries are still being created (set by [`Scheduler::run`]).
    wake_workers: Option<Arc<Notify>>,
}

impl Scheduler {
    /// The scheduler of `config`, moving people through `courses`.
    pub fn new(store: Store, clock: Clock, config: &Config, courses: Courses) -> Self {
        Self {
            store,
            clock,
            batch_size: config.worker.fanout_batch_size,
            default_zone: config.site.timezone.to_string(),
            grace_ms: i64::from(config.worker.grace_minutes) * 60_000,
            warn_below: config.worker.recurring_warn_below,
            keep_reports_ms: i64::from(config.bounces.keep_days) * 86_400_000,
            next_forget_at: Arc::new(AtomicI64::new(Millis::MIN)),
            courses: super::CourseStep::new(courses),
            pending_signups: None,
            wake_workers: None,
        }
    }

    /// This scheduler, also reminding and forgetting signups nobody confirmed.
    pub fn with_pending_signups(mut self, pending: super::PendingSignups) -> Self {
        self.pending_signups = Some(pending);
        self
    }

    /// Fans out every due send completely (each batch its own transaction), then closes the
    /// sends that have nothing pending.
    pub async fn step(&self) -> anyhow::Result<ScheduleOutcome> {
        let now = self.clock.now_ms();
        let mut outcome = ScheduleOutcome::default();
        while self.create_occurrences(now).await? > 0 {}
        for due in self.store.due_sends(now).await? {
            let created = match &due.local {
                None => {
                    let mut created = 0;
                    while let Some(n) = self
                        .store
                        .fan_out_batch(due.id, now, self.batch_size)
                        .await?
                    {
                        created += n;
                        self.wake_workers();
                    }
                    created
                }
                Some((time, date)) => self.fan_out_local(&due, time.time(), *date, now).await?,
            };
            tracing::info!(send = due.id, deliveries = created, "send fanned out");
            outcome.deliveries_created += created;
        }
        let finished = self.store.finish_sends(now).await?;
        for id in &finished {
            tracing::info!(send = id, "send finished");
        }
        outcome.sends_finished = finished.len();
        outcome.deliveries_created += self.courses.step(&self.store, now).await?;
        if now >= self.next_forget_at.load(Ordering::Relaxed) {
            let forgotten = self
                .store
                .forget_bounce_reports(now - self.keep_reports_ms)
                .await?;
            self.next_forget_at
                .store(now + FORGET_EVERY_MS, Ordering::Relaxed);
            if forgotten > 0 {
                tracing::info!(reports = forgotten, "forgot the text of old bounce reports");
            }
        }
        if let Some(pending) = &self.pending_signups {
            outcome.deliveries_created += pending.step(&self.store, now).await?.reminders_queued;
        }
        Ok(outcome)
    }

    /// Fans out a local-time send zone by zone: each zone's deliveries are due at the local
    /// time there. A zone whose time passed before the send was scheduled gets it at once if
    /// the owner asked for that, else it is skipped; a zone whose time passed while the
    /// service was down gets it late within the grace window, and is skipped beyond it.
    async fn fan_out_local(
        &self,
        due: &DueSend,
        time: jiff::civil::Time,
        date: jiff::civil::Date,
        now: Millis,
    ) -> anyhow::Result<u64> {
        let mut created = 0;
        for (zone, _) in self.store.send_zones(due.id, &self.default_zone).await? {
            let at = match crate::schedule::local_instant(date, time, &zone) {
                Ok(at) => at,
                Err(e) => {
                    tracing::warn!(send = due.id, zone, error = %e, "skipping an unknown zone");
                    continue;
                }
            };
            let (when, skip) = if at >= now {
                (at, None)
            } else if at < due.created_at && !due.recurring {
                // The owner was told when scheduling, and chose.
                if due.send_late {
                    (now, None)
                } else {
                    (
                        now,
                        Some("the local time had passed when the send was scheduled"),
                    )
                }
            } else if now - at <= self.grace_ms {
                (now, None)
            } else {
                (
                    now,
                    Some("missed: fell due while the service was down, beyond the grace window"),
                )
            };
            created += self
                .store
                .fan_out_zone(
                    due.id,
                    &zone,
                    &self.default_zone,
                    when,
                    skip,
                    now,
                    self.batch_size,
                )
                .await?;
        }
        self.store.finish_fan_out(due.id, now).await?;
        Ok(created)
    }

    /// Creates the sends of recurring schedules whose next occurrence has begun somewhere
    /// (the first zone's local time), each taking the next unused file of its folder.
    async fn create_occurrences(&self, now: Millis) -> anyhow::Result<usize> {
        let mut moved = 0;
        for r in self.store.recurrences(true).await? {
            let (every, time, date) = (r.every, r.local_time.time(), r.next_date);
            let first = crate::schedule::local_instant(date, time, "Pacific/Kiritimati")?;
            if first > now {
                continue;
            }
            let next = every.next_after(date);
            // The last zone (UTC-12) is done with this occurrence beyond the grace window:
            // the service was down the whole time; skip it without using up a piece.
            let last = crate::schedule::local_instant(date, time, "Etc/GMT+12")?;
            if now - last > self.grace_ms {
                let note = format!("{date} skipped: the service was down");
                if self.store.skip_occurrence(r.id, date, next, &note).await? {
                    tracing::warn!(recurrence = r.id, %date, "occurrence missed while down; skipped");
                    moved += 1;
                }
                continue;
            }
            let dir = std::path::Path::new(&r.content_dir);
            let used = self.store.recurrence_files(r.id).await?;
            let files = match crate::schedule::content_files(dir) {
                Ok(files) => files,
                Err(e) => {
                    tracing::error!(recurrence = r.id, error = %e, "cannot read the content folder");
                    continue;
                }
            };
            let unused: Vec<&String> = files.iter().filter(|f| !used.contains(f)).collect();
            let Some(file) = unused.first() else {
                let note = format!(
                    "stopped on {date}: no unused pieces left in {}",
                    r.content_dir
                );
                if self
                    .store
                    .end_recurrence(r.id, RecurrenceStatus::Finished, &note, now)
                    .await?
                {
                    tracing::warn!(
                        recurrence = r.id,
                        "recurring send ran out of pieces; stopped"
                    );
                }
                continue;
            };
            let path = dir.join(file);
            let content = match crate::content::load(&path) {
                Ok(c) => c,
                Err(e) => {
                    // Checked when scheduled; a piece edited since then is broken. Say so
                    // every round until it is fixed, and send nothing wrong.
                    tracing::error!(recurrence = r.id, error = %e, "the next piece does not check");
                    continue;
                }
            };
            let Some(offering) = self.store.offering_by_id(r.offering_id).await? else {
                continue;
            };
            let mut send = crate::schedule::new_send(&offering, content, &path, first);
            send.local = Some((r.local_time, date));
            send.recurrence_id = Some(r.id);
            send.content_file = Some((*file).clone());
            if let Some(id) = self
                .store
                .create_occurrence(r.id, date, next, &send, now)
                .await?
            {
                tracing::info!(recurrence = r.id, send = id, %date, file = %file, "occurrence scheduled");
                moved += 1;
                let left = unused.len() - 1;
                if left < self.warn_below as usize {
                    tracing::warn!(
                        recurrence = r.id,
                        left,
                        "recurring send is running out of pieces: add files to {}",
                        r.content_dir
                    );
                }
            }
        }
        Ok(moved)
    }

    /// The quick look between full steps; an error counts as "nothing due" and is logged.
    async fn send_fell_due(&self) -> bool {
        self.store
            .has_due_send(self.clock.now_ms())
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "scheduler check failed; retrying");
                false
            })
    }

    fn wake_workers(&self) {
        if let Some(wake) = &self.wake_workers {
            wake.notify_waiters();
        }
    }

    /// Steps every `interval` until `shutdown`, waking the workers when deliveries appear.
    /// Between steps it looks for a send that just fell due every [`DUE_CHECK`] (one indexed
    /// query) and steps at once when there is one, so `sangha schedule --now` starts within
    /// a tenth of a second rather than up to a whole `interval` later.
    pub async fn run(
        mut self,
        interval: Duration,
        mut shutdown: watch::Receiver<bool>,
        wake_workers: Arc<Notify>,
    ) {
        self.wake_workers = Some(wake_workers);
        let mut last_step: Option<tokio::time::Instant> = None;
        // After a failed step, wait the whole interval (no retry ten times a second).
        let mut failed = false;
        while !*shutdown.borrow() {
            let interval_over = last_step.is_none_or(|at| at.elapsed() >= interval);
            if interval_over || (!failed && self.send_fell_due().await) {
                last_step = Some(tokio::time::Instant::now());
                match self.step().await {
                    Ok(outcome) => {
                        failed = false;
                        if outcome.deliveries_created > 0 {
                            self.wake_workers();
                        }
                    }
                    Err(e) => {
                        failed = true;
                        tracing::error!(error = %e, "scheduler step failed; retrying");
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(interval.min(DUE_CHECK)) => {}
                changed = shutdown.changed() => if changed.is_err() { break },
            }
        }
    }
}
