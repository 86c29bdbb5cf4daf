//! Faults, from what the SMTP server received. The mail server drops connections in the
//! middle of `DATA` and after the final `.`, answers 421/451 at random, rejects some
//! recipients with `550 5.1.1`, or is unreachable for a while; the database is restarted
//! under a running worker, or shared by two `sangha worker` processes. Every deliverable
//! recipient gets exactly one message (a message the server took without saying so may
//! arrive twice, with one Message-ID), rejected addresses are suppressed and tried once, and
//! the send finishes with `sangha sends show` saying why some did not get it.
//!
//! The SMTP tests run a worker by hand on a manual clock, so the real backoff (30 s doubling
//! up to an hour) is skipped by moving the clock instead of waiting.
//!
//! The PostgreSQL restart test is `#[ignore]`d: it restarts the server every other test uses.
//! Run it alone, after the main suite:
//!
//! ```sh
//! TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5439/postgres \
//!     cargo test --test api -- --ignored --test-threads=1 faults::
//! ```
//!
//! It restarts the server with `pg_ctlcluster 15 ci restart -m fast` (the cluster `.ci/run`
//! creates); `SANGHA_TEST_PG_RESTART` names another shell command for another setup.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use sangha::app::Runtime;
use sangha::clock::Clock;
use sangha::config::{Config, TlsMode, TransportKind};
use sangha::delivery::{StepOutcome, Worker};
use sangha::domain::{EmailAddress, SubscriptionStatus};
use sangha::store::{SendStatus, SendSummary, Store};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::backend_tests;
use crate::sends::MORNING;
use crate::support::smtp::{ReceivedMessage, TestSmtpServer};
use crate::support::{
    Backend, DEADLINE, Options, TEST_TOKEN_KEY, TestApp, eventually, eventually_async, run_cli,
    stderr, stdout, test_config,
};

backend_tests!(
    a_send_through_a_faulty_server_reaches_every_deliverable_recipient_exactly_once,
    a_server_unreachable_for_a_while_gets_every_message_once_it_is_back,
    two_worker_processes_share_a_send_without_a_duplicate,
);

/// A manual clock well after the system's "now", where `schedule --now` puts a send.
pub(crate) const MANUAL_START: i64 = 1_800_000_000_000;
/// Longer than the longest backoff (an hour, plus a fifth of jitter).
const PAST_ANY_BACKOFF: Duration = Duration::from_secs(2 * 3600);

fn smtp(port: u16) -> impl FnOnce(&mut Config) {
    move |c| {
        c.mail.transport = TransportKind::Smtp;
        c.smtp.host = "127.0.0.1".into();
        c.smtp.port = port;
        c.smtp.tls = TlsMode::None;
    }
}

pub(crate) fn people(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("p{i}@example.org")).collect()
}

