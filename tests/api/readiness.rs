//! `/healthz` answers while the process runs; `/readyz` answers 503, and says which, while the
//! database is unreachable or has migrations pending, and 200 again once it is right.

use reqwest::StatusCode;
use serde_json::Value;

use crate::backend_tests;
use crate::support::{Backend, TestApp};

backend_tests!(
    readyz_says_when_migrations_are_pending,
    readyz_says_when_the_database_is_unreachable,
);

async fn readyz(app: &TestApp) -> (StatusCode, Value) {
    let response = app.get("/readyz").await;
    let status = response.status();
    (status, response.json().await.unwrap())
}

async fn readyz_says_when_migrations_are_pending(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (status, body) = readyz(&app).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ready"], true);

    // As if a newer migration had not been applied (a binary upgraded without `migrate`).
    let last: i64 = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
        .fetch_one(app.store().pool())
        .await
        .unwrap();
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = $1")
        .bind(last)
        .execute(app.store().pool())
        .await
        .unwrap();
    let (status, body) = readyz(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["ready"], false);
    assert_eq!(body["database"], "reachable");
    assert_eq!(body["migrations"], "1 pending: run `sangha migrate`");
    // Still alive: liveness says nothing of the database.
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);

    app.stop().await;
}

async fn readyz_says_when_the_database_is_unreachable(backend: Backend) {
    let app = TestApp::spawn(backend.clone()).await;
    assert_eq!(readyz(&app).await.0, StatusCode::OK);
    match &backend {
        Backend::Postgres(admin_url) => {
            // This test's database refuses connections and loses the ones it had; the
            // server and every other test's database go on.
            let name = app
                .config
                .database
                .url
                .rsplit('/')
                .next()
                .unwrap()
                .to_owned();
            let admin = sqlx::AnyPool::connect(admin_url).await.unwrap();
            let set = |allow: bool| format!("ALTER DATABASE {name} WITH ALLOW_CONNECTIONS {allow}");
            sqlx::query(sqlx::AssertSqlSafe(set(false)))
                .execute(&admin)
                .await
                .unwrap();
            sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            )
            .bind(&name)
            .execute(&admin)
            .await
            .unwrap();
            let (status, body) = readyz(&app).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
            assert_eq!(body["ready"], false);
            assert_eq!(body["database"], "unreachable: see the service's log");
            assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);

            // Back: ready again, with no restart.
            sqlx::query(sqlx::AssertSqlSafe(set(true)))
                .execute(&admin)
                .await
                .unwrap();
            let (status, body) = readyz(&app).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        Backend::Sqlite => {
            // A SQLite file cannot go away under open handles; a closed pool is what the
            // process sees when it cannot reach its database.
            app.store().close().await;
            let (status, body) = readyz(&app).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
            assert_eq!(body["database"], "unreachable: see the service's log");
            assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
        }
    }
    app.stop().await;
}
