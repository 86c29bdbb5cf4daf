//! Leaving and changing: the unsubscribe page, RFC 8058 one-click POSTs, and the preferences
//! page with data download and erasure.

use std::time::Duration;

use reqwest::StatusCode;
use sangha::app::Runtime;
use sangha::clock::Clock;
use sangha::domain::{EmailAddress, Slug, SubscriptionStatus};

use crate::backend_tests;
use crate::support::{Backend, Options, TestApp};

backend_tests!(
    the_unsubscribe_page_changes_nothing,
    a_one_click_post_leaves_that_offering_with_200_and_no_redirect,
    a_multipart_one_click_post_works_too,
    leaving_everything_leaves_every_offering,
    unsubscribe_links_never_expire_but_tampered_ones_are_refused,
    preferences_change_offerings_name_and_timezone,
    preferences_refuse_bad_input_and_keep_what_was_typed,
    the_data_download_has_everything_kept,
    erasure_removes_the_person_and_keeps_only_a_hash,
);

struct Person {
    id: i64,
    unsubscribe_path: String,
    preferences_path: String,
}

async fn person(app: &TestApp, email: &str, offerings: &[&str], leave: &str) -> Person {
    app.confirmed_subscriber(email, offerings).await;
    let links = Runtime::open(app.config.clone(), Clock::System)
        .await
        .unwrap()
        .links()
        .unwrap();
    let detail = app
        .store()
        .subscriber_detail(&EmailAddress::parse(email).unwrap())
        .await
        .unwrap()
        .unwrap();
    let offering = app
        .store()
        .offering_by_slug(&Slug::parse(leave).unwrap())
        .await
        .unwrap()
        .unwrap();
    let base = app.config.base_url().to_owned();
    let id = detail.subscriber.id;
    Person {
        id,
        unsubscribe_path: links
            .unsubscribe_url(app.link_of(id).await, offering.id)
            .replace(&base, ""),
        preferences_path: links
            .preferences_url(app.link_of(id).await)
            .replace(&base, ""),
    }
}

async fn statuses(app: &TestApp, email: &str) -> Vec<(String, SubscriptionStatus)> {
    app.store()
        .subscriber_detail(&EmailAddress::parse(email).unwrap())
        .await
        .unwrap()
        .map(|d| {
            d.subscriber
                .subscriptions
                .into_iter()
                .map(|s| (s.offering, s.status))
                .collect()
        })
        .unwrap_or_default()
}

fn status_of(all: &[(String, SubscriptionStatus)], slug: &str) -> SubscriptionStatus {
    all.iter().find(|(s, _)| s == slug).unwrap().1
}

async fn the_unsubscribe_page_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let p = person(
        &app,
        "u@example.org",
        &["morning-meditation"],
        "morning-meditation",
    )
    .await;
    for _ in 0..2 {
        let page = app.get(&p.unsubscribe_path).await;
        assert_eq!(page.status(), StatusCode::OK);
        let html = page.text().await.unwrap();
        assert!(html.contains("Morning Meditation"));
        assert!(html.contains("value=\"everything\""));
        assert!(
            html.contains("/preferences/"),
            "offers the preferences page"
        );
    }
    let all = statuses(&app, "u@example.org").await;
    assert_eq!(
        status_of(&all, "morning-meditation"),
        SubscriptionStatus::Confirmed
    );
}

async fn a_one_click_post_leaves_that_offering_with_200_and_no_redirect(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let p = person(
        &app,
        "one@example.org",
        &["morning-meditation", "guided-meditations"],
        "morning-meditation",
    )
    .await;
    for _ in 0..2 {
        let r = app
            .post_form(&p.unsubscribe_path, "List-Unsubscribe=One-Click")
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers().get("location").is_none());
        assert!(r.headers().get("set-cookie").is_none());
    }
    let all = statuses(&app, "one@example.org").await;
    assert_eq!(
        status_of(&all, "morning-meditation"),
        SubscriptionStatus::Unsubscribed
    );
    assert_eq!(
        status_of(&all, "guided-meditations"),
        SubscriptionStatus::Confirmed
    );
    let detail = app
        .store()
        .subscriber_detail(&EmailAddress::parse("one@example.org").unwrap())
        .await
        .unwrap()
        .unwrap();
    let records: Vec<_> = detail
        .consents
        .iter()
        .filter(|c| c.action == "unsubscribe")
        .collect();
    assert_eq!(records.len(), 1, "the repeat records nothing");
    assert_eq!(records[0].offerings, ["morning-meditation"]);
}

