//! The scheduler's course step: every round it reads the lessons folders that changed, starts
//! the newly confirmed, brings back those who confirmed again, and records every due lesson,
//! by the rules of [`crate::courses`]. It keeps nothing but a note of which lesson folders it
//! has read and which lessons it planned with, so any number of schedulers may run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::clock::Millis;
use crate::courses::lessons::{self, Fingerprint};
use crate::courses::{Course, CourseLessons, Courses, Due, MISSED};
use crate::domain::Slug;
use crate::store::{LessonDelivery, ProgressChange, Store};

/// Progress rows handled per query.
const BATCH: u32 = 500;

/// The course side of the scheduler: the configured courses and what it remembers between
/// rounds.
#[derive(Clone, Default)]
pub struct CourseStep {
    courses: Courses,
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Each lessons folder as last read, by course slug.
    seen: Mutex<HashMap<Slug, Fingerprint>>,
    /// The stored lessons (day and send) this process last planned with, by course slug.
    planned: Mutex<HashMap<Slug, Vec<(i64, i64)>>>,
}

impl CourseStep {
    /// The step for `courses`.
    pub fn new(courses: Courses) -> Self {
        Self {
            courses,
            inner: Arc::new(Inner::default()),
        }
    }

    /// One round: for each course with confirmed people, read its lessons if they changed,
    /// start the newly confirmed, bring back those who confirmed again, and record every due
    /// lesson. Returns how many deliveries were queued.
    pub async fn step(&self, store: &Store, now: Millis) -> anyhow::Result<u64> {
        let mut queued = 0;
        let mut anyone = false;
        for course in self.courses.all() {
            let Some(offering) = store.offering_by_slug(&course.slug).await? else {
                continue;
            };
            if !store.course_has_people(offering.id).await? {
                continue;
            }
            anyone = true;
            self.sync_lessons(store, course, offering.id, now).await?;
            let lessons = lessons::current(store, offering.id).await?;
            if lessons.is_empty() {
                continue;
            }
            let round = Round {
                rules: self.courses.with_lessons(course, &lessons),
                store,
                offering_id: offering.id,
                now,
            };
            // Lessons came or went (here or in another process), or this process has not
            // planned with them yet (the settings may have changed since the last start).
            let days: Vec<(i64, i64)> = lessons.iter().map(|l| (l.day, l.send_id)).collect();
            let planned = self
                .inner
                .planned
                .lock()
                .expect("lessons lock")
                .get(&course.slug)
                == Some(&days);
            if !planned {
                round.recompute().await?;
                self.inner
                    .planned
                    .lock()
                    .expect("lessons lock")
                    .insert(course.slug.clone(), days);
            }
            round.start().await?;
            round.rejoin().await?;
            queued += round.deliver_due().await?;
        }
        // The repair looks at every pending delivery (PostgreSQL plans it as one pass over them,
        // 445 ms a step during a send of a million). Lesson deliveries are only added while
        // someone is in a course, so with nobody in any course there is nothing to repair.
        if anyone {
            store.reopen_lessons().await?;
        }
        Ok(queued)
    }

    /// Reads the lessons folder if it changed since the last read, and stores new and
    /// changed lessons (withdrawing removed ones).
    async fn sync_lessons(
        &self,
        store: &Store,
        course: &Course,
        offering_id: i64,
        now: Millis,
    ) -> anyhow::Result<()> {
        let fingerprint = lessons::fingerprint(&course.dir);
        if self
            .inner
            .seen
            .lock()
            .expect("lessons lock")
            .get(&course.slug)
            == Some(&fingerprint)
        {
            return Ok(());
        }
        let files = match &fingerprint {
            Ok(_) => lessons::load(&course.dir, course.slug.as_str()),
            Err(e) => Err(vec![e.clone()]),
        };
        match files {
            Ok(files) => {
                lessons::store_changes(store, course.slug.as_str(), offering_id, &files, now)
                    .await?
            }
            Err(errors) => {
                for error in errors {
                    tracing::error!(course = %course.slug, %error,
                        "lessons not read: the lessons stored before stay in use");
                }
            }
        }
        self.inner
            .seen
            .lock()
            .expect("lessons lock")
            .insert(course.slug.clone(), fingerprint);
        Ok(())
    }
}

