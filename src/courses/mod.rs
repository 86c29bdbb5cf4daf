//! Courses: each person gets lesson N on the Nth day after their own confirmation, at the
//! course's time of day in their own zone. The scheduler calls [`Courses::step`] every round;
//! it keeps nothing but a note of which lesson folders it has read, so any number of
//! schedulers may run.
//!
//! ```text
//!  lessons folder ──(read when changed)──► lesson sends, one current per day
//!  confirmed subscriptions without progress ──► course_progress rows (anchor = local day 0)
//!  progress rows whose next_at has come ──► one delivery each + the next lesson's time
//! ```
//!
//! # When a lesson is due
//!
//! * Day 0, the welcome, is due at once: at the moment of confirmation.
//! * Lesson N (N ≥ 1) is due at `local_time` on the local date `anchor + N days`, where the
//!   anchor is the person's local date of confirmation, in their zone (the site's zone if they
//!   gave none). With `weekdays` set, a date on another weekday moves to the next allowed one.
//!   A local time that does not exist that day (a DST gap) or exists twice (a fold) follows
//!   jiff's "compatible" rule: the later time in a gap, the earlier in a fold.
//! * A lesson that fell due while the service was down is sent late within
//!   `worker.grace_minutes`; beyond it, it is recorded as a skipped delivery ("missed: …",
//!   shown by `sends show` and `subscribers show`) and the person moves on. Never twice.
//! * A lesson added to the folder after a person's day for it had passed by more than the
//!   grace window is not theirs: they go on with the next one.
//!
//! # Pause and resume
//!
//! Pausing stops the course's clock. On resume the anchor moves on by the number of local days
//! spent paused, so the next lesson comes as many days after the resume as it was still ahead
//! when the course was paused, and every later lesson keeps its spacing; nothing is sent for
//! the days spent paused and nothing is lost. If that moment has already passed (the lesson
//! was due the day of the pause), the next lesson comes at the next `local_time` (today's if
//! still ahead, else the next allowed day's) and the anchor moves to match. Someone who leaves
//! a course and confirms it again continues the same way, from where they left.
//!
//! # Lessons
//!
//! Every `*.md` file of the folder (but `README.md`) is a lesson, with `day: N` in its front
//! matter; two files for one day are refused. The folder is read again when a file is added,
//! changed or removed. A changed file is stored as a new version used from then on (a lesson
//! already queued keeps the words it was queued with); a removed file withdraws its lesson. A
//! folder with any bad file changes nothing: the error is logged, naming the file and line,
//! and the lessons stored before stay in use.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp};
use sha2::{Digest, Sha256};

use crate::clock::Millis;
use crate::config::{Config, OfferingConfig};
use crate::content::Content;
use crate::domain::{OfferingKind, Slug};
use crate::store::{
    CourseState, CourseStatus, LessonDelivery, NewLesson, Progress, ProgressChange, Store,
    StoredLesson,
};

/// The last day a lesson may have: ten years is longer than any course.
pub const MAX_LESSON_DAY: u32 = 3650;

/// Why a lesson that fell due was not sent.
pub const MISSED: &str = "missed: fell due while the service was down, beyond the grace window";

/// Progress rows handled per query.
const BATCH: u32 = 500;

/// When lessons arrive: a time of day, on some weekdays (empty: every day).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LessonPlan {
    pub time: Time,
    pub weekdays: Vec<Weekday>,
}

impl LessonPlan {
    pub fn from_offering(o: &OfferingConfig) -> Result<Self, String> {
        Ok(Self {
            time: o.lesson_time()?,
            weekdays: o.lesson_weekdays()?,
        })
    }

    fn allowed(&self, weekday: Weekday) -> bool {
        self.weekdays.is_empty() || self.weekdays.contains(&weekday)
    }

    /// The first allowed date on or after `date`.
    fn allowed_from(&self, date: Date) -> Date {
        let mut date = date;
        for _ in 0..7 {
            if self.allowed(date.weekday()) {
                break;
            }
            date = date.tomorrow().unwrap_or(date);
        }
        date
    }

    /// The date lesson `day` falls on: `anchor + day`, moved to an allowed weekday.
    pub fn lesson_date(&self, anchor: Date, day: i64) -> Date {
        self.allowed_from(add_days(anchor, day))
    }

