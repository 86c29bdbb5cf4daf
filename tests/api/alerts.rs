//! The owner's alerts (`site.owner_email`): a send that pauses itself, a send whose bounces or
//! complaints pass their share, and deliveries that wait too long each email the owner once
//! per event, through the configured transport, and are listed by `sangha alerts`.

use std::time::Duration;

use sangha::app::Runtime;
use sangha::bounces::{Incoming, Notice, Recorder};
use sangha::clock::Clock;
use sangha::domain::{BounceKind, BounceSource};

use crate::backend_tests;
use crate::sends::MORNING;
use crate::support::smtp::TestSmtpServer;
use crate::support::{Backend, Options, TestApp, confirm_path_in, relay_config, stdout};

backend_tests!(
    a_send_that_pauses_itself_emails_the_owner_once,
    bounces_and_complaints_past_their_share_alert_once_per_send,
    mail_waiting_too_long_alerts_once_until_the_queue_catches_up,
    without_an_owner_address_alerts_are_kept_and_listed_not_emailed,
);

const OWNER: &str = "owner@example.org";

/// The messages of the file outbox addressed to the owner: their subjects.
fn owner_mail(app: &TestApp) -> Vec<String> {
    app.outbox()
        .iter()
        .filter_map(|raw| {
            let m = mail_parser::MessageParser::default().parse(raw)?;
            let to = m.to()?.first()?.address()?.to_owned();
            (to == OWNER).then(|| m.subject().unwrap_or_default().to_owned())
        })
        .collect()
}

/// A report of `kind` about the delivery with `message_id`.
fn report(key: &str, message_id: &str, kind: BounceKind) -> Incoming {
    Incoming {
        source: BounceSource::Import,
        report_key: key.to_owned(),
        envelope_to: Vec::new(),
        original_message_id: Some(message_id.to_owned()),
        provider_id: None,
        raw: Some(format!("the raw report {key}")),
        notices: vec![Notice {
            kind,
            recipient: None,
            status: (kind == BounceKind::Hard).then(|| "5.1.1".to_owned()),
            diagnostic: None,
        }],
    }
}

async fn a_send_that_pauses_itself_emails_the_owner_once(backend: Backend) {
    let server = TestSmtpServer::start().await;
    let clock = Clock::manual(1_800_000_000_000);
    let port = server.port();
    let app = TestApp::spawn_with(
        backend,
        Options {
            worker: false,
            clock: clock.clone(),
        },
        move |c| {
            relay_config(port)(c);
            c.site.owner_email = Some(OWNER.parse().unwrap());
            c.worker.pause_after_failures = 3;
            c.worker.pause_failure_percent = 50;
            c.worker.batch_size = 2;
        },
    )
    .await;
    let runtime = Runtime::open(app.config.clone(), clock.clone())
        .await
        .unwrap();
    let worker = runtime
        .worker(runtime.templates().unwrap(), runtime.links().unwrap())
        .unwrap();
    let alerts = runtime.alerts(worker.transport().clone());
    for i in 0..8 {
        app.signup(&format!("r{i}@example.org"), &["morning-meditation"])
            .await;
    }
    while !worker.step().await.unwrap().is_idle() {}
    for m in server.messages() {
        app.post_form(&confirm_path_in(&m.data), "").await;
    }
    let id = app.schedule_now("morning-meditation", &app.write_content("m.md", MORNING));
    // The relay refuses the subscribers, not the owner.
    for i in 0..8 {
        server.reject_recipient(
            &format!("r{i}@example.org"),
            "554 5.7.1 Your server is on a block list",
        );
    }
    clock.advance(Duration::from_secs(3650 * 86_400));
    runtime.scheduler().step().await.unwrap();
    assert_eq!(
        alerts.step().await.unwrap().emailed,
        0,
        "nothing has happened yet"
    );
    while !worker.step().await.unwrap().is_idle() {}

    let step = alerts.step().await.unwrap();
    assert_eq!(step.emailed, 1, "{step:?}");
    let got = server.messages();
    let to_owner: Vec<_> = got.iter().filter(|m| m.rcpt_to == [OWNER]).collect();
    assert_eq!(to_owner.len(), 1);
    let message = to_owner[0].parsed();
    let subject = message.subject().unwrap().to_owned();
    assert!(
        subject.contains(&format!("send {id} paused itself")),
        "{subject}"
    );
    assert_eq!(
        message.header_raw("Auto-Submitted").map(str::trim),
        Some("auto-generated")
    );
    let body = message.body_text(0).unwrap().into_owned();
    assert!(
        body.contains(&format!("sangha sends resume {id}")),
        "{body}"
    );
    assert!(body.contains("Morning practice"), "names the send: {body}");

    // Once per event: another look, or the same send failing on, adds nothing.
    assert_eq!(alerts.step().await.unwrap().emailed, 0);
    while !worker.step().await.unwrap().is_idle() {}
    assert_eq!(alerts.step().await.unwrap().emailed, 0);

    // Tried again by the owner and paused again: a new event, a new email.
    let retry = app.cli(&["sends", "retry", "--failed", &id.to_string()]);
    assert!(retry.status.success(), "{}", crate::support::stderr(&retry));
    while !worker.step().await.unwrap().is_idle() {}
    assert_eq!(alerts.step().await.unwrap().emailed, 1);
    let listed = stdout(&app.cli(&["alerts"]));
    assert_eq!(
        listed.matches("paused itself").count(),
        2,
        "both are listed: {listed}"
    );
    assert!(listed.contains("emailed"), "{listed}");
}

