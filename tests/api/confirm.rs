//! Confirming a signup: the email, the page that changes nothing, the POST that confirms,
//! tokens that expire or were tampered with, and the consent record.

use std::time::Duration;

use mail_parser::MimeHeaders;
use reqwest::StatusCode;
use sangha::clock::Clock;
use sangha::domain::{SubscriptionStatus, TokenKey, TokenPurpose};
use sha2::{Digest, Sha256};

use crate::backend_tests;
use crate::support::{Backend, Options, TEST_TOKEN_KEY, TestApp, stdout};

backend_tests!(
    the_confirmation_email_is_multipart_with_the_configured_headers,
    confirm_link_fetched_by_a_scanner_changes_nothing,
    posting_the_confirm_form_confirms_and_repeating_it_is_harmless,
    an_expired_link_gets_404_and_an_offer_to_sign_up_again,
    a_tampered_or_foreign_token_gets_404,
    the_consent_record_keeps_time_ip_agent_offerings_and_text_hash,
    a_forwarded_address_is_believed_only_from_a_trusted_proxy,
    the_confirm_page_after_confirming_says_already_confirmed,
);

async fn the_confirm_page_after_confirming_says_already_confirmed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signup("radha@example.org", &["morning-meditation"])
        .await;
    let path = app.confirm_path(0).await;
    let before = app.get(&path).await.text().await.unwrap();
    assert!(before.contains("<form"), "the button, before");
    assert_eq!(app.post_form(&path, "").await.status(), StatusCode::OK);
    let r = app.get(&path).await;
    assert_eq!(r.status(), StatusCode::OK);
    let after = r.text().await.unwrap();
    assert!(after.contains("Already confirmed"), "{after}");
    assert!(!after.contains("<form"), "no button that does nothing");
    assert!(after.contains("Morning Meditation"));
}

fn status_of(app_rows: &[sangha::store::SubscriberRow], slug: &str) -> SubscriptionStatus {
    app_rows[0]
        .subscriptions
        .iter()
        .find(|s| s.offering == slug)
        .expect("subscription")
        .status
}

async fn the_confirmation_email_is_multipart_with_the_configured_headers(backend: Backend) {
    let app = TestApp::spawn_with(backend, Options::default(), |c| {
        c.site.name = "Śakti Temple".into();
        c.mail.from = "Śakti Temple <hello@shakti.example>".parse().unwrap();
        c.mail.message_id_domain = "mail.shakti.example".into();
    })
    .await;
    app.post_form(
        "/subscribe",
        "email=parvati%40example.org&name=P%C4%81rvat%C4%AB+%C3%96z&offerings=morning-meditation",
    )
    .await;
    let raw = app.wait_for_outbox(1).await.remove(0);
    let head = String::from_utf8_lossy(&raw);
    let head = head.split("\r\n\r\n").next().unwrap();
    assert!(
        head.is_ascii(),
        "headers must be ASCII (RFC 2047 encoded):\n{head}"
    );
    assert!(head.contains("=?utf-8?"), "non-ASCII not encoded:\n{head}");

    let message = mail_parser::MessageParser::default().parse(&raw).unwrap();
    assert_eq!(
        message.subject(),
        Some("Please confirm your subscription to Śakti Temple")
    );
    let from = message.from().unwrap().first().unwrap();
    assert_eq!(from.address(), Some("hello@shakti.example"));
    assert_eq!(from.name(), Some("Śakti Temple"));
    let to = message.to().unwrap().first().unwrap();
    assert_eq!(to.name(), Some("Pārvatī Öz"));
    assert_eq!(to.address(), Some("parvati@example.org"));
    let id = message.message_id().expect("Message-ID");
    assert!(id.ends_with("@mail.shakti.example"), "{id}");
    assert!(message.date().is_some(), "Date header");
    let ct = message.content_type().unwrap();
    assert_eq!(
        (ct.ctype(), ct.subtype()),
        ("multipart", Some("alternative"))
    );
    let text = message.body_text(0).unwrap();
    let html = message.body_html(0).unwrap();
    assert!(text.contains("Pārvatī Öz"));
    assert!(!text.contains('<'), "HTML in the text part");
    let path = crate::support::confirm_path_in(&raw);
    assert!(html.contains(&path), "the HTML part carries the same link");
    assert!(
        text.contains(&format!("{}{}", app.config.base_url(), path)),
        "absolute link"
    );

    // The Message-ID is the one fixed in the delivery row when the signup was written.
    let stored: String = sqlx::query_scalar("SELECT message_id FROM deliveries")
        .fetch_one(app.store().pool())
        .await
        .unwrap();
    assert_eq!(stored, format!("<{id}>"));
}

