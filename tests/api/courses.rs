//! Courses: lesson N on the Nth day after each person's confirmation, at the course's time of
//! day in their own zone; weekdays; pause and resume from the preferences page and the CLI;
//! lessons that fell due while the service was down; lesson files changing while it runs.
//!
//! Every test runs the app with a manual clock and no worker of its own: the test steps the
//! scheduler and a worker itself after moving the clock to the moment that matters (the app's
//! own scheduler also runs, with the same clock, which is harmless: the course step may run
//! in any number of places).

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use sangha::app::Runtime;
use sangha::clock::{Clock, Millis};
use sangha::delivery::{Scheduler, Worker};
use sangha::domain::EmailAddress;
use sangha::store::{CourseState, CourseStatus};

use crate::backend_tests;
use crate::support::{
    Backend, DEADLINE, Options, TestApp, confirm_path_in, eventually_async, stderr, stdout,
    urlencode,
};

backend_tests!(
    the_welcome_comes_at_once_and_lesson_n_at_seven_on_day_n_in_the_persons_own_zone,
    a_lesson_that_falls_on_a_day_without_lessons_comes_on_the_next_allowed_day,
    a_270_day_course_runs_to_its_end_through_a_pause_and_each_lesson_comes_once_in_order,
    a_lesson_due_during_downtime_comes_late_within_the_grace_window_and_is_skipped_beyond_it,
    the_owner_pauses_and_resumes_a_course_from_the_command_line,
    lesson_files_added_or_edited_while_running_are_picked_up_and_a_broken_one_changes_nothing,
    someone_who_leaves_a_course_gets_no_more_lessons,
);

const COURSE: &str = "orgasmic-queen";

fn ms(text: &str) -> Millis {
    text.parse::<jiff::Timestamp>().unwrap().as_millisecond()
}

/// Moves the manual clock forward to `at`.
fn set_clock(clock: &Clock, at: Millis) {
    let now = clock.now_ms();
    assert!(at >= now, "the clock only moves forward");
    clock.advance(Duration::from_millis((at - now) as u64));
}

/// An app with a manual clock at `start`, no worker, and the course configured by `configure`.
struct Course {
    app: TestApp,
    clock: Clock,
    scheduler: Scheduler,
    worker: Worker,
}

impl Course {
    async fn start(
        backend: Backend,
        start: &str,
        configure: impl FnOnce(&mut sangha::config::Config),
    ) -> Self {
        let clock = Clock::manual(ms(start));
        let app = TestApp::spawn_with(
            backend,
            Options {
                worker: false,
                clock: clock.clone(),
            },
            configure,
        )
        .await;
        let runtime = Runtime::open(app.config.clone(), clock.clone())
            .await
            .unwrap();
        let worker = runtime
            .worker(runtime.templates().unwrap(), runtime.links().unwrap())
            .unwrap();
        Self {
            app,
            clock,
            scheduler: runtime.scheduler(),
            worker,
        }
    }

    /// One scheduler round, then the worker until nothing is due.
    async fn tick(&self) {
        self.scheduler.step().await.unwrap();
        while !self.worker.step().await.unwrap().is_idle() {}
    }

    /// Signs up for the course (with a zone, or none) and confirms through the email.
    async fn join(&self, email: &str, zone: Option<&str>) -> i64 {
        let mut body = format!("email={}&offerings={COURSE}", urlencode(email));
        if let Some(zone) = zone {
            body.push_str(&format!("&timezone={}", urlencode(zone)));
        }
        let r = self.app.post_form("/subscribe", &body).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        while !self.worker.step().await.unwrap().is_idle() {}
        let needle = format!("To: {email}");
        let raw = self
            .app
            .outbox()
            .into_iter()
            .rev()
            .find(|m| String::from_utf8_lossy(m).contains(&needle))
            .expect("a confirmation email");
        let r = self.app.post_form(&confirm_path_in(&raw), "").await;
        assert_eq!(r.status(), StatusCode::OK);
        self.status(email).await.0
    }

