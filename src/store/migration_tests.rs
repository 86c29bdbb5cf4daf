//! Upgrades with data in the tables: a migration that rebuilds a table must keep every row.

use std::path::Path;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{Column, Row, SqlitePool};

use super::SQLITE_MIGRATOR;

/// A database at the schema of migrations up to `version`, made from the repository's files.
async fn sqlite_at(dir: &Path, version: u32) -> SqlitePool {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
    let upto = dir.join("migrations");
    std::fs::create_dir_all(&upto).unwrap();
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let number: u32 = name[..4].parse().unwrap();
        if number <= version {
            std::fs::copy(&path, upto.join(&name)).unwrap();
        }
    }
    let options = SqliteConnectOptions::new()
        .filename(dir.join("s.db"))
        .create_if_missing(true)
        .foreign_keys(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    Migrator::new(upto.as_path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    pool
}

#[tokio::test]
async fn dropping_the_message_id_check_keeps_every_delivery_and_index() {
    let dir = tempfile::tempdir().unwrap();
    let pool = sqlite_at(dir.path(), 6).await;
    for sql in [
        "INSERT INTO offerings (id, slug, name, kind, created_at)
         VALUES (1, 'morning', 'Morning', 'newsletter', 1)",
        "INSERT INTO subscribers (id, email, created_at) VALUES (7, 'a@example.org', 1)",
        "INSERT INTO consents (id, subscriber_id, action, at, offerings, text_hash, source)
         VALUES (3, 7, 'signup', 1, 'morning', 'h', 'form')",
        "INSERT INTO sends (id, offering_id, subject, html_template, text_template, source_path,
                            send_at, created_at, message_id_prefix)
         VALUES (5, 1, 's', 'h', 't', 'p', 1, 1, 'abc')",
        "INSERT INTO deliveries (id, kind, subscriber_id, consent_id, message_id, status, attempts,
                                 next_attempt_at, lease_until, leased_by, last_error, smtp_reply,
                                 created_at, sent_at, send_id, interrupted)
         VALUES (10, 'confirmation', 7, 3, '<c@x>', 'sent', 2, 100, NULL, NULL, NULL,
                 '250 ok', 90, 120, NULL, 1),
                (11, 'send', 7, NULL, '<abc.7@x>', 'pending', 1, 200, 300, 'w-1', 'timeout',
                 NULL, 95, NULL, 5, 0)",
    ] {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    let before = all_deliveries(&pool).await;
    assert_eq!(before.len(), 2);

    SQLITE_MIGRATOR.run(&pool).await.unwrap();

    assert_eq!(all_deliveries(&pool).await, before);
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'deliveries'
         AND name NOT LIKE 'sqlite_autoindex%' ORDER BY name",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        indexes,
        [
            "deliveries_by_subscriber",
            "deliveries_confirmations_by_time",
            "deliveries_due",
            "deliveries_one_per_send",
        ]
    );
    // The foreign keys still hold, the cascade included; one delivery per send and person.
    let repeat = sqlx::query(
        "INSERT INTO deliveries (kind, subscriber_id, send_id, message_id, next_attempt_at,
                                 created_at)
         VALUES ('send', 7, 5, '<other@x>', 1, 1)",
    )
    .execute(&pool)
    .await;
    assert!(repeat.is_err(), "a second delivery of send 5 to 7");
    let dangling = sqlx::query(
        "INSERT INTO deliveries (kind, subscriber_id, message_id, next_attempt_at, created_at)
         VALUES ('confirmation', 99, '<d@x>', 1, 1)",
    )
    .execute(&pool)
    .await;
    assert!(dangling.is_err(), "a delivery to nobody");
    sqlx::query("DELETE FROM subscribers WHERE id = 7")
        .execute(&pool)
        .await
        .unwrap();
    assert!(all_deliveries(&pool).await.is_empty());
}

async fn all_deliveries(pool: &SqlitePool) -> Vec<String> {
    sqlx::query("SELECT * FROM deliveries ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|row| {
            let columns: Vec<String> = (0..row.len())
                .map(|i| {
                    let value: Option<String> = row
                        .try_get::<Option<i64>, _>(i)
                        .map(|v| v.map(|v| v.to_string()))
                        .or_else(|_| row.try_get::<Option<String>, _>(i))
                        .unwrap();
                    format!("{}={value:?}", row.column(i).name())
                })
                .collect();
            columns.join(" ")
        })
        .collect()
}
