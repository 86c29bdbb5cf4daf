//! Stopping, and a database that refuses writes, found by a hostile probe (issue 13, points 4
//! and 5). A mail server that never answers after `DATA` must not hold a stop beyond
//! `worker.shutdown_grace_seconds`, and the site keeps answering until the end of it. Results
//! that could not be written are kept and written later, never sent again.

use std::process::Stdio;
use std::time::{Duration, Instant};

use sangha::store::Store;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::backend_tests;
use crate::faults::{
    copies, import_confirmed, manual_app, people, schedule_now, start_send, steps_until_idle,
    summary,
};
use crate::support::smtp::TestSmtpServer;
use crate::support::{Backend, DEADLINE, TEST_TOKEN_KEY, stdout, test_config};

backend_tests!(
    a_stop_waits_for_a_silent_mail_server_no_longer_than_the_grace,
    results_the_database_refused_are_written_later_and_never_sent_twice,
);

/// The grace the stop test configures.
const GRACE: Duration = Duration::from_secs(2);
/// What a stop may take beyond the grace: a process exit, closing the database.
const STOP_MARGIN: Duration = Duration::from_secs(3);

/// `sangha serve` with the given environment; returns the child and the address it listens on.
async fn serve(env: &[(String, String)]) -> (Child, String) {
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sangha"))
        .arg("--config")
        .arg(config)
        .arg("serve")
        .envs(env.iter().cloned())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start sangha serve");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let address = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(address) = line.strip_prefix("Sangha is listening on ") {
                return address.to_owned();
            }
        }
        panic!("serve exited before listening");
    })
    .await
    .expect("serve starts");
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, address)
}