    /// The subscriber's id and their place in the course, if started.
    async fn status(&self, email: &str) -> (i64, Option<CourseStatus>) {
        let detail = self
            .app
            .store()
            .subscriber_detail(&EmailAddress::parse(email).unwrap())
            .await
            .unwrap()
            .expect("a subscriber");
        let course = detail.courses.into_iter().find(|c| c.offering == COURSE);
        (detail.subscriber.id, course)
    }

    async fn progress(&self, email: &str) -> CourseStatus {
        self.status(email).await.1.expect("the course has started")
    }

    /// Every lesson delivery of a person: (day, status, last error), in the order created.
    async fn lessons(&self, subscriber_id: i64) -> Vec<(i64, String, Option<String>)> {
        let rows: Vec<(i64, String, Option<String>)> = sqlx::query_as(
            "SELECT l.lesson_day, d.status, d.last_error FROM deliveries d
             JOIN sends l ON l.id = d.send_id
             WHERE d.subscriber_id = $1 AND l.lesson_day IS NOT NULL ORDER BY d.id",
        )
        .bind(subscriber_id)
        .fetch_all(self.app.store().pool())
        .await
        .unwrap();
        rows
    }

    /// Ticks until the person has `n` lesson deliveries, none of them pending (another
    /// scheduler with the same clock may be recording one at this moment).
    async fn wait_for_lessons(
        &self,
        subscriber_id: i64,
        n: usize,
    ) -> Vec<(i64, String, Option<String>)> {
        eventually_async(DEADLINE, || async {
            self.tick().await;
            let lessons = self.lessons(subscriber_id).await;
            (lessons.len() >= n && lessons.iter().all(|l| l.1 != "pending")).then_some(lessons)
        })
        .await
        .unwrap_or_else(|| panic!("expected {n} lesson(s) for subscriber {subscriber_id}"))
    }

    /// Subjects of the course emails `email` received, oldest first.
    fn subjects(&self, email: &str) -> Vec<String> {
        let needle = format!("To: {email}");
        self.app
            .outbox()
            .iter()
            .filter(|m| String::from_utf8_lossy(m).contains(&needle))
            .filter_map(|m| {
                let parsed = mail_parser::MessageParser::default().parse(m)?;
                parsed.header_raw("List-Id")?;
                Some(parsed.subject()?.to_owned())
            })
            .collect()
    }

    async fn preferences_path(&self, subscriber_id: i64) -> String {
        self.app
            .state
            .links()
            .preferences_url(self.app.link_of(subscriber_id).await)
            .trim_start_matches(self.app.config.base_url())
            .to_owned()
    }
}

/// A folder of lessons, one per day given, with the subject "Lesson of day N".
fn lesson_folder(dir: &Path, days: &[i64]) -> PathBuf {
    let folder = dir.join("lessons");
    std::fs::create_dir_all(&folder).unwrap();
    for day in days {
        write_lesson(&folder, *day, &format!("Lesson of day {day}"));
    }
    folder
}

fn write_lesson(folder: &Path, day: i64, subject: &str) {
    std::fs::write(
        folder.join(format!("day-{day:03}.md")),
        format!(
            "---\nsubject: \"{subject}\"\nday: {day}\n---\nBreathe, {{{{name}}}}. \
             [Pause or leave]({{{{preferences_url}}}})\n"
        ),
    )
    .unwrap();
}

