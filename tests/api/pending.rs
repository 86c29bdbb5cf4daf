//! Signups nobody confirmed: one reminder after `signup.confirmation_reminder_after_hours`,
//! none to a person who confirmed, left or is suppressed; deletion after
//! `signup.unconfirmed_delete_after_days` that leaves no row of the person; and the pending
//! list that says how long each has waited. The clock is moved, never slept on.

use std::time::Duration;

use sangha::app::Runtime;
use sangha::clock::{Clock, Millis};
use sangha::delivery::{Scheduler, Worker};
use sangha::domain::{EmailAddress, SuppressionReason};
use sqlx::AssertSqlSafe;

use crate::backend_tests;
use crate::support::{Backend, Options, TestApp, confirm_path_in, stdout};

backend_tests!(
    a_signup_nobody_confirmed_gets_one_reminder_after_48_hours_and_not_before,
    no_reminder_reaches_a_person_who_confirmed_left_or_is_suppressed,
    the_link_in_the_reminder_confirms,
    people_who_never_confirmed_are_deleted_after_30_days_leaving_no_row,
    the_pending_list_says_how_long_each_has_waited_and_whether_reminded,
);

const HOUR: u64 = 3600;
const HOUR_MS: Millis = 3_600_000;
const DAY_MS: Millis = 24 * HOUR_MS;
const T0: Millis = 1_800_000_000_000;

/// An app whose scheduler and worker the test steps, on a clock standing at `start`.
async fn app_at(backend: Backend, start: Millis) -> (TestApp, Scheduler, Worker) {
    let app = TestApp::spawn_with(
        backend,
        Options {
            worker: false,
            clock: Clock::manual(start),
        },
        |_| {},
    )
    .await;
    let runtime = Runtime::open(app.config.clone(), app.clock.clone())
        .await
        .unwrap();
    let scheduler = runtime.scheduler();
    let worker = runtime
        .worker(runtime.templates().unwrap(), runtime.links().unwrap())
        .unwrap();
    (app, scheduler, worker)
}

async fn drain(worker: &Worker) {
    while !worker.step().await.unwrap().is_idle() {}
}

/// The address each confirmation email (first or reminder) was queued for, oldest first.
async fn confirmation_emails(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT s.email FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id
         WHERE d.kind = 'confirmation' ORDER BY d.id",
    )
    .fetch_all(app.store().pool())
    .await
    .unwrap()
}

/// The messages in the outbox addressed to `email`, oldest first.
fn messages_to(app: &TestApp, email: &str) -> Vec<Vec<u8>> {
    app.outbox()
        .into_iter()
        .filter(|raw| subject_and_to(raw).1 == email)
        .collect()
}

/// Moves the clock on to `at`.
fn move_to(app: &TestApp, at: Millis) {
    let by = at - app.clock.now_ms();
    assert!(by >= 0, "the clock only moves forward");
    app.clock.advance(Duration::from_millis(by as u64));
}

fn subject_and_to(raw: &[u8]) -> (String, String) {
    let message = mail_parser::MessageParser::default().parse(raw).unwrap();
    let to = message
        .to()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .unwrap()
        .to_owned();
    (message.subject().unwrap_or_default().to_owned(), to)
}

async fn status_of(app: &TestApp, email: &str) -> Vec<String> {
    let email = EmailAddress::parse(email).unwrap();
    match app.store().subscriber_detail(&email).await.unwrap() {
        Some(d) => d
            .subscriber
            .subscriptions
            .iter()
            .map(|s| s.status.to_string())
            .collect(),
        None => Vec::new(),
    }
}

async fn a_signup_nobody_confirmed_gets_one_reminder_after_48_hours_and_not_before(
    backend: Backend,
) {
    let (app, scheduler, worker) = app_at(backend, T0).await;
    app.signup("waiting@example.org", &["morning-meditation"])
        .await;
    drain(&worker).await;
    assert_eq!(app.outbox().len(), 1);

    // Not before 48 hours.
    app.clock.advance(Duration::from_secs(47 * HOUR + 59 * 60));
    scheduler.step().await.unwrap();
    assert_eq!(
        confirmation_emails(&app).await.len(),
        1,
        "reminded too early"
    );

    // The scheduler looks every ten minutes: by 48 h 10 min it has.
    app.clock.advance(Duration::from_secs(11 * 60));
    scheduler.step().await.unwrap();
    assert_eq!(
        confirmation_emails(&app).await,
        ["waiting@example.org", "waiting@example.org"]
    );
    drain(&worker).await;
    let outbox = app.outbox();
    assert_eq!(outbox.len(), 2);
    let (subject, to) = subject_and_to(&outbox[1]);
    assert_eq!(to, "waiting@example.org");
    assert!(subject.to_lowercase().contains("reminder"), "{subject}");
    let text = String::from_utf8_lossy(&outbox[1]).to_lowercase();
    assert!(text.contains("this is a reminder"), "the body says so");
    // The first email is not a reminder.
    let (first, _) = subject_and_to(&outbox[0]);
    assert!(!first.to_lowercase().contains("reminder"), "{first}");

    // Once, ever: days later, still two.
    for _ in 0..6 {
        app.clock.advance(Duration::from_secs(24 * HOUR));
        scheduler.step().await.unwrap();
    }
    drain(&worker).await;
    assert_eq!(confirmation_emails(&app).await.len(), 2);
    assert_eq!(app.outbox().len(), 2);
}

