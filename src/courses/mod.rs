//! Courses: each person gets lesson N on the Nth day after their own confirmation, at the
//! course's time of day in their own zone. These are the course rules, as functions over the
//! store: the calendar ([`plan`]), the lessons folder ([`lessons`]) and a person's progress
//! ([`progress`]: what the course step does with a row, pause, resume, describe). The
//! scheduler's course step (`delivery::CourseStep`) runs them every round; the preferences
//! page and the command line call pause, resume and describe.
//!
//! ```text
//!  lessons folder ──(read when changed)──► lesson sends, one current per day
//!  confirmed subscriptions without progress ──► course_progress rows (anchor = local day 0)
//!  progress rows whose next_at has come ──► one delivery each + the next lesson's time
//! ```

pub mod lessons;
pub mod plan;
pub mod progress;

use std::path::PathBuf;
use std::sync::Arc;

use jiff::tz::TimeZone;

use crate::clock::Millis;
use crate::config::Config;
use crate::domain::OfferingKind;

pub use lessons::MAX_LESSON_DAY;
pub use plan::{LessonPlan, local_date, local_time_text};
pub use progress::{CourseLessons, Due, MISSED, PauseOutcome, ResumeOutcome};

/// A course of the configuration: its slug, its lessons folder and when its lessons arrive.
#[derive(Debug, Clone)]
pub struct Course {
    pub slug: String,
    pub dir: PathBuf,
    pub plan: LessonPlan,
}

/// The configured courses, with the site's zone and the grace window they follow; built once
/// from the configuration and shared.
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
            }),
        }
    }

    /// Every configured course.
    pub fn all(&self) -> &[Course] {
        &self.inner.courses
    }

    /// The configured course of `slug`.
    pub fn course(&self, slug: &str) -> Option<&Course> {
        self.inner.courses.iter().find(|c| c.slug == slug)
    }

    /// How late a lesson may still be sent after it fell due (`worker.grace_minutes`).
    pub fn grace_ms(&self) -> Millis {
        self.inner.grace_ms
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
}
