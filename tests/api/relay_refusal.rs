//! A relay that refuses our credentials (issue 14): one failed login, not one per message;
//! the owner is told in `sends show`; after the fix, `sends retry` sends what failed.

use std::time::{Duration, Instant};

use sangha::config::{Config, Secret, TlsMode, TransportKind};
use sangha::store::SendStatus;

use crate::backend_tests;
use crate::faults::{copies, import_confirmed, people, schedule_now, summary};
use crate::support::smtp::TestSmtpServer;
use crate::support::{Backend, DEADLINE, Options, TestApp, stderr, stdout};

backend_tests!(
    a_wrong_password_is_one_failed_login_and_sends_retry_sends_the_rest_after_the_fix,
    sends_retry_failed_puts_back_every_failed_delivery,
    sends_retry_refuses_what_cannot_be_retried,
);

const RECIPIENTS: usize = 30;

fn relay(port: u16, password: &'static str) -> impl FnOnce(&mut Config) {
    move |c| {
        c.mail.transport = TransportKind::Smtp;
        c.smtp.host = "127.0.0.1".into();
        c.smtp.port = port;
        c.smtp.tls = TlsMode::None;
        c.smtp.pool_size = 4;
        c.smtp.username = "sangha".into();
        c.smtp.password = Secret::new(password);
        // The first failure is final, so the retry of a failed delivery is shown too.
        c.worker.max_attempts = 1;
    }
}

async fn poll<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "not within {DEADLINE:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_wrong_password_is_one_failed_login_and_sends_retry_sends_the_rest_after_the_fix(
    backend: Backend,
) {
    let server = TestSmtpServer::with_credentials("sangha", "right-pass").await;
    let app = TestApp::spawn_with(
        backend,
        Options::default(),
        relay(server.port(), "wrong-pass"),
    )
    .await;
    let everyone = people(RECIPIENTS);
    import_confirmed(&app.config, app.dir.path(), &everyone, "morning-meditation");
    let send = schedule_now(&app.config, app.dir.path());

    // The refused login fails the one delivery that tried it; the others are held, untried.
    let failed = poll("a delivery fails on the refused login", async || {
        let s = summary(app.store(), send).await;
        (s.counts.failed > 0).then_some(s)
    })
    .await;
    assert_eq!(failed.counts.failed, 1, "{failed:?}");
    assert_eq!(failed.counts.pending, RECIPIENTS as i64 - 1, "{failed:?}");
    assert_eq!(
        server.logins(),
        (1, 1),
        "one failed login, not one per message"
    );
    assert!(server.messages().is_empty());

    let shown = app.cli(&["sends", "show", &send.to_string()]);
    let text = stdout(&shown);
    assert!(shown.status.success(), "{}", stderr(&shown));
    assert!(text.contains("REFUSED THE CREDENTIALS"), "{text}");
    assert!(text.contains("535"), "{text}");
    assert!(
        text.contains(&format!("sangha sends retry {send}")),
        "{text}"
    );
    assert!(
        !text.contains("wrong-pass"),
        "the password is never shown: {text}"
    );
    assert_eq!(failed.interrupted, 0);

    // The owner fixes the password and restarts: the held deliveries go out, the failed one
    // stays failed until `sends retry`.
    let app = app
        .restart_with(|c| c.smtp.password = Secret::new("right-pass"))
        .await;
    let done = poll("the held deliveries are sent", async || {
        let s = summary(app.store(), send).await;
        (s.status == SendStatus::Done).then_some(s)
    })
    .await;
    assert_eq!(done.counts.sent, RECIPIENTS as i64 - 1, "{done:?}");
    assert_eq!(done.counts.failed, 1, "{done:?}");

    let retried = app.cli(&["sends", "retry", &send.to_string()]);
    assert!(retried.status.success(), "{}", stderr(&retried));
    assert!(
        stdout(&retried).contains("1 failed delivery(ies) put back"),
        "{}",
        stdout(&retried)
    );
    let done = poll("the retried delivery is sent", async || {
        let s = summary(app.store(), send).await;
        (s.status == SendStatus::Done && s.counts.pending == 0).then_some(s)
    })
    .await;
    assert_eq!(done.counts.sent, RECIPIENTS as i64, "{done:?}");
    assert_eq!(done.counts.failed, 0, "{done:?}");
    assert_eq!(done.interrupted, 0, "{done:?}");
    let nothing = app.cli(&["sends", "retry", &send.to_string(), "--failed"]);
    assert!(nothing.status.success(), "{}", stderr(&nothing));
    assert!(
        stdout(&nothing).contains("nothing to retry"),
        "{}",
        stdout(&nothing)
    );
    app.stop().await;

    let got = copies(&server.messages());
    for person in &everyone {
        assert_eq!(got.get(person).map(Vec::len), Some(1), "{person}: {got:?}");
    }
    assert_eq!(server.logins().1, 1, "no refused login after the fix");
}