async fn no_reminder_reaches_a_person_who_confirmed_left_or_is_suppressed(backend: Backend) {
    let (app, scheduler, worker) = app_at(backend, T0).await;
    let people = [
        "confirmed@example.org",
        "left@example.org",
        "bounced@example.org",
        "listed@example.org",
        "late@example.org",
        "waiting@example.org",
    ];
    for email in people {
        app.signup(email, &["morning-meditation"]).await;
        drain(&worker).await;
    }
    let outbox = app.outbox();
    assert_eq!(outbox.len(), people.len());
    // Confirmed through the link.
    let link = confirm_path_in(&messages_to(&app, "confirmed@example.org")[0]);
    assert!(app.post_form(&link, "").await.status().is_success());
    // Left before confirming (the owner removed them).
    let left = EmailAddress::parse("left@example.org").unwrap();
    let id = app
        .store()
        .subscriber_detail(&left)
        .await
        .unwrap()
        .unwrap()
        .subscriber
        .id;
    let owner = sangha::store::ConsentMeta {
        ip: None,
        user_agent: None,
        text_hash: String::new(),
        source: sangha::domain::ConsentSource::Owner,
    };
    app.store()
        .unsubscribe(id, None, &owner, app.clock.now_ms())
        .await
        .unwrap();
    // The confirmation bounced: suppressed and unsubscribed.
    let links = app.state.links().clone();
    let bounced = EmailAddress::parse("bounced@example.org").unwrap();
    let id = app
        .store()
        .subscriber_detail(&bounced)
        .await
        .unwrap()
        .unwrap()
        .subscriber
        .id;
    app.store()
        .suppress_subscriber(
            id,
            &links.email_hash(&bounced),
            SuppressionReason::Bounced,
            app.clock.now_ms(),
        )
        .await
        .unwrap();
    // On the suppression list only (a complaint about another mail put it there), still
    // pending.
    let listed = EmailAddress::parse("listed@example.org").unwrap();
    sqlx::query(
        "INSERT INTO suppressions (email_hash, reason, created_at) VALUES ($1, 'complained', $2)",
    )
    .bind(links.email_hash(&listed))
    .bind(app.clock.now_ms())
    .execute(app.store().pool())
    .await
    .unwrap();

    app.clock.advance(Duration::from_secs(49 * HOUR));
    scheduler.step().await.unwrap();
    assert_eq!(
        confirmation_emails(&app).await[people.len()..],
        ["late@example.org", "waiting@example.org"]
    );
    // late@ confirms with the first link after the reminder was queued, before it is sent:
    // the reminder is skipped.
    let link = confirm_path_in(&messages_to(&app, "late@example.org")[0]);
    assert!(app.post_form(&link, "").await.status().is_success());
    drain(&worker).await;
    let sent: Vec<String> = app.outbox()[people.len()..]
        .iter()
        .map(|raw| subject_and_to(raw).1)
        .collect();
    assert_eq!(sent, ["waiting@example.org"]);
    let skipped: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id
         WHERE s.email = 'late@example.org' AND d.status = 'skipped'",
    )
    .fetch_one(app.store().pool())
    .await
    .unwrap();
    assert_eq!(skipped, 1);

    // The listed address is never reminded, later looks included.
    app.clock.advance(Duration::from_secs(24 * HOUR));
    scheduler.step().await.unwrap();
    assert_eq!(confirmation_emails(&app).await.len(), people.len() + 2);
}

async fn the_link_in_the_reminder_confirms(backend: Backend) {
    let (app, scheduler, worker) = app_at(backend, T0).await;
    app.signup(
        "waiting@example.org",
        &["morning-meditation", "guided-meditations"],
    )
    .await;
    drain(&worker).await;
    // The reminder link works for a week from the reminder: six days later the first link
    // (a week from the signup) has expired, the reminder's has not.
    app.clock.advance(Duration::from_secs(48 * HOUR + 20 * 60));
    scheduler.step().await.unwrap();
    drain(&worker).await;
    let outbox = app.outbox();
    assert_eq!(outbox.len(), 2);
    let first = confirm_path_in(&outbox[0]);
    let reminder = confirm_path_in(&outbox[1]);
    app.clock.advance(Duration::from_secs(6 * 24 * HOUR));
    assert_eq!(
        app.get(&first).await.status(),
        404,
        "the first link expired"
    );
    let page = app.get(&reminder).await;
    assert_eq!(page.status(), 200, "a GET shows the button");
    assert_eq!(
        status_of(&app, "waiting@example.org").await,
        ["pending", "pending"]
    );
    let confirmed = app.post_form(&reminder, "").await;
    assert!(confirmed.status().is_success(), "{}", confirmed.status());
    assert_eq!(
        status_of(&app, "waiting@example.org").await,
        ["confirmed", "confirmed"]
    );
}

