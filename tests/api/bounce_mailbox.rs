//! The bounce mailbox read over IMAP, against a real Dovecot: each message is recorded once,
//! then moved to the processed folder; nothing else is removed or flagged.

use std::time::Duration;

use crate::backend_tests;
use crate::bounces::{delivery_to, fixture, subscribed, suppressed, verp_of};
use crate::sends::MORNING;
use crate::support::imap::{PASSWORD, TestImap, USER};
use crate::support::{Backend, Options, TestApp, eventually_async, run_cli_with, stderr, stdout};

backend_tests!(
    the_mailbox_is_recorded_once_and_only_what_was_recorded_is_moved,
    the_running_service_polls_the_mailbox,
);

/// The environment that points `sangha` at the test Dovecot.
fn imap_env(imap: &TestImap) -> Vec<(&'static str, String)> {
    vec![
        ("SANGHA__BOUNCES__IMAP__HOST", "127.0.0.1".to_owned()),
        ("SANGHA__BOUNCES__IMAP__PORT", imap.port.to_string()),
        ("SANGHA__BOUNCES__IMAP__TLS", "none".to_owned()),
        ("SANGHA__BOUNCES__IMAP__USER", USER.to_owned()),
        ("SANGHA__BOUNCES__IMAP__PASSWORD", PASSWORD.to_owned()),
    ]
}

/// A message as a mail server stores it: CRLF line ends.
fn crlf(text: &str) -> Vec<u8> {
    text.replace("\r\n", "\n")
        .replace('\n', "\r\n")
        .into_bytes()
}

async fn bounces_recorded(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM bounces")
        .fetch_one(app.store().pool())
        .await
        .unwrap()
}

/// The message bodies of `folder`, checking that none was flagged (`\Seen`, `\Deleted`).
async fn unflagged(imap: &TestImap, folder: &str) -> Vec<Vec<u8>> {
    let messages = imap.messages(folder).await;
    for (raw, flags) in &messages {
        // `\Recent` is the server's note to the first session that sees a message, not a flag
        // anyone set.
        let set: Vec<&String> = flags.iter().filter(|f| *f != "Recent").collect();
        assert!(
            set.is_empty(),
            "{folder}: {set:?} on {}",
            String::from_utf8_lossy(&raw[..raw.len().min(200)])
        );
    }
    messages.into_iter().map(|(raw, _)| raw).collect()
}

fn sorted(mut messages: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    messages.sort();
    messages
}

