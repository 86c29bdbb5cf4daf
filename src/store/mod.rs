//! The database: one `Store` over SQLite or PostgreSQL, chosen from the URL scheme. Queries are
//! runtime sqlx queries written once in the SQL both dialects share (`$1` placeholders, `ON
//! CONFLICT`, `RETURNING`); the few places that differ branch on [`Backend`].

mod alerts;
mod archive;
pub mod backup;
mod bounces;
mod courses;
mod deliveries;
mod import;
mod leaving;
#[cfg(test)]
mod migration_tests;
mod moving;
mod offerings;
mod outbox;
mod pending;
mod schedules;
mod sends;
mod signup_writer;
mod sql;
mod subscribers;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

pub use alerts::{AlertRow, NewAlert};
pub use bounces::{BounceCounts, BounceRow, BouncedDelivery, NewBounce, SoftBounceRule};
pub use courses::{
    CourseStarter, CourseState, CourseStatus, LessonDelivery, NewLesson, Progress, ProgressChange,
    StoredLesson,
};
pub use deliveries::{
    ClaimedDelivery, ClaimedSignup, ConfirmationEmail, DeliveryCounts, DueQueue, HandOff,
};
pub use import::{ExportLine, ExportSubscription, ImportCounts, ImportTerms, ImportedPerson};
pub use leaving::{SubscriberRef, SuppressionReason};
pub use moving::{MovedCounts, MovedPerson, MovedStatus};
pub use offerings::{DeclaredOffering, Offering, OfferingSummary};
pub use outbox::{message_id, new_message_id_prefix};
pub use pending::{Reminder, ReminderCandidate, ReminderLimits, Waiting};
pub use schedules::{DueSend, Recurrence, ZoneProgress};
pub use sends::{FailureGroup, NewSend, RetryOutcome, SendContent, SendStatus, SendSummary};
pub use signup_writer::SignupWriter;
pub use subscribers::{
    ConsentMeta, ConsentRecord, NewSignup, PendingConfirmation, SignupOutcome, SubscriberDetail,
    SubscriberRow, SubscriptionRow,
};

/// Which database the store talks to, chosen from the URL scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The database: a connection pool and its dialect.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// SQLite has one write lock per file. Connections of this process that want it at the
    /// same moment take turns here, in order, instead of in SQLite's busy handler, which
    /// sleeps in growing steps (measured: BENCHMARKS.md, "Measurements behind the code").
    writer: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// The active offerings as last read (see [`Store::active_offerings`]).
    offerings: std::sync::Arc<std::sync::Mutex<Option<offerings::Cached>>>,
    /// Whether SQLite connections checkpoint the WAL themselves, inside the commit that
    /// crosses 1,000 pages; off once [`Store::checkpoint_in_background`] does it instead.
    inline_checkpoints: Arc<AtomicBool>,
    /// The domain of the Message-IDs the outbox writes (`mail.message_id_domain`).
    message_id_domain: Arc<str>,
    /// On a SQLite file, the shared lock that tells `sangha restore` the database is open
    /// (see [`backup`]); held as long as a clone of the store lives.
    _in_use: Option<Arc<std::fs::File>>,
}

/// How often `sangha serve` copies SQLite's WAL into the database file (see
/// [`Store::checkpoint_in_background`]). At the signup benchmark's ~6,000 signups a second
/// the WAL grows ~3 MB in this time, under the 1,000 pages (4 MB) of SQLite's own trigger.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

