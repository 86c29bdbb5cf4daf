//! Sends at each subscriber's own local time, and recurring sends, with a controllable clock
//! (no sleeping, nothing depends on the machine's zone).

use std::collections::BTreeMap;
use std::time::Duration;

use sangha::app::Runtime;
use sangha::clock::{Clock, Millis};
use sangha::delivery::{Scheduler, Worker};

use crate::backend_tests;
use crate::support::{Backend, Options, TestApp, stderr, stdout};

backend_tests!(
    ten_zones_each_get_the_email_at_their_own_0630,
    a_local_time_that_has_passed_in_some_zones_is_refused_unless_sent_late,
    daily_sends_keep_0630_across_the_spring_changes_in_berlin_and_new_york,
    daily_sends_keep_0630_across_the_autumn_changes_in_berlin_and_new_york,
    a_recurring_send_takes_the_next_unused_file_warns_and_stops_when_they_run_out,
    a_restart_in_the_middle_of_a_recurring_send_sends_no_occurrence_twice,
    occurrences_missed_while_down_are_sent_late_within_grace_and_skipped_beyond,
);

const PIECE: &str = "---\nsubject: \"{{offering.name}} for {{date}}\"\n---\nBreathe, {{name}}.\n";

struct Rig {
    app: TestApp,
    clock: Clock,
    scheduler: Scheduler,
    worker: Worker,
}

impl Rig {
    async fn new(backend: Backend, start: &str) -> Self {
        let clock = Clock::manual(ts(start));
        let app = TestApp::spawn_with(
            backend,
            // No background worker: the test steps one itself, so nothing races its checks.
            Options {
                clock: clock.clone(),
                worker: false,
            },
            |_| {},
        )
        .await;
        let runtime = Runtime::open(app.config.clone(), clock.clone())
            .await
            .unwrap();
        let scheduler = runtime.scheduler();
        let worker = runtime
            .worker(runtime.templates().unwrap(), runtime.links().unwrap())
            .unwrap();
        Self {
            app,
            clock,
            scheduler,
            worker,
        }
    }

    /// Signs someone up in `zone` and confirms them.
    async fn subscribe(&self, email: &str, zone: &str) {
        let body = format!(
            "email={}&timezone={}&offerings=morning-meditation",
            crate::support::urlencode(email),
            crate::support::urlencode(zone)
        );
        let r = self.app.post_form("/subscribe", &body).await;
        assert_eq!(r.status(), 303);
        while !self.worker.step().await.unwrap().is_idle() {}
        let needle = format!("To: {email}");
        let raw = self
            .app
            .outbox()
            .into_iter()
            .find(|m| String::from_utf8_lossy(m).contains(&needle))
            .expect("a confirmation email");
        let r = self
            .app
            .post_form(&crate::support::confirm_path_in(&raw), "")
            .await;
        assert_eq!(r.status(), 200);
    }

    /// Moves the clock to `at` (never backwards) and runs the scheduler and a worker until
    /// nothing more is due.
    async fn run_until(&self, at: Millis) {
        let now = self.clock.now_ms();
        assert!(at >= now, "the clock only moves forward");
        self.clock.advance(Duration::from_millis((at - now) as u64));
        self.scheduler.step().await.unwrap();
        while !self.worker.step().await.unwrap().is_idle() {}
    }

    /// (email, sent_at) of every sent delivery of sends (not confirmations).
    async fn sent(&self) -> Vec<(String, Millis)> {
        sqlx::query_as(
            "SELECT s.email, d.sent_at FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id
             WHERE d.kind = 'send' AND d.status = 'sent' ORDER BY d.sent_at, s.email",
        )
        .fetch_all(self.app.store().pool())
        .await
        .unwrap()
    }
}

fn ts(text: &str) -> Millis {
    text.parse::<jiff::Timestamp>().unwrap().as_millisecond()
}

fn at_local(date: &str, time: &str, zone: &str) -> Millis {
    let date: jiff::civil::Date = date.parse().unwrap();
    let time: jiff::civil::Time = time.parse().unwrap();
    date.to_datetime(time)
        .to_zoned_datetime(jiff::tz::TimeZone::get(zone).unwrap())
        .unwrap()
        .timestamp()
        .as_millisecond()
}

