//! Upgrades with data in the tables: a migration that rebuilds a table must keep every row.

use std::path::Path;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{Column, Row, SqlitePool};

use super::{SQLITE_MIGRATOR, migrate_sqlite};

/// Applies the repository's migrations as `Store::migrate` does.
async fn upgrade(pool: &SqlitePool) {
    let mut conn = pool.acquire().await.unwrap();
    migrate_sqlite::<sqlx::Sqlite>(&mut conn, &SQLITE_MIGRATOR)
        .await
        .unwrap();
}

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

    upgrade(&pool).await;

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

#[tokio::test]
async fn binding_links_to_rows_keeps_every_row_and_stops_id_reuse() {
    let dir = tempfile::tempdir().unwrap();
    let pool = sqlite_at(dir.path(), 7).await;
    for sql in [
        "INSERT INTO offerings (id, slug, name, kind, created_at)
         VALUES (1, 'morning', 'Morning', 'newsletter', 1), (2, 'queen', 'Queen', 'course', 1)",
        "INSERT INTO subscribers (id, email, name, timezone, created_at, confirmation_sent_at)
         VALUES (3, 'a@example.org', 'Radha', 'Asia/Kolkata', 10, 11),
                (8, 'b@example.org', NULL, NULL, 20, NULL)",
        "INSERT INTO subscriptions (subscriber_id, offering_id, status, created_at, updated_at,
                                    confirmed_at)
         VALUES (3, 1, 'confirmed', 10, 12, 12), (8, 2, 'pending', 20, 20, NULL)",
        "INSERT INTO consents (id, subscriber_id, action, at, ip, user_agent, offerings,
                               text_hash, source)
         VALUES (4, 3, 'signup', 10, '192.0.2.1', 'ua', 'morning', 'h', 'form'),
                (5, 3, 'confirm', 12, '192.0.2.1', 'ua', 'morning', 'h', 'form'),
                (9, 8, 'signup', 20, NULL, NULL, 'queen', 'h', 'api')",
        "INSERT INTO deliveries (id, kind, subscriber_id, consent_id, message_id, status,
                                 next_attempt_at, created_at)
         VALUES (1, 'confirmation', 3, 4, '<c1@x>', 'sent', 10, 10),
                (2, 'confirmation', 8, 9, '<c2@x>', 'pending', 20, 20)",
        "INSERT INTO course_progress (subscriber_id, offering_id, state, started_at,
                                      anchor_date, next_day, next_at, updated_at)
         VALUES (8, 2, 'active', 20, '2026-01-01', 0, 20, 20)",
    ] {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    let tables = [
        "subscribers",
        "subscriptions",
        "consents",
        "deliveries",
        "course_progress",
    ];
    let mut before = Vec::new();
    for table in tables {
        before.push(all_rows(&pool, table, "link_secret").await);
    }

    upgrade(&pool).await;

    for (table, rows) in tables.into_iter().zip(&before) {
        assert_eq!(
            &all_rows(&pool, table, "link_secret").await,
            rows,
            "{table}"
        );
    }
    // Rows from before keep secret 0: the links already in inboxes carry no binding.
    let secrets: Vec<i64> = sqlx::query_scalar(
        "SELECT link_secret FROM subscribers UNION ALL SELECT link_secret FROM consents",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(secrets, [0, 0, 0, 0, 0]);
    let index: Option<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND name = 'consents_by_subscriber'",
    )
    .fetch_optional(&pool)
    .await
    .unwrap();
    assert!(index.is_some());
    // Foreign keys are on again, and the cascade from subscribers and consents holds.
    let on: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(on, 1);
    let dangling = sqlx::query(
        "INSERT INTO consents (subscriber_id, action, at, offerings, text_hash, source)
         VALUES (99, 'signup', 1, 'morning', 'h', 'form')",
    )
    .execute(&pool)
    .await;
    assert!(dangling.is_err(), "a consent of nobody");
    // The newest person is erased: the next one gets a new id, a new consent id, and a
    // non-zero secret that no link signed before can carry.
    sqlx::query("DELETE FROM subscribers WHERE id = 8")
        .execute(&pool)
        .await
        .unwrap();
    for table in ["subscriptions", "consents", "deliveries", "course_progress"] {
        let left: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM {table} WHERE subscriber_id = 8"
        )))
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(left, 0, "{table} of the erased person");
    }
    let (id, secret): (i64, i64) = sqlx::query_as(
        "INSERT INTO subscribers (email, created_at) VALUES ('c@example.org', 30)
         RETURNING id, link_secret",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(id, 9, "id 8 is never handed out again");
    assert_ne!(secret, 0);
    let (consent, consent_secret): (i64, i64) = sqlx::query_as(
        "INSERT INTO consents (subscriber_id, action, at, offerings, text_hash, source)
         VALUES (9, 'signup', 30, 'morning', 'h', 'form') RETURNING id, link_secret",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(consent, 10, "consent 9 is never handed out again");
    assert_ne!(consent_secret, 0);
    assert_ne!(consent_secret, secret);
}

/// Every row of `table` as text, without the column `skip`.
/// Columns that later migrations add with NULL in every existing row (0010's
/// `deliveries.failure_kind`): a test of an earlier migration compares rows without them.
const ADDED_LATER: [&str; 1] = ["failure_kind"];

async fn all_rows(pool: &SqlitePool, table: &str, skip: &str) -> Vec<String> {
    // Not kept as a prepared statement: the same text must read the table again after the
    // migration changed its columns.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT * FROM {table} ORDER BY 1, 2"
    )))
    .persistent(false)
    .fetch_all(pool)
    .await
    .unwrap()
    .iter()
    .map(|row| {
        let columns: Vec<String> = (0..row.len())
            .filter(|&i| {
                let name = row.column(i).name();
                name != skip && !ADDED_LATER.contains(&name)
            })
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

async fn all_deliveries(pool: &SqlitePool) -> Vec<String> {
    all_rows(pool, "deliveries", "").await
}