async fn confirm_link_fetched_by_a_scanner_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signup(
        "scan@example.org",
        &["morning-meditation", "guided-meditations"],
    )
    .await;
    let path = app.confirm_path(0).await;
    for _ in 0..3 {
        let page = app.get(&path).await;
        assert_eq!(page.status(), StatusCode::OK);
        let html = page.text().await.unwrap();
        assert!(html.contains("method=\"post\""));
        assert!(html.contains(&format!("action=\"{path}\"")));
        assert!(html.contains("Morning Meditation") && html.contains("Guided Meditations"));
    }
    let rows = app.store().list_subscribers(None, None).await.unwrap();
    assert_eq!(
        status_of(&rows, "morning-meditation"),
        SubscriptionStatus::Pending
    );
    let head = app.http.head(app.url(&path)).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    let rows = app.store().list_subscribers(None, None).await.unwrap();
    assert_eq!(
        status_of(&rows, "guided-meditations"),
        SubscriptionStatus::Pending
    );
}

async fn posting_the_confirm_form_confirms_and_repeating_it_is_harmless(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signup(
        "yes@example.org",
        &["morning-meditation", "guided-meditations"],
    )
    .await;
    let path = app.confirm_path(0).await;
    for _ in 0..2 {
        let r = app.post_form(&path, "").await;
        assert_eq!(r.status(), StatusCode::OK);
        let html = r.text().await.unwrap();
        assert!(
            html.contains("Morning Meditation"),
            "welcome page names offerings"
        );
    }
    let rows = app.store().list_subscribers(None, None).await.unwrap();
    assert_eq!(
        status_of(&rows, "morning-meditation"),
        SubscriptionStatus::Confirmed
    );
    assert_eq!(
        status_of(&rows, "guided-meditations"),
        SubscriptionStatus::Confirmed
    );
    let detail = app
        .store()
        .subscriber_detail(&sangha::domain::EmailAddress::parse("yes@example.org").unwrap())
        .await
        .unwrap()
        .unwrap();
    let confirms = detail
        .consents
        .iter()
        .filter(|c| c.action == "confirm")
        .count();
    assert_eq!(confirms, 1, "a repeated confirm records nothing new");
    // A confirmed person signing up again for the same offering gets no new email.
    app.signup("yes@example.org", &["morning-meditation"]).await;
    let counts = app.store().delivery_counts(None).await.unwrap();
    assert_eq!(counts.pending + counts.sent, 1);
}

async fn an_expired_link_gets_404_and_an_offer_to_sign_up_again(backend: Backend) {
    let clock = Clock::manual(1_800_000_000_000);
    let app = TestApp::spawn_with(
        backend,
        Options {
            clock: clock.clone(),
            ..Options::default()
        },
        |c| c.tokens.confirm_ttl_hours = 48,
    )
    .await;
    app.signup("late@example.org", &["morning-meditation"])
        .await;
    let path = app.confirm_path(0).await;
    clock.advance(Duration::from_secs(47 * 3600));
    assert_eq!(app.get(&path).await.status(), StatusCode::OK);
    clock.advance(Duration::from_secs(2 * 3600));
    for response in [app.get(&path).await, app.post_form(&path, "").await] {
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let html = response.text().await.unwrap();
        assert!(html.contains("/subscribe\""), "offers to sign up again");
    }
    let rows = app.store().list_subscribers(None, None).await.unwrap();
    assert_eq!(
        status_of(&rows, "morning-meditation"),
        SubscriptionStatus::Pending
    );
}