async fn a_multipart_one_click_post_works_too(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let p = person(
        &app,
        "mp@example.org",
        &["morning-meditation"],
        "morning-meditation",
    )
    .await;
    let form = reqwest::multipart::Form::new().text("List-Unsubscribe", "One-Click");
    let r = app
        .http
        .post(app.url(&p.unsubscribe_path))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let all = statuses(&app, "mp@example.org").await;
    assert_eq!(
        status_of(&all, "morning-meditation"),
        SubscriptionStatus::Unsubscribed
    );
    // An empty POST (some providers send none) is a one-click too.
    let q = person(
        &app,
        "empty@example.org",
        &["morning-meditation"],
        "morning-meditation",
    )
    .await;
    let r = app
        .http
        .post(app.url(&q.unsubscribe_path))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let all = statuses(&app, "empty@example.org").await;
    assert_eq!(
        status_of(&all, "morning-meditation"),
        SubscriptionStatus::Unsubscribed
    );
}

async fn leaving_everything_leaves_every_offering(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let p = person(
        &app,
        "all@example.org",
        &[
            "morning-meditation",
            "guided-meditations",
            "conscious-awakening",
        ],
        "guided-meditations",
    )
    .await;
    let r = app.post_form(&p.unsubscribe_path, "scope=everything").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains("no more emails"));
    for (_, status) in statuses(&app, "all@example.org").await {
        assert_eq!(status, SubscriptionStatus::Unsubscribed);
    }
}