/// `sangha subscribers import --confirmed`: everyone confirmed to `offerings` (`a;b`), no
/// email sent.
pub(crate) fn import_confirmed(config: &Config, dir: &Path, people: &[String], offerings: &str) {
    let csv = dir.join("people.csv");
    let mut rows = String::from("email,name,timezone,offerings\n");
    for (i, email) in people.iter().enumerate() {
        rows.push_str(&format!("{email},Person {i},,{offerings}\n"));
    }
    std::fs::write(&csv, rows).unwrap();
    let out = run_cli(
        config,
        &[
            "subscribers",
            "import",
            csv.to_str().unwrap(),
            "--confirmed",
            "--source",
            "faults test",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

/// `sangha schedule --now` of the morning text; returns the send id.
pub(crate) fn schedule_now(config: &Config, dir: &Path) -> i64 {
    let content = dir.join("m.md");
    std::fs::write(&content, MORNING).unwrap();
    let out = run_cli(
        config,
        &[
            "schedule",
            "--offering",
            "morning-meditation",
            "--content",
            content.to_str().unwrap(),
            "--now",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).trim().parse().expect("a send id")
}

pub(crate) async fn summary(store: &Store, id: i64) -> SendSummary {
    store.send_summaries(Some(id)).await.unwrap().pop().unwrap()
}

/// The application without workers on a manual clock, and a worker to step by hand.
pub(crate) async fn manual_app(
    backend: Backend,
    server: &TestSmtpServer,
    configure: impl FnOnce(&mut Config),
) -> (TestApp, Runtime, Worker) {
    let clock = Clock::manual(MANUAL_START);
    let port = server.port();
    let app = TestApp::spawn_with(
        backend,
        Options {
            worker: false,
            clock: clock.clone(),
        },
        move |c| {
            smtp(port)(c);
            configure(c);
        },
    )
    .await;
    let runtime = Runtime::open(app.config.clone(), clock).await.unwrap();
    let worker = runtime
        .worker(runtime.templates().unwrap(), runtime.links().unwrap())
        .unwrap();
    (app, runtime, worker)
}

/// Schedules the morning text, moves the clock to it and fans it out.
pub(crate) async fn start_send(app: &TestApp, runtime: &Runtime) -> i64 {
    let id = schedule_now(&app.config, app.dir.path());
    // Scheduled at the system's "now": the manual clock is ten years later.
    app.clock.advance(Duration::from_secs(3650 * 86_400));
    runtime.scheduler().step().await.unwrap();
    id
}

/// Steps the worker until a step claims nothing; what the steps did, added up.
pub(crate) async fn steps_until_idle(worker: &Worker) -> StepOutcome {
    let mut total = StepOutcome::default();
    loop {
        let step = worker.step().await.unwrap();
        if step.is_idle() {
            return total;
        }
        total.claimed += step.claimed;
        total.sent += step.sent;
        total.retried += step.retried;
        total.failed += step.failed;
        total.skipped += step.skipped;
        total.held += step.held;
    }
}

/// Rounds of "step the worker until idle, then move the clock past every backoff" until the
/// scheduler calls the send done. Returns how many rounds it took.
async fn drive_to_done(runtime: &Runtime, worker: &Worker, id: i64) -> usize {
    for round in 1..=40 {
        steps_until_idle(worker).await;
        runtime.clock.advance(PAST_ANY_BACKOFF);
        runtime.scheduler().step().await.unwrap();
        let s = summary(&runtime.store, id).await;
        match s.status {
            SendStatus::Done => return round,
            SendStatus::Sending => {}
            other => panic!("send {id} is {other}, not sending: {s:?}"),
        }
    }
    panic!(
        "send {id} not done after 40 rounds: {:?}",
        summary(&runtime.store, id).await
    );
}

fn message_id(m: &ReceivedMessage) -> String {
    format!("<{}>", m.parsed().message_id().expect("a Message-ID"))
}

/// Recipient → the Message-IDs of the copies they got.
pub(crate) fn copies(messages: &[ReceivedMessage]) -> HashMap<String, Vec<String>> {
    let mut copies: HashMap<String, Vec<String>> = HashMap::new();
    for m in messages {
        assert_eq!(m.rcpt_to.len(), 1, "one recipient per message");
        copies
            .entry(m.rcpt_to[0].clone())
            .or_default()
            .push(message_id(m));
    }
    copies
}

/// Recipient → the Message-ID fixed on their delivery row when the send fanned out.
async fn planned_message_ids(store: &Store, send_id: i64) -> HashMap<String, String> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT s.email, d.message_id FROM deliveries d
         JOIN subscribers s ON s.id = d.subscriber_id WHERE d.send_id = $1",
    )
    .bind(send_id)
    .fetch_all(store.pool())
    .await
    .unwrap();
    rows.into_iter().collect()
}

const REJECTED: [&str; 3] = ["p7@example.org", "p77@example.org", "p177@example.org"];

async fn a_send_through_a_faulty_server_reaches_every_deliverable_recipient_exactly_once(
    backend: Backend,
) {
    let started = Instant::now();
    let server = TestSmtpServer::start().await;
    let (app, runtime, worker) = manual_app(backend, &server, |c| {
        c.worker.batch_size = 25;
        // Transient faults must never use a delivery's attempts up here.
        c.worker.max_attempts = 30;
    })
    .await;
    let everyone = people(200);
    // Two offerings, so "unsubscribed everywhere" means something.
    import_confirmed(
        &app.config,
        app.dir.path(),
        &everyone,
        "morning-meditation;guided-meditations",
    );
    for who in REJECTED {
        server.reject_recipient(who, "550 5.1.1 No such user here");
    }
    for _ in 0..3 {
        server.push_drop_during_data();
        server.push_drop_after_data();
    }
    server.set_random_faults(0.08, 0x5eed_cafe);

    let id = start_send(&app, &runtime).await;
    let rounds = drive_to_done(&runtime, &worker, id).await;

    let counts = app.store().send_counts(id).await.unwrap();
    assert_eq!(
        (
            counts.sent,
            counts.suppressed,
            counts.failed,
            counts.pending
        ),
        (197, 3, 0, 0),
        "{counts:?}"
    );
    assert_eq!(
        server.dropped_during_data(),
        3,
        "the cut-off DATAs happened"
    );
    let ambiguous = server.ambiguous();
    assert_eq!(ambiguous.len(), 3, "the unanswered DATAs happened");

    let planned = planned_message_ids(app.store(), id).await;
    let got = copies(&server.messages());
    for who in &everyone {
        if REJECTED.contains(&who.as_str()) {
            assert!(!got.contains_key(who), "{who} was rejected, yet got a copy");
            continue;
        }
        let ids = got.get(who).unwrap_or_else(|| panic!("{who} got nothing"));
        assert_eq!(ids.len(), 1, "{who} got {} accepted copies", ids.len());
        assert_eq!(ids[0], planned[who], "{who}: the Message-ID of the row");
    }
    // What the server took without answering was sent again, as the same message.
    for m in &ambiguous {
        let who = &m.rcpt_to[0];
        assert_eq!(
            got[who],
            [message_id(m)],
            "{who}: the retry of an ambiguous message"
        );
    }

    // Rejected addresses: tried once, suppressed, unsubscribed from everything.
    let links = runtime.links().unwrap();
    for who in REJECTED {
        assert_eq!(server.rcpt_attempts(who), 1, "{who} tried exactly once");
        let email = EmailAddress::parse(who).unwrap();
        assert!(
            app.store()
                .is_suppressed(&links.email_hash(&email))
                .await
                .unwrap(),
            "{who} is suppressed"
        );
        let detail = app
            .store()
            .subscriber_detail(&email)
            .await
            .unwrap()
            .unwrap();
        let subscriptions = &detail.subscriber.subscriptions;
        assert_eq!(subscriptions.len(), 2, "{subscriptions:?}");
        assert!(
            subscriptions
                .iter()
                .all(|s| s.status == SubscriptionStatus::Unsubscribed),
            "{who}: {subscriptions:?}"
        );
    }

    let show = stdout(&app.cli(&["sends", "show", &id.to_string()]));
    assert!(show.contains("status:     done"), "{show}");
    assert!(show.contains("sent: 197"), "{show}");
    let reasons: Vec<&str> = show
        .lines()
        .skip_while(|l| !l.starts_with("why some did not get it"))
        .skip(1)
        .collect();
    assert!(
        reasons.len() == 1 && reasons[0].contains("3 suppressed") && reasons[0].contains("5.1.1"),
        "one reason, for the three rejected: {show}"
    );

    let (attempts, most): (i64, i64) = sqlx::query_as(
        "SELECT CAST(SUM(attempts) AS BIGINT), MAX(attempts) FROM deliveries WHERE send_id = $1",
    )
    .bind(id)
    .fetch_one(app.store().pool())
    .await
    .unwrap();
    assert!(attempts > 200, "the faults made some deliveries retry");
    eprintln!(
        "faulty server: 200 recipients, {} random faults, 3 cut in DATA, 3 unanswered, \
         {attempts} attempts (at most {most} for one), {rounds} rounds, {} connections, {:?}",
        server.random_faults_injected(),
        server.connections(),
        started.elapsed()
    );
}

async fn a_server_unreachable_for_a_while_gets_every_message_once_it_is_back(backend: Backend) {
    let server = TestSmtpServer::start().await;
    let (app, runtime, worker) = manual_app(backend, &server, |c| c.worker.batch_size = 10).await;
    let everyone = people(30);
    import_confirmed(&app.config, app.dir.path(), &everyone, "morning-meditation");
    let id = start_send(&app, &runtime).await;

    let step = worker.step().await.unwrap();
    assert_eq!(
        step.sent, 10,
        "the server is up for the first batch: {step:?}"
    );

    // The server goes away: the pooled sessions are cut and connecting is refused. Every
    // attempt fails as transient, and each row waits its backoff before the next one.
    server.pause_accepting().await;
    let connections = server.connections();
    for attempt in 1..=2 {
        let down = steps_until_idle(&worker).await;
        assert_eq!(
            (down.claimed, down.retried, down.sent),
            (20, 20, 0),
            "attempt {attempt} while down: refused is transient"
        );
        runtime.clock.advance(PAST_ANY_BACKOFF);
    }
    let show = stdout(&app.cli(&["sends", "show", &id.to_string()]));
    assert!(show.contains("status:     sending"), "{show}");
    assert!(
        show.contains("retrying") && show.contains("cannot open an SMTP session"),
        "{show}"
    );
    assert_eq!(server.connections(), connections, "nothing got through");

    server.resume_accepting().await;
    drive_to_done(&runtime, &worker, id).await;

    let planned = planned_message_ids(app.store(), id).await;
    let got = copies(&server.messages());
    assert_eq!(got.len(), everyone.len(), "everyone got it");
    for who in &everyone {
        assert_eq!(got[who], [planned[who].clone()], "{who}: exactly one copy");
    }
    assert!(server.ambiguous().is_empty());
    let show = stdout(&app.cli(&["sends", "show", &id.to_string()]));
    assert!(
        show.contains("status:     done") && show.contains("sent: 30"),
        "{show}"
    );
    assert!(!show.contains("why some did not get it"), "{show}");
}

/// `sangha worker` with the SMTP transport, logging when it starts. Its stderr is drained
/// into the returned task, which yields the warnings and errors it logged.
async fn spawn_worker(env: &[(String, String)]) -> (Child, tokio::task::JoinHandle<Vec<String>>) {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sangha"))
        .arg("--config")
        .arg(config)
        .arg("worker")
        .envs(env.iter().cloned())
        .env("RUST_LOG", "warn,sangha::delivery=info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start sangha worker");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("delivery worker started") {
                return;
            }
        }
        panic!("sangha worker exited before starting");
    })
    .await
    .expect("sangha worker starts");
    let logged = tokio::spawn(async move {
        let mut complaints = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("WARN") || line.contains("ERROR") {
                complaints.push(line);
            }
        }
        complaints
    });
    (child, logged)
}