async fn the_welcome_comes_at_once_and_lesson_n_at_seven_on_day_n_in_the_persons_own_zone(
    backend: Backend,
) {
    // Monday 2 March 2026, 05:30 in Kolkata (UTC+05:30): the shipped example course.
    let course = Course::start(backend, "2026-03-02T00:00:00Z", |_| {}).await;
    let id = course.join("radha@example.org", Some("Asia/Kolkata")).await;
    let lessons = course.wait_for_lessons(id, 1).await;
    assert_eq!(lessons, [(0, "sent".to_owned(), None)]);
    assert_eq!(
        course.subjects("radha@example.org"),
        ["Welcome to Orgasmic Queen, friend"]
    );
    let status = course.progress("radha@example.org").await;
    assert_eq!(status.anchor_date, "2026-03-02");
    assert_eq!(status.next_day, Some(1));
    assert_eq!(
        status.next_at,
        Some(ms("2026-03-03T01:30:00Z")),
        "07:00 IST"
    );

    // 06:59 in Kolkata on day 1: nothing yet.
    set_clock(&course.clock, ms("2026-03-03T01:29:00Z"));
    course.tick().await;
    course.tick().await;
    assert_eq!(course.lessons(id).await.len(), 1);

    // 07:00: lesson 1.
    set_clock(&course.clock, ms("2026-03-03T01:30:00Z"));
    let lessons = course.wait_for_lessons(id, 2).await;
    assert_eq!(lessons[1], (1, "sent".to_owned(), None));
    let subjects = course.subjects("radha@example.org");
    assert_eq!(subjects.len(), 2);
    assert_eq!(subjects[1], "Day 1: the breath of arrival");
    // A lesson is a list email like any other: it can be left in one click.
    let raw = course.app.outbox().pop().unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"),
        "{text}"
    );
    assert!(
        text.contains("List-Id:") && text.contains("orgasmic-queen"),
        "{text}"
    );

    let show = course
        .app
        .cli(&["subscribers", "show", "radha@example.org"]);
    assert!(show.status.success(), "{}", stderr(&show));
    let show = stdout(&show);
    assert!(
        show.contains(
            "lesson 2 of 4 sent, next: lesson 3 (day 7) on 2026-03-09 07:00 Asia/Kolkata"
        ),
        "{show}"
    );
    let json = course
        .app
        .cli(&["subscribers", "show", "radha@example.org", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&stdout(&json)).unwrap();
    let c = &json["courses"][0];
    assert_eq!(c["offering"], COURSE);
    assert_eq!(
        (c["sent"].as_i64(), c["lessons"].as_i64()),
        (Some(2), Some(4))
    );
    assert_eq!(c["next_day"], 7);
    assert_eq!(c["next_at"].as_i64(), Some(ms("2026-03-09T01:30:00Z")));
}

async fn a_lesson_that_falls_on_a_day_without_lessons_comes_on_the_next_allowed_day(
    backend: Backend,
) {
    // Friday 6 March 2026, 10:00 in Berlin (the site's zone: the person gives none).
    let course = Course::start(backend, "2026-03-06T09:00:00Z", |c| {
        c.offerings[3].weekdays = ["mon", "wed", "fri"].map(|d| d.parse().unwrap()).to_vec();
    })
    .await;
    let id = course.join("mira@example.org", None).await;
    course.wait_for_lessons(id, 1).await;
    // Day 1 is a Saturday: it moves to Monday 9 March, 07:00 in Berlin (06:00 UTC).
    assert_eq!(
        course.progress("mira@example.org").await.next_at,
        Some(ms("2026-03-09T06:00:00Z"))
    );
    set_clock(&course.clock, ms("2026-03-07T06:00:00Z"));
    course.tick().await;
    set_clock(&course.clock, ms("2026-03-09T05:59:00Z"));
    course.tick().await;
    assert_eq!(course.lessons(id).await.len(), 1, "nothing on the weekend");
    set_clock(&course.clock, ms("2026-03-09T06:00:00Z"));
    let lessons = course.wait_for_lessons(id, 2).await;
    assert_eq!(lessons[1].0, 1);
    // Day 7 is Friday 13 March: an allowed day, so it stays.
    let status = course.progress("mira@example.org").await;
    assert_eq!(status.next_day, Some(7));
    assert_eq!(status.next_at, Some(ms("2026-03-13T06:00:00Z")));
    let show = stdout(&course.app.cli(&["subscribers", "show", "mira@example.org"]));
    assert!(
        show.contains("next: lesson 3 (day 7) on 2026-03-13 07:00 Europe/Berlin"),
        "{show}"
    );
}