/// The tables of the schema and their columns, with whether each holds text.
async fn columns(app: &TestApp, backend: &Backend) -> Vec<(String, String, bool)> {
    let pool = app.store().pool();
    match backend {
        Backend::Sqlite => {
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT name FROM sqlite_master WHERE type = 'table'
                 AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_sqlx%'",
            )
            .fetch_all(pool)
            .await
            .unwrap();
            let mut out = Vec::new();
            for table in tables {
                let cols: Vec<(String, String)> = sqlx::query_as(AssertSqlSafe(format!(
                    "SELECT name, type FROM pragma_table_info('{table}')"
                )))
                .fetch_all(pool)
                .await
                .unwrap();
                for (name, ty) in cols {
                    out.push((table.clone(), name, ty.eq_ignore_ascii_case("TEXT")));
                }
            }
            out
        }
        Backend::Postgres(_) => {
            let cols: Vec<(String, String, String)> = sqlx::query_as(
                "SELECT table_name::text, column_name::text, data_type::text
                 FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name NOT LIKE '_sqlx%'",
            )
            .fetch_all(pool)
            .await
            .unwrap();
            cols.into_iter()
                .map(|(t, c, ty)| (t, c, ty == "text"))
                .collect()
        }
    }
}

/// Rows anywhere in the schema that name subscriber `id` or contain `email`, as
/// `table.column`. The table and column names come from the schema itself, never from input.
async fn traces(app: &TestApp, backend: &Backend, id: i64, email: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (table, column, text) in columns(app, backend).await {
        let by_id = column == "subscriber_id" || (table == "subscribers" && column == "id");
        let n: i64 = if by_id {
            sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT COUNT(*) FROM {table} WHERE {column} = $1"
            )))
            .bind(id)
            .fetch_one(app.store().pool())
            .await
            .unwrap()
        } else if text {
            sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT COUNT(*) FROM {table} WHERE lower({column}) LIKE $1"
            )))
            .bind(format!("%{email}%"))
            .fetch_one(app.store().pool())
            .await
            .unwrap()
        } else {
            0
        };
        if n > 0 {
            found.push(format!("{table}.{column}"));
        }
    }
    found
}

