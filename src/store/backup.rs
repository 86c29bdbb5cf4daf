//! A SQLite database copied while it is in use, a copy checked before it is put back, and the
//! lock that tells `sangha restore` the database is open.
//!
//! The copy is SQLite's `VACUUM INTO`: one read transaction on the live database, so the file
//! it writes is the database as one moment saw it, with everything committed in the WAL up to
//! then and nothing after; writers go on meanwhile (WAL readers never block them).
//!
//! Every process that opens a SQLite database through [`super::Store`] holds a shared `flock`
//! on `<database>.lock` for as long as its pool lives; `sangha restore` takes it exclusively,
//! without waiting, and so refuses while a `serve`, a `worker` or any other command has the
//! database open. The kernel lets go of a lock when its process dies, so a crash leaves
//! nothing to clean up. (SQLite's own locks cannot tell: an idle WAL connection holds none
//! that another process can test.)

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

use super::{SQLITE_MIGRATOR, Store};

/// The lock file of a SQLite database: `<database>.lock` beside it.
pub fn lock_file(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Why the database's lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it: the database is open (or, for a shared lock, being restored).
    #[error("{} is in use", .0.display())]
    InUse(PathBuf),
    #[error("cannot lock {}: {error}", .path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// Opens (creating, owner-only) the lock file of `database`.
fn open_lock(database: &Path) -> Result<(PathBuf, File), LockError> {
    let path = lock_file(database);
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(&path).map_err(|error| LockError::Io {
        path: path.clone(),
        error,
    })?;
    Ok((path, file))
}

/// Takes the lock as a user of the database (many may hold it at once); fails at once while
/// a restore holds it.
pub(crate) fn lock_shared(database: &Path) -> Result<Arc<File>, LockError> {
    let (path, file) = open_lock(database)?;
    match file.try_lock_shared() {
        Ok(()) => Ok(Arc::new(file)),
        Err(TryLockError::WouldBlock) => Err(LockError::InUse(path)),
        Err(TryLockError::Error(error)) => Err(LockError::Io { path, error }),
    }
}

/// Takes the lock alone, for a restore; fails at once while any process has the database
/// open. The lock lasts as long as the returned file.
pub fn lock_exclusive(database: &Path) -> Result<File, LockError> {
    let (path, file) = open_lock(database)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(LockError::InUse(path)),
        Err(TryLockError::Error(error)) => Err(LockError::Io { path, error }),
    }
}

/// What is wrong with a file offered as a copy of a Sangha database.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("not a SQLite database ({0})")]
    NotSqlite(String),
    #[error("not a Sangha database (it has no `{0}` table)")]
    NotSangha(&'static str),
    #[error(
        "made by a newer Sangha: its migration {0} is not one this version knows; restore it \
         with that version or a newer one"
    )]
    Newer(i64),
    #[error("its migration {0} differs from this version's: not a database this Sangha made")]
    Foreign(i64),
    #[error("damaged: PRAGMA integrity_check says {0}")]
    Damaged(String),
    #[error("cannot be read: {0}")]
    Read(#[from] sqlx::Error),
}

/// A copy that passed [`check_copy`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedCopy {
    /// Migrations this version has that the copy has not applied yet (the next command that
    /// opens it applies them).
    pub pending_migrations: usize,
    pub subscribers: i64,
}

/// Checks that `path` is a whole, undamaged Sangha SQLite database whose migrations this
/// version knows (none newer); opens it read-write, so give it a copy in a folder of its own.
pub async fn check_copy(path: &Path) -> Result<CheckedCopy, CopyError> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(false);
    let mut conn = SqliteConnection::connect_with(&options)
        .await
        .map_err(|e| CopyError::NotSqlite(e.to_string()))?;
    let result = check_open_copy(&mut conn).await;
    let _ = conn.close().await;
    result
}

async fn check_open_copy(conn: &mut SqliteConnection) -> Result<CheckedCopy, CopyError> {
    // The first read of the header is where a file that is not SQLite shows.
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| CopyError::NotSqlite(e.to_string()))?;
    for table in ["_sqlx_migrations", "subscribers", "consents", "deliveries"] {
        if !tables.iter().any(|t| t == table) {
            return Err(CopyError::NotSangha(table));
        }
    }
    let applied: Vec<(i64, Vec<u8>)> = sqlx::query_as(
        "SELECT version, checksum FROM _sqlx_migrations WHERE success ORDER BY version",
    )
    .fetch_all(&mut *conn)
    .await?;
    for (version, checksum) in &applied {
        match SQLITE_MIGRATOR.iter().find(|m| m.version == *version) {
            None => return Err(CopyError::Newer(*version)),
            Some(known) if *known.checksum != checksum[..] => {
                return Err(CopyError::Foreign(*version));
            }
            Some(_) => {}
        }
    }
    let verdict: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_all(&mut *conn)
        .await?;
    if verdict != ["ok"] {
        return Err(CopyError::Damaged(verdict.join("; ")));
    }
    let subscribers: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM subscribers")
        .fetch_one(&mut *conn)
        .await?;
    Ok(CheckedCopy {
        pending_migrations: SQLITE_MIGRATOR
            .iter()
            .filter(|m| !applied.iter().any(|(v, _)| *v == m.version))
            .count(),
        subscribers,
    })
}

impl Store {
    /// Writes a consistent copy of this SQLite database into `path`, which must not exist or
    /// be empty (`VACUUM INTO`: one read transaction; writers go on meanwhile).
    pub async fn copy_into(&self, path: &Path) -> Result<(), sqlx::Error> {
        let path = path.to_str().ok_or_else(|| {
            sqlx::Error::Configuration(format!("{} is not a UTF-8 path", path.display()).into())
        })?;
        sqlx::query("VACUUM INTO $1")
            .bind(path.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