async fn bounces_and_complaints_past_their_share_alert_once_per_send(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        Options {
            worker: false,
            ..Options::default()
        },
        |c| {
            c.site.owner_email = Some(OWNER.parse().unwrap());
            c.worker.pause_after_failures = 2;
            c.worker.pause_failure_percent = 40;
            c.alerts.complaint_percent = 10.0;
        },
    )
    .await;
    let runtime = Runtime::open(app.config.clone(), Clock::System)
        .await
        .unwrap();
    let worker = runtime
        .worker(runtime.templates().unwrap(), runtime.links().unwrap())
        .unwrap();
    let alerts = runtime.alerts(worker.transport().clone());
    for i in 0..5 {
        app.signup(&format!("p{i}@example.org"), &["morning-meditation"])
            .await;
    }
    while !worker.step().await.unwrap().is_idle() {}
    for raw in app.outbox() {
        app.post_form(&confirm_path_in(&raw), "").await;
    }
    let send = app.schedule_now("morning-meditation", &app.write_content("m.md", MORNING));
    runtime.scheduler().step().await.unwrap();
    while !worker.step().await.unwrap().is_idle() {}
    // Every delivery went out: the send is done and can no longer pause itself.
    runtime.scheduler().step().await.unwrap();
    let sent: Vec<String> = sqlx::query_scalar(
        "SELECT message_id FROM deliveries WHERE send_id = $1 AND status = 'sent' ORDER BY id",
    )
    .bind(send)
    .fetch_all(app.store().pool())
    .await
    .unwrap();
    assert_eq!(sent.len(), 5);
    let recorder = Recorder::new(
        app.store().clone(),
        app.state.links().clone(),
        app.clock.clone(),
        &app.config,
    );

    recorder
        .record(&report("b1", &sent[0], BounceKind::Hard))
        .await
        .unwrap();
    assert_eq!(
        alerts.step().await.unwrap().emailed,
        0,
        "one bounce of five is under the minimum of two"
    );
    recorder
        .record(&report("b2", &sent[1], BounceKind::Hard))
        .await
        .unwrap();
    recorder
        .record(&report("b3", &sent[2], BounceKind::Hard))
        .await
        .unwrap();
    assert_eq!(alerts.step().await.unwrap().emailed, 1);
    let subjects = owner_mail(&app);
    assert_eq!(subjects.len(), 1, "{subjects:?}");
    assert!(
        subjects[0].contains(&format!("send {send}: 2 of 5 deliveries failed or bounced")),
        "{subjects:?}"
    );

    // One complaint in five is 20%, past 10%; a second complaint is the same event.
    recorder
        .record(&report("c1", &sent[3], BounceKind::Complaint))
        .await
        .unwrap();
    recorder
        .record(&report("c2", &sent[4], BounceKind::Complaint))
        .await
        .unwrap();
    assert_eq!(alerts.step().await.unwrap().emailed, 1);
    assert_eq!(alerts.step().await.unwrap().emailed, 0);
    let subjects = owner_mail(&app);
    assert_eq!(subjects.len(), 2, "{subjects:?}");
    assert!(
        subjects
            .iter()
            .any(|s| s.contains(&format!("send {send}: 1 of 5 recipients marked it as spam"))),
        "{subjects:?}"
    );
}