async fn the_mailbox_is_recorded_once_and_only_what_was_recorded_is_moved(backend: Backend) {
    let Some(imap) = TestImap::start().await else {
        return;
    };
    let app = TestApp::spawn_with(backend, Options::default(), |c| {
        c.mail.return_path = Some("bounces@news.example.org".parse().unwrap());
        c.webhooks.postmark = Some(sangha::config::PostmarkWebhook {
            username: "postmark".into(),
            password: sangha::config::Secret::new(crate::webhooks::POSTMARK_PASSWORD),
        });
    })
    .await;
    for email in ["gone@example.com", "away@example.com"] {
        app.confirmed_subscriber(email, &["morning-meditation"])
            .await;
    }
    let path = app.write_content("morning.md", MORNING);
    let send = app.schedule_now("morning-meditation", &path);
    app.wait_for_send_done(send).await;

    // A Postfix DSN returned to the VERP address of the email to gone@, a vacation reply to
    // that of away@, a reader's reply, and something that is no email at all.
    let hard = crlf(&fixture(
        "postfix-dsn-hard.eml",
        &[(
            "bounces+d7f3a9c2e1@news.example.org",
            &verp_of(&app, "gone@example.com", "send").await,
        )],
    ));
    let vacation = crlf(&fixture(
        "vacation-auto-submitted.eml",
        &[(
            "bounces+aa11bb22cc@news.example.org",
            &verp_of(&app, "away@example.com", "send").await,
        )],
    ));
    let human = crlf(&fixture("human-reply.eml", &[]));
    let garbage = crlf("not a message: no header, no blank line, only these words\n");
    let inbox = vec![hard.clone(), vacation, human, garbage];
    for raw in &inbox {
        imap.append("INBOX", raw).await;
    }
    // A folder the poller has no business with.
    let elsewhere = crlf("Subject: keep me\nMessage-ID: <kept@example.com>\n\nhello\n");
    imap.append("Archive", &elsewhere).await;

    let env = imap_env(&imap);
    let poll = |label: &str| {
        let out = run_cli_with(&app.config, &["bounces", "poll"], &env);
        assert!(
            out.status.success(),
            "{label}: {}\n{}",
            stderr(&out),
            imap.log()
        );
        stdout(&out)
    };
    assert_eq!(
        poll("first poll").trim(),
        "4 read, 4 recorded, 0 already known, 0 failed, 4 moved"
    );
    assert!(suppressed(&app, "gone@example.com").await);
    assert!(!subscribed(&app, "gone@example.com").await);
    assert!(subscribed(&app, "away@example.com").await);
    assert!(!suppressed(&app, "away@example.com").await);
    let recorded = bounces_recorded(&app).await;
    assert_eq!(recorded, 4, "one row per message");
    assert!(unflagged(&imap, "INBOX").await.is_empty());
    assert_eq!(
        sorted(unflagged(&imap, "Processed").await),
        sorted(inbox.clone()),
        "every message read is in Processed, as it came"
    );
    assert_eq!(unflagged(&imap, "Archive").await, vec![elsewhere.clone()]);

    // Nothing new: nothing read, nothing recorded.
    assert_eq!(
        poll("second poll").trim(),
        "0 read, 0 recorded, 0 already known, 0 failed, 0 moved"
    );

    // The same report delivered again: moved, but done once only.
    imap.append("INBOX", &hard).await;
    assert_eq!(
        poll("third poll").trim(),
        "1 read, 0 recorded, 1 already known, 0 failed, 1 moved"
    );
    assert_eq!(bounces_recorded(&app).await, recorded);
    assert!(unflagged(&imap, "INBOX").await.is_empty());
    let mut expected = inbox;
    expected.push(hard.clone());
    assert_eq!(
        sorted(unflagged(&imap, "Processed").await),
        sorted(expected)
    );
    assert_eq!(unflagged(&imap, "Archive").await, vec![elsewhere]);

    // The same bounce saved by hand and imported, and reported by the relay's webhook: still
    // done once (one row per delivery and kind, whatever the source).
    let saved = app.dir.path().join("saved.eml");
    std::fs::write(&saved, &hard).unwrap();
    let out = app.cli(&["bounces", "import", saved.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("already recorded; nothing done again"),
        "{}",
        stdout(&out)
    );
    let (gone, _) = delivery_to(&app, "gone@example.com", "send").await;
    crate::webhooks::relay_replied(&app, gone, "250 2.0.0 Ok: queued as pm-gone-1").await;
    let mut event = crate::webhooks::fixture("postmark-bounce.json");
    event["Email"] = serde_json::json!("gone@example.com");
    event["MessageID"] = serde_json::json!("pm-gone-1");
    let (status, answer) = crate::webhooks::post(
        &app,
        "/webhooks/postmark",
        &crate::webhooks::postmark_auth(crate::webhooks::POSTMARK_PASSWORD),
        serde_json::to_vec(&event).unwrap(),
    )
    .await;
    assert_eq!(
        (status, answer),
        (200, serde_json::json!({ "recorded": 0 }))
    );
    assert_eq!(bounces_recorded(&app).await, recorded);

    // A wrong password is an error that names the login, not a panic.
    let mut wrong = imap_env(&imap);
    wrong.retain(|(k, _)| *k != "SANGHA__BOUNCES__IMAP__PASSWORD");
    wrong.push(("SANGHA__BOUNCES__IMAP__PASSWORD", "not-it".to_owned()));
    let out = run_cli_with(&app.config, &["bounces", "poll"], &wrong);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("login as bounces refused"),
        "{}",
        stderr(&out)
    );
}

async fn the_running_service_polls_the_mailbox(backend: Backend) {
    let Some(imap) = TestImap::start().await else {
        return;
    };
    let port = imap.port;
    let app = TestApp::spawn_with(backend, Options::default(), move |c| {
        c.mail.return_path = Some("bounces@news.example.org".parse().unwrap());
        c.bounces.imap.host = "127.0.0.1".to_owned();
        c.bounces.imap.port = port;
        c.bounces.imap.tls = sangha::config::TlsMode::None;
        c.bounces.imap.user = USER.to_owned();
        c.bounces.imap.password = sangha::config::Secret::new(PASSWORD);
        c.bounces.imap.poll_seconds = 1;
    })
    .await;
    imap.append("INBOX", &crlf(&fixture("human-reply.eml", &[])))
        .await;
    let moved = eventually_async(Duration::from_secs(30), || async {
        (imap.messages("Processed").await.len() == 1).then_some(())
    })
    .await;
    assert!(moved.is_some(), "not polled; dovecot log:\n{}", imap.log());
    assert!(imap.messages("INBOX").await.is_empty());
    assert_eq!(bounces_recorded(&app).await, 1);
    app.stop().await;
}
