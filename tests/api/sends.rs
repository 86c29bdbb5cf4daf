//! Scheduled sends: content checked at scheduling time, one delivery per confirmed
//! subscriber, pause, resume, cancel, preview and test sends, and RFC 5322 line limits.

use std::time::Duration;

use sangha::app::Runtime;
use sangha::clock::Clock;
use sangha::delivery::Worker;
use sangha::store::SendStatus;

use crate::backend_tests;
use crate::support::{Backend, DEADLINE, Options, TestApp, eventually_async, stderr, stdout};

backend_tests!(
    a_send_reaches_every_confirmed_subscriber_exactly_once,
    every_delivery_has_a_message_id_of_its_own,
    content_errors_name_the_file_and_line_at_scheduling_time,
    a_send_at_a_later_time_waits_for_its_time,
    pause_stops_new_claims_resume_continues_and_cancel_ends_the_rest,
    a_person_who_leaves_after_the_fan_out_is_skipped,
    preview_renders_for_a_subscriber_and_escapes_what_they_typed,
    every_line_stays_within_rfc_5322_limits_whatever_the_content,
    sends_list_and_show_explain_each_send,
    watch_follows_a_send_until_it_is_done,
    a_send_scheduled_while_serving_starts_without_waiting_for_the_poll_interval,
);

pub const MORNING: &str = "---\n\
subject: \"Morning practice for {{name}}\"\n\
preheader: Five quiet minutes\n\
---\n\
# Good morning, {{name}}\n\
\n\
Sit comfortably and breathe. This is **{{offering.name}}** for {{date}}.\n\
\n\
[Leave this list]({{unsubscribe_url}})\n";

async fn manual_worker(app: &TestApp, clock: Clock) -> Worker {
    let runtime = Runtime::open(app.config.clone(), clock).await.unwrap();
    runtime
        .worker(runtime.templates().unwrap(), runtime.links().unwrap())
        .unwrap()
}

async fn a_send_scheduled_while_serving_starts_without_waiting_for_the_poll_interval(
    backend: Backend,
) {
    // The scheduler steps fully once an hour here; only its quick look for a send that just
    // fell due can start this one within the test's deadline.
    let app = TestApp::spawn_with(backend, Options::default(), |config| {
        config.worker.poll_interval_ms = 3_600_000;
    })
    .await;
    app.confirmed_subscriber("a@example.org", &["morning-meditation"])
        .await;
    let before = app.outbox().len();
    let path = app.write_content("morning.md", MORNING);
    let id = app.schedule_now("morning-meditation", &path);
    let sent = eventually_async(DEADLINE, || async {
        let s = app.store().send_summaries(Some(id)).await.unwrap().pop()?;
        (s.counts.sent == 1).then_some(s)
    })
    .await;
    assert!(sent.is_some(), "the send went out without waiting an hour");
    assert_eq!(app.outbox().len(), before + 1);
}

async fn a_send_reaches_every_confirmed_subscriber_exactly_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for who in ["a@example.org", "b@example.org", "c@example.org"] {
        app.confirmed_subscriber(who, &["morning-meditation"]).await;
    }
    app.signup("pending@example.org", &["morning-meditation"])
        .await;
    app.confirmed_subscriber("other@example.org", &["guided-meditations"])
        .await;
    let confirmations = app.wait_for_outbox(5).await.len();

    let path = app.write_content("morning.md", MORNING);
    let id = app.schedule_now("morning-meditation", &path);
    let done = app.wait_for_send_done(id).await;
    assert_eq!(done.counts.sent, 3, "{:?}", done.counts);
    assert_eq!(done.counts.total(), 3);

    let sends: Vec<Vec<u8>> = app.outbox().split_off(confirmations);
    assert_eq!(sends.len(), 3);
    let mut to: Vec<String> = sends
        .iter()
        .map(|raw| {
            let m = mail_parser::MessageParser::default().parse(raw).unwrap();
            assert_eq!(m.subject(), Some("Morning practice for friend"));
            m.to()
                .unwrap()
                .first()
                .unwrap()
                .address()
                .unwrap()
                .to_owned()
        })
        .collect();
    to.sort();
    assert_eq!(to, ["a@example.org", "b@example.org", "c@example.org"]);

    // Fanning out again adds nothing: one delivery per send and subscriber.
    let runtime = Runtime::open(app.config.clone(), Clock::System)
        .await
        .unwrap();
    let again = runtime.store.fan_out_batch(id, 0, 100).await.unwrap();
    assert_eq!(again, None);
    assert_eq!(app.store().send_counts(id).await.unwrap().total(), 3);
}