async fn people_who_never_confirmed_are_deleted_after_30_days_leaving_no_row(backend: Backend) {
    let (app, scheduler, worker) = app_at(backend.clone(), T0).await;
    for email in [
        "gone@example.org",
        "bounced@example.org",
        "kept@example.org",
    ] {
        app.signup(email, &["morning-meditation"]).await;
        drain(&worker).await;
    }
    let link = confirm_path_in(&messages_to(&app, "kept@example.org")[0]);
    assert!(app.post_form(&link, "").await.status().is_success());
    let links = app.state.links().clone();
    let detail = |email: &'static str| {
        let store = app.store().clone();
        async move {
            store
                .subscriber_detail(&EmailAddress::parse(email).unwrap())
                .await
                .unwrap()
        }
    };
    let gone = detail("gone@example.org").await.unwrap().subscriber.id;
    let bounced = detail("bounced@example.org").await.unwrap().subscriber.id;
    // bounced@'s confirmation bounced: a report naming the address, and the suppression.
    let bounced_email = EmailAddress::parse("bounced@example.org").unwrap();
    app.store()
        .suppress_subscriber(
            bounced,
            &links.email_hash(&bounced_email),
            SuppressionReason::Bounced,
            app.clock.now_ms(),
        )
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO bounces (received_at, source, dedup_key, kind, recipient, subscriber_id,
                              action)
         VALUES ($1, 'import', 'k1', 'hard', 'Bounced@example.org', $2, 'suppressed'),
                ($1, 'import', 'k2', 'hard', 'bounced@example.org', NULL, 'unmatched')",
    )
    .bind(app.clock.now_ms())
    .bind(bounced)
    .execute(app.store().pool())
    .await
    .unwrap();
    // The reminder goes out (a row in signup_reminders, a delivery).
    move_to(&app, T0 + 49 * HOUR_MS);
    scheduler.step().await.unwrap();
    drain(&worker).await;
    assert_eq!(messages_to(&app, "gone@example.org").len(), 2);
    // Someone who signed up 20 days in is not 30 days old at day 31.
    move_to(&app, T0 + 20 * DAY_MS);
    app.signup("recent@example.org", &["morning-meditation"])
        .await;
    drain(&worker).await;

    assert!(
        !traces(&app, &backend, gone, "gone@example.org")
            .await
            .is_empty()
    );
    // An hour short of 30 days: nobody is deleted yet.
    move_to(&app, T0 + 30 * DAY_MS - HOUR_MS);
    scheduler.step().await.unwrap();
    assert_eq!(status_of(&app, "gone@example.org").await, ["pending"]);
    // Past 30 days.
    move_to(&app, T0 + 30 * DAY_MS + HOUR_MS);
    scheduler.step().await.unwrap();

    assert_eq!(
        traces(&app, &backend, gone, "gone@example.org").await,
        Vec::<String>::new(),
        "a row of the person is left"
    );
    assert_eq!(
        traces(&app, &backend, bounced, "bounced@example.org").await,
        Vec::<String>::new(),
        "a row of the person is left"
    );
    // Nothing keyed by their inbox either, but the suppression the bounce put there.
    let count = |sql: &'static str, key: String| {
        let pool = app.store().pool().clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .bind(key)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let gone_email = EmailAddress::parse("gone@example.org").unwrap();
    for email in [&gone_email, &bounced_email] {
        assert_eq!(
            count(
                "SELECT COUNT(*) FROM confirmation_cooldowns WHERE mailbox_key = $1",
                links.mailbox_key(email)
            )
            .await,
            0
        );
    }
    assert_eq!(
        count(
            "SELECT COUNT(*) FROM suppressions WHERE email_hash = $1",
            links.email_hash(&gone_email)
        )
        .await,
        0,
        "a deletion is not an erasure: nothing is added to the suppression list"
    );
    assert_eq!(
        count(
            "SELECT COUNT(*) FROM suppressions WHERE email_hash = $1",
            links.email_hash(&bounced_email)
        )
        .await,
        1,
        "the suppression stays"
    );
    assert_eq!(status_of(&app, "kept@example.org").await, ["confirmed"]);
    assert_eq!(status_of(&app, "recent@example.org").await, ["pending"]);
    // Someone deleted can sign up again as new.
    app.signup("gone@example.org", &["morning-meditation"])
        .await;
    assert_eq!(status_of(&app, "gone@example.org").await, ["pending"]);
}

async fn the_pending_list_says_how_long_each_has_waited_and_whether_reminded(backend: Backend) {
    // The command reads the system clock: the signups are made 50 and 40 hours before it.
    let start = jiff::Timestamp::now().as_millisecond() - 50 * 3_600_000;
    let (app, scheduler, worker) = app_at(backend, start).await;
    app.signup("early@example.org", &["morning-meditation"])
        .await;
    app.signup("done@example.org", &["morning-meditation"])
        .await;
    drain(&worker).await;
    let link = confirm_path_in(&messages_to(&app, "done@example.org")[0]);
    assert!(app.post_form(&link, "").await.status().is_success());
    app.clock.advance(Duration::from_secs(10 * HOUR));
    app.signup("later@example.org", &["guided-meditations"])
        .await;
    drain(&worker).await;
    app.clock.advance(Duration::from_secs(39 * HOUR));
    scheduler.step().await.unwrap();

    let out = stdout(&app.cli(&["subscribers", "list", "--status", "pending"]));
    let line = |email: &str| {
        out.lines()
            .find(|l| l.starts_with(email))
            .unwrap_or_else(|| panic!("no line for {email}:\n{out}"))
            .to_owned()
    };
    assert!(out.lines().next().unwrap().contains("WAITING"), "{out}");
    let early = line("early@example.org");
    assert!(early.contains(" 2d 2h "), "{early}");
    assert!(!early.contains(" no "), "reminded: {early}");
    let later = line("later@example.org");
    assert!(later.contains(" 1d 16h "), "{later}");
    assert!(later.contains(" no "), "not reminded: {later}");
    assert!(!out.contains("done@example.org"), "{out}");

    let json: serde_json::Value = serde_json::from_str(&stdout(&app.cli(&[
        "subscribers",
        "list",
        "--status",
        "pending",
        "--json",
    ])))
    .unwrap();
    let rows = json.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let early = rows
        .iter()
        .find(|r| r["email"] == "early@example.org")
        .unwrap();
    assert_eq!(early["signed_up_at"], start);
    assert!(early["reminded_at"].is_i64(), "{early}");
    let later = rows
        .iter()
        .find(|r| r["email"] == "later@example.org")
        .unwrap();
    assert!(later["reminded_at"].is_null(), "{later}");
}
