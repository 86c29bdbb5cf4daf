//! `sangha backup` and `sangha restore`: a copy taken while a send goes on, restored into a
//! new data folder, holds every record of its moment and keeps the links of emails already
//! sent working; restore refuses a database in use, an existing one without --force, and a
//! file that is not a Sangha database; on PostgreSQL both print the line to run instead.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use reqwest::StatusCode;
use sangha::config::Config;
use sangha::store::SendStatus;

use crate::support::smtp::TestSmtpServer;
use crate::support::{
    Backend, DEADLINE, Options, TEST_TOKEN_KEY, TestApp, confirm_path_in, link_path_in,
    relay_config, run_cli, sangha_command, stderr, stdout, test_config,
};

/// Runs `sangha` with `config`'s database and data folder and no token key in the
/// environment: the key is the one in `data_dir/token.key`.
async fn sangha(config: &Config, args: &[&str]) -> Output {
    let mut command = sangha_command(config, args, &[]);
    tokio::task::spawn_blocking(move || command.output().expect("run sangha"))
        .await
        .expect("the sangha process")
}

/// Every row of `table`, each as one line of SQLite's `quote()` of its columns, by rowid.
async fn rows(pool: &sqlx::AnyPool, table: &str) -> Vec<String> {
    let columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info($1)")
        .bind(table)
        .fetch_all(pool)
        .await
        .unwrap();
    assert!(!columns.is_empty(), "no table {table}");
    let line = columns
        .iter()
        .map(|c| format!("quote(\"{c}\")"))
        .collect::<Vec<_>>()
        .join(" || '|' || ");
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT {line} FROM \"{table}\" ORDER BY rowid"
    )))
    .fetch_all(pool)
    .await
    .unwrap()
}

/// The tables a send does not write: people, their subscriptions and consent records, the
/// suppression list, the offerings.
const RECORDS: [&str; 5] = [
    "subscribers",
    "subscriptions",
    "consents",
    "suppressions",
    "offerings",
];

/// The records of [`RECORDS`], table by table.
async fn records(pool: &sqlx::AnyPool) -> BTreeMap<&'static str, Vec<String>> {
    let mut all = BTreeMap::new();
    for table in RECORDS {
        all.insert(table, rows(pool, table).await);
    }
    all
}