async fn a_tampered_or_foreign_token_gets_404(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signup("t@example.org", &["morning-meditation"]).await;
    let path = app.confirm_path(0).await;
    let token = path.trim_start_matches("/confirm/").to_owned();
    let mut flipped: Vec<char> = token.chars().collect();
    let i = flipped.len() / 2;
    flipped[i] = if flipped[i] == 'A' { 'B' } else { 'A' };
    let flipped: String = flipped.into_iter().collect();
    // A validly signed token for another purpose, and one signed with another key.
    let key = TokenKey::from_base64(TEST_TOKEN_KEY).unwrap();
    let token_for = |purpose| {
        key.sign(&sangha::domain::Token {
            purpose,
            subject: 1,
            scope: 0,
            expires: 0,
            binding: 0,
        })
    };
    let unsubscribe = token_for(TokenPurpose::Unsubscribe);
    let other_key = TokenKey::generate().sign(&sangha::domain::Token {
        purpose: TokenPurpose::Confirm,
        subject: 1,
        scope: 0,
        expires: 0,
        binding: 0,
    });
    let long = "x".repeat(5000);
    for bad in [
        flipped.as_str(),
        unsubscribe.as_str(),
        other_key.as_str(),
        "nonsense",
        "%00",
        long.as_str(),
    ] {
        for response in [
            app.get(&format!("/confirm/{bad}")).await,
            app.post_form(&format!("/confirm/{bad}"), "").await,
        ] {
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{bad}");
        }
    }
    // Correctly signed but pointing at no signup: also 404.
    let none = key.sign(&sangha::domain::Token {
        purpose: TokenPurpose::Confirm,
        subject: 999_999,
        scope: 0,
        expires: 0,
        binding: 0,
    });
    assert_eq!(
        app.post_form(&format!("/confirm/{none}"), "")
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    let rows = app.store().list_subscribers(None, None).await.unwrap();
    assert_eq!(
        status_of(&rows, "morning-meditation"),
        SubscriptionStatus::Pending
    );
}

async fn the_consent_record_keeps_time_ip_agent_offerings_and_text_hash(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signup(
        "c@example.org",
        &["morning-meditation", "guided-meditations"],
    )
    .await;
    let path = app.confirm_path(0).await;
    app.post_form(&path, "").await;
    let expected_hash =
        sangha::domain::hex(&Sha256::digest(app.config.signup.consent_text.as_bytes()));

    let out = app.cli(&["subscribers", "show", "c@example.org", "--json"]);
    assert!(out.status.success(), "{}", crate::support::stderr(&out));
    let detail: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let consents = detail["consents"].as_array().unwrap();
    assert_eq!(consents.len(), 2);
    for (consent, action) in consents.iter().zip(["signup", "confirm"]) {
        assert_eq!(consent["action"], action);
        assert_eq!(consent["ip"], "127.0.0.1");
        assert_eq!(consent["user_agent"], "sangha-tests/1.0");
        assert_eq!(consent["text_hash"], expected_hash.as_str());
        assert!(consent["at"].as_i64().unwrap() > 1_700_000_000_000);
        let offerings = consent["offerings"].as_array().unwrap();
        assert_eq!(offerings.len(), 2, "{consent}");
    }
    let text = stdout(&app.cli(&["subscribers", "show", "c@example.org"]));
    assert!(text.contains("morning-meditation"), "{text}");
    assert!(text.contains("confirmed"), "{text}");
    assert!(text.contains("ip=127.0.0.1"), "{text}");
    assert!(text.contains(&expected_hash), "{text}");
}

async fn a_forwarded_address_is_believed_only_from_a_trusted_proxy(backend: Backend) {
    for (trusted, expected) in [(false, "127.0.0.1"), (true, "198.51.100.23")] {
        let app = TestApp::spawn_with(backend.clone(), Options::default(), |c| {
            if trusted {
                c.server.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
            }
        })
        .await;
        let r = app
            .http
            .post(app.url("/subscribe"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-forwarded-for", "198.51.100.23")
            .body("email=fwd%40example.org&offerings=morning-meditation")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let detail = app
            .store()
            .subscriber_detail(&sangha::domain::EmailAddress::parse("fwd@example.org").unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            detail.consents[0].ip.as_deref(),
            Some(expected),
            "trusted={trusted}"
        );
    }
}
