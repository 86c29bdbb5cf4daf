//! Sends through a real SMTP conversation: the whole path from signup to one-click
//! unsubscribe, and the server's answers: 4xx retried, 5xx failed, 5.1.1 suppressed, and a
//! send that pauses itself when too many fail.

use std::time::Duration;

use reqwest::StatusCode;
use sangha::app::Runtime;
use sangha::clock::Clock;
use sangha::domain::{EmailAddress, SubscriptionStatus};
use sangha::store::SendStatus;

use crate::backend_tests;
use crate::sends::MORNING;
use crate::support::smtp::{ReceivedMessage, TestSmtpServer};
use crate::support::{
    Backend, DEADLINE, Options, TestApp, confirm_path_in, relay_config, relay_env, stdout,
    test_send,
};

backend_tests!(
    subscribe_confirm_schedule_receive_unsubscribe_in_one_click_and_the_next_send_skips_them,
    a_4xx_is_retried_with_the_same_message_id,
    a_5xx_fails_and_a_5_1_1_suppresses_the_address,
    a_send_with_too_many_failures_pauses_itself_and_says_why,
    a_test_send_goes_through_the_real_transport,
);

/// Signs up and confirms through the emails the SMTP server received.
async fn confirmed_over_smtp(app: &TestApp, server: &TestSmtpServer, email: &str) {
    let before = server.messages().len();
    app.signup(email, &["morning-meditation"]).await;
    let all = server.wait_for_messages(before + 1, DEADLINE).await;
    let msg = all
        .iter()
        .rev()
        .find(|m| m.rcpt_to == [email.to_owned()])
        .expect("confirmation received");
    let r = app.post_form(&confirm_path_in(&msg.data), "").await;
    assert_eq!(r.status(), StatusCode::OK);
}

