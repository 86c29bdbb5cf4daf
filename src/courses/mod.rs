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
use crate::domain::{OfferingKind, Slug, Timezone};

pub use lessons::MAX_LESSON_DAY;
pub use plan::{LessonPlan, local_date, local_time_text};
pub use progress::{CourseLessons, Due, MISSED, PauseOutcome, ResumeOutcome};

/// A course of the configuration: its slug, its lessons folder and when its lessons arrive.
#[derive(Debug, Clone)]
pub struct Course {
    pub slug: Slug,
    pub dir: PathBuf,
    pub plan: LessonPlan,
}

/// The configured courses, with the site's zone and the grace window they follow; built once
/// from the configuration and shared.
#[derive(Clone, Default)]
pub struct Courses {
    inner: Arc<Inner>,
}

struct Inner {
    courses: Vec<Course>,
    /// The zone of subscribers who gave none.
    default_zone: Timezone,
    grace_ms: Millis,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            courses: Vec::new(),
            default_zone: "UTC".parse().expect("UTC is a zone"),
            grace_ms: 0,
        }
    }
}

impl Courses {
    /// The courses of `config` (a course without a lessons folder is refused by
    /// `Config::validate`, and left out here).
    pub fn from_config(config: &Config) -> Self {
        let courses = config
            .offerings
            .iter()
            .filter(|o| o.kind == OfferingKind::Course)
            .filter_map(|o| {
                Some(Course {
                    slug: o.slug.clone(),
                    dir: config.lessons_dir(o)?,
                    plan: LessonPlan::from_offering(o),
                })
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
        self.inner.courses.iter().find(|c| c.slug.as_str() == slug)
    }

    /// How late a lesson may still be sent after it fell due (`worker.grace_minutes`).
    pub fn grace_ms(&self) -> Millis {
        self.inner.grace_ms
    }

    /// The zone a person's lessons follow: their own, else the site's.
    pub fn zone(&self, own: Option<&str>) -> TimeZone {
        own.and_then(|z| TimeZone::get(z).ok())
            .unwrap_or_else(|| self.inner.default_zone.zone().clone())
    }

    /// The name of that zone, for people.
    pub fn zone_name<'a>(&'a self, own: Option<&'a str>) -> &'a str {
        match own {
            Some(z) if TimeZone::get(z).is_ok() => z,
            _ => self.inner.default_zone.as_str(),
        }
    }
}