    /// `local_time` on `date` in `tz`, as a UTC instant in milliseconds.
    pub fn at(&self, date: Date, tz: &TimeZone) -> Millis {
        tz.to_ambiguous_zoned_datetime(date.to_datetime(self.time))
            .compatible()
            .map(|z| z.timestamp().as_millisecond())
            // Only for dates at the far end of jiff's range.
            .unwrap_or(i64::MAX / 2)
    }

    /// When lesson `day` is due for a person: day 0 at `started_at`, the others at
    /// `local_time` on their date.
    pub fn lesson_at(&self, anchor: Date, started_at: Millis, day: i64, tz: &TimeZone) -> Millis {
        if day == 0 {
            started_at
        } else {
            self.at(self.lesson_date(anchor, day), tz)
        }
    }

    /// The first allowed date whose `local_time` is still ahead of `now`, and that moment.
    pub fn next_slot(&self, now: Millis, tz: &TimeZone) -> (Date, Millis) {
        let mut date = self.allowed_from(local_date(now, tz));
        loop {
            let at = self.at(date, tz);
            if at > now {
                return (date, at);
            }
            date = self.allowed_from(date.tomorrow().unwrap_or(date));
        }
    }

    /// The next lesson after `after` (all of them when `None`), and when it is due. A lesson
    /// stored more than `grace` after it fell due for this person is passed over.
    pub fn next_lesson(
        &self,
        lessons: &[StoredLesson],
        anchor: Date,
        started_at: Millis,
        after: Option<i64>,
        tz: &TimeZone,
        grace: Millis,
    ) -> Option<(i64, Millis)> {
        lessons
            .iter()
            .filter(|l| after.is_none_or(|a| l.day > a))
            .map(|l| (l, self.lesson_at(anchor, started_at, l.day, tz)))
            .find(|(l, at)| at.saturating_add(grace) >= l.first_stored_at)
            .map(|(l, at)| (l.day, at))
    }
}

fn add_days(date: Date, days: i64) -> Date {
    Span::new()
        .try_days(days)
        .ok()
        .and_then(|span| date.checked_add(span).ok())
        .unwrap_or(date)
}

/// The local date of an instant in `tz`.
pub fn local_date(ms: Millis, tz: &TimeZone) -> Date {
    Timestamp::from_millisecond(ms)
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .to_zoned_datetime(tz.clone())
        .date()
}

/// Whole days from `from` to `to` (negative when `to` is earlier).
fn days_between(from: Date, to: Date) -> i64 {
    from.until(to).map(|s| i64::from(s.get_days())).unwrap_or(0)
}

fn parse_anchor(text: &str) -> Date {
    text.parse().unwrap_or(Date::MIN)
}

/// A course of the configuration.
#[derive(Debug, Clone)]
struct Course {
    slug: String,
    dir: PathBuf,
    plan: LessonPlan,
}

/// A lesson file as read and checked.
#[derive(Debug, Clone)]
struct LessonFile {
    day: i64,
    content: Content,
    hash: String,
}

/// What a lessons folder looked like when it was last read: file names, sizes and times.
type Fingerprint = Result<Vec<(String, u64, u128)>, String>;

/// The course side of the scheduler: the configured courses and what it needs to move people
/// through them.
#[derive(Clone, Default)]
pub struct Courses {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    courses: Vec<Course>,
    /// The zone of subscribers who gave none.
    default_zone: String,
    grace_ms: Millis,
    message_id_domain: String,
    /// Each lessons folder as last read, by course slug.
    seen: Mutex<HashMap<String, Fingerprint>>,
    /// The stored lessons (day and send) this process last planned with, by course slug.
    planned: Mutex<HashMap<String, Vec<(i64, i64)>>>,
}

/// What pausing did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PauseOutcome {
    Paused,
    /// No progress yet: the person is not confirmed for the course (or it has not started).
    NotStarted,
    NotActive(CourseState),
}

/// What resuming did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumeOutcome {
    /// Resumed: the next lesson day and when it comes (`None`: no lesson left).
    Resumed(Option<(i64, Millis)>),
    NotStarted,
    NotPaused(CourseState),
}