async fn mail_waiting_too_long_alerts_once_until_the_queue_catches_up(backend: Backend) {
    let clock = Clock::manual(1_800_000_000_000);
    let app = TestApp::spawn_with(
        backend,
        Options {
            worker: false,
            clock: clock.clone(),
        },
        |c| {
            c.site.owner_email = Some(OWNER.parse().unwrap());
            c.alerts.queue_late_minutes = 60;
        },
    )
    .await;
    let runtime = Runtime::open(app.config.clone(), clock.clone())
        .await
        .unwrap();
    let worker = runtime
        .worker(runtime.templates().unwrap(), runtime.links().unwrap())
        .unwrap();
    let alerts = runtime.alerts(worker.transport().clone());
    // A confirmation waits: no worker is running.
    app.signup("waiting@example.org", &["morning-meditation"])
        .await;
    clock.advance(Duration::from_secs(59 * 60));
    assert_eq!(alerts.step().await.unwrap().raised, 0, "not yet an hour");
    clock.advance(Duration::from_secs(2 * 60));
    let step = alerts.step().await.unwrap();
    assert_eq!((step.raised, step.emailed), (1, 1), "{step:?}");
    let subjects = owner_mail(&app);
    assert_eq!(subjects.len(), 1, "{subjects:?}");
    assert!(
        subjects[0].contains("emails have waited 61 minutes"),
        "{subjects:?}"
    );
    // Still late: the same event.
    clock.advance(Duration::from_secs(3600));
    assert_eq!(alerts.step().await.unwrap(), Default::default());

    // The queue catches up, and the alert is over; a later delay is a new one.
    while !worker.step().await.unwrap().is_idle() {}
    assert_eq!(alerts.step().await.unwrap(), Default::default());
    let listed = stdout(&app.cli(&["alerts"]));
    assert!(listed.contains(", over "), "{listed}");
    app.signup("second@example.org", &["morning-meditation"])
        .await;
    clock.advance(Duration::from_secs(90 * 60));
    let step = alerts.step().await.unwrap();
    assert_eq!((step.raised, step.emailed), (1, 1), "{step:?}");
    assert_eq!(owner_mail(&app).len(), 2);
}

async fn without_an_owner_address_alerts_are_kept_and_listed_not_emailed(backend: Backend) {
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
    let runtime = Runtime::open(app.config.clone(), clock.clone())
        .await
        .unwrap();
    let alerts = runtime.alerts(runtime.transport().unwrap());
    app.signup("waiting@example.org", &["morning-meditation"])
        .await;
    let before = app.outbox().len();
    clock.advance(Duration::from_secs(2 * 3600));
    let step = alerts.step().await.unwrap();
    assert_eq!((step.raised, step.emailed), (1, 0), "{step:?}");
    assert_eq!(app.outbox().len(), before);
    let listed = stdout(&app.cli(&["alerts"]));
    assert!(listed.contains("queue_late"), "{listed}");
    assert!(
        listed.contains("not emailed: site.owner_email is empty"),
        "{listed}"
    );
    let json = stdout(&app.cli(&["alerts", "--json"]));
    let rows: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(rows[0]["kind"], "queue_late");
    assert!(rows[0]["emailed_at"].is_null());
}