/// The table does not check Message-IDs (migration 0007): they are unique by how they are made,
/// and the database refuses the one thing that could repeat them, a send prefix used twice.
async fn every_delivery_has_a_message_id_of_its_own(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for who in ["a@example.org", "b@example.org"] {
        app.confirmed_subscriber(who, &["morning-meditation"]).await;
    }
    let path = app.write_content("morning.md", MORNING);
    let first = app.schedule_now("morning-meditation", &path);
    let second = app.schedule_now("morning-meditation", &path);
    app.wait_for_send_done(first).await;
    app.wait_for_send_done(second).await;

    // Two confirmations and two sends to the same two people.
    let ids: Vec<String> = sqlx::query_scalar("SELECT message_id FROM deliveries")
        .fetch_all(app.store().pool())
        .await
        .unwrap();
    assert_eq!(ids.len(), 6, "{ids:?}");
    let distinct: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), 6, "{ids:?}");

    crate::support::assert_message_ids_come_from_the_outbox(&app, 4).await;

    // The store makes each send's prefix; one made twice would be refused.
    let prefix: String = sqlx::query_scalar("SELECT message_id_prefix FROM sends WHERE id = $1")
        .bind(first)
        .fetch_one(app.store().pool())
        .await
        .unwrap();
    let refused = sqlx::query("UPDATE sends SET message_id_prefix = $1 WHERE id = $2")
        .bind(prefix)
        .bind(second)
        .execute(app.store().pool())
        .await;
    assert!(
        refused.is_err(),
        "a repeated prefix was stored: {refused:?}"
    );
}

async fn content_errors_name_the_file_and_line_at_scheduling_time(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let cases = [
        ("no-subject.md", "---\npreheader: hi\n---\nBody\n", ":3"),
        (
            "bad-key.md",
            "---\nsubject: Hi\nsubjet: typo\n---\nBody\n",
            ":3",
        ),
        (
            "missing-var.md",
            "---\nsubject: Hi\n---\nline one\n\nHello {{nmae}}\n",
            ":6",
        ),
    ];
    for (name, text, line) in cases {
        let path = app.write_content(name, text);
        let out = app.cli(&[
            "schedule",
            "--offering",
            "morning-meditation",
            "--content",
            path.to_str().unwrap(),
            "--now",
        ]);
        assert!(!out.status.success(), "{name} accepted");
        let err = stderr(&out);
        assert!(err.contains(&format!("{name}{line}")), "{name}: {err}");
    }
    let missing = app.cli(&[
        "schedule",
        "--offering",
        "morning-meditation",
        "--content",
        "/nonexistent/file.md",
        "--now",
    ]);
    assert!(!missing.status.success());
    let unknown = app.write_content("ok.md", MORNING);
    let out = app.cli(&[
        "schedule",
        "--offering",
        "no-such-offering",
        "--content",
        unknown.to_str().unwrap(),
        "--now",
    ]);
    assert!(
        stderr(&out).contains("no-such-offering"),
        "{}",
        stderr(&out)
    );
    let past = app.cli(&[
        "schedule",
        "--offering",
        "morning-meditation",
        "--content",
        unknown.to_str().unwrap(),
        "--at",
        "2001-01-01 06:30",
    ]);
    assert!(stderr(&past).contains("in the past"), "{}", stderr(&past));
    assert!(app.store().send_summaries(None).await.unwrap().is_empty());
}

