//! The calendar of a course, pure maths over dates and zones (no I/O).
//!
//! # When a lesson is due
//!
//! * Day 0, the welcome, is due at once: at the moment of confirmation.
//! * Lesson N (N ≥ 1) is due at `local_time` on the local date `anchor + N days`, where the
//!   anchor is the person's local date of confirmation, in their zone (the site's zone if they
//!   gave none). With `weekdays` set, a date on another weekday moves to the next allowed one.
//!   A local time that does not exist that day (a DST gap) or exists twice (a fold) follows
//!   jiff's "compatible" rule: the later time in a gap, the earlier in a fold.
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

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp};

use crate::clock::Millis;
use crate::config::OfferingConfig;
use crate::store::{CourseState, Progress, ProgressChange, StoredLesson};

/// When lessons arrive: a time of day, on some weekdays (empty: every day).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LessonPlan {
    pub time: Time,
    pub weekdays: Vec<Weekday>,
}

impl LessonPlan {
    /// The plan of a course offering: its `local_time` and `weekdays`.
    pub fn from_offering(o: &OfferingConfig) -> Self {
        Self {
            time: o.lesson_time(),
            weekdays: o.lesson_weekdays(),
        }
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

    /// The row of a paused (or left) course, resumed at `now` in `tz`: see the module
    /// documentation.
    pub fn resumed(
        &self,
        p: &Progress,
        lessons: &[StoredLesson],
        now: Millis,
        tz: &TimeZone,
        grace: Millis,
    ) -> ProgressChange {
        let paused_days = p
            .paused_at
            .map(|at| days_between(local_date(at, tz), local_date(now, tz)).max(0))
            .unwrap_or(0);
        let mut anchor = add_days(parse_anchor(&p.anchor_date), paused_days);
        let mut started_at = p.started_at;
        let mut next = self.next_lesson(lessons, anchor, started_at, p.last_day, tz, grace);
        if let Some((day, at)) = next
            && at <= now
        {
            if day == 0 {
                started_at = now;
                next = Some((0, now));
            } else {
                let (date, slot) = self.next_slot(now, tz);
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

/// The anchor date of a progress row (`YYYY-MM-DD`).
pub fn parse_anchor(text: &str) -> Date {
    text.parse().unwrap_or(Date::MIN)
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
}