/// WAL size (4 KB pages) past which a background checkpoint finishes during a write turn.
const WAL_RESTART_PAGES: i64 = 4096;

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
        let (url, in_use) = match backend {
            Backend::Sqlite => {
                let prepared = prepare_sqlite_url(url)?;
                let lock = match sqlite_file(url) {
                    Some(file) => Some(backup::lock_shared(&file).map_err(|e| {
                        match e {
                            backup::LockError::InUse(lock) => sqlx::Error::Configuration(
                                format!(
                                    "{} is being restored (`sangha restore` holds {}); \
                                 start again once it has finished",
                                    file.display(),
                                    lock.display()
                                )
                                .into(),
                            ),
                            e => sqlx::Error::Configuration(e.to_string().into()),
                        }
                    })?),
                    None => None,
                };
                (prepared, lock)
            }
            Backend::Postgres => (url.to_owned(), None),
        };
        let options = AnyConnectOptions::from_str(&url)?;
        let inline_checkpoints = Arc::new(AtomicBool::new(true));
        let inline = inline_checkpoints.clone();
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(timeout)
            // sqlx pings every connection it hands out. A SQLite connection is a file handle
            // in this process that cannot go stale, and the ping was a round trip to its
            // thread on every query (3% of the CPU of a signup benchmark).
            .test_before_acquire(backend == Backend::Postgres)
            .after_connect(move |conn, _| {
                let inline = inline.load(Ordering::Relaxed);
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers work while a writer commits; busy_timeout makes a
                        // writer wait for the lock instead of failing at once. The WAL file
                        // is cut back to 64 MB when it starts over after a burst.
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                             PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000; \
                             PRAGMA journal_size_limit = 67108864;",
                        )
                        .await?;
                        if !inline {
                            conn.execute("PRAGMA wal_autocheckpoint = 0").await?;
                        }
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
            inline_checkpoints,
            message_id_domain: Arc::from("localhost"),
            _in_use: in_use,
        })
    }

    /// The domain of the Message-IDs of the delivery rows this store writes.
    pub fn with_message_id_domain(mut self, domain: &str) -> Self {
        self.message_id_domain = Arc::from(domain);
        self
    }

    /// Applies pending migrations of this backend's dialect.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        match self.backend {
            Backend::Sqlite => {
                let mut conn = self.pool.acquire().await?;
                let result = migrate_sqlite::<sqlx::Any>(&mut conn, &SQLITE_MIGRATOR).await;
                if result.is_err() {
                    // Whatever state the failure left it in, this connection goes no further.
                    conn.detach();
                }
                result
            }
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

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The connection pool.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// On SQLite, takes WAL checkpoints off the connections that write, for a long-running
    /// process (`sangha serve`): a task copies the WAL into the database file every 100 ms
    /// until `stop` turns true, and no commit does it any more: SQLite's own checkpoint runs
    /// inside a commit, which then waits for the copy and its fsync (measured: BENCHMARKS.md, "Measurements behind the code").
    /// A passive checkpoint on another connection blocks no writer. Returns the task; `None`
    /// on PostgreSQL.
    pub async fn checkpoint_in_background(
        &self,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Option<tokio::task::JoinHandle<()>>, sqlx::Error> {
        if self.backend != Backend::Sqlite {
            return Ok(None);
        }
        self.inline_checkpoints.store(false, Ordering::Relaxed);
        // Connections opened from now on start without; the open ones are visited here, all
        // held at once so that each is visited once.
        let mut open = Vec::new();
        for _ in 0..self.pool.size() {
            open.push(self.pool.acquire().await?);
        }
        for conn in &mut open {
            conn.execute("PRAGMA wal_autocheckpoint = 0").await?;
        }
        drop(open);
        let store = self.clone();
        Ok(Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(CHECKPOINT_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.wait_for(|stop| *stop) => break,
                }
                if let Err(error) = store.checkpoint().await {
                    tracing::warn!(%error, "WAL checkpoint failed; trying again");
                }
            }
        })))
    }

    /// One passive checkpoint. Under constant writes it never catches up with the end of
    /// the WAL, which SQLite starts over only once a checkpoint has copied all of it; so past
    /// `WAL_RESTART_PAGES` the rest is copied during a write turn, when nothing is appended
    /// (measured: BENCHMARKS.md, "Measurements behind the code").
    async fn checkpoint(&self) -> Result<(), sqlx::Error> {
        let (_busy, wal_pages, _copied): (i64, i64, i64) =
            sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_one(&self.pool)
                .await?;
        if wal_pages > WAL_RESTART_PAGES {
            let _turn = self.write_turn().await;
            sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// The migrations of this backend's dialect that the database has not applied, as
    /// `version description`, in order (for `sangha doctor`; nothing is changed).
    pub async fn pending_migrations(&self) -> Result<Vec<String>, sqlx::Error> {
        let (migrator, exists) = match self.backend {
            Backend::Sqlite => (
                &SQLITE_MIGRATOR,
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
            ),
            Backend::Postgres => (
                &POSTGRES_MIGRATOR,
                "SELECT COUNT(*) FROM information_schema.tables
                 WHERE table_schema = current_schema() AND table_name = '_sqlx_migrations'",
            ),
        };
        let applied: Vec<i64> = if sqlx::query_scalar::<_, i64>(exists)
            .fetch_one(&self.pool)
            .await?
            > 0
        {
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await?
        } else {
            Vec::new()
        };
        Ok(migrator
            .iter()
            .filter(|m| !applied.contains(&m.version))
            .map(|m| format!("{} {}", m.version, m.description))
            .collect())
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

/// The file of a SQLite URL (`None` for PostgreSQL and `:memory:`).
pub fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split_once('?').map_or(rest, |(path, _)| path);
    (path != ":memory:" && !path.is_empty()).then(|| PathBuf::from(path))
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
    if path != ":memory:"
        && !path.is_empty()
        && (!query.contains("mode=") || query.contains("mode=rwc"))
    {
        create_owner_only_file(Path::new(path)).map_err(|e| {
            sqlx::Error::Configuration(format!("cannot create database {path}: {e}").into())
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

/// Creates the SQLite file, empty, for its owner only, before SQLite does: SQLite would create
/// it as the umask says (often readable by everyone), whatever the folder, and gives its `-wal`
/// and `-shm` files the permissions of the database file. An existing file is left as it is,
/// with a warning when others can read it.
fn create_owner_only_file(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(path)?.permissions().mode();
                if mode & 0o077 != 0 {
                    tracing::warn!(
                        "the database {} can be read by other users of this machine (mode {:o}); \
                         run `chmod 600` on it",
                        path.display(),
                        mode & 0o777
                    );
                }
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// True when the error is a unique-constraint violation (both dialects).
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// A word (or other typed text) read from `column`, refused as a decode error when its type
/// refuses it: an unknown status word, a bad address.
pub(crate) fn word<T>(row: &sqlx::any::AnyRow, column: &str) -> Result<T, sqlx::Error>
where
    T: std::str::FromStr,
    T::Err: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use sqlx::Row;
    row.try_get::<String, _>(column)?
        .parse()
        .map_err(decode_error)
}

/// As [`word`], for a column that may be NULL.
pub(crate) fn word_opt<T>(row: &sqlx::any::AnyRow, column: &str) -> Result<Option<T>, sqlx::Error>
where
    T: std::str::FromStr,
    T::Err: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use sqlx::Row;
    row.try_get::<Option<String>, _>(column)?
        .map(|w| w.parse().map_err(decode_error))
        .transpose()
}

/// A value read from a row that its type refuses (an unknown status word, a bad address).
pub(crate) fn decode_error<E>(e: E) -> sqlx::Error
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    sqlx::Error::Decode(e.into())
}

/// Runs SQLite migrations the way SQLite's own guide to changing a table asks: with foreign
/// keys off, so that a migration may copy a table that others refer to into a new one and drop
/// the old (with them on, the DROP would delete every row that refers to it), and afterwards
/// a check that every reference still holds. The pragma cannot change inside a transaction,
/// and each migration is one, so it is set around them on this one connection.
pub(crate) async fn migrate_sqlite<DB>(
    conn: &mut DB::Connection,
    migrator: &sqlx::migrate::Migrator,
) -> Result<(), sqlx::migrate::MigrateError>
where
    DB: sqlx::Database,
    DB::Connection: sqlx::migrate::Migrate,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>
        + sqlx::Acquire<'c, Database = DB, Connection = &'c mut DB::Connection>,
{
    (&mut *conn).execute("PRAGMA foreign_keys = OFF").await?;
    migrator.run(&mut *conn).await?;
    let dangling = (&mut *conn)
        .fetch_all("PRAGMA foreign_key_check")
        .await?
        .len();
    (&mut *conn).execute("PRAGMA foreign_keys = ON").await?;
    if dangling > 0 {
        return Err(sqlx::migrate::MigrateError::Execute(sqlx::Error::Protocol(
            format!("after the migrations, {dangling} rows refer to rows that do not exist"),
        )));
    }
    Ok(())
}
