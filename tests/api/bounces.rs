//! Reports of what happened to sent mail: matched to their delivery (VERP first, then the
//! quoted Message-ID), acted on once (a hard bounce suppresses, a complaint unsubscribes, soft
//! bounces count), counted against their send, and kept for review when nothing matches.

use sangha::app::Runtime;
use sangha::bounces::{Incoming, Notice, Recorder};
use sangha::clock::Clock;
use sangha::domain::{BounceAction, BounceKind, BounceSource, EmailAddress, MatchedBy};
use sangha::store::SendStatus;

use crate::backend_tests;
use crate::sends::MORNING;
use crate::support::{Backend, Options, TestApp, confirm_path_in, stderr, stdout};

backend_tests!(
    each_kind_of_report_does_what_it_should_once_and_an_unmatched_one_is_only_kept,
    bounces_of_a_running_send_count_as_its_failures_and_pause_it,
    a_person_stopped_by_a_bounce_is_told_why_and_comes_back_only_by_confirming_again,
    saved_reports_are_imported_and_each_does_what_it_says_once,
    a_hostile_report_cannot_send_escape_sequences_to_the_owners_terminal,
);

/// The delivery of `kind` (`send` or `confirmation`) to `email`: its id and Message-ID.
pub(crate) async fn delivery_to(app: &TestApp, email: &str, kind: &str) -> (i64, String) {
    sqlx::query_as(
        "SELECT d.id, d.message_id FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id
         WHERE s.email = $1 AND d.kind = $2",
    )
    .bind(email)
    .bind(kind)
    .fetch_one(app.store().pool())
    .await
    .unwrap()
}

/// The VERP address the delivery of `kind` to `email` went out from.
pub(crate) async fn verp_of(app: &TestApp, email: &str, kind: &str) -> String {
    let (id, message_id) = delivery_to(app, email, kind).await;
    let return_path = app.config.mail.return_path.clone().unwrap();
    app.state
        .links()
        .bounce_address(&return_path, id, &message_id)
        .to_string()
}

fn report(
    key: &str,
    envelope_to: Option<String>,
    message_id: Option<String>,
    kind: BounceKind,
) -> Incoming {
    Incoming {
        source: BounceSource::Import,
        report_key: key.to_owned(),
        envelope_to: envelope_to.into_iter().collect(),
        original_message_id: message_id,
        provider_id: None,
        raw: Some(format!("the raw report {key}")),
        notices: vec![Notice {
            kind,
            recipient: Some("someone@example.org".to_owned()),
            status: Some(
                if kind == BounceKind::Soft {
                    "4.2.2"
                } else {
                    "5.1.1"
                }
                .to_owned(),
            ),
            diagnostic: Some("550 5.1.1 user unknown".to_owned()),
        }],
    }
}

fn recorder(app: &TestApp) -> Recorder {
    Recorder::new(
        app.store().clone(),
        app.state.links().clone(),
        app.clock.clone(),
        &app.config,
    )
}

/// Whether `email` is confirmed to any offering.
pub(crate) async fn subscribed(app: &TestApp, email: &str) -> bool {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM subscriptions u JOIN subscribers s ON s.id = u.subscriber_id
         WHERE s.email = $1 AND u.status = 'confirmed'",
    )
    .bind(email)
    .fetch_one(app.store().pool())
    .await
    .unwrap();
    n > 0
}

/// Whether `email` is on the suppression list.
pub(crate) async fn suppressed(app: &TestApp, email: &str) -> bool {
    let hash = app
        .state
        .links()
        .email_hash(&EmailAddress::parse(email).unwrap());
    app.store().is_suppressed(&hash).await.unwrap()
}

