//! The owner's command line: config check, offerings and subscribers.

use crate::backend_tests;
use crate::support::{Backend, TestApp, run_cli, stderr, stdout};

backend_tests!(
    offerings_list_shows_the_practice_offerings_with_counts,
    subscribers_list_filters_by_offering_and_status,
    subscribers_show_prints_each_offering_with_its_status_word,
    commands_on_a_fresh_data_folder_apply_migrations_first,
    the_owner_can_remove_and_erase_a_subscriber,
);

async fn offerings_list_shows_the_practice_offerings_with_counts(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.confirmed_subscriber("a@example.org", &["morning-meditation"])
        .await;
    app.signup(
        "b@example.org",
        &["morning-meditation", "guided-meditations"],
    )
    .await;
    let out = app.cli(&["offerings", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let line = |slug: &str| {
        text.lines()
            .find(|l| l.starts_with(slug))
            .unwrap_or_else(|| panic!("no line for {slug} in\n{text}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    // slug, name words…, kind, public, pending, confirmed, unsubscribed
    let morning = line("morning-meditation");
    assert_eq!(&morning[morning.len() - 3..], ["1", "1", "0"], "{text}");
    let guided = line("guided-meditations");
    assert_eq!(&guided[guided.len() - 3..], ["1", "0", "0"], "{text}");
    let queen = line("orgasmic-queen");
    assert!(queen.contains(&"course".to_owned()), "{text}");
    assert!(text.contains("Conscious Awakening"));

    let json: serde_json::Value =
        serde_json::from_str(&stdout(&app.cli(&["offerings", "list", "--json"]))).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 4);
}

async fn subscribers_list_filters_by_offering_and_status(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.confirmed_subscriber("one@example.org", &["morning-meditation"])
        .await;
    app.signup("two@example.org", &["guided-meditations"]).await;

    let all = stdout(&app.cli(&["subscribers", "list"]));
    assert!(
        all.contains("one@example.org") && all.contains("two@example.org"),
        "{all}"
    );
    let confirmed = stdout(&app.cli(&[
        "subscribers",
        "list",
        "--offering",
        "morning-meditation",
        "--status",
        "confirmed",
    ]));
    assert!(confirmed.contains("one@example.org"), "{confirmed}");
    assert!(!confirmed.contains("two@example.org"), "{confirmed}");
    let pending = stdout(&app.cli(&["subscribers", "list", "--status", "pending"]));
    assert!(pending.contains("two@example.org") && !pending.contains("one@example.org"));

    let bad = app.cli(&["subscribers", "list", "--status", "happy"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("--status"), "{}", stderr(&bad));
    let bad = app.cli(&["subscribers", "list", "--offering", "nothing-here"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("nothing-here"), "{}", stderr(&bad));
}

async fn subscribers_show_prints_each_offering_with_its_status_word(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.signup(
        "show@example.org",
        &["morning-meditation", "guided-meditations"],
    )
    .await;
    app.wait_for_outbox(1).await;
    let out = app.cli(&["subscribers", "show", "show@example.org"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for slug in ["morning-meditation", "guided-meditations"] {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(slug))
            .unwrap_or_else(|| panic!("{slug} missing in\n{text}"));
        assert!(line.contains("pending"), "{line}");
    }
    assert!(text.contains("signup"), "consent record shown: {text}");
    let missing = app.cli(&["subscribers", "show", "nobody@example.org"]);
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains("nobody@example.org"));
    let invalid = app.cli(&["subscribers", "show", "not an address"]);
    assert!(!invalid.status.success());
}

async fn commands_on_a_fresh_data_folder_apply_migrations_first(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::support::test_config(&backend, dir.path()).await;
    let out = run_cli(&config, &["subscribers", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("0 subscriber(s)"));
    let out = run_cli(&config, &["migrate"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

async fn the_owner_can_remove_and_erase_a_subscriber(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.confirmed_subscriber(
        "r@example.org",
        &["morning-meditation", "guided-meditations"],
    )
    .await;
    let out = app.cli(&[
        "subscribers",
        "remove",
        "r@example.org",
        "--offering",
        "guided-meditations",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let show = stdout(&app.cli(&["subscribers", "show", "r@example.org"]));
    let line = show
        .lines()
        .find(|l| l.contains("guided-meditations") && !l.contains("ip="))
        .unwrap();
    assert!(line.contains("unsubscribed"), "{show}");
    assert!(show.contains("via=owner"), "{show}");
    let out = app.cli(&["subscribers", "erase", "r@example.org"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let gone = app.cli(&["subscribers", "show", "r@example.org"]);
    assert!(!gone.status.success());
    let again = app.cli(&["subscribers", "erase", "r@example.org"]);
    assert!(stderr(&again).contains("no subscriber"));
}
