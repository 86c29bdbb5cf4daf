//! The outbox: a signup writes rows and sends nothing itself; a worker claims rows with a
//! lease, and a row whose worker died is claimed again once the lease runs out.

use std::time::Duration;

use reqwest::StatusCode;
use sangha::app::Runtime;
use sangha::clock::Clock;
use sangha::delivery::Worker;
use sangha::domain::DeliveryKind;

use crate::backend_tests;
use crate::support::{Backend, Options, TestApp};

backend_tests!(
    a_signup_only_writes_rows_and_a_worker_sends_them,
    a_delivery_claimed_by_a_crashed_worker_is_sent_after_its_lease_runs_out,
    a_transient_failure_is_retried_later_with_the_same_message_id,
);

async fn worker_for(app: &TestApp, clock: Clock) -> Worker {
    let runtime = Runtime::open(app.config.clone(), clock).await.unwrap();
    runtime
        .worker(runtime.templates().unwrap(), runtime.links().unwrap())
        .unwrap()
}

async fn a_signup_only_writes_rows_and_a_worker_sends_them(backend: Backend) {
    let app = TestApp::spawn_without_worker(backend).await;
    let r = app.signup("o@example.org", &["morning-meditation"]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    // Subscriber, pending subscription, consent and delivery were written together...
    let rows = app.store().list_subscribers(None, None).await.unwrap();
    assert_eq!(rows.len(), 1);
    let counts = app
        .store()
        .delivery_counts(Some(DeliveryKind::Confirmation))
        .await
        .unwrap();
    assert_eq!(counts.pending, 1);
    // ...and nothing was sent inside the request.
    assert!(app.outbox().is_empty());

    let worker = worker_for(&app, Clock::System).await;
    let step = worker.step().await.unwrap();
    assert_eq!((step.claimed, step.sent), (1, 1));
    assert_eq!(app.outbox().len(), 1);
    assert!(worker.step().await.unwrap().is_idle());
    assert_eq!(app.store().delivery_counts(None).await.unwrap().sent, 1);
}

async fn a_delivery_claimed_by_a_crashed_worker_is_sent_after_its_lease_runs_out(backend: Backend) {
    let clock = Clock::manual(1_800_000_000_000);
    let app = TestApp::spawn_with(
        backend,
        Options {
            worker: false,
            clock: clock.clone(),
        },
        |_| {},
    )
    .await;
    app.signup("lease@example.org", &["morning-meditation"])
        .await;
    // A worker claims the row and dies before sending.
    let now = clock.now_ms();
    let lease_ms = app.config.worker.lease_seconds as i64 * 1000;
    let claimed = app
        .store()
        .claim_deliveries("crashed-worker", now, now + lease_ms, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);

    let worker = worker_for(&app, clock.clone()).await;
    assert!(
        worker.step().await.unwrap().is_idle(),
        "the lease still holds"
    );
    clock.advance(Duration::from_millis(lease_ms as u64 + 1));
    let step = worker.step().await.unwrap();
    assert_eq!(step.sent, 1);
    assert_eq!(app.outbox().len(), 1);
    // The dead worker cannot overwrite the result with its stale lease.
    let stale = app
        .store()
        .mark_delivery_retry(claimed[0].id, "crashed-worker", now, "late", None)
        .await
        .unwrap();
    assert!(!stale);
    assert_eq!(app.store().delivery_counts(None).await.unwrap().sent, 1);
}

async fn a_transient_failure_is_retried_later_with_the_same_message_id(backend: Backend) {
    let clock = Clock::manual(1_800_000_000_000);
    let app = TestApp::spawn_with(
        backend,
        Options {
            worker: false,
            clock: clock.clone(),
        },
        |_| {},
    )
    .await;
    app.signup("retry@example.org", &["morning-meditation"])
        .await;
    let worker = worker_for(&app, clock.clone()).await;
    // The outbox folder cannot be written: a transient failure.
    let outbox = app.outbox_dir();
    std::fs::remove_dir_all(&outbox).unwrap();
    std::fs::write(&outbox, b"not a folder").unwrap();
    let step = worker.step().await.unwrap();
    assert_eq!(step.retried, 1, "{step:?}");
    let row: (i64, i64, Option<String>, String) =
        sqlx::query_as("SELECT attempts, next_attempt_at, last_error, message_id FROM deliveries")
            .fetch_one(app.store().pool())
            .await
            .unwrap();
    assert_eq!(row.0, 1);
    assert!(row.1 >= clock.now_ms() + 30_000, "backoff of at least 30 s");
    assert!(row.2.is_some());
    assert!(
        worker.step().await.unwrap().is_idle(),
        "not before its time"
    );

    std::fs::remove_file(&outbox).unwrap();
    std::fs::create_dir_all(&outbox).unwrap();
    clock.advance(Duration::from_secs(40));
    assert_eq!(worker.step().await.unwrap().sent, 1);
    let raw = app.outbox().remove(0);
    let message = mail_parser::MessageParser::default().parse(&raw).unwrap();
    assert_eq!(format!("<{}>", message.message_id().unwrap()), row.3);
}