async fn each_kind_of_report_does_what_it_should_once_and_an_unmatched_one_is_only_kept(
    backend: Backend,
) {
    let app = TestApp::spawn_with(backend, Options::default(), |c| {
        c.mail.return_path = Some("bounces@example.com".parse().unwrap());
        c.bounces.soft_limit = 2;
    })
    .await;
    let people = [
        "hard@example.org",
        "soft@example.org",
        "complain@example.org",
        "away@example.org",
        "keep@example.org",
    ];
    for email in people {
        app.confirmed_subscriber(email, &["morning-meditation"])
            .await;
    }
    let path = app.write_content("morning.md", MORNING);
    let send = app.schedule_now("morning-meditation", &path);
    app.wait_for_send_done(send).await;
    let recorder = recorder(&app);

    // A hard bounce, by its VERP address: the address is suppressed and leaves everything.
    let hard = report(
        "r1",
        Some(verp_of(&app, "hard@example.org", "send").await),
        None,
        BounceKind::Hard,
    );
    let done = recorder.record(&hard).await.unwrap();
    assert_eq!(done[0].matched_by, Some(MatchedBy::Verp));
    assert_eq!(done[0].action, Some(BounceAction::Suppressed));
    assert!(suppressed(&app, "hard@example.org").await);
    assert!(!subscribed(&app, "hard@example.org").await);
    // The same bounce again, by another way (a webhook, a manual import): nothing twice.
    let mut again = report(
        "another-key",
        None,
        Some(delivery_to(&app, "hard@example.org", "send").await.1),
        BounceKind::Hard,
    );
    again.source = BounceSource::Imap;
    let done = recorder.record(&again).await.unwrap();
    assert_eq!((done[0].id, done[0].action), (None, None), "{done:?}");

    // A complaint, by the quoted Message-ID (angle brackets or not): the person leaves
    // everything, on the record, and the address is suppressed.
    let (_, message_id) = delivery_to(&app, "complain@example.org", "send").await;
    let complaint = report(
        "r2",
        None,
        Some(message_id.trim_matches(['<', '>']).to_owned()),
        BounceKind::Complaint,
    );
    let done = recorder.record(&complaint).await.unwrap();
    assert_eq!(done[0].matched_by, Some(MatchedBy::MessageId));
    assert_eq!(done[0].action, Some(BounceAction::Unsubscribed));
    assert!(suppressed(&app, "complain@example.org").await);
    assert!(!subscribed(&app, "complain@example.org").await);
    let consents: Vec<String> = sqlx::query_scalar(
        "SELECT c.action FROM consents c JOIN subscribers s ON s.id = c.subscriber_id
         WHERE s.email = 'complain@example.org' ORDER BY c.id",
    )
    .fetch_all(app.store().pool())
    .await
    .unwrap();
    assert_eq!(
        consents.last().map(String::as_str),
        Some("unsubscribe"),
        "{consents:?}"
    );

    // Soft bounces count per email: the same one twice is one; a second email's makes two,
    // the limit here, and suppresses.
    let soft_confirmation = verp_of(&app, "soft@example.org", "confirmation").await;
    let done = recorder
        .record(&report(
            "r3",
            Some(soft_confirmation.clone()),
            None,
            BounceKind::Soft,
        ))
        .await
        .unwrap();
    assert_eq!(done[0].action, Some(BounceAction::Counted));
    let done = recorder
        .record(&report(
            "r3-again",
            Some(soft_confirmation),
            None,
            BounceKind::Soft,
        ))
        .await
        .unwrap();
    assert_eq!(done[0].id, None, "the same email's soft bounce counts once");
    assert!(subscribed(&app, "soft@example.org").await);
    let done = recorder
        .record(&report(
            "r4",
            Some(verp_of(&app, "soft@example.org", "send").await),
            None,
            BounceKind::Soft,
        ))
        .await
        .unwrap();
    assert_eq!(done[0].action, Some(BounceAction::Suppressed));
    assert!(suppressed(&app, "soft@example.org").await);
    assert!(!subscribed(&app, "soft@example.org").await);

    // An auto-reply and a delay are recorded and change nothing.
    for (key, kind) in [("r5", BounceKind::AutoReply), ("r6", BounceKind::Delayed)] {
        let done = recorder
            .record(&report(
                key,
                Some(verp_of(&app, "away@example.org", "send").await),
                None,
                kind,
            ))
            .await
            .unwrap();
        assert_eq!(done[0].action, Some(BounceAction::None), "{kind}");
    }
    assert!(subscribed(&app, "away@example.org").await);
    assert!(!suppressed(&app, "away@example.org").await);

    // Unmatched: a forged tag, a tag moved to another delivery, an unknown Message-ID. Kept
    // for review, acting on nothing; the same report twice is kept once.
    let (keep_id, _) = delivery_to(&app, "keep@example.org", "send").await;
    let forged = format!("bounces+{keep_id}-00112233445566778899@example.com");
    let real = verp_of(&app, "away@example.org", "send").await;
    let (away_id, _) = delivery_to(&app, "away@example.org", "send").await;
    let moved = real.replacen(&format!("+{away_id}-"), &format!("+{keep_id}-"), 1);
    for (key, address, message_id) in [
        ("u1", Some(forged), None),
        ("u2", Some(moved), None),
        ("u3", None, Some("<nobody@example.com>".to_owned())),
        ("u4", Some("hello@example.com".to_owned()), None),
    ] {
        let done = recorder
            .record(&report(key, address, message_id, BounceKind::Hard))
            .await
            .unwrap();
        assert_eq!(done[0].matched_by, None, "{key}");
        assert_eq!(done[0].action, Some(BounceAction::Unmatched), "{key}");
        let done = recorder
            .record(&report(key, None, None, BounceKind::Hard))
            .await
            .unwrap();
        assert_eq!(done[0].id, None, "{key} twice is kept once");
    }
    assert!(subscribed(&app, "keep@example.org").await);
    assert!(!suppressed(&app, "keep@example.org").await);

    // Each bounce and complaint of the send is counted against it.
    let counts = app.store().send_bounce_counts(send).await.unwrap();
    assert_eq!((counts.bounced, counts.complained), (2, 1), "{counts:?}");

    // The owner sees them: the list, one report with its text, the person, the send.
    let list = app.cli(&["bounces", "list"]);
    assert!(list.status.success(), "{}", stderr(&list));
    let list = stdout(&list);
    assert_eq!(list.lines().count(), 11, "{list}");
    assert!(
        list.lines().any(|l| l.contains(" import ")
            && l.contains(" hard ")
            && l.contains(" suppressed ")
            && l.contains(" verp ")),
        "{list}"
    );
    assert!(
        list.lines().any(|l| l.contains(" complaint ")
            && l.contains(" unsubscribed ")
            && l.contains(" message_id ")),
        "{list}"
    );
    assert!(list.lines().any(|l| l.contains(" unmatched ")), "{list}");
    let json = app.cli(&["bounces", "list", "--json", "--since", "1d"]);
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 10);
    assert!(
        json[0].get("raw").is_none(),
        "lists never carry the raw reports"
    );
    let none = stdout(&app.cli(&["bounces", "list", "--since", "2999-01-01"]));
    assert_eq!(none.lines().count(), 1, "{none}");
    let bad = app.cli(&["bounces", "list", "--since", "yesterday"]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("a day like 2026-12-01"),
        "{}",
        stderr(&bad)
    );
    let first_id = json.as_array().unwrap().last().unwrap()["id"]
        .as_i64()
        .unwrap();
    let show = stdout(&app.cli(&["bounces", "show", &first_id.to_string()]));
    assert!(show.contains("hard from import"), "{show}");
    assert!(show.contains("(matched by verp), send"), "{show}");
    assert!(show.contains("the raw report r1"), "{show}");
    let missing = app.cli(&["bounces", "show", "999999"]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("there is no report 999999"),
        "{}",
        stderr(&missing)
    );
    let person = stdout(&app.cli(&["subscribers", "show", "soft@example.org"]));
    assert!(person.contains("bounces and complaints:"), "{person}");
    assert_eq!(person.matches(" soft ").count(), 2, "{person}");
    let shown = stdout(&app.cli(&["sends", "show", &send.to_string()]));
    assert!(
        shown.contains("reported later: bounced: 2  complained: 1"),
        "{shown}"
    );

    // Raw reports are forgotten after keep_days; what was parsed stays.
    let listed = app.store().bounces_since(0, 100).await.unwrap();
    assert_eq!(listed.len(), 10, "{listed:#?}");
    let first = app
        .store()
        .bounce(listed.last().unwrap().id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.raw.as_deref(), Some("the raw report r1"));
    let now = app.clock.now_ms();
    let later = Recorder::new(
        app.store().clone(),
        app.state.links().clone(),
        Clock::manual(now + 29 * 86_400_000),
        &app.config,
    );
    assert_eq!(
        later.forget_old_reports(30).await.unwrap(),
        0,
        "within keep_days"
    );
    // The scheduler forgets them as time passes.
    let later_clock = Clock::manual(now + 31 * 86_400_000);
    let later = Runtime::open(app.config.clone(), later_clock.clone())
        .await
        .unwrap();
    // One scheduler, as `serve` runs one.
    let scheduler = later.scheduler();
    scheduler.step().await.unwrap();
    let first = app.store().bounce(first.id).await.unwrap().unwrap();
    assert_eq!(first.raw, None);
    // It looks once an hour, not at every step: a report already old enough is forgotten at
    // the next look.
    let late = recorder
        .record(&report("r-late", None, None, BounceKind::Hard))
        .await
        .unwrap()[0]
        .id
        .unwrap();
    scheduler.step().await.unwrap();
    let store = app.store().clone();
    let raw = |id| {
        let store = store.clone();
        async move { store.bounce(id).await.unwrap().unwrap().raw }
    };
    assert_eq!(raw(late).await.as_deref(), Some("the raw report r-late"));
    later_clock.advance(std::time::Duration::from_secs(3600));
    scheduler.step().await.unwrap();
    assert_eq!(raw(late).await, None);
    assert_eq!(
        (first.kind, first.status.as_deref()),
        (BounceKind::Hard, Some("5.1.1"))
    );
}

