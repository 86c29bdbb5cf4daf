//! The envelope sender: by default the From address; with `mail.return_path` set, each
//! delivery goes out from its own VERP address `bounces+TAG@domain`, the tag naming the
//! delivery (and bound to its Message-ID) so that a bounce can be matched without reading it.

use sangha::config::{Config, TlsMode, TransportKind};
use sangha::links::Links;

use crate::backend_tests;
use crate::sends::MORNING;
use crate::support::smtp::{ReceivedMessage, TestSmtpServer};
use crate::support::{Backend, DEADLINE, Options, TestApp, confirm_path_in, stdout};

backend_tests!(
    each_delivery_goes_out_from_a_verp_address_that_names_it_and_a_test_send_from_the_return_path
);

fn smtp_with_return_path(port: u16) -> impl FnOnce(&mut Config) {
    move |c| {
        c.mail.transport = TransportKind::Smtp;
        c.smtp.host = "127.0.0.1".into();
        c.smtp.port = port;
        c.smtp.tls = TlsMode::None;
        c.mail.return_path = Some("bounces@example.com".parse().unwrap());
    }
}

/// The delivery a received message's envelope sender names, after checking its tag against
/// that delivery's Message-ID.
async fn delivery_named_by(app: &TestApp, message: &ReceivedMessage) -> (i64, String) {
    let tag = Links::bounce_tag_of(&message.mail_from)
        .unwrap_or_else(|| panic!("a VERP address: {}", message.mail_from));
    let (recipient, message_id): (String, String) = sqlx::query_as(
        "SELECT s.email, d.message_id FROM deliveries d
         JOIN subscribers s ON s.id = d.subscriber_id WHERE d.id = $1",
    )
    .bind(tag.delivery_id)
    .fetch_one(app.store().pool())
    .await
    .expect("the tag names a delivery");
    assert!(app.state.links().bounce_tag_matches(&tag, &message_id));
    let header_id = message.parsed().message_id().unwrap().to_owned();
    assert_eq!(
        format!("<{header_id}>"),
        message_id,
        "the tag names this very message"
    );
    // A tag moved to another delivery does not match it.
    assert!(
        !app.state
            .links()
            .bounce_tag_matches(&tag, "<other.1@example.com>")
    );
    (tag.delivery_id, recipient)
}

async fn each_delivery_goes_out_from_a_verp_address_that_names_it_and_a_test_send_from_the_return_path(
    backend: Backend,
) {
    let server = TestSmtpServer::start().await;
    let app = TestApp::spawn_with(
        backend,
        Options::default(),
        smtp_with_return_path(server.port()),
    )
    .await;
    for (i, email) in ["radha@example.org", "krishna@example.org"]
        .into_iter()
        .enumerate()
    {
        app.signup(email, &["morning-meditation"]).await;
        let confirmation = server.wait_for_messages(i + 1, DEADLINE).await.remove(i);
        assert!(
            confirmation.mail_from.starts_with("bounces+"),
            "{}",
            confirmation.mail_from
        );
        let (_, to) = delivery_named_by(&app, &confirmation).await;
        assert_eq!(to, email);
        let r = app
            .post_form(&confirm_path_in(&confirmation.data), "")
            .await;
        assert_eq!(r.status(), reqwest::StatusCode::OK);
    }

    let path = app.write_content("morning.md", MORNING);
    let send = app.schedule_now("morning-meditation", &path);
    app.wait_for_send_done(send).await;
    let received = server.wait_for_messages(4, DEADLINE).await;
    let mut named = Vec::new();
    for message in &received[2..] {
        let (delivery, to) = delivery_named_by(&app, message).await;
        assert_eq!(message.rcpt_to, [to]);
        named.push(delivery);
    }
    named.sort_unstable();
    named.dedup();
    assert_eq!(named.len(), 2, "each copy names its own delivery");
    // The From header is untouched: only the envelope carries the tag.
    for message in &received {
        let from = message
            .parsed()
            .from()
            .unwrap()
            .first()
            .unwrap()
            .address()
            .unwrap()
            .to_owned();
        assert_eq!(from, "hello@example.com");
        assert!(
            message.parsed().header_raw("Return-Path").is_none(),
            "the receiving MTA adds it"
        );
    }

    // A test-send is no delivery: it goes out from the return path itself.
    let out = crate::support::run_cli_with(
        &app.config,
        &[
            "test-send",
            "--content",
            path.to_str().unwrap(),
            "--to",
            "owner@example.org",
            "--offering",
            "morning-meditation",
        ],
        &[
            ("SANGHA__MAIL__TRANSPORT", "smtp".to_owned()),
            ("SANGHA__SMTP__HOST", "127.0.0.1".to_owned()),
            ("SANGHA__SMTP__PORT", server.port().to_string()),
            ("SANGHA__SMTP__TLS", "none".to_owned()),
            (
                "SANGHA__MAIL__RETURN_PATH",
                "bounces@example.com".to_owned(),
            ),
        ],
    );
    assert!(out.status.success(), "{}", crate::support::stderr(&out));
    assert!(stdout(&out).contains("250"), "{}", stdout(&out));
    let test = server.wait_for_messages(5, DEADLINE).await.remove(4);
    assert_eq!(test.rcpt_to, ["owner@example.org"]);
    assert_eq!(test.mail_from, "bounces@example.com");
}