async fn unsubscribe_links_never_expire_but_tampered_ones_are_refused(backend: Backend) {
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
    let p = person(
        &app,
        "old@example.org",
        &["morning-meditation"],
        "morning-meditation",
    )
    .await;
    clock.advance(Duration::from_secs(10 * 365 * 86_400));
    let mut tampered = p.unsubscribe_path.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(
        app.post_form(&tampered, "").await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(app.get(&tampered).await.status(), StatusCode::NOT_FOUND);
    // A preferences token is no unsubscribe token.
    let wrong = p.preferences_path.replace("/preferences/", "/unsubscribe/");
    assert_eq!(
        app.post_form(&wrong, "").await.status(),
        StatusCode::NOT_FOUND
    );
    let r = app
        .post_form(&p.unsubscribe_path, "List-Unsubscribe=One-Click")
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let all = statuses(&app, "old@example.org").await;
    assert_eq!(
        status_of(&all, "morning-meditation"),
        SubscriptionStatus::Unsubscribed
    );
}

async fn preferences_change_offerings_name_and_timezone(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let p = person(
        &app,
        "pref@example.org",
        &["morning-meditation"],
        "morning-meditation",
    )
    .await;
    let page = app.get(&p.preferences_path).await.text().await.unwrap();
    assert!(page.contains("pref@example.org"));
    let r = app
        .post_form(
            &p.preferences_path,
            "offerings=guided-meditations&offerings=conscious-awakening&name=Radha+Devi&timezone=Asia%2FKathmandu",
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let back = r.headers()["location"].to_str().unwrap().to_owned();
    let page = app.get(&back).await.text().await.unwrap();
    assert!(page.contains("saved"), "says it was saved");
    assert!(page.contains("value=\"Radha Devi\""));
    let all = statuses(&app, "pref@example.org").await;
    assert_eq!(
        status_of(&all, "morning-meditation"),
        SubscriptionStatus::Unsubscribed
    );
    assert_eq!(
        status_of(&all, "guided-meditations"),
        SubscriptionStatus::Confirmed
    );
    assert_eq!(
        status_of(&all, "conscious-awakening"),
        SubscriptionStatus::Confirmed
    );
    let rows = app.store().list_subscribers(None, None).await.unwrap();
    let row = rows.iter().find(|r| r.email == "pref@example.org").unwrap();
    assert_eq!(row.name.as_deref(), Some("Radha Devi"));
    assert_eq!(row.timezone.as_deref(), Some("Asia/Kathmandu"));
}

async fn preferences_refuse_bad_input_and_keep_what_was_typed(backend: Backend) {
    let app = TestApp::spawn_with(backend, Options::default(), |c| {
        c.offerings[3].public = false;
    })
    .await;
    let p = person(
        &app,
        "bad@example.org",
        &["morning-meditation"],
        "morning-meditation",
    )
    .await;
    let r = app
        .post_form(
            &p.preferences_path,
            "offerings=morning-meditation&timezone=Mars%2FOlympus&name=Mira",
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("Mars/Olympus") && html.contains("not a known"),
        "{html}"
    );
    // A private offering the person does not have cannot be added from here.
    let r = app
        .post_form(&p.preferences_path, "offerings=orgasmic-queen")
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let all = statuses(&app, "bad@example.org").await;
    assert_eq!(all.len(), 1);
    assert_eq!(
        status_of(&all, "morning-meditation"),
        SubscriptionStatus::Confirmed
    );
}

async fn the_data_download_has_everything_kept(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let p = person(
        &app,
        "mine@example.org",
        &["morning-meditation"],
        "morning-meditation",
    )
    .await;
    let r = app.get(&format!("{}/data", p.preferences_path)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("attachment")
    );
    let data: serde_json::Value = r.json().await.unwrap();
    assert_eq!(data["email"], "mine@example.org");
    assert_eq!(data["subscriptions"][0]["status"], "confirmed");
    assert_eq!(data["consents"].as_array().unwrap().len(), 2);
    let _ = p.id;
}

async fn erasure_removes_the_person_and_keeps_only_a_hash(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let p = person(
        &app,
        "gone@example.org",
        &["morning-meditation"],
        "morning-meditation",
    )
    .await;
    let r = app
        .post_form(&format!("{}/erase", p.preferences_path), "")
        .await;
    assert_eq!(
        r.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "needs the tick"
    );
    assert!(!statuses(&app, "gone@example.org").await.is_empty());
    let r = app
        .post_form(&format!("{}/erase", p.preferences_path), "confirm=yes")
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let email = EmailAddress::parse("gone@example.org").unwrap();
    assert!(
        app.store()
            .subscriber_detail(&email)
            .await
            .unwrap()
            .is_none()
    );
    for table in ["consents", "deliveries", "subscriptions"] {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM {table} WHERE subscriber_id = $1"
        )))
        .bind(p.id)
        .fetch_one(app.store().pool())
        .await
        .unwrap();
        assert_eq!(n, 0, "{table}");
    }
    let links = Runtime::open(app.config.clone(), Clock::System)
        .await
        .unwrap()
        .links()
        .unwrap();
    assert!(
        app.store()
            .is_suppressed(&links.email_hash(&email))
            .await
            .unwrap()
    );
    let kept: Vec<String> = sqlx::query_scalar("SELECT email_hash FROM suppressions")
        .fetch_all(app.store().pool())
        .await
        .unwrap();
    assert!(
        kept.iter().all(|h| !h.contains("gone")),
        "only a hash is kept"
    );
    // The links of the erased person lead nowhere now.
    assert_eq!(
        app.get(&p.preferences_path).await.status(),
        StatusCode::NOT_FOUND
    );
    let r = app
        .post_form(&p.unsubscribe_path, "List-Unsubscribe=One-Click")
        .await;
    assert_eq!(r.status(), StatusCode::OK, "one-click still answers 200");
}