async fn bounces_of_a_running_send_count_as_its_failures_and_pause_it(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        Options {
            worker: false,
            ..Options::default()
        },
        |c| {
            c.worker.batch_size = 2;
            c.worker.concurrency = 2;
            c.worker.pause_after_failures = 2;
            c.worker.pause_failure_percent = 50;
        },
    )
    .await;
    let runtime = Runtime::open(app.config.clone(), Clock::System)
        .await
        .unwrap();
    let worker = runtime
        .worker(runtime.templates().unwrap(), runtime.links().unwrap())
        .unwrap();
    for i in 0..4 {
        app.signup(&format!("p{i}@example.org"), &["morning-meditation"])
            .await;
    }
    while !worker.step().await.unwrap().is_idle() {}
    for raw in app.outbox() {
        app.post_form(&confirm_path_in(&raw), "").await;
    }
    let path = app.write_content("morning.md", MORNING);
    let send = app.schedule_now("morning-meditation", &path);
    runtime.scheduler().step().await.unwrap();
    worker.step().await.unwrap();
    let counts = app.store().send_counts(send).await.unwrap();
    assert_eq!((counts.sent, counts.pending), (2, 2), "{counts:?}");

    let sent: Vec<String> = sqlx::query_scalar(
        "SELECT message_id FROM deliveries WHERE send_id = $1 AND status = 'sent'",
    )
    .bind(send)
    .fetch_all(app.store().pool())
    .await
    .unwrap();
    let recorder = recorder(&app);
    let done = recorder
        .record(&report("b1", None, Some(sent[0].clone()), BounceKind::Hard))
        .await
        .unwrap();
    assert_eq!(done[0].action, Some(BounceAction::Suppressed));
    let status = |app: &TestApp| {
        let store = app.store().clone();
        async move { store.send_summaries(Some(send)).await.unwrap()[0].status }
    };
    assert_eq!(
        status(&app).await,
        SendStatus::Sending,
        "one bounce is under the minimum of 2"
    );
    recorder
        .record(&report("b2", None, Some(sent[1].clone()), BounceKind::Hard))
        .await
        .unwrap();
    let show = app.cli(&["sends", "show", &send.to_string()]);
    assert!(show.status.success(), "{}", stderr(&show));
    assert!(
        stdout(&show).contains("2 of 2 deliveries failed or bounced"),
        "{}",
        stdout(&show)
    );
    assert_eq!(status(&app).await, SendStatus::Paused);
}

