//! The database: one `Store` over SQLite or PostgreSQL, chosen from the URL scheme. Queries are
//! runtime sqlx queries written once in the SQL both dialects share (`$1` placeholders, `ON
//! CONFLICT`, `RETURNING`); the few places that differ branch on [`Backend`].

mod courses;
mod deliveries;
mod import;
mod leaving;
#[cfg(test)]
mod migration_tests;
mod offerings;
mod schedules;
mod sends;
mod signup_writer;
mod subscribers;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

pub use courses::{
    CourseStarter, CourseState, CourseStatus, LessonDelivery, NewLesson, Progress, ProgressChange,
    StoredLesson,
};
pub use deliveries::{ClaimedDelivery, ClaimedSignup, ConfirmationEmail, DeliveryCounts};
pub use import::{ExportLine, ExportSubscription, ImportCounts, ImportTerms, ImportedPerson};
pub use leaving::{SubscriberRef, SuppressionReason};
pub use offerings::{Offering, OfferingSummary};
pub use schedules::{DueSend, Recurrence, ZoneProgress};
pub use sends::{FailureGroup, NewSend, SendContent, SendStatus, SendSummary};
pub use signup_writer::SignupWriter;
pub use subscribers::{
    ConsentMeta, ConsentRecord, NewSignup, PendingConfirmation, SignupOutcome, SubscriberDetail,
    SubscriberRow, SubscriptionRow,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// SQLite has one write lock per file. Connections of this process that want it at the
    /// same moment take turns here, in order, instead of in SQLite's busy handler, which
    /// sleeps in growing steps (up to 100 ms) and put p99 of signups under load at 250-370 ms.
    writer: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// The active offerings as last read (see [`Store::active_offerings`]).
    offerings: std::sync::Arc<std::sync::Mutex<Option<offerings::Cached>>>,
}

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

impl Store {
    /// Opens a pool. A SQLite file (and its folder) is created when missing and put in WAL mode.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, sqlx::Error> {
        Self::connect_with_timeout(url, max_connections, Duration::from_secs(30)).await
    }

    /// As [`Store::connect`], waiting at most `timeout` for a connection.
    pub async fn connect_with_timeout(
        url: &str,
        max_connections: u32,
        timeout: Duration,
    ) -> Result<Self, sqlx::Error> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let url = match backend {
            Backend::Sqlite => prepare_sqlite_url(url)?,
            Backend::Postgres => url.to_owned(),
        };
        let options = AnyConnectOptions::from_str(&url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(timeout)
            // sqlx pings every connection it hands out. A SQLite connection is a file handle
            // in this process that cannot go stale, and the ping was a round trip to its
            // thread on every query (3% of the CPU of a signup benchmark).
            .test_before_acquire(backend == Backend::Postgres)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers work while a writer commits; busy_timeout makes a
                        // writer wait for the lock instead of failing at once.
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                             PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        Ok(Self {
            pool,
            backend,
            writer: Default::default(),
            offerings: Default::default(),
        })
    }

    /// Applies pending migrations of this backend's dialect.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        match self.backend {
            Backend::Sqlite => SQLITE_MIGRATOR.run(&self.pool).await,
            Backend::Postgres => POSTGRES_MIGRATOR.run(&self.pool).await,
        }
    }

    /// On SQLite, waits for this process's turn to write (see `writer`); hold the guard over
    /// the write transaction. PostgreSQL has row locks and needs no turn.
    pub(crate) async fn write_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.backend {
            Backend::Sqlite => Some(self.writer.lock().await),
            Backend::Postgres => None,
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// SQLite's journal mode, for checks (`wal` once connected).
    pub async fn journal_mode(&self) -> Result<Option<String>, sqlx::Error> {
        if self.backend != Backend::Sqlite {
            return Ok(None);
        }
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&self.pool)
            .await?;
        Ok(Some(mode))
    }
}

/// `sqlite://data/sangha.db` → creates `data/` and asks SQLite to create the file.
fn prepare_sqlite_url(url: &str) -> Result<String, sqlx::Error> {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path != ":memory:"
        && let Some(parent) = Path::new(path)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent).map_err(|e| {
            sqlx::Error::Configuration(
                format!("cannot create database folder {}: {e}", parent.display()).into(),
            )
        })?;
    }
    let mut url = format!("sqlite://{path}");
    if query.is_empty() {
        url.push_str("?mode=rwc");
    } else if query.contains("mode=") {
        url.push('?');
        url.push_str(query);
    } else {
        url.push_str("?mode=rwc&");
        url.push_str(query);
    }
    Ok(url)
}

/// True when the error is a unique-constraint violation (both dialects).
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// `$1, $2, …` starting after `offset` bound parameters, for a dynamic `IN (…)` list.
pub(crate) fn placeholders(offset: usize, count: usize) -> String {
    (offset + 1..=offset + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}
