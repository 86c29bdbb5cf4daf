//! Subscription bombing: someone signs an address up again and again, from many addresses, to
//! flood its inbox. Every answer is the same; at most one confirmation per cooldown reaches the
//! address; and a cap per recipient domain protects the sender's standing with providers.
//! A repeated signup is also the only way to get a confirmation resent (Sangha sends no
//! automatic reminders), so the cooldown limits resends too.

use std::time::Duration;

use reqwest::StatusCode;
use sangha::clock::Clock;

use crate::backend_tests;
use crate::support::{Backend, Options, TestApp};

backend_tests!(
    a_hundred_signups_of_one_address_from_a_hundred_ips_in_a_day_get_one_email_per_cooldown,
    the_per_domain_cap_holds,
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

async fn the_per_domain_cap_holds(backend: Backend) {
    let clock = Clock::manual(1_800_000_000_000);
    let app = TestApp::spawn_with(
        backend,
        Options {
            clock: clock.clone(),
            ..Options::default()
        },
        |c| c.signup.confirmations_per_domain_per_hour = 5,
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
    assert_eq!(
        confirmation_times(&app).await.len(),
        5,
        "capped at 5 for the domain"
    );
    // Other domains are not held back, and a look-alike pattern is no wildcard.
    app.signup("someone@other.example", &["morning-meditation"])
        .await;
    app.signup("x@victim_example", &["morning-meditation"])
        .await;
    assert_eq!(confirmation_times(&app).await.len(), 6);
    // An hour later the domain may receive again.
    clock.advance(Duration::from_secs(3600));
    app.signup("late@victim.example", &["morning-meditation"])
        .await;
    assert_eq!(confirmation_times(&app).await.len(), 7);
    app.wait_for_outbox(7).await;
}