/// One course in one round: what each of its passes over the progress rows works with.
struct Round<'a> {
    rules: CourseLessons<'a>,
    store: &'a Store,
    offering_id: i64,
    now: Millis,
}

impl Round<'_> {
    /// Works out again the next lesson of everyone moving through the course.
    async fn recompute(&self) -> anyhow::Result<()> {
        let mut after = 0;
        loop {
            let rows = self
                .store
                .moving_progress(self.offering_id, after, BATCH)
                .await?;
            let Some(last) = rows.last() else {
                return Ok(());
            };
            after = last.subscriber_id;
            for p in &rows {
                let change = self.rules.replanned(p, self.now);
                if change != ProgressChange::from(p) {
                    self.store.change_progress(p, &change, self.now).await?;
                }
            }
        }
    }

    /// Creates the progress of everyone newly confirmed for the course.
    async fn start(&self) -> anyhow::Result<()> {
        loop {
            let starters = self.store.course_starters(self.offering_id, BATCH).await?;
            let mut started = 0;
            for s in &starters {
                let change = self.rules.started(s, self.now);
                if self
                    .store
                    .start_course(s.subscriber_id, self.offering_id, &change, self.now)
                    .await?
                {
                    started += 1;
                    tracing::info!(course = %self.rules.course().slug, subscriber = s.subscriber_id,
                        anchor = %change.anchor_date, "course started");
                }
            }
            if starters.len() < BATCH as usize || started == 0 {
                return Ok(());
            }
        }
    }

    /// Those who left the course and confirmed it again continue as after a pause.
    async fn rejoin(&self) -> anyhow::Result<()> {
        loop {
            let rows = self
                .store
                .rejoined_progress(self.offering_id, BATCH)
                .await?;
            let mut moved = 0;
            for p in &rows {
                let change = self.rules.resumed(p, self.now);
                if self.store.change_progress(p, &change, self.now).await? {
                    moved += 1;
                }
            }
            if rows.len() < BATCH as usize || moved == 0 {
                return Ok(());
            }
        }
    }

    /// Records every lesson that has come due, each with the person's next lesson in one
    /// transaction. A person whose next lesson is also due (days that fell on a weekday
    /// without lessons, or a long downtime) is handled again in the next round.
    async fn deliver_due(&self) -> anyhow::Result<u64> {
        let (store, now) = (self.store, self.now);
        let mut queued = 0;
        loop {
            let rows = store.due_progress(self.offering_id, now, BATCH).await?;
            let mut moved = 0;
            for p in &rows {
                let written = match self.rules.due(p, now) {
                    None => false,
                    Some(Due::Move(change)) => store.change_progress(p, &change, now).await?,
                    Some(Due::Record {
                        change,
                        day,
                        send_id,
                        due_at,
                        missed,
                    }) => {
                        let delivery = LessonDelivery {
                            send_id,
                            due_at,
                            skipped: missed.then(|| MISSED.to_owned()),
                        };
                        let recorded = store.record_lesson(p, &change, &delivery, now).await?;
                        if recorded && missed {
                            tracing::warn!(course = %self.rules.course().slug,
                                subscriber = p.subscriber_id, day,
                                late_minutes = (now - due_at) / 60_000,
                                "lesson missed: it fell due while the service was down");
                        } else if recorded {
                            queued += 1;
                        }
                        recorded
                    }
                };
                if written {
                    moved += 1;
                }
            }
            if rows.is_empty() || moved == 0 {
                return Ok(queued);
            }
        }
    }
}