fn local_of(ms: Millis, zone: &str) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .unwrap()
        .to_zoned_datetime(jiff::tz::TimeZone::get(zone).unwrap())
        .strftime("%Y-%m-%d %H:%M")
        .to_string()
}

const ZONES: [&str; 10] = [
    "Pacific/Kiritimati", // UTC+14
    "Pacific/Pago_Pago",  // UTC-11
    "Asia/Kolkata",       // +05:30
    "Asia/Kathmandu",     // +05:45
    "Europe/Berlin",
    "America/New_York",
    "Australia/Adelaide", // +10:30 / +09:30
    "America/St_Johns",   // -03:30
    "Asia/Tokyo",
    "UTC",
];

async fn ten_zones_each_get_the_email_at_their_own_0630(backend: Backend) {
    let rig = Rig::new(backend, "2099-05-30T00:00:00Z").await;
    let mut who = BTreeMap::new();
    for (i, zone) in ZONES.iter().enumerate() {
        let email = format!("z{i}@example.org");
        rig.subscribe(&email, zone).await;
        who.insert(email, *zone);
    }
    let file = rig.app.write_content("m.md", PIECE);
    let out = rig.app.cli(&[
        "schedule",
        "--offering",
        "morning-meditation",
        "--content",
        file.to_str().unwrap(),
        "--local-time",
        "06:30",
        "--on",
        "2099-06-01",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).trim().to_owned();

    let mut dues: Vec<(Millis, String)> = who
        .iter()
        .map(|(email, zone)| (at_local("2099-06-01", "06:30", zone), email.clone()))
        .collect();
    dues.sort();
    for (i, (due, email)) in dues.iter().enumerate() {
        rig.run_until(due - 60_000).await;
        assert_eq!(rig.sent().await.len(), i, "nobody early (before {email})");
        rig.run_until(*due).await;
        let sent = rig.sent().await;
        assert_eq!(sent.len(), i + 1, "{email} at their 06:30");
        assert!(sent.iter().any(|(e, at)| e == email && at == due));
    }
    for (email, at) in rig.sent().await {
        assert_eq!(local_of(at, who[&email]), "2099-06-01 06:30", "{email}");
    }
    crate::support::assert_message_ids_come_from_the_outbox(&rig.app, 10).await;
    let show = stdout(&rig.app.cli(&["sends", "show", &id]));
    assert!(
        show.contains("by zone") && show.contains("Asia/Kathmandu"),
        "{show}"
    );
}

async fn a_local_time_that_has_passed_in_some_zones_is_refused_unless_sent_late(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.confirmed_subscriber_in(
        "far@example.org",
        &["morning-meditation"],
        "Pacific/Kiritimati",
    )
    .await;
    let file = app.write_content("m.md", PIECE);
    // 06:30 today (UTC date) is always in the past on Kiritimati (UTC+14).
    let today = jiff::Timestamp::now()
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .date()
        .to_string();
    let args = [
        "schedule",
        "--offering",
        "morning-meditation",
        "--content",
        file.to_str().unwrap(),
        "--local-time",
        "06:30",
        "--on",
        &today,
    ];
    let refused = app.cli(&args);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("Pacific/Kiritimati"),
        "{}",
        stderr(&refused)
    );
    assert!(
        stderr(&refused).contains("--send-late"),
        "{}",
        stderr(&refused)
    );
    assert!(app.store().send_summaries(None).await.unwrap().is_empty());
    let mut late = args.to_vec();
    late.push("--send-late");
    let out = app.cli(&late);
    assert!(out.status.success(), "{}", stderr(&out));
    let id: i64 = stdout(&out).trim().parse().unwrap();
    let done = app.wait_for_send_done(id).await;
    assert_eq!(done.counts.sent, 1);
}