impl Courses {
    /// The courses of `config`. A course whose settings do not parse is left out (and
    /// logged); `Config::validate` refuses such a config anyway.
    pub fn from_config(config: &Config) -> Self {
        let courses = config
            .offerings
            .iter()
            .filter(|o| o.kind == OfferingKind::Course)
            .filter_map(|o| {
                let dir = config.lessons_dir(o)?;
                match LessonPlan::from_offering(o) {
                    Ok(plan) => Some(Course {
                        slug: o.slug.clone(),
                        dir,
                        plan,
                    }),
                    Err(e) => {
                        tracing::error!(course = %o.slug, error = %e, "course left out");
                        None
                    }
                }
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                courses,
                default_zone: config.site.timezone.clone(),
                grace_ms: i64::from(config.worker.grace_minutes) * 60_000,
                message_id_domain: config.mail.message_id_domain.clone(),
                seen: Mutex::new(HashMap::new()),
                planned: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The zone a person's lessons follow: their own, else the site's.
    pub fn zone(&self, own: Option<&str>) -> TimeZone {
        own.and_then(|z| TimeZone::get(z).ok())
            .or_else(|| TimeZone::get(&self.inner.default_zone).ok())
            .unwrap_or(TimeZone::UTC)
    }

    /// The name of that zone, for people.
    pub fn zone_name<'a>(&'a self, own: Option<&'a str>) -> &'a str {
        match own {
            Some(z) if TimeZone::get(z).is_ok() => z,
            _ => &self.inner.default_zone,
        }
    }

    fn course(&self, slug: &str) -> Option<&Course> {
        self.inner.courses.iter().find(|c| c.slug == slug)
    }

    /// One round: for each course with confirmed people, read its lessons if they changed,
    /// start the newly confirmed, bring back those who confirmed again, and record every due
    /// lesson. Returns how many deliveries were queued.
    pub async fn step(&self, store: &Store, now: Millis) -> anyhow::Result<u64> {
        let mut queued = 0;
        let mut anyone = false;
        for course in &self.inner.courses {
            let Ok(slug) = Slug::parse(&course.slug) else {
                continue;
            };
            let Some(offering) = store.offering_by_slug(&slug).await? else {
                continue;
            };
            if !store.course_has_people(offering.id).await? {
                continue;
            }
            anyone = true;
            self.sync_lessons(store, course, offering.id, now).await?;
            let lessons = current(store.current_lessons(offering.id).await?);
            if lessons.is_empty() {
                continue;
            }
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
                self.recompute(store, course, offering.id, &lessons, now)
                    .await?;
                self.inner
                    .planned
                    .lock()
                    .expect("lessons lock")
                    .insert(course.slug.clone(), days);
            }
            self.start(store, course, offering.id, &lessons, now)
                .await?;
            self.rejoin(store, course, offering.id, &lessons, now)
                .await?;
            queued += self
                .deliver_due(store, course, offering.id, &lessons, now)
                .await?;
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
        let fingerprint = fingerprint(&course.dir);
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
        let remember = |fingerprint: Fingerprint| {
            self.inner
                .seen
                .lock()
                .expect("lessons lock")
                .insert(course.slug.clone(), fingerprint);
        };
        let files = match &fingerprint {
            Ok(_) => load_lessons(&course.dir, &course.slug),
            Err(e) => Err(vec![e.clone()]),
        };
        let files = match files {
            Ok(files) => files,
            Err(errors) => {
                for error in errors {
                    tracing::error!(course = %course.slug, %error,
                        "lessons not read: the lessons stored before stay in use");
                }
                remember(fingerprint);
                return Ok(());
            }
        };
        let stored = current(store.current_lessons(offering_id).await?);
        for file in &files {
            let before = stored.iter().find(|s| s.day == file.day);
            if before.is_some_and(|s| s.hash == file.hash) {
                continue;
            }
            let lesson = NewLesson {
                offering_id,
                day: file.day,
                subject: file.content.subject.clone(),
                preheader: file.content.preheader.clone(),
                html_template: file.content.html.clone(),
                text_template: file.content.text.clone(),
                source_path: file.content.source.display().to_string(),
                hash: file.hash.clone(),
                message_id_prefix: crate::mail::new_message_id_prefix(),
            };
            let id = store
                .store_lesson(&lesson, before.map(|s| s.send_id), now)
                .await?;
            if let Some(id) = id {
                tracing::info!(course = %course.slug, day = file.day, send = id,
                    file = %file.content.source.display(),
                    "{}", if before.is_some() { "lesson changed: new version stored" } else { "lesson stored" });
            }
        }
        for gone in stored
            .iter()
            .filter(|s| !files.iter().any(|f| f.day == s.day))
        {
            store.withdraw_lesson(gone.send_id, now).await?;
            tracing::warn!(course = %course.slug, day = gone.day, send = gone.send_id,
                "lesson file removed: lesson withdrawn");
        }
        remember(fingerprint);
        Ok(())
    }

    /// Works out again the next lesson of everyone moving through the course (lessons came
    /// or went, or the settings may have changed since the last start).
    async fn recompute(
        &self,
        store: &Store,
        course: &Course,
        offering_id: i64,
        lessons: &[StoredLesson],
        now: Millis,
    ) -> anyhow::Result<()> {
        let mut after = 0;
        loop {
            let rows = store.moving_progress(offering_id, after, BATCH).await?;
            let Some(last) = rows.last() else {
                return Ok(());
            };
            after = last.subscriber_id;
            for p in &rows {
                let tz = self.zone(p.timezone.as_deref());
                let next = course.plan.next_lesson(
                    lessons,
                    parse_anchor(&p.anchor_date),
                    p.started_at,
                    p.last_day,
                    &tz,
                    self.inner.grace_ms,
                );
                let unchanged = ProgressChange::from(p);
                let change = unchanged.clone().with_next(next, now);
                if change != unchanged {
                    store.change_progress(p, &change, now).await?;
                }
            }
        }
    }

    /// Creates the progress of everyone newly confirmed for the course.
    async fn start(
        &self,
        store: &Store,
        course: &Course,
        offering_id: i64,
        lessons: &[StoredLesson],
        now: Millis,
    ) -> anyhow::Result<()> {
        loop {
            let starters = store.course_starters(offering_id, BATCH).await?;
            let mut started = 0;
            for s in &starters {
                let tz = self.zone(s.timezone.as_deref());
                let anchor = local_date(s.confirmed_at, &tz);
                let next = course.plan.next_lesson(
                    lessons,
                    anchor,
                    s.confirmed_at,
                    None,
                    &tz,
                    self.inner.grace_ms,
                );
                let change = ProgressChange {
                    state: CourseState::Active,
                    started_at: s.confirmed_at,
                    anchor_date: anchor.to_string(),
                    last_day: None,
                    next_day: None,
                    next_at: None,
                    paused_at: None,
                    finished_at: None,
                }
                .with_next(next, now);
                if store
                    .start_course(s.subscriber_id, offering_id, &change, now)
                    .await?
                {
                    started += 1;
                    tracing::info!(course = %course.slug, subscriber = s.subscriber_id,
                        anchor = %anchor, "course started");
                }
            }
            if starters.len() < BATCH as usize || started == 0 {
                return Ok(());
            }
        }
    }

    /// Those who left the course and confirmed it again continue as after a pause.
    async fn rejoin(
        &self,
        store: &Store,
        course: &Course,
        offering_id: i64,
        lessons: &[StoredLesson],
        now: Millis,
    ) -> anyhow::Result<()> {
        loop {
            let rows = store.rejoined_progress(offering_id, BATCH).await?;
            let mut moved = 0;
            for p in &rows {
                let change = self.resumed(course, p, lessons, now);
                if store.change_progress(p, &change, now).await? {
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
    async fn deliver_due(
        &self,
        store: &Store,
        course: &Course,
        offering_id: i64,
        lessons: &[StoredLesson],
        now: Millis,
    ) -> anyhow::Result<u64> {
        let grace = self.inner.grace_ms;
        let mut queued = 0;
        loop {
            let rows = store.due_progress(offering_id, now, BATCH).await?;
            let mut moved = 0;
            for p in &rows {
                let (Some(day), Some(due)) = (p.next_day, p.next_at) else {
                    continue;
                };
                let unchanged = ProgressChange::from(p);
                if !p.subscription_confirmed {
                    let change = ProgressChange {
                        state: CourseState::Left,
                        next_at: None,
                        paused_at: Some(now),
                        ..unchanged
                    };
                    if store.change_progress(p, &change, now).await? {
                        moved += 1;
                    }
                    continue;
                }
                let tz = self.zone(p.timezone.as_deref());
                let anchor = parse_anchor(&p.anchor_date);
                let Some(lesson) = lessons.iter().find(|l| l.day == day) else {
                    // Withdrawn since it was planned: plan again without it.
                    let next = course.plan.next_lesson(
                        lessons,
                        anchor,
                        p.started_at,
                        p.last_day,
                        &tz,
                        grace,
                    );
                    if store
                        .change_progress(p, &unchanged.with_next(next, now), now)
                        .await?
                    {
                        moved += 1;
                    }
                    continue;
                };
                let missed = now - due > grace;
                let next =
                    course
                        .plan
                        .next_lesson(lessons, anchor, p.started_at, Some(day), &tz, grace);
                let change = ProgressChange {
                    last_day: Some(day),
                    ..unchanged
                }
                .with_next(next, now);
                let delivery = LessonDelivery {
                    send_id: lesson.send_id,
                    due_at: due,
                    skipped: missed.then(|| MISSED.to_owned()),
                    message_id_domain: self.inner.message_id_domain.clone(),
                };
                if store.record_lesson(p, &change, &delivery, now).await? {
                    moved += 1;
                    if missed {
                        tracing::warn!(course = %course.slug, subscriber = p.subscriber_id, day,
                            late_minutes = (now - due) / 60_000,
                            "lesson missed: it fell due while the service was down");
                    } else {
                        queued += 1;
                    }
                }
            }
            if rows.is_empty() || moved == 0 {
                return Ok(queued);
            }
        }
    }

    /// The row of a paused (or left) course, resumed now: see the module documentation.
    fn resumed(
        &self,
        course: &Course,
        p: &Progress,
        lessons: &[StoredLesson],
        now: Millis,
    ) -> ProgressChange {
        let tz = self.zone(p.timezone.as_deref());
        let grace = self.inner.grace_ms;
        let paused_days = p
            .paused_at
            .map(|at| days_between(local_date(at, &tz), local_date(now, &tz)).max(0))
            .unwrap_or(0);
        let mut anchor = add_days(parse_anchor(&p.anchor_date), paused_days);
        let mut started_at = p.started_at;
        let mut next = course
            .plan
            .next_lesson(lessons, anchor, started_at, p.last_day, &tz, grace);
        if let Some((day, at)) = next
            && at <= now
        {
            if day == 0 {
                started_at = now;
                next = Some((0, now));
            } else {
                let (date, slot) = course.plan.next_slot(now, &tz);
                anchor = add_days(date, -day);
                next = Some((day, slot));
            }
        }
        ProgressChange {
            state: CourseState::Active,
            started_at,
            anchor_date: anchor.to_string(),
            paused_at: None,
            ..ProgressChange::from(p)
        }
        .with_next(next, now)
    }

    /// Pauses a person's course: nothing more comes until it is resumed.
    pub async fn pause(
        &self,
        store: &Store,
        subscriber_id: i64,
        offering_id: i64,
        now: Millis,
    ) -> anyhow::Result<PauseOutcome> {
        if store.pause_course(subscriber_id, offering_id, now).await? {
            tracing::info!(
                subscriber = subscriber_id,
                offering = offering_id,
                "course paused"
            );
            return Ok(PauseOutcome::Paused);
        }
        Ok(
            match store.course_progress(subscriber_id, offering_id).await? {
                None => PauseOutcome::NotStarted,
                Some(p) => PauseOutcome::NotActive(p.state),
            },
        )
    }

    /// Resumes a paused course at its next lesson; later lessons keep their spacing.
    pub async fn resume(
        &self,
        store: &Store,
        subscriber_id: i64,
        offering_id: i64,
        now: Millis,
    ) -> anyhow::Result<ResumeOutcome> {
        let Some(offering) = store.offering_by_id(offering_id).await? else {
            return Ok(ResumeOutcome::NotStarted);
        };
        let Some(course) = self.course(&offering.slug) else {
            anyhow::bail!("`{}` is not a configured course", offering.slug);
        };
        let lessons = current(store.current_lessons(offering_id).await?);
        // A concurrent change (the scheduler, another click) refuses the write: read again.
        for _ in 0..5 {
            let Some(p) = store.course_progress(subscriber_id, offering_id).await? else {
                return Ok(ResumeOutcome::NotStarted);
            };
            if p.state != CourseState::Paused {
                return Ok(ResumeOutcome::NotPaused(p.state));
            }
            let change = self.resumed(course, &p, &lessons, now);
            if store.change_progress(&p, &change, now).await? {
                tracing::info!(
                    subscriber = subscriber_id,
                    offering = offering_id,
                    "course resumed"
                );
                return Ok(ResumeOutcome::Resumed(change.next_day.zip(change.next_at)));
            }
        }
        anyhow::bail!("the course kept changing while it was being resumed; try again")
    }

    /// One line for the owner: "lesson 3 of 10 sent, next: lesson 4 (day 60) on 2026-03-02
    /// 07:00 Asia/Kolkata".
    pub fn describe(&self, status: &CourseStatus, own_zone: Option<&str>) -> String {
        let tz = self.zone(own_zone);
        let zone = self.zone_name(own_zone);
        let when = |ms: Millis| format!("{} {zone}", local_time_text(ms, &tz));
        let mut line = format!("lesson {} of {} sent", status.sent, status.lessons);
        if status.queued > 0 {
            line.push_str(&format!(", {} on its way", status.queued));
        }
        if status.missed > 0 {
            line.push_str(&format!(
                ", {} missed (fell due while the service was down)",
                status.missed
            ));
        }
        let rest = match status.state {
            CourseState::Left => ", stopped: no longer subscribed".to_owned(),
            _ if !status.subscribed => ", stopped: no longer subscribed".to_owned(),
            CourseState::Active => match (status.next_lesson, status.next_day, status.next_at) {
                (Some(n), Some(day), Some(at)) => {
                    format!(", next: lesson {n} (day {day}) on {}", when(at))
                }
                _ => String::new(),
            },
            CourseState::Paused => status
                .paused_at
                .map(|at| format!(", paused since {}", when(at)))
                .unwrap_or_else(|| ", paused".to_owned()),
            CourseState::Finished => status
                .finished_at
                .map(|at| format!(", finished on {}", when(at)))
                .unwrap_or_else(|| ", finished".to_owned()),
        };
        line + &rest
    }

    /// The same for the person, on the preferences page.
    pub fn describe_for_person(&self, status: &CourseStatus, own_zone: Option<&str>) -> String {
        let tz = self.zone(own_zone);
        let day = |ms: Millis| {
            Timestamp::from_millisecond(ms)
                .map(|t| {
                    t.to_zoned_datetime(tz.clone())
                        .strftime("%A %-d %B at %H:%M")
                        .to_string()
                })
                .unwrap_or_default()
        };
        let received = format!(
            "You have received {} of {} lessons.",
            status.sent, status.lessons
        );
        match status.state {
            CourseState::Active => match status.next_at {
                Some(at) => format!("{received} The next one comes on {}.", day(at)),
                None => received,
            },
            CourseState::Paused => format!(
                "{received} The course is paused. When you resume, the next lesson comes at \
                 the next lesson time, and the others follow at their usual spacing."
            ),
            CourseState::Left => received,
            CourseState::Finished => "You have received every lesson of this course.".to_owned(),
        }
    }
}

/// `YYYY-MM-DD HH:MM` in `tz`.
pub fn local_time_text(ms: Millis, tz: &TimeZone) -> String {
    Timestamp::from_millisecond(ms)
        .map(|t| {
            t.to_zoned_datetime(tz.clone())
                .strftime("%Y-%m-%d %H:%M")
                .to_string()
        })
        .unwrap_or_else(|_| ms.to_string())
}

/// The stored lessons with one per day (the newest, should two processes have raced).
fn current(mut lessons: Vec<StoredLesson>) -> Vec<StoredLesson> {
    lessons.sort_by_key(|l| (l.day, std::cmp::Reverse(l.send_id)));
    lessons.dedup_by_key(|l| l.day);
    lessons
}

fn is_lesson_file(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    !lower.starts_with('.')
        && lower != "readme.md"
        && (lower.ends_with(".md") || lower.ends_with(".markdown"))
}

fn lesson_paths(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: cannot read the lessons folder: {e}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| is_lesson_file(&n.to_string_lossy()))
        })
        .collect();
    paths.sort();
    Ok(paths)
}

fn fingerprint(dir: &Path) -> Fingerprint {
    lesson_paths(dir).map(|paths| {
        paths
            .iter()
            .map(|p| {
                let meta = std::fs::metadata(p).ok();
                let len = meta.as_ref().map_or(0, |m| m.len());
                let modified = meta
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                (p.display().to_string(), len, modified)
            })
            .collect()
    })
}

/// Reads and checks every lesson of a folder; all errors at once, each naming its file.
fn load_lessons(dir: &Path, slug: &str) -> Result<Vec<LessonFile>, Vec<String>> {
    let paths = lesson_paths(dir).map_err(|e| vec![e])?;
    let mut errors = Vec::new();
    let mut lessons: Vec<LessonFile> = Vec::new();
    for path in &paths {
        let content = match crate::content::load(path) {
            Ok(c) => c,
            Err(e) => {
                errors.push(e.to_string());
                continue;
            }
        };
        let Some(day) = content.day else {
            errors.push(format!(
                "{}: a lesson needs `day: N` in its front matter (day 0 is the welcome)",
                path.display()
            ));
            continue;
        };
        if day > MAX_LESSON_DAY {
            errors.push(format!(
                "{}: day {day} is too far: lessons go up to day {MAX_LESSON_DAY}",
                path.display()
            ));
            continue;
        }
        if let Some(other) = content.offering.as_deref().filter(|o| *o != slug) {
            errors.push(format!(
                "{}: the front matter says offering `{other}`, but the file is a lesson of `{slug}`",
                path.display()
            ));
            continue;
        }
        let day = i64::from(day);
        if let Some(twin) = lessons.iter().find(|l| l.day == day) {
            errors.push(format!(
                "{}: day {day} is already the day of {}",
                path.display(),
                twin.content.source.display()
            ));
            continue;
        }
        let mut hasher = Sha256::new();
        for part in [
            content.subject.as_str(),
            content.preheader.as_deref().unwrap_or(""),
            content.html.as_str(),
            content.text.as_str(),
        ] {
            hasher.update(part.as_bytes());
            hasher.update([0u8]);
        }
        let hash = crate::domain::hex(&hasher.finalize());
        lessons.push(LessonFile { day, content, hash });
    }
    if errors.is_empty() && lessons.is_empty() {
        errors.push(format!(
            "{}: no lessons (Markdown files with `day: N` in the front matter)",
            dir.display()
        ));
    }
    if errors.is_empty() {
        lessons.sort_by_key(|l| l.day);
        Ok(lessons)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use jiff::civil::date;

    use super::*;

    fn plan(weekdays: &[Weekday]) -> LessonPlan {
        LessonPlan {
            time: jiff::civil::time(7, 0, 0, 0),
            weekdays: weekdays.to_vec(),
        }
    }

    fn ms(text: &str) -> Millis {
        text.parse::<Timestamp>().unwrap().as_millisecond()
    }

    fn lesson(day: i64, first_stored_at: Millis) -> StoredLesson {
        StoredLesson {
            send_id: day + 100,
            day,
            hash: String::new(),
            first_stored_at,
        }
    }

    #[test]
    fn a_lesson_comes_at_the_local_time_in_the_persons_zone() {
        let kolkata = TimeZone::get("Asia/Kolkata").unwrap();
        let p = plan(&[]);
        // 07:00 in Kolkata is 01:30 UTC.
        assert_eq!(p.at(date(2026, 3, 2), &kolkata), ms("2026-03-02T01:30:00Z"));
        let anchor = date(2026, 3, 1);
        assert_eq!(
            p.lesson_at(anchor, 42, 1, &kolkata),
            ms("2026-03-02T01:30:00Z")
        );
        assert_eq!(p.lesson_at(anchor, 42, 0, &kolkata), 42, "day 0 at once");
    }

    #[test]
    fn a_lesson_on_a_day_without_lessons_moves_to_the_next_allowed_day() {
        let p = plan(&[Weekday::Monday, Weekday::Wednesday, Weekday::Friday]);
        // 2026-03-07 is a Saturday.
        assert_eq!(date(2026, 3, 7).weekday(), Weekday::Saturday);
        assert_eq!(p.lesson_date(date(2026, 3, 6), 1), date(2026, 3, 9));
        assert_eq!(p.lesson_date(date(2026, 3, 6), 0), date(2026, 3, 6));
        assert_eq!(p.lesson_date(date(2026, 3, 6), 5), date(2026, 3, 11));
    }

    #[test]
    fn a_local_time_in_a_dst_gap_or_fold_follows_the_compatible_rule() {
        let new_york = TimeZone::get("America/New_York").unwrap();
        let mut p = plan(&[]);
        p.time = jiff::civil::time(2, 30, 0, 0);
        // 2026-03-08 02:30 does not exist in New York: the compatible rule gives 03:30 EDT.
        assert_eq!(
            p.at(date(2026, 3, 8), &new_york),
            ms("2026-03-08T07:30:00Z")
        );
        p.time = jiff::civil::time(1, 30, 0, 0);
        // 2026-11-01 01:30 happens twice: the first (EDT) is taken.
        assert_eq!(
            p.at(date(2026, 11, 1), &new_york),
            ms("2026-11-01T05:30:00Z")
        );
    }

    #[test]
    fn the_next_slot_is_todays_while_it_is_ahead() {
        let utc = TimeZone::UTC;
        let p = plan(&[]);
        assert_eq!(
            p.next_slot(ms("2026-03-02T06:59:00Z"), &utc),
            (date(2026, 3, 2), ms("2026-03-02T07:00:00Z"))
        );
        assert_eq!(
            p.next_slot(ms("2026-03-02T07:00:00Z"), &utc),
            (date(2026, 3, 3), ms("2026-03-03T07:00:00Z"))
        );
        let weekdays = plan(&[Weekday::Monday]);
        assert_eq!(
            weekdays.next_slot(ms("2026-03-03T07:00:00Z"), &utc).0,
            date(2026, 3, 9)
        );
    }

    #[test]
    fn a_lesson_stored_long_after_its_day_passed_is_passed_over() {
        let utc = TimeZone::UTC;
        let p = plan(&[]);
        let anchor = date(2026, 1, 1);
        let start = ms("2026-01-01T10:00:00Z");
        let grace = 12 * 3_600_000;
        let lessons = [
            lesson(0, start),
            lesson(7, ms("2026-03-01T00:00:00Z")),
            lesson(60, 0),
        ];
        assert_eq!(
            p.next_lesson(&lessons, anchor, start, None, &utc, grace),
            Some((0, start))
        );
        assert_eq!(
            p.next_lesson(&lessons, anchor, start, Some(0), &utc, grace),
            Some((60, ms("2026-03-02T07:00:00Z")))
        );
        assert_eq!(
            p.next_lesson(&lessons, anchor, start, Some(60), &utc, grace),
            None
        );
    }

    #[test]
    fn the_shipped_course_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("courses/orgasmic-queen");
        let lessons = load_lessons(&dir, "orgasmic-queen").expect("the example lessons load");
        let days: Vec<i64> = lessons.iter().map(|l| l.day).collect();
        assert_eq!(days[0], 0, "a welcome on day 0");
        assert!(days.len() >= 3, "{days:?}");
    }

    #[test]
    fn a_lesson_without_a_day_or_a_second_lesson_for_a_day_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, front: &str| {
            std::fs::write(
                dir.path().join(name),
                format!("---\nsubject: Hi\n{front}---\nBreathe, {{{{name}}}}.\n"),
            )
            .unwrap();
        };
        write("a.md", "day: 1\n");
        write("README.md", "");
        assert_eq!(load_lessons(dir.path(), "c").unwrap().len(), 1);
        write("b.md", "");
        write("c.md", "day: 1\n");
        let errors = load_lessons(dir.path(), "c").unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0].contains("b.md") && errors[0].contains("day: N"),
            "{errors:?}"
        );
        assert!(
            errors[1].contains("c.md") && errors[1].contains("a.md"),
            "{errors:?}"
        );
        let empty = tempfile::tempdir().unwrap();
        assert!(load_lessons(empty.path(), "c").unwrap_err()[0].contains("no lessons"));
    }
}
