//! Delivery through a real SMTP conversation: lettre's pooled SMTP transport against the test
//! SMTP server, with authentication; the received message is parsed and its link followed.

use reqwest::StatusCode;
use sangha::config::{Secret, TlsMode, TransportKind};
use sangha::domain::SubscriptionStatus;

use crate::backend_tests;
use crate::support::smtp::TestSmtpServer;
use crate::support::{Backend, DEADLINE, Options, TestApp};

backend_tests!(
    a_confirmation_goes_through_smtp_and_its_link_confirms,
    a_permanent_smtp_rejection_fails_the_delivery_without_retry,
);

async fn smtp_app(backend: Backend, server: &TestSmtpServer) -> TestApp {
    let port = server.port();
    TestApp::spawn_with(backend, Options::default(), move |c| {
        c.mail.transport = TransportKind::Smtp;
        c.smtp.host = "127.0.0.1".into();
        c.smtp.port = port;
        c.smtp.tls = TlsMode::None;
        c.smtp.username = "sangha".into();
        c.smtp.password = Secret::new("s3cret-pass");
    })
    .await
}

async fn a_confirmation_goes_through_smtp_and_its_link_confirms(backend: Backend) {
    let server = TestSmtpServer::builder()
        .credentials("sangha", "s3cret-pass")
        .start()
        .await;
    let app = smtp_app(backend, &server).await;
    let r = app
        .post_form(
            "/subscribe",
            "email=lakshmi%40example.org&name=Lak%C5%9Bm%C4%AB&offerings=morning-meditation",
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);

    let received = server.wait_for_messages(1, DEADLINE).await;
    assert_eq!(received.len(), 1);
    let envelope = &received[0];
    assert_eq!(envelope.mail_from, "hello@example.com");
    assert_eq!(envelope.rcpt_to, vec!["lakshmi@example.org".to_owned()]);
    let message = envelope.parsed();
    assert_eq!(
        message.subject(),
        Some("Please confirm your subscription to Shakti Temple")
    );
    assert_eq!(
        message.to().unwrap().first().unwrap().name(),
        Some("Lakśmī")
    );
    assert!(message.message_id().unwrap().ends_with("@example.com"));
    assert_eq!(message.text_body_count(), 1);
    assert_eq!(message.html_body_count(), 1);
    let path = crate::support::confirm_path_in(&envelope.data);
    assert!(message.body_html(0).unwrap().contains(&path));

    // The server's reply is recorded with the delivery.
    let reply = crate::support::eventually_async(DEADLINE, || async {
        sqlx::query_scalar::<_, Option<String>>("SELECT smtp_reply FROM deliveries")
            .fetch_one(app.store().pool())
            .await
            .unwrap()
    })
    .await
    .expect("the delivery is marked sent");
    assert!(reply.starts_with("250"), "{reply}");

    assert_eq!(app.post_form(&path, "").await.status(), StatusCode::OK);
    let rows = app.store().list_subscribers(None, None).await.unwrap();
    assert_eq!(
        rows[0].subscriptions[0].status,
        SubscriptionStatus::Confirmed
    );
}

async fn a_permanent_smtp_rejection_fails_the_delivery_without_retry(backend: Backend) {
    let server = TestSmtpServer::builder()
        .credentials("sangha", "s3cret-pass")
        .start()
        .await;
    server.push_data_reply("554 5.7.1 Message rejected");
    let app = smtp_app(backend, &server).await;
    app.signup("rejected@example.org", &["morning-meditation"])
        .await;
    let counts = crate::support::eventually_async(DEADLINE, || async {
        let counts = app.store().delivery_counts(None).await.unwrap();
        (counts.failed == 1).then_some(counts)
    })
    .await
    .expect("the delivery fails");
    assert_eq!(counts.pending, 0);
    let error: Option<String> = sqlx::query_scalar("SELECT last_error FROM deliveries")
        .fetch_one(app.store().pool())
        .await
        .unwrap();
    assert!(error.unwrap().contains("5.7.1"));
    assert_eq!(server.messages().len(), 0);
}