async fn daily_around(backend: Backend, start: &str, from: &str, days: u32) {
    let rig = Rig::new(backend, start).await;
    let people = [
        ("berlin@example.org", "Europe/Berlin"),
        ("ny@example.org", "America/New_York"),
    ];
    for (email, zone) in people {
        rig.subscribe(email, zone).await;
    }
    let dir = rig.app.dir.path().join("pieces");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..days + 2 {
        std::fs::write(dir.join(format!("{i:03}.md")), PIECE).unwrap();
    }
    let out = rig.app.cli(&[
        "schedule",
        "--offering",
        "morning-meditation",
        "--content-dir",
        dir.to_str().unwrap(),
        "--every",
        "day",
        "--local-time",
        "06:30",
        "--from",
        from,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let first: jiff::civil::Date = from.parse().unwrap();
    let mut dues = Vec::new();
    for d in 0..days {
        let date = first
            .checked_add(jiff::Span::new().days(d))
            .unwrap()
            .to_string();
        for (email, zone) in people {
            dues.push((at_local(&date, "06:30", zone), email, zone, date.clone()));
        }
    }
    dues.sort();
    for (due, email, _, date) in &dues {
        rig.run_until(due - 60_000).await;
        let before = rig.sent().await.len();
        rig.run_until(*due).await;
        let rows: Vec<(String, i64, String, Option<String>)> = sqlx::query_as(
            "SELECT s.email, d.next_attempt_at, d.status, se.local_date FROM deliveries d
             JOIN subscribers s ON s.id = d.subscriber_id JOIN sends se ON se.id = d.send_id",
        )
        .fetch_all(rig.app.store().pool())
        .await
        .unwrap();
        assert_eq!(
            rig.sent().await.len(),
            before + 1,
            "{email} on {date} due {due}: {rows:?}"
        );
    }
    let sent = rig.sent().await;
    assert_eq!(sent.len(), dues.len(), "no day lost or doubled");
    for (email, zone) in people {
        let mut days_seen: Vec<String> = sent
            .iter()
            .filter(|(e, _)| e == email)
            .map(|(_, at)| local_of(*at, zone))
            .collect();
        days_seen.dedup();
        assert_eq!(days_seen.len(), days as usize, "{email}: one per local day");
        assert!(
            days_seen.iter().all(|d| d.ends_with("06:30")),
            "{days_seen:?}"
        );
    }
}

async fn daily_sends_keep_0630_across_the_spring_changes_in_berlin_and_new_york(backend: Backend) {
    // New York moves its clocks on 14 March 2027, Berlin on 28 March 2027.
    daily_around(backend, "2027-03-12T00:00:00Z", "2027-03-13", 17).await;
}

async fn daily_sends_keep_0630_across_the_autumn_changes_in_berlin_and_new_york(backend: Backend) {
    // Berlin on 31 October 2027, New York on 7 November 2027.
    daily_around(backend, "2027-10-29T00:00:00Z", "2027-10-30", 10).await;
}

async fn a_recurring_send_takes_the_next_unused_file_warns_and_stops_when_they_run_out(
    backend: Backend,
) {
    let rig = Rig::new(backend, "2099-01-01T00:00:00Z").await;
    rig.subscribe("r@example.org", "UTC").await;
    let dir = rig.app.dir.path().join("pieces");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("b-second.md"), PIECE.replace("Breathe", "Second")).unwrap();
    std::fs::write(dir.join("a-first.md"), PIECE.replace("Breathe", "First")).unwrap();
    let out = rig.app.cli(&[
        "schedule",
        "--offering",
        "morning-meditation",
        "--content-dir",
        dir.to_str().unwrap(),
        "--every",
        "day",
        "--local-time",
        "06:30",
        "--from",
        "2099-01-02",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let list = stdout(&rig.app.cli(&["sends", "list"]));
    assert!(
        list.contains("next 2099-01-02") && list.contains("2 piece(s) left"),
        "{list}"
    );
    assert!(list.contains("WARNING: running out"), "{list}");

    rig.run_until(at_local("2099-01-02", "06:30", "UTC")).await;
    rig.run_until(at_local("2099-01-03", "06:30", "UTC")).await;
    // A piece added now is picked up for the third day.
    std::fs::write(dir.join("c-third.md"), PIECE.replace("Breathe", "Third")).unwrap();
    rig.run_until(at_local("2099-01-04", "06:30", "UTC")).await;
    rig.run_until(at_local("2099-01-06", "06:30", "UTC")).await;
    // What was sent, in the order it was sent (the manual clock's days).
    let files: Vec<String> = sqlx::query_scalar(
        "SELECT se.content_file FROM deliveries d JOIN sends se ON se.id = d.send_id
         WHERE d.kind = 'send' AND d.status = 'sent' ORDER BY d.sent_at",
    )
    .fetch_all(rig.app.store().pool())
    .await
    .unwrap();
    assert_eq!(
        files,
        ["a-first.md", "b-second.md", "c-third.md"],
        "name order, each once"
    );
    assert_eq!(rig.app.outbox().len(), 4, "a confirmation and three pieces");
    let list = stdout(&rig.app.cli(&["sends", "list"]));
    assert!(
        list.contains("finished") && list.contains("no unused pieces left"),
        "{list}"
    );
}

async fn a_restart_in_the_middle_of_a_recurring_send_sends_no_occurrence_twice(backend: Backend) {
    let rig = Rig::new(backend, "2099-01-01T00:00:00Z").await;
    rig.subscribe("once@example.org", "Asia/Kolkata").await;
    let dir = rig.app.dir.path().join("pieces");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..5 {
        std::fs::write(dir.join(format!("{i}.md")), PIECE).unwrap();
    }
    let out = rig.app.cli(&[
        "schedule",
        "--offering",
        "morning-meditation",
        "--content-dir",
        dir.to_str().unwrap(),
        "--every",
        "day",
        "--local-time",
        "06:30",
        "--from",
        "2099-01-02",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    rig.run_until(at_local("2099-01-02", "06:30", "Asia/Kolkata"))
        .await;
    // "Restart": fresh schedulers and workers over the same database, at the same moment
    // and later, as a process coming back would run them.
    for _ in 0..3 {
        let runtime = Runtime::open(rig.app.config.clone(), rig.clock.clone())
            .await
            .unwrap();
        runtime.scheduler().step().await.unwrap();
        let worker = runtime
            .worker(runtime.templates().unwrap(), runtime.links().unwrap())
            .unwrap();
        while !worker.step().await.unwrap().is_idle() {}
    }
    rig.run_until(at_local("2099-01-03", "06:30", "Asia/Kolkata"))
        .await;
    let runtime = Runtime::open(rig.app.config.clone(), rig.clock.clone())
        .await
        .unwrap();
    runtime.scheduler().step().await.unwrap();
    let sent = rig.sent().await;
    assert_eq!(sent.len(), 2, "{sent:?}");
    let occurrences: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM sends WHERE recurrence_id IS NOT NULL")
            .fetch_one(rig.app.store().pool())
            .await
            .unwrap();
    assert_eq!(
        occurrences, 2,
        "one send per occurrence, however often it restarts"
    );
}

async fn occurrences_missed_while_down_are_sent_late_within_grace_and_skipped_beyond(
    backend: Backend,
) {
    let rig = Rig::new(backend, "2099-01-01T00:00:00Z").await;
    rig.subscribe("down@example.org", "UTC").await;
    let dir = rig.app.dir.path().join("pieces");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..10 {
        std::fs::write(dir.join(format!("{i}.md")), PIECE).unwrap();
    }
    let out = rig.app.cli(&[
        "schedule",
        "--offering",
        "morning-meditation",
        "--content-dir",
        dir.to_str().unwrap(),
        "--every",
        "day",
        "--local-time",
        "06:30",
        "--from",
        "2099-01-02",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Down from before the first occurrence began anywhere until 2 hours after it was due.
    rig.run_until(at_local("2099-01-02", "08:30", "UTC")).await;
    let sent = rig.sent().await;
    assert_eq!(sent.len(), 1, "sent late, within the grace window");
    assert_eq!(local_of(sent[0].1, "UTC"), "2099-01-02 08:30");
    // Down again for three days: 3, 4 and 5 January are beyond the grace window.
    rig.run_until(at_local("2099-01-06", "07:00", "UTC")).await;
    for _ in 0..3 {
        rig.run_until(rig.clock.now_ms()).await;
    }
    let sent = rig.sent().await;
    let days: Vec<String> = sent.iter().map(|(_, at)| local_of(*at, "UTC")).collect();
    assert_eq!(
        days,
        ["2099-01-02 08:30", "2099-01-06 07:00"],
        "never twice, nothing at night"
    );
    let list = stdout(&rig.app.cli(&["sends", "list"]));
    assert!(
        list.contains("skipped"),
        "the skipped days are reported: {list}"
    );
}
