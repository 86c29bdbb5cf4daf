//! Subscription bombing: someone signs an address up again and again, from many addresses, to
//! flood its inbox. Every answer is the same; at most one confirmation per cooldown reaches the
//! address; and a cap per recipient domain protects the sender's standing with providers.
//! A repeated signup is also the only way to get a confirmation resent besides the one
//! reminder per signup (tests/api/pending.rs), so the cooldown limits resends too.

use std::time::Duration;

use reqwest::StatusCode;
use sangha::clock::Clock;

use crate::backend_tests;
use crate::support::{Backend, Options, TestApp};

backend_tests!(
    a_hundred_signups_of_one_address_from_a_hundred_ips_in_a_day_get_one_email_per_cooldown,
    the_per_domain_cap_holds,
    a_flood_from_one_network_does_not_stop_a_real_persons_confirmation,
    every_spelling_of_one_inbox_shares_one_cooldown,
);

async fn confirmation_times(app: &TestApp) -> Vec<i64> {
    sqlx::query_scalar(
        "SELECT created_at FROM deliveries WHERE kind = 'confirmation' ORDER BY created_at",
    )
    .fetch_all(app.store().pool())
    .await
    .unwrap()
}

async fn a_hundred_signups_of_one_address_from_a_hundred_ips_in_a_day_get_one_email_per_cooldown(
    backend: Backend,
) {
    let clock = Clock::manual(1_800_000_000_000);
    let app = TestApp::spawn_with(
        backend,
        Options {
            clock: clock.clone(),
            ..Options::default()
        },
        |c| {
            c.server.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
            c.signup.rate_limit_per_minute = 10;
            c.signup.rate_limit_burst = 5;
        },
    )
    .await;
    let mut answers = Vec::new();
    for i in 0..100u32 {
        let offering = ["morning-meditation", "guided-meditations"][i as usize % 2];
        let r = app
            .http
            .post(app.url("/subscribe"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header(
                "x-forwarded-for",
                format!("198.51.{}.{}", i / 50, i % 250 + 1),
            )
            .body(format!("email=victim%40example.org&offerings={offering}"))
            .send()
            .await
            .unwrap();
        answers.push((
            r.status(),
            r.headers().get("location").cloned(),
            r.text().await.unwrap(),
        ));
        clock.advance(Duration::from_secs(864)); // 100 signups spread over 24 hours
    }
    assert!(
        answers.iter().all(|a| a == &answers[0]),
        "every answer is the same"
    );
    assert_eq!(answers[0].0, StatusCode::SEE_OTHER);

    let times = confirmation_times(&app).await;
    // One at the start, then one each time the hour has passed: every fifth signup.
    assert_eq!(times.len(), 20, "{times:?}");
    for pair in times.windows(2) {
        assert!(
            pair[1] - pair[0] >= 3_600_000,
            "two emails within the cooldown"
        );
    }
    app.wait_for_outbox(20).await;
    let rows = app.store().list_subscribers(None, None).await.unwrap();
    assert_eq!(rows.len(), 1, "one subscriber, however often signed up");
}

/// (created, due) of every confirmation email queued, oldest first.
async fn confirmations(app: &TestApp) -> Vec<(i64, i64)> {
    sqlx::query_as(
        "SELECT created_at, next_attempt_at FROM deliveries WHERE kind = 'confirmation'
         ORDER BY created_at, id",
    )
    .fetch_all(app.store().pool())
    .await
    .unwrap()
}

async fn the_per_domain_cap_holds(backend: Backend) {
    let clock = Clock::manual(1_800_000_000_000);
    let app = TestApp::spawn_with(
        backend,
        Options {
            clock: clock.clone(),
            ..Options::default()
        },
        |c| {
            c.signup.confirmations_per_domain_per_hour = 5;
            c.signup.signups_per_domain_per_network_per_hour = 0;
        },
    )
    .await;
    let mut statuses = Vec::new();
    for i in 0..12 {
        let r = app
            .signup(
                &format!("person{i}@victim.example"),
                &["morning-meditation"],
            )
            .await;
        statuses.push(r.status());
        clock.advance(Duration::from_secs(60));
    }
    assert!(statuses.iter().all(|s| *s == StatusCode::SEE_OTHER));
    // Five go out in this hour; the rest wait for the next hours, none is dropped.
    let queued = confirmations(&app).await;
    assert_eq!(queued.len(), 12);
    let hours_later: Vec<i64> = queued
        .iter()
        .map(|(created, due)| (due - created) / 3_600_000)
        .collect();
    assert_eq!(hours_later, [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2]);
    // Other domains are not held back, and a look-alike pattern is no wildcard.
    app.signup("someone@other.example", &["morning-meditation"])
        .await;
    app.signup("x@victim_example", &["morning-meditation"])
        .await;
    let queued = confirmations(&app).await;
    assert_eq!(queued.len(), 13, "the look-alike is not an address");
    assert_eq!(
        queued[12].0, queued[12].1,
        "other.example's goes out at once"
    );
    app.wait_for_outbox(6).await;
}

async fn a_flood_from_one_network_does_not_stop_a_real_persons_confirmation(backend: Backend) {
    let clock = Clock::manual(1_800_000_000_000);
    let app = TestApp::spawn_with(
        backend,
        Options {
            clock: clock.clone(),
            ..Options::default()
        },
        |c| {
            c.server.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
            c.signup.rate_limit_per_minute = 0;
            c.signup.confirmations_per_domain_per_hour = 5;
            c.signup.signups_per_domain_per_network_per_hour = 3;
        },
    )
    .await;
    let from = |ip: &'static str, email: String| {
        app.http
            .post(app.url("/subscribe"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-forwarded-for", ip)
            .body(format!(
                "email={}&offerings=morning-meditation",
                crate::support::urlencode(&email)
            ))
            .send()
    };
    // One source signs up 60 strangers at the domain, from addresses of one /24.
    let mut answers = Vec::new();
    for i in 0..60 {
        let ip = ["203.0.113.5", "203.0.113.6", "::ffff:203.0.113.7"][i % 3];
        let r = from(ip, format!("stranger{i}@bigmail.example"))
            .await
            .unwrap();
        answers.push(r.status());
    }
    assert_eq!(
        &answers[..3],
        [StatusCode::SEE_OTHER; 3],
        "the first three are accepted"
    );
    assert!(
        answers[3..]
            .iter()
            .all(|s| *s == StatusCode::TOO_MANY_REQUESTS),
        "{answers:?}"
    );
    // A real person at the same domain, from elsewhere, gets her confirmation at once.
    let r = from("198.51.100.7", "real.person@bigmail.example".into())
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let queued = confirmations(&app).await;
    assert_eq!(queued.len(), 4);
    assert!(queued.iter().all(|(created, due)| created == due));
    app.wait_for_outbox(4).await;
    let delivered = app
        .outbox()
        .iter()
        .any(|m| String::from_utf8_lossy(m).contains("To: real.person@bigmail.example"));
    assert!(delivered);
    // An hour later the source may sign up three more.
    clock.advance(Duration::from_secs(3600));
    let r = from("203.0.113.5", "stranger99@bigmail.example".into())
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
}

async fn every_spelling_of_one_inbox_shares_one_cooldown(backend: Backend) {
    let app = TestApp::spawn_with(backend, Options::default(), |c| {
        c.server.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
        c.signup.rate_limit_per_minute = 0;
        c.signup.signups_per_domain_per_network_per_hour = 0;
    })
    .await;
    let spellings = [
        "bomb@bücher.test",
        "bOmB@bücher.test",
        "BOMB@xn--bcher-kva.test",
        "bomb+1@bücher.test",
        "bomb+2@XN--BCHER-KVA.TEST",
        "bomb@bücher.ｔｅｓｔ",
        "Bomb+x@BÜCHER.test",
    ];
    for (i, email) in spellings.iter().cycle().take(66).enumerate() {
        let r = app
            .http
            .post(app.url("/subscribe"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-forwarded-for", format!("198.51.{}.{}", i % 7, i + 1))
            .body(format!(
                "email={}&offerings=morning-meditation",
                crate::support::urlencode(email)
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{email}");
    }
    assert_eq!(
        confirmations(&app).await.len(),
        1,
        "one email for one inbox"
    );
    // Domains are stored in one form: the IDN spellings are one subscriber per local part.
    let rows = app.store().list_subscribers(None, None).await.unwrap();
    let emails: Vec<&str> = rows.iter().map(|r| r.email.as_str()).collect();
    assert!(
        emails.iter().all(|e| e.ends_with("@xn--bcher-kva.test")),
        "{emails:?}"
    );
    // An address literal is refused with a reason, not accepted to fail at delivery.
    let r = app
        .post_json(
            "/subscribe",
            &serde_json::json!({ "email": "user@[127.0.0.1]", "offerings": ["morning-meditation"] }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().await.unwrap().contains("domain name"));
}