const SHARED_RECIPIENTS: usize = 2000;

async fn two_worker_processes_share_a_send_without_a_duplicate(backend: Backend) {
    let server = TestSmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(&backend, dir.path()).await;
    import_confirmed(
        &config,
        dir.path(),
        &people(SHARED_RECIPIENTS),
        "morning-meditation",
    );
    let id = schedule_now(&config, dir.path());
    let env: Vec<(String, String)> = [
        ("SANGHA__DATA_DIR", config.data_dir.display().to_string()),
        ("SANGHA__DATABASE__URL", config.database.url.clone()),
        ("SANGHA__TOKENS__KEY", TEST_TOKEN_KEY.to_owned()),
        ("SANGHA__MAIL__TRANSPORT", "smtp".to_owned()),
        ("SANGHA__SMTP__HOST", "127.0.0.1".to_owned()),
        ("SANGHA__SMTP__PORT", server.port().to_string()),
        ("SANGHA__SMTP__TLS", "none".to_owned()),
        ("SANGHA__WORKER__POLL_INTERVAL_MS", "20".to_owned()),
        ("SANGHA__WORKER__BATCH_SIZE", "50".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();

    // Both wait for work before there is any, so both get a share.
    let (mut first, first_log) = spawn_worker(&env).await;
    let (mut second, second_log) = spawn_worker(&env).await;
    let started = Instant::now();
    let runtime = Runtime::open(config.clone(), Clock::System).await.unwrap();
    let scheduler = runtime.scheduler();
    let done = eventually_async(DEADLINE * 4, || async {
        scheduler.step().await.unwrap();
        let s = summary(&runtime.store, id).await;
        (s.status == SendStatus::Done).then_some(s)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "the send did not finish ({} received)",
            server.messages().len()
        )
    });
    let elapsed = started.elapsed();
    first.start_kill().unwrap();
    second.start_kill().unwrap();
    first.wait().await.unwrap();
    second.wait().await.unwrap();
    let complaints: Vec<String> = [first_log.await.unwrap(), second_log.await.unwrap()].concat();

    assert_eq!(
        done.counts.sent, SHARED_RECIPIENTS as i64,
        "{:?}",
        done.counts
    );
    let messages = server.messages();
    let got = copies(&messages);
    assert_eq!(got.len(), SHARED_RECIPIENTS, "every recipient got the send");
    let duplicates: Vec<_> = got.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(duplicates.is_empty(), "duplicates: {duplicates:?}");
    assert_eq!(messages.len(), SHARED_RECIPIENTS);

    // Leases are "<host>-<pid>-<random>-<claim number>": one prefix per worker.
    let leases: Vec<String> =
        sqlx::query_scalar("SELECT leased_by FROM deliveries WHERE send_id = $1")
            .bind(id)
            .fetch_all(runtime.store.pool())
            .await
            .unwrap();
    let mut per_worker: HashMap<&str, usize> = HashMap::new();
    for lease in &leases {
        let (worker, _claim) = lease.rsplit_once('-').expect("a lease id");
        *per_worker.entry(worker).or_default() += 1;
    }
    assert_eq!(per_worker.len(), 2, "both workers sent: {per_worker:?}");
    let connections: HashSet<u64> = messages.iter().map(|m| m.connection).collect();
    assert!(
        complaints.is_empty(),
        "the workers logged problems: {complaints:#?}"
    );
    eprintln!(
        "two workers ({:?}): {SHARED_RECIPIENTS} messages in {elapsed:?} over {} SMTP \
         connections, shares {:?}",
        runtime.store.backend(),
        connections.len(),
        per_worker.values().collect::<Vec<_>>()
    );
}

const RESTART_RECIPIENTS: usize = 1000;
const RESTART_BATCH: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "restarts the PostgreSQL server of TEST_DATABASE_URL: run alone, \
            `cargo test --test api -- --ignored --test-threads=1 faults::`"]