async fn a_send_at_a_later_time_waits_for_its_time(backend: Backend) {
    // 2099-01-01 05:00 UTC; the send is for 06:30 in Berlin (05:30 UTC).
    let clock = Clock::manual(4_070_908_800_000 + 5 * 3_600_000);
    let app = TestApp::spawn_with(
        backend,
        Options {
            clock: clock.clone(),
            ..Options::default()
        },
        |_| {},
    )
    .await;
    app.confirmed_subscriber("early@example.org", &["morning-meditation"])
        .await;
    let path = app.write_content("morning.md", MORNING);
    let out = app.cli(&[
        "schedule",
        "--offering",
        "morning-meditation",
        "--content",
        path.to_str().unwrap(),
        "--at",
        "2099-01-01 06:30",
        "--timezone",
        "Europe/Berlin",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let id: i64 = stdout(&out).trim().parse().unwrap();
    let send = app
        .store()
        .send_summaries(Some(id))
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(
        send.send_at,
        4_070_908_800_000 + 5 * 3_600_000 + 30 * 60_000
    );
    // The scheduler runs every 50 ms; a few of its rounds pass without the send.
    let scheduler = Runtime::open(app.config.clone(), clock.clone())
        .await
        .unwrap()
        .scheduler();
    assert_eq!(scheduler.step().await.unwrap().deliveries_created, 0);
    assert_eq!(app.store().send_counts(id).await.unwrap().total(), 0);
    clock.advance(Duration::from_secs(31 * 60));
    app.wait_for_send_done(id).await;
    assert_eq!(app.store().send_counts(id).await.unwrap().sent, 1);
}

async fn pause_stops_new_claims_resume_continues_and_cancel_ends_the_rest(backend: Backend) {
    let app = TestApp::spawn_without_worker(backend).await;
    let worker = manual_worker(&app, Clock::System).await;
    for i in 0..3 {
        app.signup(&format!("p{i}@example.org"), &["morning-meditation"])
            .await;
    }
    while !worker.step().await.unwrap().is_idle() {}
    for raw in app.outbox() {
        let path = crate::support::confirm_path_in(&raw);
        app.post_form(&path, "").await;
    }
    let path = app.write_content("morning.md", MORNING);
    let first = app.schedule_now("morning-meditation", &path);
    let second = app.schedule_now("morning-meditation", &path);
    let scheduler = Runtime::open(app.config.clone(), Clock::System)
        .await
        .unwrap()
        .scheduler();
    scheduler.step().await.unwrap();
    assert_eq!(app.store().send_counts(first).await.unwrap().pending, 3);

    for id in [first, second] {
        let out = app.cli(&["sends", "pause", &id.to_string()]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert!(
        worker.step().await.unwrap().is_idle(),
        "a paused send is not claimed"
    );
    let show = stdout(&app.cli(&["sends", "show", &first.to_string()]));
    assert!(
        show.contains("paused") && show.contains("pending: 3"),
        "{show}"
    );

    assert!(
        app.cli(&["sends", "resume", &first.to_string()])
            .status
            .success()
    );
    while !worker.step().await.unwrap().is_idle() {}
    assert_eq!(app.store().send_counts(first).await.unwrap().sent, 3);

    assert!(
        app.cli(&["sends", "cancel", &second.to_string()])
            .status
            .success()
    );
    let counts = app.store().send_counts(second).await.unwrap();
    assert_eq!((counts.cancelled, counts.pending), (3, 0));
    assert!(worker.step().await.unwrap().is_idle());
    let again = app.cli(&["sends", "resume", &second.to_string()]);
    assert!(!again.status.success(), "a cancelled send cannot resume");
    scheduler.step().await.unwrap();
    let first = app
        .store()
        .send_summaries(Some(first))
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(first.status, SendStatus::Done);
}

async fn a_person_who_leaves_after_the_fan_out_is_skipped(backend: Backend) {
    let app = TestApp::spawn_without_worker(backend).await;
    let worker = manual_worker(&app, Clock::System).await;
    for who in ["stays@example.org", "leaves@example.org"] {
        app.signup(who, &["morning-meditation"]).await;
    }
    while !worker.step().await.unwrap().is_idle() {}
    for raw in app.outbox() {
        app.post_form(&crate::support::confirm_path_in(&raw), "")
            .await;
    }
    let path = app.write_content("morning.md", MORNING);
    let id = app.schedule_now("morning-meditation", &path);
    let scheduler = Runtime::open(app.config.clone(), Clock::System)
        .await
        .unwrap()
        .scheduler();
    scheduler.step().await.unwrap();
    // Leaves through the link in an earlier email, after the deliveries were created.
    let runtime = Runtime::open(app.config.clone(), Clock::System)
        .await
        .unwrap();
    let rows = app.store().list_subscribers(None, None).await.unwrap();
    let leaver = rows
        .iter()
        .find(|r| r.email == "leaves@example.org")
        .unwrap();
    let offering = app
        .store()
        .offering_by_slug(&sangha::domain::Slug::parse("morning-meditation").unwrap())
        .await
        .unwrap()
        .unwrap();
    let url = runtime
        .links()
        .unwrap()
        .unsubscribe_url(app.link_of(leaver.id).await, offering.id);
    let path = url.trim_start_matches(app.config.base_url());
    let r = app.post_form(path, "List-Unsubscribe=One-Click").await;
    assert_eq!(r.status(), 200);
    while !worker.step().await.unwrap().is_idle() {}
    let counts = app.store().send_counts(id).await.unwrap();
    assert_eq!((counts.sent, counts.skipped), (1, 1), "{counts:?}");
}

async fn preview_renders_for_a_subscriber_and_escapes_what_they_typed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.post_form(
        "/subscribe",
        "email=x%40example.org&name=%3Cscript%3Ealert(1)%3C%2Fscript%3E&offerings=morning-meditation",
    )
    .await;
    let path = app.write_content("morning.md", MORNING);
    let p = path.to_str().unwrap();
    let html = app.cli(&[
        "preview",
        "--content",
        p,
        "--offering",
        "morning-meditation",
        "--subscriber",
        "x@example.org",
    ]);
    assert!(html.status.success(), "{}", stderr(&html));
    let html = stdout(&html);
    assert!(html.contains("Good morning, &lt;script&gt;"), "{html}");
    assert!(!html.contains("<script>alert"), "unescaped name");
    assert!(html.contains("/unsubscribe/"), "visible unsubscribe link");
    let text = stdout(&app.cli(&[
        "preview",
        "--content",
        p,
        "--offering",
        "morning-meditation",
        "--text",
    ]));
    assert!(text.contains("Good morning, friend"), "{text}");
    assert!(text.contains("Unsubscribe with one click: http"), "{text}");
    let eml = app.dir.path().join("preview.eml");
    let out = app.cli(&[
        "preview",
        "--content",
        p,
        "--offering",
        "morning-meditation",
        "--eml",
        eml.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let raw = std::fs::read(&eml).unwrap();
    let m = mail_parser::MessageParser::default().parse(&raw).unwrap();
    assert!(m.header("List-Unsubscribe-Post").is_some());
    let no_offering = app.cli(&["preview", "--content", p]);
    assert!(
        stderr(&no_offering).contains("--offering"),
        "{}",
        stderr(&no_offering)
    );
}

async fn every_line_stays_within_rfc_5322_limits_whatever_the_content(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.post_form(
        "/subscribe",
        &format!(
            "email=long%40example.org&name={}&offerings=morning-meditation",
            "%C5%9A".repeat(90)
        ),
    )
    .await;
    let path = crate::support::confirm_path_in(&app.wait_for_outbox(1).await[0]);
    app.post_form(&path, "").await;
    let long_word = "ॐ".repeat(3000);
    let long_url = format!("https://example.org/{}", "a".repeat(2500));
    let content = format!(
        "---\nsubject: \"{} {{{{name}}}}\"\n---\n{long_word}\n\n[link]({long_url})\n\n<p>{}</p>\n",
        "Śānti ".repeat(40),
        "x".repeat(5000)
    );
    let file = app.write_content("long.md", &content);
    let id = app.schedule_now("morning-meditation", &file);
    app.wait_for_send_done(id).await;
    let raw = app.outbox().pop().unwrap();
    for (i, line) in raw.split(|b| *b == b'\n').enumerate() {
        assert!(line.len() <= 998, "line {i} has {} bytes", line.len());
    }
    let head = raw.split(|b| *b == b'\n').take_while(|l| l.len() > 1);
    for line in head {
        assert!(line.is_ascii(), "header line not ASCII");
    }
    let m = mail_parser::MessageParser::default().parse(&raw).unwrap();
    assert!(m.subject().unwrap().starts_with("Śānti Śānti"));
    assert!(m.body_html(0).unwrap().contains(&long_url));
}

async fn sends_list_and_show_explain_each_send(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.confirmed_subscriber("l@example.org", &["morning-meditation"])
        .await;
    let path = app.write_content("morning.md", MORNING);
    let id = app.schedule_now("morning-meditation", &path);
    app.wait_for_send_done(id).await;
    let list = stdout(&app.cli(&["sends", "list"]));
    let line = list
        .lines()
        .find(|l| l.trim_start().starts_with(&id.to_string()))
        .unwrap();
    assert!(
        line.contains("morning-meditation") && line.contains("done") && line.contains("1/1"),
        "{list}"
    );
    let show = stdout(&app.cli(&["sends", "show", &id.to_string()]));
    assert!(
        show.contains("sent: 1") && show.contains("pending: 0"),
        "{show}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&app.cli(&["sends", "list", "--json"]))).unwrap();
    assert_eq!(json[0]["counts"]["sent"], 1);
    let missing = app.cli(&["sends", "show", "999"]);
    assert!(stderr(&missing).contains("999"));
}

async fn watch_follows_a_send_until_it_is_done(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for who in ["w1@example.org", "w2@example.org"] {
        app.confirmed_subscriber(who, &["morning-meditation"]).await;
    }
    let path = app.write_content("morning.md", MORNING);
    let id = app.schedule_now("morning-meditation", &path).to_string();
    let config = app.config.clone();
    let watch = tokio::task::spawn_blocking(move || {
        crate::support::run_cli(&config, &["sends", "watch", &id])
    });
    let out = tokio::time::timeout(crate::support::DEADLINE, watch)
        .await
        .expect("watch ends when the send is done")
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("done: 2 sent, 0 failed"),
        "{}",
        stdout(&out)
    );
}
