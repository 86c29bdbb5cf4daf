//! A person's progress through a course: what the course step makes of a row (start, plan
//! again, record a due lesson, rejoin), pause and resume, and a line that describes it.
//!
//! A lesson that fell due while the service was down is sent late within
//! `worker.grace_minutes`; beyond it, it is recorded as a skipped delivery ([`MISSED`], shown
//! by `sends show` and `subscribers show`) and the person moves on. Never twice.

use jiff::Timestamp;

use super::plan::{local_date, local_time_text, parse_anchor};
use super::{Course, Courses, lessons};
use crate::clock::Millis;
use crate::store::{
    CourseStarter, CourseState, CourseStatus, Progress, ProgressChange, Store, StoredLesson,
};

/// Why a lesson that fell due was not sent.
pub const MISSED: &str = "missed: fell due while the service was down, beyond the grace window";

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

/// What becomes of a row whose next lesson has come due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// Only the row changes: the person left the course, or the lesson was withdrawn since
    /// it was planned and the next one is planned instead.
    Move(ProgressChange),
    /// The lesson of `day` (send `send_id`, due at `due_at`) is recorded for the person,
    /// skipped when `missed`, and the row moves on to `change`.
    Record {
        change: ProgressChange,
        day: i64,
        send_id: i64,
        due_at: Millis,
        missed: bool,
    },
}

/// One course with its current lessons: what the rules for a person's row work with.
#[derive(Clone, Copy)]
pub struct CourseLessons<'a> {
    courses: &'a Courses,
    course: &'a Course,
    lessons: &'a [StoredLesson],
}

impl Courses {
    /// `course` with `lessons`, its current lessons (see [`lessons::current`]).
    pub fn with_lessons<'a>(
        &'a self,
        course: &'a Course,
        lessons: &'a [StoredLesson],
    ) -> CourseLessons<'a> {
        CourseLessons {
            courses: self,
            course,
            lessons,
        }
    }
}

impl CourseLessons<'_> {
    /// The course.
    pub fn course(&self) -> &Course {
        self.course
    }

    /// A person's next lesson after `after`, from their row's anchor and zone.
    fn next_lesson(&self, p: &Progress, after: Option<i64>) -> Option<(i64, Millis)> {
        self.course.plan.next_lesson(
            self.lessons,
            parse_anchor(&p.anchor_date),
            p.started_at,
            after,
            &self.courses.zone(p.timezone.as_deref()),
            self.courses.grace_ms(),
        )
    }

    /// The progress row of someone newly confirmed: day 0 is their local date of
    /// confirmation.
    pub fn started(&self, s: &CourseStarter, now: Millis) -> ProgressChange {
        let tz = self.courses.zone(s.timezone.as_deref());
        let anchor = local_date(s.confirmed_at, &tz);
        let next = self.course.plan.next_lesson(
            self.lessons,
            anchor,
            s.confirmed_at,
            None,
            &tz,
            self.courses.grace_ms(),
        );
        ProgressChange {
            state: CourseState::Active,
            started_at: s.confirmed_at,
            anchor_date: anchor.to_string(),
            last_day: None,
            next_day: None,
            next_at: None,
            paused_at: None,
            finished_at: None,
        }
        .with_next(next, now)
    }

    /// The row with its next lesson worked out again (lessons came or went, or the settings
    /// changed).
    pub fn replanned(&self, p: &Progress, now: Millis) -> ProgressChange {
        ProgressChange::from(p).with_next(self.next_lesson(p, p.last_day), now)
    }

    /// The row of a paused (or left) course, resumed now: see [`super::plan`].
    pub fn resumed(&self, p: &Progress, now: Millis) -> ProgressChange {
        let tz = self.courses.zone(p.timezone.as_deref());
        self.course
            .plan
            .resumed(p, self.lessons, now, &tz, self.courses.grace_ms())
    }

    /// What becomes of a row whose next lesson has come due (`None`: it has none). Someone
    /// no longer subscribed leaves the course; a lesson past the grace window is missed.
    pub fn due(&self, p: &Progress, now: Millis) -> Option<Due> {
        let (Some(day), Some(due_at)) = (p.next_day, p.next_at) else {
            return None;
        };
        if !p.subscription_confirmed {
            return Some(Due::Move(ProgressChange {
                state: CourseState::Left,
                next_at: None,
                paused_at: Some(now),
                ..ProgressChange::from(p)
            }));
        }
        let Some(lesson) = self.lessons.iter().find(|l| l.day == day) else {
            return Some(Due::Move(self.replanned(p, now)));
        };
        let change = ProgressChange {
            last_day: Some(day),
            ..ProgressChange::from(p)
        }
        .with_next(self.next_lesson(p, Some(day)), now);
        Some(Due::Record {
            change,
            day,
            send_id: lesson.send_id,
            due_at,
            missed: now - due_at > self.courses.grace_ms(),
        })
    }
}

impl Courses {
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
        let lessons = lessons::current(store, offering_id).await?;
        // A concurrent change (the scheduler, another click) refuses the write: read again.
        for _ in 0..5 {
            let Some(p) = store.course_progress(subscriber_id, offering_id).await? else {
                return Ok(ResumeOutcome::NotStarted);
            };
            if p.state != CourseState::Paused {
                return Ok(ResumeOutcome::NotPaused(p.state));
            }
            let change = self.with_lessons(course, &lessons).resumed(&p, now);
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
