//! Signing up: the page, the form, the JSON API, validation, and abuse handling.

use reqwest::StatusCode;
use sangha::clock::Clock;
use sangha::domain::{DeliveryKind, EmailAddress};
use sangha::store::{ConsentMeta, NewSignup, Offering};
use serde_json::json;

use crate::backend_tests;
use crate::support::{Backend, Options, TestApp};

backend_tests!(
    the_signup_page_lists_public_offerings_with_every_field,
    a_form_signup_answers_303_to_check_your_inbox_and_queues_one_confirmation,
    a_json_signup_answers_202,
    an_invalid_form_is_shown_again_with_the_message_next_to_the_field,
    json_field_errors_are_422_with_each_field_named,
    unknown_and_private_offerings_are_refused,
    names_with_control_characters_or_too_long_are_refused,
    the_email_is_trimmed_and_its_domain_lowercased,
    the_answer_is_the_same_whether_or_not_the_address_is_known,
    a_repeated_signup_sends_one_confirmation_per_cooldown,
    a_filled_honeypot_gets_the_success_answer_and_stores_nothing,
    too_many_signups_from_one_ip_get_429_with_retry_after,
    a_body_over_64_kib_gets_413,
    bad_bodies_get_4xx_with_a_reason,
    cors_allows_only_configured_origins,
    an_invalid_timezone_is_refused_and_a_valid_one_kept,
    signups_written_together_each_behave_as_if_written_alone,
    a_signup_that_cannot_be_written_fails_alone_in_its_batch,
    concurrent_signups_each_get_an_answer_and_one_confirmation_per_address,
);