fn header(m: &ReceivedMessage, name: &str) -> String {
    m.parsed()
        .header_raw(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .trim()
        .to_owned()
}

async fn subscribe_confirm_schedule_receive_unsubscribe_in_one_click_and_the_next_send_skips_them(
    backend: Backend,
) {
    let server = TestSmtpServer::start().await;
    let app = TestApp::spawn_with(backend, Options::default(), relay_config(server.port())).await;
    confirmed_over_smtp(&app, &server, "stay@example.org").await;
    confirmed_over_smtp(&app, &server, "leave@example.org").await;

    let path = app.write_content("morning.md", MORNING);
    let first = app.schedule_now("morning-meditation", &path);
    app.wait_for_send_done(first).await;
    let received = server.wait_for_messages(4, DEADLINE).await;
    let to_leaver = received[2..]
        .iter()
        .find(|m| m.rcpt_to == ["leave@example.org".to_owned()])
        .expect("the send reached the leaver");

    // RFC 8058 and RFC 2369/2919 headers.
    let list_unsubscribe = header(to_leaver, "List-Unsubscribe");
    assert!(
        list_unsubscribe.starts_with("<http://localhost:3000/unsubscribe/"),
        "{list_unsubscribe}"
    );
    assert!(list_unsubscribe.contains("<mailto:leave@example.com?subject=unsubscribe>"));
    assert_eq!(
        header(to_leaver, "List-Unsubscribe-Post"),
        "List-Unsubscribe=One-Click"
    );
    assert!(header(to_leaver, "List-Id").contains("<morning-meditation.example.com>"));
    let parsed = to_leaver.parsed();
    let html = parsed.body_html(0).unwrap();
    let text = parsed.body_text(0).unwrap();
    let url = list_unsubscribe
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap()
        .to_owned();
    assert!(html.contains(&url), "visible link in the HTML part");
    assert!(text.contains(&url), "visible link in the text part");
    assert!(html.contains("Morning Meditation"));

    // The mailbox provider's one-click POST: no cookies, 200, no redirect.
    let path = url.trim_start_matches(app.config.base_url());
    let r = app
        .http
        .post(app.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().get("location").is_none());

    let second = app.schedule_now(
        "morning-meditation",
        &app.write_content("again.md", MORNING),
    );
    let done = app.wait_for_send_done(second).await;
    assert_eq!(done.counts.sent, 1);
    let all = server.messages();
    let last: Vec<_> = all[4..].iter().map(|m| m.rcpt_to[0].clone()).collect();
    assert_eq!(last, ["stay@example.org"]);
}

async fn manual(backend: Backend, server: &TestSmtpServer, clock: Clock) -> TestApp {
    TestApp::spawn_with(
        backend,
        Options {
            worker: false,
            clock,
        },
        relay_config(server.port()),
    )
    .await
}

async fn a_4xx_is_retried_with_the_same_message_id(backend: Backend) {
    let server = TestSmtpServer::start().await;
    let clock = Clock::manual(1_800_000_000_000);
    let app = manual(backend, &server, clock.clone()).await;
    let runtime = Runtime::open(app.config.clone(), clock.clone())
        .await
        .unwrap();
    let worker = runtime
        .worker(runtime.templates().unwrap(), runtime.links().unwrap())
        .unwrap();
    app.signup("later@example.org", &["morning-meditation"])
        .await;
    worker.step().await.unwrap();
    app.post_form(&confirm_path_in(&server.messages()[0].data), "")
        .await;

    let id = app.schedule_now("morning-meditation", &app.write_content("m.md", MORNING));
    server.push_data_reply("451 4.3.0 Try again later");
    // Scheduled with the CLI at the system's "now": move the manual clock past it.
    clock.advance(Duration::from_secs(3650 * 86_400));
    runtime.scheduler().step().await.unwrap();
    let step = worker.step().await.unwrap();
    assert_eq!(step.retried, 1, "{step:?}");
    let show = stdout(&app.cli(&["sends", "show", &id.to_string()]));
    assert!(show.contains("retrying") && show.contains("451"), "{show}");
    assert!(
        worker.step().await.unwrap().is_idle(),
        "waits for its backoff"
    );
    clock.advance(Duration::from_secs(60));
    assert_eq!(worker.step().await.unwrap().sent, 1);
    let got = server.wait_for_messages(2, DEADLINE).await;
    let message_id: String =
        sqlx::query_scalar("SELECT message_id FROM deliveries WHERE send_id = $1")
            .bind(id)
            .fetch_one(app.store().pool())
            .await
            .unwrap();
    assert_eq!(
        format!("<{}>", got[1].parsed().message_id().unwrap()),
        message_id
    );
    assert_eq!(server.rejected_count(), 1);
}

async fn a_5xx_fails_and_a_5_1_1_suppresses_the_address(backend: Backend) {
    let server = TestSmtpServer::start().await;
    let clock = Clock::manual(1_800_000_000_000);
    let app = manual(backend, &server, clock.clone()).await;
    let runtime = Runtime::open(app.config.clone(), clock.clone())
        .await
        .unwrap();
    let worker = runtime
        .worker(runtime.templates().unwrap(), runtime.links().unwrap())
        .unwrap();
    for who in [
        "ok@example.org",
        "nobody@example.org",
        "refused@example.org",
    ] {
        app.signup(who, &["morning-meditation"]).await;
    }
    while !worker.step().await.unwrap().is_idle() {}
    for m in server.messages() {
        app.post_form(&confirm_path_in(&m.data), "").await;
    }
    server.reject_recipient("nobody@example.org", "550 5.1.1 No such user here");
    server.reject_recipient("refused@example.org", "554 5.7.1 Policy rejection");
    let id = app.schedule_now("morning-meditation", &app.write_content("m.md", MORNING));
    clock.advance(Duration::from_secs(3650 * 86_400));
    runtime.scheduler().step().await.unwrap();
    while !worker.step().await.unwrap().is_idle() {}
    runtime.scheduler().step().await.unwrap();
    let counts = app.store().send_counts(id).await.unwrap();
    assert_eq!(
        (counts.sent, counts.failed, counts.suppressed),
        (1, 1, 1),
        "{counts:?}"
    );
    let send = app
        .store()
        .send_summaries(Some(id))
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(send.status, SendStatus::Done);

    let nobody = EmailAddress::parse("nobody@example.org").unwrap();
    let detail = app
        .store()
        .subscriber_detail(&nobody)
        .await
        .unwrap()
        .unwrap();
    assert!(
        detail
            .subscriber
            .subscriptions
            .iter()
            .all(|s| s.status == SubscriptionStatus::Unsubscribed)
    );
    assert!(
        app.store()
            .is_suppressed(&runtime.links().unwrap().email_hash(&nobody))
            .await
            .unwrap()
    );
    let show = stdout(&app.cli(&["sends", "show", &id.to_string()]));
    assert!(show.contains("5.1.1") && show.contains("5.7.1"), "{show}");

    // The next send does not even try the suppressed address; the refused one is tried again.
    let next = app.schedule_now("morning-meditation", &app.write_content("n.md", MORNING));
    clock.advance(Duration::from_secs(3650 * 86_400));
    runtime.scheduler().step().await.unwrap();
    assert_eq!(app.store().send_counts(next).await.unwrap().total(), 2);
}

async fn a_send_with_too_many_failures_pauses_itself_and_says_why(backend: Backend) {
    let server = TestSmtpServer::start().await;
    let clock = Clock::manual(1_800_000_000_000);
    let server_port = server.port();
    let app = TestApp::spawn_with(
        backend,
        Options {
            worker: false,
            clock: clock.clone(),
        },
        move |c| {
            relay_config(server_port)(c);
            c.worker.pause_after_failures = 3;
            c.worker.pause_failure_percent = 50;
            c.worker.batch_size = 2;
        },
    )
    .await;
    let runtime = Runtime::open(app.config.clone(), clock.clone())
        .await
        .unwrap();
    let worker = runtime
        .worker(runtime.templates().unwrap(), runtime.links().unwrap())
        .unwrap();
    for i in 0..8 {
        app.signup(&format!("r{i}@example.org"), &["morning-meditation"])
            .await;
    }
    while !worker.step().await.unwrap().is_idle() {}
    for m in server.messages() {
        app.post_form(&confirm_path_in(&m.data), "").await;
    }
    let id = app.schedule_now("morning-meditation", &app.write_content("m.md", MORNING));
    for _ in 0..8 {
        server.push_data_reply("554 5.7.1 Your server is on a block list");
    }
    clock.advance(Duration::from_secs(3650 * 86_400));
    runtime.scheduler().step().await.unwrap();
    while !worker.step().await.unwrap().is_idle() {}
    let send = app
        .store()
        .send_summaries(Some(id))
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(send.status, SendStatus::Paused);
    assert!(
        send.counts.pending > 0,
        "stopped before trying everyone: {:?}",
        send.counts
    );
    let show = stdout(&app.cli(&["sends", "show", &id.to_string()]));
    assert!(show.contains("why paused: paused automatically"), "{show}");
    assert!(show.contains("block list"), "{show}");
}

async fn a_test_send_goes_through_the_real_transport(backend: Backend) {
    let server = TestSmtpServer::start().await;
    let app = TestApp::spawn(backend).await;
    let content = app.write_content("m.md", MORNING);
    let out = test_send(&app.config, &content, &relay_env(server.port()));
    assert!(out.status.success(), "{}", crate::support::stderr(&out));
    assert!(stdout(&out).contains("250"), "{}", stdout(&out));
    let got = server.wait_for_messages(1, DEADLINE).await;
    assert_eq!(got[0].rcpt_to, ["owner@example.org"]);
    assert_eq!(
        got[0].parsed().subject(),
        Some("[Test] Morning practice for friend")
    );
    // A test send is not a send: nothing was recorded.
    assert!(app.store().send_summaries(None).await.unwrap().is_empty());
    // And it says goodbye rather than dropping the connection (issue 14).
    let quit = crate::support::eventually(DEADLINE, || (server.quits() == 1).then_some(())).await;
    assert!(quit.is_some(), "test-send ends its session with QUIT");
}