async fn a_270_day_course_runs_to_its_end_through_a_pause_and_each_lesson_comes_once_in_order(
    backend: Backend,
) {
    let dir = tempfile::tempdir().unwrap();
    let days: Vec<i64> = (0..=9).map(|i| i * 30).collect();
    let folder = lesson_folder(dir.path(), &days);
    // Monday 5 January 2026, 10:00 in New York: the course crosses both DST changes.
    let course = Course::start(backend, "2026-01-05T15:00:00Z", move |c| {
        c.offerings[3].lessons = Some(folder);
    })
    .await;
    let email = "lila@example.org";
    let id = course.join(email, Some("America/New_York")).await;
    let new_york = jiff::tz::TimeZone::get("America/New_York").unwrap();
    let prefs = course.preferences_path(id).await;

    let mut got = course.wait_for_lessons(id, 1).await.len();
    assert_eq!(got, 1, "the welcome");
    let mut resumed_next_at = None;
    while let Some(next_at) = course.progress(email).await.next_at {
        let status = course.progress(email).await;
        let day = status.next_day.unwrap();
        let local = jiff::Timestamp::from_millisecond(next_at)
            .unwrap()
            .to_zoned_datetime(new_york.clone());
        assert_eq!((local.hour(), local.minute()), (7, 0), "day {day}: {local}");
        // A minute before: nothing.
        set_clock(&course.clock, next_at - 60_000);
        course.tick().await;
        assert_eq!(course.lessons(id).await.len(), got, "day {day} came early");
        set_clock(&course.clock, next_at);
        got += 1;
        course.wait_for_lessons(id, got).await;

        if day == 90 {
            // Ten days later the person pauses the course from their preferences page.
            set_clock(&course.clock, next_at + 10 * 86_400_000);
            let page = course.app.get(&prefs).await.text().await.unwrap();
            assert!(page.contains("Pause this course"), "{page}");
            let r = course
                .app
                .post_form(
                    &format!("{prefs}/course"),
                    "offering=orgasmic-queen&action=pause",
                )
                .await;
            assert_eq!(r.status(), StatusCode::SEE_OTHER);
            let page = course
                .app
                .get(r.headers()["location"].to_str().unwrap())
                .await
                .text()
                .await
                .unwrap();
            assert!(
                page.contains("Your course is paused") && page.contains("Resume"),
                "{page}"
            );
            let paused = course.progress(email).await;
            assert_eq!((paused.state, paused.next_at), (CourseState::Paused, None));
            // Day 120 passes while paused: nothing comes.
            set_clock(&course.clock, next_at + 30 * 86_400_000 + 3_600_000);
            course.tick().await;
            course.tick().await;
            assert_eq!(course.lessons(id).await.len(), got);
            // Twenty days after the pause, resume.
            set_clock(&course.clock, next_at + 30 * 86_400_000 + 5 * 3_600_000);
            let r = course
                .app
                .post_form(
                    &format!("{prefs}/course"),
                    "offering=orgasmic-queen&action=resume",
                )
                .await;
            assert_eq!(r.status(), StatusCode::SEE_OTHER);
            let resumed = course.progress(email).await;
            assert_eq!(resumed.state, CourseState::Active);
            assert_eq!(
                resumed.next_day,
                Some(120),
                "the next lesson, not a later one"
            );
            // The course's clock stood still for the 20 days: day 120 comes 20 days late,
            // at 07:00 as always.
            let expected = jiff::civil::date(2026, 1, 5)
                .checked_add(jiff::Span::new().days(140))
                .unwrap()
                .to_datetime(jiff::civil::time(7, 0, 0, 0))
                .to_zoned_datetime(new_york.clone())
                .unwrap()
                .timestamp()
                .as_millisecond();
            assert_eq!(resumed.next_at, Some(expected));
            resumed_next_at = resumed.next_at;
        }
    }
    assert!(resumed_next_at.is_some(), "the pause happened");
    let lessons = course.lessons(id).await;
    let expected: Vec<(i64, String, Option<String>)> =
        days.iter().map(|d| (*d, "sent".to_owned(), None)).collect();
    assert_eq!(lessons, expected, "each lesson once, in order");
    // Each lesson's email arrived once (the order is the deliveries' above: outbox files
    // written within one mtime tick cannot be ordered).
    let mut subjects = course.subjects(email);
    subjects.sort();
    let mut expected: Vec<String> = days.iter().map(|d| format!("Lesson of day {d}")).collect();
    expected.sort();
    assert_eq!(subjects, expected);
    let status = course.progress(email).await;
    assert_eq!(status.state, CourseState::Finished);
    assert_eq!((status.sent, status.lessons), (10, 10));
    // Nothing more, however long the scheduler runs.
    set_clock(&course.clock, course.clock.now_ms() + 400 * 86_400_000);
    course.tick().await;
    assert_eq!(course.lessons(id).await.len(), 10);
    let show = stdout(&course.app.cli(&["subscribers", "show", email]));
    assert!(show.contains("lesson 10 of 10 sent, finished on"), "{show}");
}