async fn the_signup_page_lists_public_offerings_with_every_field(backend: Backend) {
    let app = TestApp::spawn_with(backend, Options::default(), |c| {
        c.offerings[1].public = false;
    })
    .await;
    let response = app.get("/subscribe").await;
    assert_eq!(response.status(), StatusCode::OK);
    let html = response.text().await.unwrap();
    for needle in [
        r#"name="email""#,
        r#"name="name""#,
        r#"value="guided-meditations""#,
        r#"value="morning-meditation""#,
        r#"value="orgasmic-queen""#,
        r#"name="timezone""#,
        r#"name="website""#,
        "resolvedOptions().timeZone",
        "Shakti Temple",
        "never shared",
    ] {
        assert!(html.contains(needle), "page lacks {needle}");
    }
    assert!(
        !html.contains(r#"value="conscious-awakening""#),
        "a private offering is listed"
    );
}

async fn a_form_signup_answers_303_to_check_your_inbox_and_queues_one_confirmation(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let response = app
        .post_form(
            "/subscribe",
            "email=radha%40example.org&name=Radha&offerings=morning-meditation&timezone=Asia%2FKolkata",
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(location, "/subscribe/check-inbox");
    let page = app.get(&location).await.text().await.unwrap();
    assert!(page.to_lowercase().contains("check your inbox"));
    let messages = app.wait_for_outbox(1).await;
    assert_eq!(messages.len(), 1);
    let counts = app.wait_for_sent(Some(DeliveryKind::Confirmation), 1).await;
    assert_eq!(counts.sent, 1);
}

async fn a_json_signup_answers_202(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app
        .post_json(
            "/subscribe",
            &json!({"email": "kali@example.org", "offerings": ["guided-meditations", "morning-meditation"]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "pending");
    app.wait_for_outbox(1).await;
    let show = app.cli(&["subscribers", "show", "kali@example.org"]);
    let text = crate::support::stdout(&show);
    assert!(
        text.contains("guided-meditations") && text.contains("pending"),
        "{text}"
    );
    assert!(text.contains("via=api"), "{text}");
}

async fn an_invalid_form_is_shown_again_with_the_message_next_to_the_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app
        .post_form(
            "/subscribe",
            "email=not-an-address&name=%3Cb%3EMira%3C%2Fb%3E&offerings=morning-meditation",
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = response.text().await.unwrap();
    assert!(html.contains("does not look like"), "no email message");
    assert!(
        html.contains("value=\"not-an-address\""),
        "typed email lost"
    );
    assert!(
        html.contains("&lt;b&gt;Mira"),
        "typed name lost or unescaped"
    );
    assert!(!html.contains("<b>Mira"), "name not escaped");
    let morning = html
        .split("value=\"morning-meditation\"")
        .nth(1)
        .expect("checkbox");
    assert!(
        morning.split('>').next().unwrap().contains("checked"),
        "choice lost"
    );
    assert!(
        app.store()
            .list_subscribers(None, None)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn json_field_errors_are_422_with_each_field_named(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app
        .post_json(
            "/subscribe",
            &json!({"email": "nope", "name": "a\nb", "offerings": []}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["fields"]["email"].is_string(), "{body}");
    assert!(body["fields"]["name"].is_string(), "{body}");
    assert!(body["fields"]["offerings"].is_string(), "{body}");
    let response = app
        .post_json(
            "/subscribe",
            &json!({"email": 7, "offerings": "morning-meditation"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["fields"]["email"], "must be a string");
}

async fn unknown_and_private_offerings_are_refused(backend: Backend) {
    let app = TestApp::spawn_with(backend, Options::default(), |c| {
        c.offerings[3].public = false;
    })
    .await;
    for offering in ["no-such-thing", "orgasmic-queen", "DROP TABLE"] {
        let response = app
            .post_json(
                "/subscribe",
                &json!({"email": "a@example.org", "offerings": [offering]}),
            )
            .await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{offering}"
        );
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(
            body["fields"]["offerings"]
                .as_str()
                .unwrap()
                .contains("Unknown offering"),
            "{body}"
        );
    }
    let response = app.signup("a@example.org", &["nothing-here"]).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        app.store()
            .list_subscribers(None, None)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn names_with_control_characters_or_too_long_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let long = "x".repeat(101);
    for name in ["Mira\r\nBcc: evil@example.com", "nul\0name", long.as_str()] {
        let response = app
            .post_json(
                "/subscribe",
                &json!({"email": "m@example.org", "name": name, "offerings": ["morning-meditation"]}),
            )
            .await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{name:?}"
        );
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(body["fields"]["name"].is_string(), "{body}");
    }
    let response = app
        .post_json(
            "/subscribe",
            &json!({"email": "m@example.org", "name": "  Mīra Bāī  ", "offerings": ["morning-meditation"]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let rows = app.store().list_subscribers(None, None).await.unwrap();
    assert_eq!(rows[0].name.as_deref(), Some("Mīra Bāī"));
}

async fn the_email_is_trimmed_and_its_domain_lowercased(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app
        .signup("  Devi.Ma@Example.ORG ", &["morning-meditation"])
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let rows = app.store().list_subscribers(None, None).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].email, "Devi.Ma@example.org");
    // The same person again, typed differently, is the same subscriber.
    app.signup("Devi.Ma@EXAMPLE.org", &["guided-meditations"])
        .await;
    let rows = app.store().list_subscribers(None, None).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].subscriptions.len(), 2);
}

async fn the_answer_is_the_same_whether_or_not_the_address_is_known(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let new = app
        .signup("known@example.org", &["morning-meditation"])
        .await;
    let path = app.confirm_path(0).await;
    app.post_form(&path, "").await;
    let known = app
        .signup("known@example.org", &["morning-meditation"])
        .await;
    let other = app
        .signup("stranger@example.org", &["morning-meditation"])
        .await;
    for response in [&new, &known, &other] {
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(response.headers()["location"], "/subscribe/check-inbox");
    }
    let body = |email: &str| json!({"email": email, "offerings": ["morning-meditation"]});
    let known = app
        .post_json("/subscribe", &body("known@example.org"))
        .await;
    let (ks, kb) = (known.status(), known.text().await.unwrap());
    let fresh = app
        .post_json("/subscribe", &body("fresh@example.org"))
        .await;
    assert_eq!(ks, fresh.status());
    assert_eq!(kb, fresh.text().await.unwrap());
}

async fn a_repeated_signup_sends_one_confirmation_per_cooldown(backend: Backend) {
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
    for offering in [
        "morning-meditation",
        "guided-meditations",
        "morning-meditation",
    ] {
        let r = app.signup("again@example.org", &[offering]).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
    }
    app.wait_for_outbox(1).await;
    let counts = app.store().delivery_counts(None).await.unwrap();
    assert_eq!(counts.pending + counts.sent, 1, "{counts:?}");
    clock.advance(std::time::Duration::from_secs(61 * 60));
    app.signup("again@example.org", &["morning-meditation"])
        .await;
    app.wait_for_outbox(2).await;
    let counts = app.store().delivery_counts(None).await.unwrap();
    assert_eq!(counts.pending + counts.sent, 2, "{counts:?}");
}

async fn a_filled_honeypot_gets_the_success_answer_and_stores_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app
        .post_form(
            "/subscribe",
            "email=bot%40example.org&offerings=morning-meditation&website=http%3A%2F%2Fspam",
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()["location"], "/subscribe/check-inbox");
    // A real signup afterwards is delivered; the bot's never is.
    app.signup("human@example.org", &["morning-meditation"])
        .await;
    app.wait_for_outbox(1).await;
    let rows = app.store().list_subscribers(None, None).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].email, "human@example.org");
    assert_eq!(app.wait_for_sent(None, 1).await.sent, 1);
}

async fn too_many_signups_from_one_ip_get_429_with_retry_after(backend: Backend) {
    let app = TestApp::spawn_with(backend, Options::default(), |c| {
        c.signup.rate_limit_per_minute = 2;
        c.signup.rate_limit_burst = 3;
    })
    .await;
    for i in 0..3 {
        let r = app
            .signup(&format!("p{i}@example.org"), &["morning-meditation"])
            .await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
    }
    let r = app.signup("p3@example.org", &["morning-meditation"]).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let r = app
        .post_json(
            "/subscribe",
            &json!({"email": "p4@example.org", "offerings": ["morning-meditation"]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    let rows = app.store().list_subscribers(None, None).await.unwrap();
    assert_eq!(rows.len(), 3);
}

async fn a_body_over_64_kib_gets_413(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let big = format!("email=a%40example.org&name={}", "x".repeat(70 * 1024));
    assert_eq!(
        app.post_form("/subscribe", &big).await.status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let huge = json!({"email": "a@example.org", "name": "y".repeat(1024 * 1024)});
    assert_eq!(
        app.post_json("/subscribe", &huge).await.status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
}

async fn bad_bodies_get_4xx_with_a_reason(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let r = app
        .http
        .post(app.url("/subscribe"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("not valid JSON"));
    let r = app
        .http
        .post(app.url("/subscribe"))
        .header("content-type", "application/json")
        .body("[1, 2]")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = app
        .http
        .post(app.url("/subscribe"))
        .header("content-type", "text/plain")
        .body("email=a@example.org")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Invalid UTF-8 and stray bytes in a form are a form error, not a crash.
    let r = app
        .http
        .post(app.url("/subscribe"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(vec![0xff, 0xfe, b'=', 0x00, b'&', b'%'])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

async fn cors_allows_only_configured_origins(backend: Backend) {
    let app = TestApp::spawn_with(backend, Options::default(), |c| {
        c.server.cors_origins = vec!["https://shakti.example".into()];
    })
    .await;
    let preflight = |origin: &'static str| {
        app.http
            .request(reqwest::Method::OPTIONS, app.url("/subscribe"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let allowed = preflight("https://shakti.example").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://shakti.example"
    );
    let denied = preflight("https://evil.example").await.unwrap();
    assert!(!denied.headers().contains_key("access-control-allow-origin"));
}

async fn an_invalid_timezone_is_refused_and_a_valid_one_kept(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let r = app
        .post_json(
            "/subscribe",
            &json!({"email": "tz@example.org", "offerings": ["morning-meditation"], "timezone": "Mars/Olympus"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["fields"]["timezone"].is_string());
    let r = app
        .post_form(
            "/subscribe",
            "email=tz%40example.org&offerings=morning-meditation&timezone=Asia%2FKathmandu",
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let rows = app.store().list_subscribers(None, None).await.unwrap();
    assert_eq!(rows[0].timezone.as_deref(), Some("Asia/Kathmandu"));
}

/// A signup as the form would make it, to `offerings` (slugs), through the store.
async fn new_signup(app: &TestApp, email: &str, offerings: &[&str]) -> NewSignup {
    let all = app.store().active_offerings().await.unwrap();
    NewSignup {
        email: EmailAddress::parse(email).unwrap(),
        mailbox_key: app
            .state
            .links()
            .mailbox_key(&EmailAddress::parse(email).unwrap()),
        name: None,
        timezone: None,
        offerings: offerings
            .iter()
            .map(|slug| all.iter().find(|o| o.slug == *slug).unwrap().clone())
            .collect(),
        consent: ConsentMeta {
            ip: Some("192.0.2.7".into()),
            user_agent: None,
            text_hash: "0".repeat(64),
            source: sangha::domain::ConsentSource::Api,
        },
        cooldown_ms: 3_600_000,
        domain_cap_per_hour: None,
    }
}

async fn subscription_states(app: &TestApp, email: &str) -> Vec<(String, String)> {
    let detail = app
        .store()
        .subscriber_detail(&EmailAddress::parse(email).unwrap())
        .await
        .unwrap()
        .unwrap();
    detail
        .subscriber
        .subscriptions
        .iter()
        .map(|s| (s.offering.clone(), s.status.as_str().to_owned()))
        .collect()
}

async fn signups_written_together_each_behave_as_if_written_alone(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        Options {
            worker: false,
            clock: Clock::manual(1_800_000_000_000),
        },
        |_| {},
    )
    .await;
    let store = app.store();
    let now = 1_800_000_000_000;
    let known = new_signup(&app, "known@example.org", &["morning-meditation"]).await;
    let earlier = store.record_signup(&known, now - 7_200_000).await.unwrap();
    store
        .confirm_signup(earlier.consent, &known.consent, now - 7_000_000)
        .await
        .unwrap()
        .unwrap();

    let batch = vec![
        new_signup(&app, "first@example.org", &["morning-meditation"]).await,
        new_signup(&app, "twice@example.org", &["morning-meditation"]).await,
        new_signup(&app, "twice@example.org", &["guided-meditations"]).await,
        new_signup(&app, "known@example.org", &["morning-meditation"]).await,
        new_signup(
            &app,
            "both@example.org",
            &["morning-meditation", "guided-meditations"],
        )
        .await,
    ];
    let outcomes = store.record_signups(&batch, now).await.unwrap();
    let queued: Vec<bool> = outcomes.iter().map(|o| o.confirmation_queued).collect();
    // The second signup of `twice` sees the first one's email within its cooldown; `known`
    // is confirmed already and gets none.
    assert_eq!(queued, [true, true, false, false, true]);
    assert_eq!(outcomes[1].subscriber_id, outcomes[2].subscriber_id);
    assert_ne!(outcomes[1].consent, outcomes[2].consent);
    assert_eq!(outcomes[3].subscriber_id, earlier.subscriber_id);
    assert_eq!(
        subscription_states(&app, "twice@example.org").await,
        [
            ("guided-meditations".to_owned(), "pending".to_owned()),
            ("morning-meditation".to_owned(), "pending".to_owned()),
        ]
    );
    assert_eq!(
        subscription_states(&app, "known@example.org").await,
        [("morning-meditation".to_owned(), "confirmed".to_owned())]
    );
    assert_eq!(subscription_states(&app, "both@example.org").await.len(), 2);
    let counts = store
        .delivery_counts(Some(DeliveryKind::Confirmation))
        .await
        .unwrap();
    assert_eq!(counts.pending, 4, "one from before, three from the batch");
    // Each queued confirmation points at its own signup.
    for (signup, outcome) in batch.iter().zip(&outcomes) {
        let person: Option<i64> = sqlx::query_scalar(
            "SELECT subscriber_id FROM deliveries
             WHERE kind = 'confirmation' AND consent_id = $1",
        )
        .bind(outcome.consent.id)
        .fetch_optional(store.pool())
        .await
        .unwrap();
        let expected = outcome.confirmation_queued.then_some(outcome.subscriber_id);
        assert_eq!(person, expected, "{}", signup.email.as_str());
    }

    // The domain cap counts the confirmations queued earlier in the same batch; the one over
    // it waits for the next hour, and is not dropped.
    let mut capped = Vec::new();
    for name in ["a", "b", "c"] {
        let mut signup = new_signup(
            &app,
            &format!("{name}@cap.example"),
            &["morning-meditation"],
        )
        .await;
        signup.domain_cap_per_hour = Some(2);
        capped.push(signup);
    }
    let outcomes = store.record_signups(&capped, now).await.unwrap();
    let queued: Vec<bool> = outcomes.iter().map(|o| o.confirmation_queued).collect();
    assert_eq!(queued, [true, true, true]);
    let mut due = Vec::new();
    for outcome in &outcomes {
        let at: i64 =
            sqlx::query_scalar("SELECT next_attempt_at FROM deliveries WHERE consent_id = $1")
                .bind(outcome.consent.id)
                .fetch_one(store.pool())
                .await
                .unwrap();
        due.push(at - now);
    }
    assert_eq!(due, [0, 0, 3_600_000]);
}

async fn a_signup_that_cannot_be_written_fails_alone_in_its_batch(backend: Backend) {
    let app = TestApp::spawn_without_worker(backend).await;
    let mut broken = new_signup(&app, "broken@example.org", &["morning-meditation"]).await;
    broken.offerings = vec![Offering {
        id: 999_999,
        ..broken.offerings[0].clone()
    }];
    let batch = vec![
        new_signup(&app, "before@example.org", &["morning-meditation"]).await,
        broken,
        new_signup(&app, "after@example.org", &["guided-meditations"]).await,
    ];
    let answers = app
        .store()
        .record_signups_or_each(&batch, 1_800_000_000_000)
        .await;
    assert_eq!(answers.len(), 3);
    assert!(answers[0].as_ref().is_ok_and(|o| o.confirmation_queued));
    assert!(answers[1].is_err(), "an unknown offering cannot be written");
    assert!(answers[2].as_ref().is_ok_and(|o| o.confirmation_queued));
    assert_eq!(
        subscription_states(&app, "after@example.org").await,
        [("guided-meditations".to_owned(), "pending".to_owned())]
    );
    let broken = app
        .store()
        .subscriber_detail(&EmailAddress::parse("broken@example.org").unwrap())
        .await
        .unwrap();
    assert!(broken.is_none(), "nothing of the failed signup is kept");
}

async fn concurrent_signups_each_get_an_answer_and_one_confirmation_per_address(backend: Backend) {
    let app = TestApp::spawn_without_worker(backend).await;
    // 40 addresses, and one more signed up 20 times, all at once.
    let emails: Vec<String> = (0..40)
        .map(|i| format!("crowd{i}@example.org"))
        .chain((0..20).map(|_| "again@example.org".to_owned()))
        .collect();
    let bodies: Vec<serde_json::Value> = emails
        .iter()
        .map(|email| json!({"email": email, "offerings": ["morning-meditation"]}))
        .collect();
    let answers =
        futures::future::join_all(bodies.iter().map(|body| app.post_json("/subscribe", body)))
            .await;
    for answer in &answers {
        assert_eq!(answer.status(), StatusCode::ACCEPTED);
    }
    let counts = app
        .store()
        .delivery_counts(Some(DeliveryKind::Confirmation))
        .await
        .unwrap();
    assert_eq!(counts.pending, 41, "one confirmation per address");
    let subscribers: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM subscribers")
        .fetch_one(app.store().pool())
        .await
        .unwrap();
    assert_eq!(subscribers, 41);
    let consents: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM consents WHERE action = 'signup'")
        .fetch_one(app.store().pool())
        .await
        .unwrap();
    assert_eq!(consents, 60, "every signup is on record");
}

/// `serve` copies SQLite's WAL into the database file from a task of its own, so no commit
/// (a batch of signups waiting for their answer) pauses to do it.
#[tokio::test]
async fn serve_checkpoints_sqlite_outside_the_commits() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    // The server task turns it off as it starts.
    let off = crate::support::eventually_async(crate::support::DEADLINE, || async {
        let pages: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
            .fetch_one(app.store().pool())
            .await
            .unwrap();
        (pages == 0).then_some(())
    })
    .await;
    assert!(off.is_some(), "commits still checkpoint");

    // A signup is written to the WAL; only a checkpoint copies it into the database file,
    // and nothing here writes 1,000 pages, so SQLite's own trigger would never have fired.
    let response = app
        .signup("wal-probe@example.org", &["morning-meditation"])
        .await;
    assert!(response.status().is_redirection(), "{}", response.status());
    let file = app.dir.path().join("sangha.db");
    let copied = crate::support::eventually(crate::support::DEADLINE, || {
        let bytes = std::fs::read(&file).ok()?;
        bytes
            .windows(b"wal-probe@example.org".len())
            .any(|w| w == b"wal-probe@example.org")
            .then_some(())
    })
    .await;
    assert!(
        copied.is_some(),
        "the signup never reached the database file"
    );
}