/// Each delivery's id and status.
async fn delivery_states(pool: &sqlx::AnyPool) -> BTreeMap<i64, String> {
    sqlx::query_as::<_, (i64, String)>("SELECT id, status FROM deliveries")
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

fn sent(states: &BTreeMap<i64, String>) -> Vec<i64> {
    states
        .iter()
        .filter(|(_, s)| s.as_str() == "sent")
        .map(|(id, _)| *id)
        .collect()
}

/// A read-only pool over a SQLite file.
async fn open_read_only(file: &Path) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::AnyPool::connect(&format!("sqlite://{}?mode=ro", file.display()))
        .await
        .expect("open the restored database")
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn key_file(file: &Path) -> PathBuf {
    PathBuf::from(format!("{}.key", file.display()))
}

/// A configuration over a fresh data folder `dir` with no token key configured (restore puts
/// the backup's into `dir/token.key`).
async fn new_machine(dir: &Path) -> Config {
    let mut config = test_config(&Backend::Sqlite, dir).await;
    config.tokens.key = None;
    config
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_taken_during_a_send_restores_every_record_and_the_links_of_sent_mail_work() {
    // A relay that takes a while over each message, one connection: the send lasts seconds.
    let relay = TestSmtpServer::builder()
        .delay_each_message(Duration::from_millis(150))
        .start()
        .await;
    let app = TestApp::spawn_with(Backend::Sqlite, Options::default(), |c| {
        relay_config(relay.port())(c);
        c.smtp.pool_size = 1;
        // The key Sangha makes on first run, in data_dir/token.key, as an owner has it.
        c.tokens.key = None;
    })
    .await;
    let pool = app.store().pool().clone();

    // People: imported with their consent, one pending signup whose confirmation email is
    // out, one who left, one erased (only her suppression entry stays).
    let recipients = 30;
    let csv = app.dir.path().join("people.csv");
    let mut text = String::from("email,name,timezone,offerings\n");
    for i in 0..recipients {
        text.push_str(&format!(
            "p{i}@example.org,Person {i},,morning-meditation\n"
        ));
    }
    std::fs::write(&csv, text).unwrap();
    let out = sangha(
        &app.config,
        &[
            "subscribers",
            "import",
            csv.to_str().unwrap(),
            "--confirmed",
            "--source",
            "retreat sheet",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    for args in [
        &["subscribers", "remove", "p0@example.org"][..],
        &["subscribers", "erase", "p1@example.org"][..],
    ] {
        let out = sangha(&app.config, args).await;
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(
        app.signup("pending@example.org", &["morning-meditation"])
            .await
            .status(),
        StatusCode::SEE_OTHER
    );
    let confirmation = relay.wait_for_messages(1, DEADLINE).await.remove(0);
    let confirm = confirm_path_in(&confirmation.data);

    let content = app.write_content("m.md", crate::sends::MORNING);
    let out = sangha(
        &app.config,
        &[
            "schedule",
            "--offering",
            "morning-meditation",
            "--content",
            content.to_str().unwrap(),
            "--now",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let send: i64 = stdout(&out).trim().parse().unwrap();
    let to_send = (recipients - 2) as i64;

    // A long read holds its snapshot meanwhile (as an export of a long list does): SQLite
    // cannot checkpoint past it, so what the send commits from now on is in the WAL only. A
    // copy of the database file would miss it.
    let mut long_read =
        <sqlx::AnyConnection as sqlx::Connection>::connect(&app.config.database.url)
            .await
            .unwrap();
    sqlx::Executor::execute(&mut long_read, "BEGIN")
        .await
        .unwrap();
    let _: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM deliveries")
        .fetch_one(&mut long_read)
        .await
        .unwrap();

    // A few messages of the send are out: their links are in people's inboxes.
    let received = relay.wait_for_messages(4, DEADLINE).await;
    let sent_mail = received
        .iter()
        .find(|m| m.rcpt_to[0] != "pending@example.org")
        .expect("a message of the send");
    let reader = sent_mail.rcpt_to[0].clone();
    let unsubscribe = link_path_in(&sent_mail.data, "/unsubscribe/");
    let preferences = link_path_in(&sent_mail.data, "/preferences/");

    let records_before = records(&pool).await;
    let states_before = delivery_states(&pool).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sangha-backup.db");
    let out = sangha(&app.config, &["backup", file.to_str().unwrap()]).await;
    assert!(out.status.success(), "backup: {}", stderr(&out));
    let states_after = delivery_states(&pool).await;
    sqlx::Executor::execute(&mut long_read, "ROLLBACK")
        .await
        .unwrap();
    drop(long_read);
    assert_eq!(
        records(&pool).await,
        records_before,
        "the send wrote no records"
    );

    // The send was going on all along: it had started before and had not finished after.
    let summary = app
        .store()
        .send_summaries(Some(send))
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_ne!(
        summary.status,
        SendStatus::Done,
        "the backup was taken mid-send"
    );
    assert!(
        (sent(&states_after).len() as i64) < to_send + 1,
        "the send had not finished: {:?}",
        summary.counts
    );

    // Owner-only files; the key never printed.
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(&key_file(&file)), 0o600);
    let key = std::fs::read_to_string(app.config.data_dir.join("token.key")).unwrap();
    let printed = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        !printed.contains(key.trim()),
        "the key was printed: {printed}"
    );
    assert!(printed.contains(file.to_str().unwrap()), "{printed}");

    // The send goes on to its end on the running app.
    app.wait_for_send_done(send).await;
    app.stop().await;

    // A new machine: another data folder, no key configured.
    let machine = tempfile::tempdir().unwrap();
    let config = new_machine(machine.path()).await;
    let out = sangha(&config, &["restore", file.to_str().unwrap()]).await;
    assert!(out.status.success(), "restore: {}", stderr(&out));
    let printed = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        !printed.contains(key.trim()),
        "the key was printed: {printed}"
    );
    let database = sangha::store::sqlite_file(&config.database.url).unwrap();
    assert_eq!(mode(&database), 0o600);
    assert_eq!(mode(&machine.path().join("token.key")), 0o600);

    // Every record as it was; each delivery as it stood at some moment during the backup:
    // what was sent before it is sent, what was sent after it is at most that.
    let restored = open_read_only(&database).await;
    assert_eq!(records(&restored).await, records_before);
    let states = delivery_states(&restored).await;
    assert_eq!(
        states.keys().collect::<Vec<_>>(),
        states_after.keys().collect::<Vec<_>>(),
        "every delivery row"
    );
    let (sent_then, sent_restored, sent_later) =
        (sent(&states_before), sent(&states), sent(&states_after));
    assert!(
        sent_then.iter().all(|id| sent_restored.contains(id))
            && sent_restored.iter().all(|id| sent_later.contains(id)),
        "sent before: {sent_then:?}, restored: {sent_restored:?}, after: {sent_later:?}"
    );
    assert!(
        (sent_restored.len() as i64) < to_send + 1,
        "the copy is of the middle of the send"
    );
    restored.close().await;

    // The app on the restored data folder: links of mail sent before the backup work.
    let restored = TestApp::spawn_with(
        Backend::Sqlite,
        Options {
            worker: false,
            ..Options::default()
        },
        |c| {
            c.data_dir = config.data_dir.clone();
            c.database.url = config.database.url.clone();
            c.tokens.key = None;
        },
    )
    .await;
    let r = restored.get(&preferences).await;
    assert_eq!(r.status(), StatusCode::OK, "the preferences link works");
    assert!(r.text().await.unwrap().contains(&reader));
    assert_eq!(
        restored.post_form(&confirm, "").await.status(),
        StatusCode::OK,
        "the confirmation link works"
    );
    assert_eq!(
        restored
            .post_form(&unsubscribe, "List-Unsubscribe=One-Click")
            .await
            .status(),
        StatusCode::OK
    );
    let status = |email: &str| {
        let email = email.to_owned();
        let pool = restored.store().pool().clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT s.status FROM subscriptions s JOIN subscribers p ON p.id = s.subscriber_id
                 WHERE p.email = $1",
            )
            .bind(email)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(status("pending@example.org").await, "confirmed");
    assert_eq!(
        status(&reader).await,
        "unsubscribed",
        "one-click unsubscribe worked"
    );
    restored.stop().await;
}

/// Stops the app and keeps its data folder (dropping the app would delete it).
async fn stop_keeping_data(mut app: TestApp) -> (Config, tempfile::TempDir) {
    let config = app.config.clone();
    let dir = std::mem::replace(&mut app.dir, tempfile::tempdir().unwrap());
    app.stop().await;
    (config, dir)
}

/// A running app, a backup of its database (taken with the test key) and a subscriber added
/// after it.
async fn app_with_backup() -> (TestApp, tempfile::TempDir, PathBuf) {
    let app = TestApp::spawn(Backend::Sqlite).await;
    app.confirmed_subscriber("before@example.org", &["morning-meditation"])
        .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.db");
    let out = run_cli(&app.config, &["backup", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let key = std::fs::read_to_string(key_file(&file)).unwrap();
    assert!(
        key.contains(TEST_TOKEN_KEY),
        "the configured key is the one kept"
    );
    assert!(!stdout(&out).contains(TEST_TOKEN_KEY) && !stderr(&out).contains(TEST_TOKEN_KEY));
    app.confirmed_subscriber("after@example.org", &["morning-meditation"])
        .await;
    (app, dir, file)
}

async fn subscriber_count(app_config: &Config) -> i64 {
    let file = sangha::store::sqlite_file(&app_config.database.url).unwrap();
    let pool = open_read_only(&file).await;
    let n = sqlx::query_scalar("SELECT COUNT(*) FROM subscribers")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    n
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_refuses_while_the_database_is_in_use() {
    let (app, _dir, file) = app_with_backup().await;
    let out = run_cli(&app.config, &["restore", "--force", file.to_str().unwrap()]);
    assert!(!out.status.success());
    let database = sangha::store::sqlite_file(&app.config.database.url).unwrap();
    let err = stderr(&out);
    assert!(
        err.contains("in use") && err.contains(database.to_str().unwrap()),
        "{err}"
    );
    assert_eq!(
        subscriber_count(&app.config).await,
        2,
        "nothing was replaced"
    );

    // Once the app has stopped, the same command restores.
    let (config, _data) = stop_keeping_data(app).await;
    let out = run_cli(&config, &["restore", "--force", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        subscriber_count(&config).await,
        1,
        "the backup's one subscriber"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_being_restored_cannot_be_opened() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("sangha.db");
    let _restoring = sangha::store::backup::lock_exclusive(&database).unwrap();
    let err = sangha::store::Store::connect(&format!("sqlite://{}", database.display()), 1)
        .await
        .expect_err("the restore holds the database");
    assert!(err.to_string().contains("being restored"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_refuses_an_existing_database_without_force() {
    let (app, _dir, file) = app_with_backup().await;
    let (config, _data) = stop_keeping_data(app).await;
    let out = run_cli(&config, &["restore", file.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", stdout(&out));
    let database = sangha::store::sqlite_file(&config.database.url).unwrap();
    let err = stderr(&out);
    assert!(
        err.contains("--force") && err.contains(database.to_str().unwrap()),
        "{err}"
    );
    assert_eq!(subscriber_count(&config).await, 2, "nothing was replaced");
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_refuses_a_file_that_is_not_a_sangha_database() {
    let (app, dir, file) = app_with_backup().await;
    app.stop().await;
    let key = std::fs::read_to_string(key_file(&file)).unwrap();

    // Not SQLite at all.
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, "a shopping list, not a database\n".repeat(200)).unwrap();
    // SQLite, but some other program's.
    let other = dir.path().join("other.db");
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&format!("sqlite://{}?mode=rwc", other.display()))
        .await
        .unwrap();
    sqlx::query("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    // Sangha's, from a newer version.
    let newer = dir.path().join("newer.db");
    std::fs::copy(&file, &newer).unwrap();
    let pool = sqlx::AnyPool::connect(&format!("sqlite://{}", newer.display()))
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (99999, 'from the future', 1, x'00', 0)",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    for (copy, says) in [
        (&junk, "not a SQLite database"),
        (&other, "not a Sangha database"),
        (&newer, "newer Sangha"),
    ] {
        std::fs::write(key_file(copy), &key).unwrap();
        let machine = tempfile::tempdir().unwrap();
        let config = new_machine(machine.path()).await;
        let out = sangha(&config, &["restore", copy.to_str().unwrap()]).await;
        assert!(!out.status.success(), "{} was restored", copy.display());
        let err = stderr(&out);
        assert!(
            err.contains(says) && err.contains(copy.to_str().unwrap()),
            "{err}"
        );
        let database = sangha::store::sqlite_file(&config.database.url).unwrap();
        assert!(!database.exists(), "nothing put in place");
        assert!(!machine.path().join("token.key").exists());
    }

    // Without its key file, a backup is refused too: its links would not work.
    std::fs::remove_file(key_file(&file)).unwrap();
    let machine = tempfile::tempdir().unwrap();
    let out = sangha(
        &new_machine(machine.path()).await,
        &["restore", file.to_str().unwrap()],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("{}.key", file.display())),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_refuses_a_configured_key_that_is_not_the_backups() {
    let (app, _dir, file) = app_with_backup().await;
    app.stop().await;
    let machine = tempfile::tempdir().unwrap();
    let mut config = new_machine(machine.path()).await;
    config.tokens.key = Some(sangha::domain::TokenKey::generate());
    let env = [(
        "SANGHA__TOKENS__KEY",
        config.tokens.key.as_ref().unwrap().to_base64(),
    )];
    let out = sangha_command(&config, &["restore", file.to_str().unwrap()], &env)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("tokens.key"), "{}", stderr(&out));
    let database = sangha::store::sqlite_file(&config.database.url).unwrap();
    assert!(!database.exists(), "nothing put in place");
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_refuses_to_overwrite_an_existing_file() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.db");
    std::fs::write(&file, "last week's backup").unwrap();
    let out = run_cli(&app.config, &["backup", file.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(file.to_str().unwrap()) && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "last week's backup"
    );
    assert!(!key_file(&file).exists());

    let out = run_cli(&app.config, &["backup", "--force", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        std::fs::read(&file)
            .unwrap()
            .starts_with(b"SQLite format 3\0")
    );
    assert!(key_file(&file).exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn on_postgresql_backup_and_restore_print_the_line_to_run_and_do_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&Backend::Sqlite, dir.path()).await;
    config.database.url =
        "postgres://sangha:n0t-this-one@db.example:5433/newsletter?sslmode=require".into();
    let file = dir.path().join("sangha.dump");
    let out = run_cli(&config, &["backup", file.to_str().unwrap()]);
    assert!(!out.status.success(), "exits non-zero");
    let printed = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains(&format!(
            "pg_dump --format=custom --file={} \
             --dbname='postgres://sangha@db.example:5433/newsletter?sslmode=require'",
            file.display()
        )),
        "{printed}"
    );
    assert!(!printed.contains("n0t-this-one"), "{printed}");
    assert!(
        !file.exists() && !key_file(&file).exists(),
        "nothing written"
    );

    let out = run_cli(&config, &["restore", file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stdout(&out).contains("pg_restore --clean --if-exists --no-owner --dbname="),
        "{}",
        stdout(&out)
    );
    assert!(!stdout(&out).contains("n0t-this-one"));
}