async fn a_lesson_due_during_downtime_comes_late_within_the_grace_window_and_is_skipped_beyond_it(
    backend: Backend,
) {
    let course = Course::start(backend, "2026-03-02T08:00:00Z", |c| {
        c.worker.grace_minutes = 12 * 60;
    })
    .await;
    let email = "sita@example.org";
    let id = course.join(email, Some("UTC")).await;
    course.wait_for_lessons(id, 1).await;

    // Down from before day 1's 07:00 until 09:00: two hours late, within the window.
    set_clock(&course.clock, ms("2026-03-03T09:00:00Z"));
    let lessons = course.wait_for_lessons(id, 2).await;
    assert_eq!(lessons[1], (1, "sent".to_owned(), None));

    // Down from before day 7's 07:00 for three days: beyond the window.
    set_clock(&course.clock, ms("2026-03-12T07:00:00Z"));
    let lessons = course.wait_for_lessons(id, 3).await;
    assert_eq!(lessons[2].0, 7);
    assert_eq!(lessons[2].1, "skipped");
    assert!(
        lessons[2]
            .2
            .as_deref()
            .unwrap()
            .starts_with("missed: fell due while the service was down"),
        "{lessons:?}"
    );
    // However often the scheduler runs, nothing is added or sent twice.
    for _ in 0..5 {
        course.tick().await;
    }
    assert_eq!(course.lessons(id).await.len(), 3);
    assert_eq!(
        course.subjects(email),
        [
            "Welcome to Orgasmic Queen, friend",
            "Day 1: the breath of arrival"
        ]
    );
    let status = course.progress(email).await;
    assert_eq!(
        (status.sent, status.missed, status.next_day),
        (2, 1, Some(30))
    );
    let show = stdout(&course.app.cli(&["subscribers", "show", email]));
    assert!(show.contains("lesson 2 of 4 sent, 1 missed"), "{show}");
    assert!(
        show.contains("next: lesson 4 (day 30) on 2026-04-01 07:00 UTC"),
        "{show}"
    );
    // The lesson's send tells the owner why.
    let send_id: i64 = sqlx::query_scalar(
        "SELECT send_id FROM deliveries d JOIN sends l ON l.id = d.send_id
         WHERE d.subscriber_id = $1 AND l.lesson_day = 7",
    )
    .bind(id)
    .fetch_one(course.app.store().pool())
    .await
    .unwrap();
    let shown = stdout(&course.app.cli(&["sends", "show", &send_id.to_string()]));
    assert!(
        shown.contains("skipped") && shown.contains("missed: fell due while the service was down"),
        "{shown}"
    );
}

