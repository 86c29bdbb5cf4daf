//! The public archive (`archive = true`; the committed config.toml sets it on
//! guided-meditations): the list, its pages, one email as a web page with no one's details,
//! the Atom feed read by an independent parser (Python's feedparser), the "read on the web"
//! link in each campaign email, and conditional GETs.

use std::process::Command;

use reqwest::StatusCode;
use reqwest::header::{ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
use sangha::domain::Slug;
use sangha::store::NewSend;

use crate::backend_tests;
use crate::support::{Backend, TestApp, eventually, link_path_in, stderr, stdout, urlencode};

backend_tests!(
    the_archive_lists_started_sends_newest_first_a_page_at_a_time,
    private_unstarted_and_other_offerings_sends_never_appear,
    an_archived_email_links_to_its_page_which_names_no_one_and_a_private_one_does_not,
    pages_and_the_feed_answer_304_while_the_clients_copy_is_current,
    the_atom_feed_is_valid_by_feedparser_with_the_sends_as_entries,
);

const ARCHIVED: &str = "guided-meditations";

/// A day in 2026, as milliseconds: sends in these tests go out on consecutive days after it.
const DAY0: i64 = 1_780_000_000_000;
const DAY: i64 = 86_400_000;

/// Stores a send of `offering` due `send_at` (not started).
async fn stored_send(app: &TestApp, offering: &str, subject: &str, send_at: i64) -> i64 {
    stored(app, offering, subject, send_at, false).await
}

async fn stored(app: &TestApp, offering: &str, subject: &str, send_at: i64, private: bool) -> i64 {
    let offering = app
        .store()
        .offering_by_slug(&Slug::parse(offering).unwrap())
        .await
        .unwrap()
        .expect("a configured offering");
    let send = NewSend {
        offering_id: offering.id,
        subject: subject.to_owned(),
        preheader: Some(format!("About {subject}")),
        html_template: "<p>Dear {{name}}, breathe in.</p>".to_owned(),
        text_template: "Dear {{name}}, breathe in.".to_owned(),
        source_path: "test.md".to_owned(),
        send_at,
        local: None,
        send_late: false,
        recurrence_id: None,
        content_file: None,
        private,
    };
    app.store().create_send(&send, send_at).await.unwrap()
}

/// Starts a stored send as the scheduler does: its fan-out (to nobody here) runs to its end.
async fn start(app: &TestApp, id: i64) {
    while app
        .store()
        .fan_out_batch(id, DAY0, 100)
        .await
        .unwrap()
        .is_some()
    {}
}

async fn started_send(app: &TestApp, offering: &str, subject: &str, send_at: i64) -> i64 {
    let id = stored_send(app, offering, subject, send_at).await;
    start(app, id).await;
    id
}

/// The status and body of a GET, with the `=` handlebars escapes in attributes unescaped.
async fn text(app: &TestApp, path: &str) -> (StatusCode, String) {
    let r = app.get(path).await;
    (r.status(), r.text().await.unwrap().replace("&#x3D;", "="))
}

/// The subjects listed on an archive page, in order.
fn listed_subjects(page: &str) -> Vec<String> {
    page.split("<li><a href=\"")
        .skip(1)
        .filter_map(|item| {
            let (_, rest) = item.split_once("\">")?;
            Some(rest.split_once("</a>")?.0.to_owned())
        })
        .collect()
}

async fn the_archive_lists_started_sends_newest_first_a_page_at_a_time(backend: Backend) {
    let app = TestApp::spawn_without_worker(backend).await;
    for day in 0..23 {
        started_send(&app, ARCHIVED, &format!("Day {day:02}"), DAY0 + day * DAY).await;
    }

    let (status, index) = text(&app, "/archive").await;
    assert_eq!(status, StatusCode::OK);
    assert!(index.contains("Guided Meditations"), "{index}");
    assert!(
        index.contains(&format!("/archive/{ARCHIVED}/feed.xml")),
        "{index}"
    );
    assert!(
        !index.contains("Morning Meditation") && !index.contains("Orgasmic Queen"),
        "only the offerings with an archive are listed: {index}"
    );

    let (status, first) = text(&app, &format!("/archive/{ARCHIVED}")).await;
    assert_eq!(status, StatusCode::OK);
    let expected: Vec<String> = (3..23).rev().map(|d| format!("Day {d:02}")).collect();
    assert_eq!(listed_subjects(&first), expected, "newest first, 20 a page");
    assert!(first.contains(&format!("/archive/{ARCHIVED}?page=2\" rel=\"next\"")));
    assert!(!first.contains("rel=\"prev\""), "{first}");

    let (status, second) = text(&app, &format!("/archive/{ARCHIVED}?page=2")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed_subjects(&second), ["Day 02", "Day 01", "Day 00"]);
    assert!(second.contains(&format!("/archive/{ARCHIVED}\" rel=\"prev\"")));
    assert!(!second.contains("rel=\"next\""), "{second}");

    for past_the_end in ["?page=3", "?page=0", "?page=two", "?page=-1"] {
        let (status, page) = text(&app, &format!("/archive/{ARCHIVED}{past_the_end}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{past_the_end}");
        assert!(page.contains("There is nothing at this address."), "{page}");
    }
}

async fn private_unstarted_and_other_offerings_sends_never_appear(backend: Backend) {
    let app = TestApp::spawn_without_worker(backend).await;
    let public = started_send(&app, ARCHIVED, "Shown", DAY0).await;
    let private = stored(&app, ARCHIVED, "Private", DAY0 + DAY, true).await;
    start(&app, private).await;
    let scheduled = stored_send(&app, ARCHIVED, "Scheduled", DAY0 + 2 * DAY).await;
    let paused_before_start = stored_send(&app, ARCHIVED, "Paused early", DAY0 + 3 * DAY).await;
    assert!(
        app.store()
            .pause_send(paused_before_start, "t")
            .await
            .unwrap()
    );
    let cancelled_before_start = stored_send(&app, ARCHIVED, "Cancelled", DAY0 + 4 * DAY).await;
    assert!(
        app.store()
            .cancel_send(cancelled_before_start, DAY0)
            .await
            .unwrap()
    );
    let paused_while_sending = started_send(&app, ARCHIVED, "Paused late", DAY0 + 5 * DAY).await;
    assert!(
        app.store()
            .pause_send(paused_while_sending, "t")
            .await
            .unwrap()
    );
    let cancelled_while_sending = started_send(&app, ARCHIVED, "Withdrawn", DAY0 + 6 * DAY).await;
    assert!(
        app.store()
            .cancel_send(cancelled_while_sending, DAY0)
            .await
            .unwrap()
    );
    let elsewhere = started_send(&app, "morning-meditation", "Not archived", DAY0).await;

    let (_, list) = text(&app, &format!("/archive/{ARCHIVED}")).await;
    assert_eq!(listed_subjects(&list), ["Paused late", "Shown"], "{list}");
    let (_, feed) = text(&app, &format!("/archive/{ARCHIVED}/feed.xml")).await;
    for id in [public, paused_while_sending] {
        let (status, _) = text(&app, &format!("/archive/{ARCHIVED}/{id}")).await;
        assert_eq!(status, StatusCode::OK, "send {id}");
        assert!(
            feed.contains(&format!("/archive/{ARCHIVED}/{id}<")),
            "{feed}"
        );
    }
    for id in [
        private,
        scheduled,
        paused_before_start,
        cancelled_before_start,
        elsewhere,
    ] {
        let (status, page) = text(&app, &format!("/archive/{ARCHIVED}/{id}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "send {id}: {page}");
        assert!(page.contains("There is nothing at this address."), "{page}");
        assert!(
            !feed.contains(&format!("/archive/{ARCHIVED}/{id}<")),
            "{feed}"
        );
    }
    for subject in [
        "Private",
        "Scheduled",
        "Paused early",
        "Cancelled",
        "Not archived",
    ] {
        assert!(!feed.contains(subject), "{subject} in {feed}");
    }
    // Offerings without an archive (a newsletter without it, a course, none), and addresses
    // that name nothing: the same 404 page.
    for path in [
        "/archive/morning-meditation".to_owned(),
        format!("/archive/morning-meditation/{elsewhere}"),
        "/archive/morning-meditation/feed.xml".to_owned(),
        "/archive/orgasmic-queen".to_owned(),
        "/archive/orgasmic-queen/feed.xml".to_owned(),
        "/archive/no-such-offering".to_owned(),
        "/archive/Not%20A%20Slug/1".to_owned(),
        format!("/archive/{ARCHIVED}/999999"),
        format!("/archive/{ARCHIVED}/seven"),
        format!("/archive/{ARCHIVED}/99999999999999999999999"),
    ] {
        let r = app.get(&path).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        let page = r.text().await.unwrap();
        assert!(
            page.contains("There is nothing at this address."),
            "{path}: {page}"
        );
    }
}

/// The "read on the web" link in the text part of a message, if any.
fn web_link(raw: &[u8]) -> Option<String> {
    let message = mail_parser::MessageParser::default().parse(raw).unwrap();
    let text = message.body_text(0).unwrap().into_owned();
    let (_, rest) = text.split_once("Read it on the web: ")?;
    Some(rest.split_whitespace().next()?.to_owned())
}

/// The HTML part of a message.
fn html_part(raw: &[u8]) -> String {
    let message = mail_parser::MessageParser::default().parse(raw).unwrap();
    message.body_html(0).unwrap().into_owned()
}

const CONTENT: &str = "---\n\
subject: \"Breath & <stillness>, for {{name}}\"\n\
---\n\
Dear {{name}} ({{email}}),\n\
\n\
Sit and breathe: this is **{{offering.name}}** for {{date}}.\n\
\n\
[Leave]({{unsubscribe_url}}) or [choose]({{preferences_url}}).\n";

async fn an_archived_email_links_to_its_page_which_names_no_one_and_a_private_one_does_not(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let (name, email) = ("Parvati Moonwhisper", "parvati.moon@example.org");
    let r = app
        .post_form(
            "/subscribe",
            &format!(
                "email={}&name={}&offerings={ARCHIVED}",
                urlencode(email),
                urlencode(name)
            ),
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let confirmation = app.wait_for_outbox(1).await.remove(0);
    let confirm = crate::support::confirm_path_in(&confirmation);
    assert_eq!(app.post_form(&confirm, "").await.status(), StatusCode::OK);

    let path = app.write_content("breath.md", CONTENT);
    let id = app.schedule_now(ARCHIVED, &path);
    app.wait_for_send_done(id).await;
    let raw = app.wait_for_outbox(2).await.remove(1);
    let raw_text = String::from_utf8_lossy(&raw).into_owned();
    assert!(raw_text.contains(name), "the email itself is personal");

    let url = web_link(&raw).expect("a read-on-the-web link in the text part");
    assert_eq!(
        url,
        format!("{}/archive/{ARCHIVED}/{id}", app.config.server.base_url)
    );
    let html = html_part(&raw);
    assert!(
        html.contains(&format!("<a href=\"{url}\"")) && html.contains("Read it on the web"),
        "{html}"
    );

    let page_path = url.strip_prefix(&app.config.server.base_url).unwrap();
    let (status, page) = text(&app, page_path).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("Dear friend ()"),
        "rendered for no one: {page}"
    );
    assert!(
        page.contains("<strong>Guided Meditations</strong>"),
        "{page}"
    );
    // Escaped as the email escapes it.
    assert!(
        page.contains("<h1>Breath &amp; &lt;stillness&gt;, for friend</h1>"),
        "{page}"
    );
    assert!(page.contains(&format!("{}/subscribe", app.config.server.base_url)));
    let unsubscribe = link_path_in(&raw, "/unsubscribe/");
    let preferences = link_path_in(&raw, "/preferences/");
    let confirm_token = confirm.trim_start_matches("/confirm/");
    let message_id = raw_text
        .lines()
        .find_map(|l| l.strip_prefix("Message-ID: "))
        .expect("a Message-ID")
        .trim_matches(['<', '>', '\r']);
    for personal in [
        name,
        "Parvati",
        email,
        "parvati.moon",
        unsubscribe.trim_start_matches("/unsubscribe/"),
        preferences.trim_start_matches("/preferences/"),
        confirm_token,
        message_id,
        "/unsubscribe/",
        "/preferences/",
    ] {
        assert!(
            !page.contains(personal),
            "the page shows `{personal}`: {page}"
        );
    }

    // A private send of the same offering: no link in the email, and no page.
    let private = app.write_content("private.md", "---\nsubject: Only for you\n---\nHush.\n");
    let out = app.cli(&[
        "schedule",
        "--offering",
        ARCHIVED,
        "--content",
        private.to_str().unwrap(),
        "--now",
        "--private",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let private_id: i64 = stdout(&out).trim().parse().unwrap();
    app.wait_for_send_done(private_id).await;
    let raw = eventually(crate::support::DEADLINE, || {
        app.outbox()
            .into_iter()
            .find(|m| String::from_utf8_lossy(m).contains("Only for you"))
    })
    .await
    .expect("the private send's email");
    assert_eq!(web_link(&raw), None);
    let raw_text = String::from_utf8_lossy(&raw);
    assert!(!raw_text.contains("/archive/"), "{raw_text}");
    assert!(!html_part(&raw).contains("Read it on the web"));
    let (status, _) = text(&app, &format!("/archive/{ARCHIVED}/{private_id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // An offering without an archive: no link either.
    app.confirmed_subscriber("m@example.org", &["morning-meditation"])
        .await;
    let morning = app.write_content("m.md", "---\nsubject: Morning light\n---\nRise.\n");
    let morning_id = app.schedule_now("morning-meditation", &morning);
    app.wait_for_send_done(morning_id).await;
    let raw = eventually(crate::support::DEADLINE, || {
        app.outbox()
            .into_iter()
            .find(|m| String::from_utf8_lossy(m).contains("Morning light"))
    })
    .await
    .expect("the morning email");
    assert_eq!(web_link(&raw), None);
}

async fn pages_and_the_feed_answer_304_while_the_clients_copy_is_current(backend: Backend) {
    let app = TestApp::spawn_without_worker(backend).await;
    let first = started_send(&app, ARCHIVED, "First", DAY0).await;
    let paths = [
        "/archive".to_owned(),
        format!("/archive/{ARCHIVED}"),
        format!("/archive/{ARCHIVED}/{first}"),
        format!("/archive/{ARCHIVED}/feed.xml"),
    ];
    let mut etags = Vec::new();
    for path in &paths {
        let r = app.get(path).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let etag = r.headers()[ETAG].to_str().unwrap().to_owned();
        let modified = r.headers()[LAST_MODIFIED].to_str().unwrap().to_owned();
        assert_eq!(
            modified, "Thu, 28 May 2026 20:26:40 GMT",
            "{path}: the send's time"
        );

        let again = |header, value: &str| {
            app.http
                .get(app.url(path))
                .header(header, value.to_owned())
                .send()
        };
        let r = again(IF_NONE_MATCH, &etag).await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED, "{path}");
        assert_eq!(r.headers()[ETAG].to_str().unwrap(), etag);
        assert!(r.text().await.unwrap().is_empty());
        let r = again(IF_NONE_MATCH, &format!("\"other\", W/{etag}"))
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::NOT_MODIFIED,
            "{path}: a list, weakly"
        );
        let r = again(IF_NONE_MATCH, "\"other\"").await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert!(!r.text().await.unwrap().is_empty());

        let r = again(IF_MODIFIED_SINCE, &modified).await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED, "{path}");
        let r = again(IF_MODIFIED_SINCE, "Wed, 27 May 2026 20:26:40 GMT")
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "{path}: changed since the day before"
        );
        // If-None-Match wins over If-Modified-Since.
        let r = app
            .http
            .get(app.url(path))
            .header(IF_NONE_MATCH, "\"other\"")
            .header(IF_MODIFIED_SINCE, &modified)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        etags.push(etag);
    }

    // A new send: the lists and the feed change, the first send's page does not.
    started_send(&app, ARCHIVED, "Second", DAY0 + DAY).await;
    for (path, etag) in paths.iter().zip(&etags) {
        let r = app
            .http
            .get(app.url(path))
            .header(IF_NONE_MATCH, etag)
            .send()
            .await
            .unwrap();
        let expected = if path.ends_with(&first.to_string()) {
            StatusCode::NOT_MODIFIED
        } else {
            StatusCode::OK
        };
        assert_eq!(r.status(), expected, "{path}");
        if expected == StatusCode::OK {
            assert_eq!(
                r.headers()[LAST_MODIFIED].to_str().unwrap(),
                "Fri, 29 May 2026 20:26:40 GMT",
                "{path}"
            );
        }
    }
}

/// The Python with feedparser, or `None` (the test is skipped with a notice) unless
/// `SANGHA_TEST_REQUIRE_FEEDPARSER=1` (as in `.ci/run`) makes its absence a failure.
fn python_with_feedparser() -> Option<&'static str> {
    for python in ["python3", "/usr/bin/python3"] {
        let found = Command::new(python)
            .args(["-c", "import feedparser"])
            .output()
            .is_ok_and(|o| o.status.success());
        if found {
            return Some(python);
        }
    }
    if std::env::var("SANGHA_TEST_REQUIRE_FEEDPARSER").as_deref() == Ok("1") {
        panic!(
            "SANGHA_TEST_REQUIRE_FEEDPARSER=1 but feedparser is missing (pip install feedparser)"
        );
    }
    eprintln!("feedparser is missing (pip install feedparser): skipping the feed validation");
    None
}

/// What feedparser reads from `feed`, as JSON.
const READ_FEED: &str = r#"
import json, sys
import feedparser
d = feedparser.parse(open(sys.argv[1], "rb").read())
print(json.dumps({
    "bozo": int(d.bozo),
    "error": str(d.get("bozo_exception", "")),
    "version": d.version,
    "title": d.feed.get("title"),
    "self": [l.href for l in d.feed.get("links", []) if l.rel == "self"],
    "entries": [{
        "title": e.title,
        "link": e.link,
        "id": e.id,
        "updated": e.updated,
        "content": e.content[0].value if e.get("content") else "",
    } for e in d.entries],
}))
"#;

async fn the_atom_feed_is_valid_by_feedparser_with_the_sends_as_entries(backend: Backend) {
    let Some(python) = python_with_feedparser() else {
        return;
    };
    let app = TestApp::spawn_without_worker(backend).await;
    let first = started_send(&app, ARCHIVED, "Breath & <stillness>", DAY0).await;
    let private = stored(&app, ARCHIVED, "Hidden", DAY0 + DAY, true).await;
    start(&app, private).await;
    let second = started_send(&app, ARCHIVED, "Second light", DAY0 + 2 * DAY).await;
    let base = &app.config.server.base_url;

    for feed_path in ["feed.xml", "feed.atom"] {
        let r = app.get(&format!("/archive/{ARCHIVED}/{feed_path}")).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers()["content-type"].to_str().unwrap(),
            "application/atom+xml; charset=utf-8"
        );
        let body = r.bytes().await.unwrap();
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &body).unwrap();
        let out = Command::new(python)
            .args(["-c", READ_FEED])
            .arg(file.path())
            .output()
            .expect("run feedparser");
        assert!(out.status.success(), "{}", stderr(&out));
        let parsed: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(
            parsed["bozo"],
            0,
            "{parsed}\n{}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(parsed["version"], "atom10", "{parsed}");
        assert_eq!(
            parsed["title"], "Guided Meditations · Shakti Temple",
            "{parsed}"
        );
        assert_eq!(
            parsed["self"][0],
            format!("{base}/archive/{ARCHIVED}/feed.xml"),
            "{parsed}"
        );
        let entries = parsed["entries"].as_array().unwrap();
        let titles: Vec<&str> = entries
            .iter()
            .map(|e| e["title"].as_str().unwrap())
            .collect();
        assert_eq!(titles, ["Second light", "Breath & <stillness>"], "{parsed}");
        for (entry, id) in entries.iter().zip([second, first]) {
            let url = format!("{base}/archive/{ARCHIVED}/{id}");
            assert_eq!(entry["link"], url, "{entry}");
            assert_eq!(entry["id"], url, "{entry}");
            let content = entry["content"].as_str().unwrap();
            assert!(content.contains("Dear friend, breathe in."), "{entry}");
        }
        assert_eq!(
            entries[1]["updated"], "2026-05-28T20:26:40+00:00",
            "{parsed}"
        );
    }
}
