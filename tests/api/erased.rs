//! Erased means gone: the links of an erased person never act on anyone else, even on
//! someone who is given the same id afterwards (SQLite handed the newest id out again).

use reqwest::StatusCode;
use sangha::domain::{EmailAddress, SubscriptionStatus};

use crate::backend_tests;
use crate::support::{Backend, DEADLINE, TestApp, confirm_path_in, eventually, link_path_in};

backend_tests!(an_erased_persons_links_never_reach_the_next_signup);

/// The newest message of the outbox addressed to `email` whose text contains `needle`.
async fn mail_to(app: &TestApp, email: &str, needle: &str) -> Vec<u8> {
    let to = format!("To: {email}");
    eventually(DEADLINE, || {
        app.outbox().into_iter().rev().find(|m| {
            let text = String::from_utf8_lossy(m);
            text.contains(&to) && text.contains(needle)
        })
    })
    .await
    .unwrap_or_else(|| panic!("no email to {email} containing {needle:?}"))
}

async fn an_erased_persons_links_never_reach_the_next_signup(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // Radha signs up, confirms, and receives a meditation: she holds every kind of link.
    let r = app
        .signup("radha@example.org", &["morning-meditation"])
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let old_confirm = confirm_path_in(&mail_to(&app, "radha@example.org", "/confirm/").await);
    assert_eq!(
        app.post_form(&old_confirm, "").await.status(),
        StatusCode::OK
    );
    let content = app.write_content("m.md", "---\nsubject: Breathe\n---\nSit quietly.\n");
    let send = app.schedule_now("morning-meditation", &content);
    app.wait_for_send_done(send).await;
    let meditation = mail_to(&app, "radha@example.org", "Sit quietly").await;
    let old_unsubscribe = link_path_in(&meditation, "/unsubscribe/");
    let old_preferences = link_path_in(&meditation, "/preferences/");

    // She erases herself; she was the newest subscriber.
    let r = app
        .post_form(&format!("{old_preferences}/erase"), "confirm=yes")
        .await;
    assert!(r.status().is_success() || r.status().is_redirection());

    // Sita signs up next, and is waiting for her confirmation.
    let r = app
        .signup("sita@example.org", &["morning-meditation"])
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let sita_confirm = confirm_path_in(&mail_to(&app, "sita@example.org", "/confirm/").await);
    assert_ne!(sita_confirm, old_confirm);

    // Every one of Radha's links is a dead end, and none of them touches Sita.
    for (what, status) in [
        ("GET confirm", app.get(&old_confirm).await.status()),
        (
            "POST confirm",
            app.post_form(&old_confirm, "").await.status(),
        ),
        ("GET unsubscribe", app.get(&old_unsubscribe).await.status()),
        ("GET preferences", app.get(&old_preferences).await.status()),
        (
            "POST preferences",
            app.post_form(
                &old_preferences,
                "name=Stranger&timezone=Europe%2FBerlin&offerings=morning-meditation",
            )
            .await
            .status(),
        ),
        (
            "GET data",
            app.get(&format!("{old_preferences}/data")).await.status(),
        ),
        (
            "POST course",
            app.post_form(
                &format!("{old_preferences}/course"),
                "offering=morning-meditation&action=pause",
            )
            .await
            .status(),
        ),
        (
            "POST erase",
            app.post_form(&format!("{old_preferences}/erase"), "confirm=yes")
                .await
                .status(),
        ),
    ] {
        assert_eq!(status, StatusCode::NOT_FOUND, "{what} of an erased person");
    }
    // The RFC 8058 one-click POST answers 200 (a mailbox provider reads anything else as a
    // failure) but changes nothing.
    let r = app
        .post_form(&old_unsubscribe, "List-Unsubscribe=One-Click")
        .await;
    assert_eq!(r.status(), StatusCode::OK);

    let sita = app
        .store()
        .subscriber_detail(&EmailAddress::parse("sita@example.org").unwrap())
        .await
        .unwrap()
        .expect("Sita is still there");
    assert_eq!(sita.subscriber.name, None, "her name was not changed");
    assert_eq!(sita.subscriber.timezone, None);
    let statuses: Vec<SubscriptionStatus> = sita
        .subscriber
        .subscriptions
        .iter()
        .map(|s| s.status)
        .collect();
    assert_eq!(
        statuses,
        [SubscriptionStatus::Pending],
        "only her own link confirms her"
    );
    let actions: Vec<&str> = sita.consents.iter().map(|c| c.action.as_str()).collect();
    assert_eq!(actions, ["signup"]);
    // Her own link works.
    assert_eq!(
        app.post_form(&sita_confirm, "").await.status(),
        StatusCode::OK
    );
}