async fn a_stop_waits_for_a_silent_mail_server_no_longer_than_the_grace(backend: Backend) {
    let server = TestSmtpServer::start().await;
    server.push_silence_after_data();
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(&backend, dir.path()).await;
    import_confirmed(
        &config,
        dir.path(),
        &["quiet@example.org".to_owned()],
        "morning-meditation",
    );
    let send = schedule_now(&config, dir.path());
    let env: Vec<(String, String)> = [
        ("SANGHA__DATA_DIR", config.data_dir.display().to_string()),
        ("SANGHA__DATABASE__URL", config.database.url.clone()),
        ("SANGHA__TOKENS__KEY", TEST_TOKEN_KEY.to_owned()),
        ("SANGHA__SERVER__BIND", "127.0.0.1:0".to_owned()),
        ("SANGHA__MAIL__TRANSPORT", "smtp".to_owned()),
        ("SANGHA__SMTP__HOST", "127.0.0.1".to_owned()),
        ("SANGHA__SMTP__PORT", server.port().to_string()),
        ("SANGHA__SMTP__TLS", "none".to_owned()),
        // The default: a silent server holds a message this long.
        ("SANGHA__SMTP__TIMEOUT_SECONDS", "30".to_owned()),
        ("SANGHA__WORKER__POLL_INTERVAL_MS", "50".to_owned()),
        (
            "SANGHA__WORKER__SHUTDOWN_GRACE_SECONDS",
            GRACE.as_secs().to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let (mut child, address) = serve(&env).await;

    // The message is on the wire and the server says nothing.
    let deadline = Instant::now() + DEADLINE;
    while server.ambiguous().is_empty() {
        assert!(Instant::now() < deadline, "the message never reached DATA");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let pid = child.id().unwrap().to_string();
    let stop_asked = Instant::now();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    // Until it exits, the site keeps answering.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let mut answered_while_stopping = 0;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            stop_asked.elapsed() < GRACE + STOP_MARGIN,
            "serve still running {:?} after SIGTERM (grace {GRACE:?})",
            stop_asked.elapsed()
        );
        if let Ok(response) = http.get(format!("{address}/healthz")).send().await
            && response.status().is_success()
        {
            answered_while_stopping += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took = stop_asked.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(
        answered_while_stopping > 0,
        "/healthz never answered between SIGTERM and the exit ({took:?})"
    );
    assert!(
        took >= GRACE,
        "stopped after {took:?}, before the grace ended: the message was not given its time"
    );

    // The dropped message is neither sent nor lost: its row waits for its lease to run out,
    // as after a crash.
    let store = Store::connect(&config.database.url, 1).await.unwrap();
    let (status, leased): (String, Option<i64>) = sqlx::query_as(
        "SELECT status, lease_until FROM deliveries WHERE send_id = $1 AND kind = 'send'",
    )
    .bind(send)
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(status, "pending");
    assert!(leased.is_some(), "the row keeps its lease");
    assert_eq!(server.messages().len(), 0);
    assert_eq!(server.ambiguous().len(), 1);
    store.close().await;
}

/// Makes the database refuse every change of a delivery's status, as a full disk refuses the
/// record of a result, until [`accept_writes`]. Claims (which do not set the status) still
/// work, so a worker that claims while it cannot record is caught.
async fn refuse_result_writes(store: &Store) {
    let statements: &[&str] = match store.backend() {
        sangha::store::Backend::Sqlite => &[
            "CREATE TABLE probe_refuse_writes (on_purpose INTEGER)",
            "CREATE TRIGGER probe_refuse_results BEFORE UPDATE OF status ON deliveries
             WHEN EXISTS (SELECT 1 FROM probe_refuse_writes)
             BEGIN SELECT RAISE(ABORT, 'database or disk is full (probe)'); END",
        ],
        sangha::store::Backend::Postgres => &[
            "CREATE TABLE probe_refuse_writes (on_purpose INTEGER)",
            "CREATE FUNCTION probe_refuse_results() RETURNS trigger AS $$
             BEGIN
                 IF EXISTS (SELECT 1 FROM probe_refuse_writes) THEN
                     RAISE EXCEPTION 'could not extend file: No space left on device (probe)';
                 END IF;
                 RETURN NEW;
             END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER probe_refuse_results BEFORE UPDATE OF status ON deliveries
             FOR EACH ROW EXECUTE FUNCTION probe_refuse_results()",
        ],
    };
    for sql in statements {
        sqlx::query(*sql).execute(store.pool()).await.unwrap();
    }
    sqlx::query("INSERT INTO probe_refuse_writes VALUES (1)")
        .execute(store.pool())
        .await
        .unwrap();
}

async fn accept_writes(store: &Store) {
    sqlx::query("DELETE FROM probe_refuse_writes")
        .execute(store.pool())
        .await
        .unwrap();
}

async fn results_the_database_refused_are_written_later_and_never_sent_twice(backend: Backend) {
    let server = TestSmtpServer::start().await;
    let (app, runtime, worker) = manual_app(backend, &server, |c| {
        c.worker.batch_size = 2;
        c.worker.lease_seconds = 60;
    })
    .await;
    let everyone = people(6);
    import_confirmed(&app.config, app.dir.path(), &everyone, "morning-meditation");
    let send = start_send(&app, &runtime).await;
    refuse_result_writes(app.store()).await;

    // Two messages go out and are accepted; their results cannot be written.
    let first = worker.step().await.unwrap();
    assert_eq!((first.claimed, first.sent), (2, 2), "{first:?}");
    assert_eq!(server.messages().len(), 2);
    // While the database refuses writes, nothing new is claimed, even once the leases of the
    // two unrecorded rows ran out.
    for _ in 0..3 {
        runtime.clock.advance(Duration::from_secs(90));
        let step = worker.step().await.unwrap();
        assert_eq!(
            step.claimed, 0,
            "claimed while results could not be written"
        );
    }
    assert_eq!(server.messages().len(), 2, "nothing sent while writes fail");

    // The owner frees some space: the kept results are written, the rest goes out once.
    accept_writes(app.store()).await;
    runtime.clock.advance(Duration::from_secs(90));
    steps_until_idle(&worker).await;
    let received = server.messages();
    let copies = copies(&received);
    for email in &everyone {
        assert_eq!(
            copies.get(email).map(Vec::len),
            Some(1),
            "{email}: {copies:?}"
        );
    }
    let s = summary(app.store(), send).await;
    assert_eq!(s.counts.sent, 6, "{s:?}");
    assert_eq!(s.interrupted, 0, "{s:?}");
    let shown = stdout(&app.cli(&["sends", "show", &send.to_string()]));
    assert!(!shown.contains("stopped worker"), "{shown}");
}