/// A failure that was the message's (a `554` to its data) is not put back by `sends retry`,
/// only by `sends retry --failed`.
async fn sends_retry_failed_puts_back_every_failed_delivery(backend: Backend) {
    let server = TestSmtpServer::start().await;
    server.push_data_reply("554 5.7.1 Message refused");
    let app = TestApp::spawn_with(backend, Options::default(), |c| {
        c.mail.transport = TransportKind::Smtp;
        c.smtp.host = "127.0.0.1".into();
        c.smtp.port = server.port();
        c.smtp.tls = TlsMode::None;
        c.worker.max_attempts = 1;
    })
    .await;
    let everyone = people(3);
    import_confirmed(&app.config, app.dir.path(), &everyone, "morning-meditation");
    let send = schedule_now(&app.config, app.dir.path());
    let done = poll("the send is done", async || {
        let s = summary(app.store(), send).await;
        (s.status == SendStatus::Done).then_some(s)
    })
    .await;
    assert_eq!((done.counts.sent, done.counts.failed), (2, 1), "{done:?}");
    let shown = stdout(&app.cli(&["sends", "show", &send.to_string()]));
    assert!(shown.contains("(554): 5.7.1 Message refused"), "{shown}");
    assert!(!shown.contains("relay:"), "not a relay failure: {shown}");

    let plain = app.cli(&["sends", "retry", &send.to_string()]);
    assert!(plain.status.success(), "{}", stderr(&plain));
    assert!(stdout(&plain).contains("`--failed`"), "{}", stdout(&plain));
    let failed = app.cli(&["sends", "retry", &send.to_string(), "--failed"]);
    assert!(failed.status.success(), "{}", stderr(&failed));
    assert!(
        stdout(&failed).contains("1 failed delivery(ies) put back"),
        "{}",
        stdout(&failed)
    );
    let done = poll("the retried delivery is sent", async || {
        let s = summary(app.store(), send).await;
        (s.status == SendStatus::Done && s.counts.pending == 0).then_some(s)
    })
    .await;
    assert_eq!((done.counts.sent, done.counts.failed), (3, 0), "{done:?}");
    app.stop().await;
    let got = copies(&server.messages());
    for person in &everyone {
        assert_eq!(got.get(person).map(Vec::len), Some(1), "{person}: {got:?}");
    }
}

async fn sends_retry_refuses_what_cannot_be_retried(backend: Backend) {
    let app = TestApp::spawn_without_worker(backend).await;
    let missing = app.cli(&["sends", "retry", "999"]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("there is no send 999"),
        "{}",
        stderr(&missing)
    );

    import_confirmed(
        &app.config,
        app.dir.path(),
        &people(1),
        "morning-meditation",
    );
    let send = schedule_now(&app.config, app.dir.path());
    let nothing = app.cli(&["sends", "retry", &send.to_string()]);
    assert!(nothing.status.success(), "{}", stderr(&nothing));
    assert!(
        stdout(&nothing).contains("nothing to retry"),
        "{}",
        stdout(&nothing)
    );

    let cancelled = app.cli(&["sends", "cancel", &send.to_string()]);
    assert!(cancelled.status.success(), "{}", stderr(&cancelled));
    let refused = app.cli(&["sends", "retry", &send.to_string(), "--failed"]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("was cancelled"),
        "{}",
        stderr(&refused)
    );
}