async fn a_person_stopped_by_a_bounce_is_told_why_and_comes_back_only_by_confirming_again(
    backend: Backend,
) {
    let clock = Clock::manual(1_800_000_000_000);
    let app = TestApp::spawn_with(
        backend,
        Options {
            clock: clock.clone(),
            ..Options::default()
        },
        |_| {},
    )
    .await;
    app.confirmed_subscriber("back@example.org", &["morning-meditation"])
        .await;
    // The bounce comes a day later, past the cooldown between two confirmation emails.
    clock.advance(std::time::Duration::from_secs(86_400));
    let (_, message_id) = delivery_to(&app, "back@example.org", "confirmation").await;
    let done = recorder(&app)
        .record(&report("p1", None, Some(message_id), BounceKind::Hard))
        .await
        .unwrap();
    assert_eq!(done[0].action, Some(BounceAction::Suppressed));
    let id: i64 = sqlx::query_scalar("SELECT id FROM subscribers WHERE email = 'back@example.org'")
        .fetch_one(app.store().pool())
        .await
        .unwrap();
    let token = app.state.links().preferences_token(app.link_of(id).await);
    let page = app
        .get(&format!("/preferences/{token}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("your mail server told us this address could not receive"),
        "{page}"
    );

    // Choosing the offering again sends a confirmation; nothing starts before it is clicked.
    let before = app.outbox().len();
    let r = app
        .post_form(
            &format!("/preferences/{token}"),
            "offerings=morning-meditation&name=&timezone=",
        )
        .await;
    assert_eq!(r.status(), reqwest::StatusCode::SEE_OTHER);
    assert_eq!(
        r.headers()["location"].to_str().unwrap(),
        format!("/preferences/{token}?saved=confirm")
    );
    assert!(!subscribed(&app, "back@example.org").await);
    assert!(suppressed(&app, "back@example.org").await);
    let page = app
        .get(&format!("/preferences/{token}?saved=confirm"))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("We sent you an email"), "{page}");
    let outbox = app.wait_for_outbox(before + 1).await;
    let r = app
        .post_form(&confirm_path_in(outbox.last().unwrap()), "")
        .await;
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    assert!(subscribed(&app, "back@example.org").await);
    assert!(
        !suppressed(&app, "back@example.org").await,
        "the new confirmation lifts it"
    );
    let page = app
        .get(&format!("/preferences/{token}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(!page.contains("We stopped sending"), "{page}");
}

/// A fixture of `tests/fixtures/bounces/` with its addresses and Message-IDs made ours.
pub(crate) fn fixture(name: &str, replace: &[(&str, &str)]) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/bounces/");
    let mut text = std::fs::read_to_string(format!("{path}{name}")).unwrap();
    for (from, to) in replace {
        assert!(text.contains(from), "{from} in {name}");
        text = text.replace(from, to);
    }
    text
}

/// Anyone can mail the bounce mailbox: a report's text, its diagnostic and its recipient
/// reach the owner's terminal with their control characters shown, never sent.
async fn a_hostile_report_cannot_send_escape_sequences_to_the_owners_terminal(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let file = app.dir.path().join("hostile.eml");
    std::fs::write(
        &file,
        "From: MAILER-DAEMON@example.net\r\nTo: bounces@news.example.org\r\n\
         Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <hostile@example.net>\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: text/plain\r\n\r\nclear \x1b[2J the screen\x07\r\n\
         --b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n\r\n\
         Final-Recipient: rfc822; x\x1b[31m@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n\
         Diagnostic-Code: smtp; 550 \x1b]0;owned\x07 no such user\r\n--b--\r\n",
    )
    .unwrap();
    let out = app.cli(&["bounces", "import", file.to_str().unwrap()]);
    let mut printed = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = app.store().bounces_since(0, 10).await.unwrap()[0].id;
    let show = app.cli(&["bounces", "show", &id.to_string()]);
    printed.push_str(&stdout(&show));
    printed.push_str(&stdout(&app.cli(&["bounces", "list"])));
    assert!(printed.contains("\\u{1b}"), "{printed}");
    assert!(
        !printed
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t'),
        "a control character reached the terminal: {printed:?}"
    );
}

async fn saved_reports_are_imported_and_each_does_what_it_says_once(backend: Backend) {
    let app = TestApp::spawn_with(backend, Options::default(), |c| {
        c.mail.return_path = Some("bounces@news.example.org".parse().unwrap());
    })
    .await;
    for email in ["gone@example.com", "reader@example.com", "away@example.com"] {
        app.confirmed_subscriber(email, &["morning-meditation"])
            .await;
    }
    let path = app.write_content("morning.md", MORNING);
    let send = app.schedule_now("morning-meditation", &path);
    app.wait_for_send_done(send).await;
    let dir = app.dir.path().join("reports");
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: String| {
        let file = dir.join(name);
        std::fs::write(&file, text).unwrap();
        file.to_str().unwrap().to_owned()
    };
    // A Postfix DSN, returned to the VERP address of the email to gone@.
    let hard = write(
        "hard.eml",
        fixture(
            "postfix-dsn-hard.eml",
            &[(
                "bounces+d7f3a9c2e1@news.example.org",
                &verp_of(&app, "gone@example.com", "send").await,
            )],
        ),
    );
    // A complaint (RFC 5965) about the email to reader@, known by its Message-ID only.
    let (_, reader_id) = delivery_to(&app, "reader@example.com", "send").await;
    let complaint = write(
        "complaint.eml",
        fixture(
            "arf-rfc5965.eml",
            &[
                ("<4f2a9c0b1e7d3a5c8b21.52@news.example.org>", &reader_id),
                (
                    "bounces+3e4f5a6b7c@news.example.org",
                    "bounces@news.example.org",
                ),
            ],
        ),
    );
    // A vacation reply that came back to the VERP address of the email to away@.
    let vacation = write(
        "vacation.eml",
        fixture(
            "vacation-auto-submitted.eml",
            &[(
                "bounces+aa11bb22cc@news.example.org",
                &verp_of(&app, "away@example.com", "send").await,
            )],
        ),
    );
    let human = write("human.eml", fixture("human-reply.eml", &[]));
    let missing = dir.join("missing.eml");
    let out = app.cli(&[
        "bounces",
        "import",
        &hard,
        &complaint,
        missing.to_str().unwrap(),
        &vacation,
        &human,
    ]);
    let text = stdout(&out);
    assert!(
        !out.status.success(),
        "an unreadable file fails the command: {text}"
    );
    assert!(
        stderr(&out).contains("1 file(s) could not be read; the others were recorded"),
        "{}",
        stderr(&out)
    );
    assert!(text.contains("missing.eml: cannot read it"), "{text}");
    assert!(
        text.contains("hard.eml: hard of gone@example.com: suppressed (matched by verp"),
        "{text}"
    );
    assert!(
        text.contains(
            "complaint.eml: complaint of reader@example.com: unsubscribed (matched by message_id"
        ),
        "{text}"
    );
    assert!(text.contains("vacation.eml: auto_reply of"), "{text}");
    assert!(text.contains(": none (matched by verp"), "{text}");
    assert!(
        text.contains("human.eml: unknown of someone: matches no email of ours; kept as report"),
        "{text}"
    );
    assert!(suppressed(&app, "gone@example.com").await);
    assert!(!subscribed(&app, "gone@example.com").await);
    assert!(suppressed(&app, "reader@example.com").await);
    assert!(!subscribed(&app, "reader@example.com").await);
    assert!(subscribed(&app, "away@example.com").await);
    assert!(!suppressed(&app, "away@example.com").await);

    // The same reports again, one of them saved with other line endings: nothing twice.
    let crlf = write(
        "hard-crlf.eml",
        std::fs::read_to_string(&hard)
            .unwrap()
            .replace('\n', "\r\n"),
    );
    let out = app.cli(&[
        "bounces", "import", &hard, &crlf, &complaint, &vacation, &human,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(
        text.matches("already recorded; nothing done again").count(),
        5,
        "{text}"
    );
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM bounces")
        .fetch_one(app.store().pool())
        .await
        .unwrap();
    assert_eq!(n, 4);
}