async fn postgres_restarted_during_a_send_the_worker_reconnects_and_misses_nobody() {
    let url = std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .expect("TEST_DATABASE_URL names the PostgreSQL server to restart");
    let restart = std::env::var("SANGHA_TEST_PG_RESTART")
        .unwrap_or_else(|_| "pg_ctlcluster 15 ci restart -m fast".to_owned());
    // The application's log (errors while the server is down, the send's timeline) shows
    // with the test's output.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("sangha=info")
        .with_test_writer()
        .try_init();
    let server = TestSmtpServer::start().await;
    let port = server.port();
    let app = TestApp::spawn_with(Backend::Postgres(url), Options::default(), move |c| {
        smtp(port)(c);
        c.worker.batch_size = RESTART_BATCH as u32;
        // Rows whose result could not be recorded are claimed again soon.
        c.worker.lease_seconds = 2;
        // Slow enough that the restart lands in the middle of the send.
        c.smtp.rate_per_second = 200;
    })
    .await;
    import_confirmed(
        &app.config,
        app.dir.path(),
        &people(RESTART_RECIPIENTS),
        "morning-meditation",
    );
    let started = Instant::now();
    let id = schedule_now(&app.config, app.dir.path());
    eventually(DEADLINE, || {
        (server.messages().len() >= RESTART_RECIPIENTS / 10).then_some(())
    })
    .await
    .expect("the send gets going");
    let before = server.messages().len();
    let restarting = Instant::now();
    let status = Command::new("sh")
        .arg("-c")
        .arg(&restart)
        .status()
        .await
        .expect("run the restart command");
    assert!(status.success(), "`{restart}` failed");
    let restart_took = restarting.elapsed();
    let after = server.messages().len();
    assert!(
        after < RESTART_RECIPIENTS,
        "the send was still going when the server was back ({after} received); \
         make it slower (smtp.rate_per_second) if the restart takes longer here"
    );

    // The test's own queries fail while the server is down: keep asking.
    let done = eventually_async(DEADLINE * 4, || async {
        let s = app.store().send_summaries(Some(id)).await.ok()?.pop()?;
        (s.status == SendStatus::Done).then_some(s)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "the send did not finish after the restart ({} received)",
            server.messages().len()
        )
    });
    assert_eq!(
        done.counts.sent, RESTART_RECIPIENTS as i64,
        "{:?}",
        done.counts
    );
    let got = copies(&server.messages());
    assert_eq!(
        got.len(),
        RESTART_RECIPIENTS,
        "every recipient got the send"
    );
    let duplicates: usize = got.values().map(|ids| ids.len() - 1).sum();
    // Each lane may have a batch on the wire whose record fails while the server is down.
    let in_flight = RESTART_BATCH * sangha::delivery::LANES;
    assert!(
        duplicates <= in_flight,
        "{duplicates} duplicates, more than the batches in flight ({in_flight})"
    );
    for (who, ids) in &got {
        assert!(
            ids.iter().all(|id| id == &ids[0]),
            "{who} got different Message-IDs"
        );
    }
    eprintln!(
        "postgres restart: {before} received before, {after} once restarted \
         ({restart_took:?}), {duplicates} duplicate(s), send done after {:?}",
        started.elapsed()
    );
}