async fn the_owner_pauses_and_resumes_a_course_from_the_command_line(backend: Backend) {
    // The command line runs on the machine's clock, so this app does too.
    let app = TestApp::spawn(backend).await;
    app.confirmed_subscriber("devi@example.org", &[COURSE, "morning-meditation"])
        .await;
    let welcomed = eventually_async(DEADLINE, || async {
        let show = stdout(&app.cli(&["subscribers", "show", "devi@example.org"]));
        show.contains("lesson 1 of 4 sent").then_some(show)
    })
    .await;
    assert!(welcomed.is_some(), "the welcome was sent");

    let course = |args: &[&str]| {
        let mut all = vec!["subscribers", "course"];
        all.extend_from_slice(args);
        app.cli(&all)
    };
    let out = course(&["pause", "devi@example.org", "--offering", COURSE]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("paused"), "{}", stdout(&out));
    let show = stdout(&app.cli(&["subscribers", "show", "devi@example.org"]));
    assert!(show.contains("lesson 1 of 4 sent, paused since"), "{show}");
    let again = course(&["pause", "devi@example.org", "--offering", COURSE]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("is paused"), "{}", stderr(&again));

    let out = course(&["resume", "devi@example.org", "--offering", COURSE]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("resumed; next: day 1 on"),
        "{}",
        stdout(&out)
    );
    let show = stdout(&app.cli(&["subscribers", "show", "devi@example.org"]));
    assert!(show.contains("next: lesson 2 (day 1) on"), "{show}");
    let again = course(&["resume", "devi@example.org", "--offering", COURSE]);
    assert!(stderr(&again).contains("not paused"), "{}", stderr(&again));

    for (args, error) in [
        (
            [
                "pause",
                "devi@example.org",
                "--offering",
                "morning-meditation",
            ],
            "not a course",
        ),
        (
            ["pause", "nobody@example.org", "--offering", COURSE],
            "no subscriber",
        ),
        (
            ["resume", "devi@example.org", "--offering", "no-such-course"],
            "no offering",
        ),
    ] {
        let out = course(&args);
        assert!(!out.status.success());
        assert!(stderr(&out).contains(error), "{args:?}: {}", stderr(&out));
    }
}

async fn lesson_files_added_or_edited_while_running_are_picked_up_and_a_broken_one_changes_nothing(
    backend: Backend,
) {
    let dir = tempfile::tempdir().unwrap();
    let folder = lesson_folder(dir.path(), &[0, 10]);
    let lessons_dir = folder.clone();
    let course = Course::start(backend, "2026-03-02T08:00:00Z", move |c| {
        c.offerings[3].lessons = Some(lessons_dir);
    })
    .await;
    let id = course.join("uma@example.org", Some("UTC")).await;
    course.wait_for_lessons(id, 1).await;
    assert_eq!(course.progress("uma@example.org").await.next_day, Some(10));

    // A lesson for day 5 is written: it comes before day 10.
    write_lesson(&folder, 5, "A new lesson");
    course.tick().await;
    let status = course.progress("uma@example.org").await;
    assert_eq!((status.next_day, status.lessons), (Some(5), 3));
    // It is edited before its day: the new words are sent.
    write_lesson(&folder, 5, "A new lesson, edited");
    course.tick().await;
    // A broken file (no day) changes nothing: the lessons stored stay in use.
    std::fs::write(folder.join("broken.md"), "---\nsubject: Oops\n---\nHello\n").unwrap();
    write_lesson(&folder, 5, "Edited again, next to a broken file");
    course.tick().await;
    set_clock(&course.clock, ms("2026-03-07T07:00:00Z"));
    let lessons = course.wait_for_lessons(id, 2).await;
    assert_eq!(lessons[1].0, 5);
    assert_eq!(
        course.subjects("uma@example.org")[1],
        "A new lesson, edited"
    );
    // Day 10's file is removed (and the broken one fixed by removing it too): the lesson is
    // withdrawn and the course ends after day 5.
    std::fs::remove_file(folder.join("broken.md")).unwrap();
    std::fs::remove_file(folder.join("day-010.md")).unwrap();
    course.tick().await;
    let status = course.progress("uma@example.org").await;
    assert_eq!(status.state, CourseState::Finished);
    assert_eq!(status.lessons, 2);
}

async fn someone_who_leaves_a_course_gets_no_more_lessons(backend: Backend) {
    let course = Course::start(backend, "2026-03-02T08:00:00Z", |_| {}).await;
    let id = course.join("kali@example.org", Some("UTC")).await;
    course.wait_for_lessons(id, 1).await;
    let r = course
        .app
        .post_form(
            &course.preferences_path(id).await,
            "offerings=morning-meditation",
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    set_clock(&course.clock, ms("2026-03-03T07:00:00Z"));
    course.tick().await;
    course.tick().await;
    assert_eq!(course.lessons(id).await.len(), 1);
    let status = course.progress("kali@example.org").await;
    assert_eq!(status.state, CourseState::Left);
    let show = stdout(&course.app.cli(&["subscribers", "show", "kali@example.org"]));
    assert!(show.contains("stopped: no longer subscribed"), "{show}");
}
