//! `sangha backup FILE` and `sangha restore FILE`: a SQLite database and its token key, copied
//! while Sangha runs and put back on this machine or a new one.
//!
//! A backup is two files: `FILE`, the database (a plain SQLite file, which `sqlite3` opens),
//! and `FILE.key`, the token keys that signed the links in emails already sent, as a
//! `[tokens]` table in the words of `config.toml`. Without the key, every confirm, unsubscribe
//! and preferences link in people's inboxes stops working after a restore; so `backup` writes
//! both and `restore` refuses without the key file. On PostgreSQL both commands print the
//! `pg_dump` / `pg_restore` line to run instead, and do nothing.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::domain::TokenKey;
use crate::store::backup::{LockError, check_copy, lock_exclusive};
use crate::store::sqlite_file;

/// `sangha backup FILE [--force]`.
pub async fn backup(
    config: Config,
    file: &Path,
    force: bool,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let Some(database) = sqlite_file(&config.database.url) else {
        return postgres_instead(&config, out, Direction::Backup, file);
    };
    let key_path = key_file(file);
    if !force {
        for path in [file, key_path.as_path()] {
            if path.exists() {
                bail!(
                    "{} exists; pass --force to replace it with a new backup",
                    path.display()
                );
            }
        }
    }
    let runtime = super::open(config).await?;
    let keys = KeyFile {
        tokens: KeyTable {
            key: runtime.token_key()?.to_base64(),
            previous_keys: runtime
                .previous_token_keys()
                .iter()
                .map(TokenKey::to_base64)
                .collect(),
        },
    };

    let copy = Partial::new(file)?;
    runtime
        .store
        .copy_into(copy.path())
        .await
        .with_context(|| format!("cannot copy {} into {}", database.display(), file.display()))?;
    let checked = check_copy(copy.path())
        .await
        .with_context(|| format!("the copy {} is not sound", file.display()))?;
    copy.sync()?;
    runtime.store.close().await;

    let key = Partial::new(&key_path)?;
    key.write(keys.to_text(file).as_bytes())?;
    key.put_in_place()?;
    copy.put_in_place()?;
    writeln!(
        out,
        "backed up {} ({} subscriber(s)) to {}",
        database.display(),
        checked.subscribers,
        file.display()
    )?;
    writeln!(
        out,
        "and its token key to {}: keep the two together, and private",
        key_path.display()
    )?;
    Ok(())
}

/// `sangha restore FILE [--force]`.
pub async fn restore(
    config: Config,
    file: &Path,
    force: bool,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let Some(database) = sqlite_file(&config.database.url) else {
        return postgres_instead(&config, out, Direction::Restore, file);
    };
    if !file.is_file() {
        bail!("{} is not a file", file.display());
    }
    let key_path = key_file(file);
    let keys = KeyFile::read(&key_path)?;
    let write_key = keys.fits(&config, &key_path)?;

    crate::app::create_private_dir(&config.data_dir)
        .with_context(|| format!("cannot create data folder {}", config.data_dir.display()))?;
    if let Some(parent) = database.parent().filter(|p| !p.as_os_str().is_empty()) {
        crate::app::create_private_dir(parent)
            .with_context(|| format!("cannot create database folder {}", parent.display()))?;
    }
    let _alone = lock_exclusive(&database).map_err(|e| match e {
        LockError::InUse(lock) => anyhow::anyhow!(
            "{} is in use (a `sangha serve`, a worker or another command has it open: {} is \
             locked); stop it, then restore",
            database.display(),
            lock.display()
        ),
        e => anyhow::Error::new(e),
    })?;
    if holds_data(&database) && !force {
        bail!(
            "{} exists; pass --force to replace it with {} (what it holds now is lost)",
            database.display(),
            file.display()
        );
    }

    let copy = Partial::new(&database)?;
    {
        let mut from =
            File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
        let mut to = copy.open()?;
        std::io::copy(&mut from, &mut to)
            .with_context(|| format!("cannot copy {} to {}", file.display(), copy.describe()))?;
    }
    let checked = check_copy(copy.path())
        .await
        .with_context(|| format!("{} cannot be restored", file.display()))?;
    copy.sync()?;

    let token_key = config.data_dir.join("token.key");
    if write_key {
        let key = Partial::new(&token_key)?;
        key.write(keys.tokens.key.as_bytes())?;
        key.put_in_place()?;
    }
    // A WAL or journal left by the database being replaced belongs to it: SQLite would replay
    // it into the restored file.
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut name = database.as_os_str().to_owned();
        name.push(suffix);
        match std::fs::remove_file(&name) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot remove {}", Path::new(&name).display()));
            }
        }
    }
    copy.put_in_place()?;
    writeln!(
        out,
        "restored {} ({} subscriber(s)) from {}",
        database.display(),
        checked.subscribers,
        file.display()
    )?;
    if write_key {
        writeln!(out, "the token key is in {}", token_key.display())?;
    } else {
        writeln!(out, "the configured tokens.key is the backup's")?;
    }
    if checked.pending_migrations > 0 {
        writeln!(
            out,
            "{} migration(s) newer than the backup are applied when Sangha next opens it",
            checked.pending_migrations
        )?;
    }
    // The lock file stays: removed while another process opens it, two processes could each
    // lock a different file of that name.
    Ok(())
}

/// Whether a database is there: a file with pages, or a WAL that holds them (a new WAL
/// database keeps its first writes there, the file empty, until a checkpoint).
fn holds_data(database: &Path) -> bool {
    let len = |path: &Path| std::fs::metadata(path).map_or(0, |m| m.len());
    len(database) > 0 || len(&with_suffix(database, "-wal")) > 0
}

/// `NAME` followed by `suffix`.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// `FILE.key` beside `FILE`.
fn key_file(file: &Path) -> PathBuf {
    with_suffix(file, ".key")
}

/// `FILE.key`: the keys as `config.toml` has them under `[tokens]`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    tokens: KeyTable,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyTable {
    key: String,
    #[serde(default)]
    previous_keys: Vec<String>,
}

impl KeyFile {
    /// The file's text, with a comment that says what it is.
    fn to_text(&self, backup: &Path) -> String {
        format!(
            "# The token keys of the Sangha backup {}: they sign the links in emails sent\n\
             # (confirm, unsubscribe, preferences). Keep this file with the backup, and as private.\n\
             # `sangha restore` reads it; the [tokens] table may also go into config.toml.\n{}",
            backup.display(),
            toml::to_string(self).expect("a key file serializes")
        )
    }

    /// Reads and checks `FILE.key`.
    fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read {}, the backup's token key (links in emails sent before the \
                 backup need it)",
                path.display()
            )
        })?;
        let keys: Self = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message()))?;
        TokenKey::from_base64(&keys.tokens.key)
            .map_err(|e| anyhow::anyhow!("{}: tokens.key {e}", path.display()))?;
        for (i, key) in keys.tokens.previous_keys.iter().enumerate() {
            TokenKey::from_base64(key).map_err(|e| {
                anyhow::anyhow!("{}: tokens.previous_keys[{i}] {e}", path.display())
            })?;
        }
        Ok(keys)
    }

    /// Whether the configuration here accepts every link these keys signed: `Ok(true)` when
    /// the key must be written to `data_dir/token.key` (none is configured), `Ok(false)` when
    /// the configured keys already include it; an error that says what to set otherwise.
    fn fits(&self, config: &Config, path: &Path) -> anyhow::Result<bool> {
        let configured = config.tokens.key.as_ref().map(TokenKey::to_base64);
        let previous: Vec<String> = config
            .tokens
            .previous_keys
            .iter()
            .map(TokenKey::to_base64)
            .collect();
        let accepted = |key: &String| configured.as_ref() == Some(key) || previous.contains(key);
        if configured.is_some() && !accepted(&self.tokens.key) {
            bail!(
                "tokens.key is set (in the configuration or SANGHA__TOKENS__KEY) to another key \
                 than the backup's: links in emails sent before the backup would stop working. \
                 Set [tokens] as {} has it, or unset tokens.key and restore again (the backup's \
                 key then goes into data_dir/token.key)",
                path.display()
            );
        }
        let missing = self
            .tokens
            .previous_keys
            .iter()
            .filter(|k| !accepted(k))
            .count();
        if missing > 0 {
            bail!(
                "{} holds {missing} earlier key(s) that links in emails may still be signed \
                 with, which tokens.previous_keys here lacks: copy its previous_keys line into \
                 [tokens] of the configuration, then restore again",
                path.display()
            );
        }
        Ok(configured.is_none())
    }
}

/// A file written beside its final name (`NAME.partial-PID`, owner-only) and renamed over it
/// once whole and on disk; removed if dropped before.
struct Partial {
    path: PathBuf,
    target: PathBuf,
    placed: bool,
}

impl Partial {
    /// Creates the empty partial file of `target`.
    fn new(target: &Path) -> anyhow::Result<Self> {
        let path = with_suffix(target, &format!(".partial-{}", std::process::id()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options
            .open(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Self {
            path,
            target: target.to_owned(),
            placed: false,
        })
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn open(&self) -> anyhow::Result<File> {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&self.path)
            .with_context(|| format!("cannot write {}", self.path.display()))
    }

    /// Writes `bytes` and syncs them to disk.
    fn write(&self, bytes: &[u8]) -> anyhow::Result<()> {
        let mut file = self.open()?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("cannot write {}", self.path.display()))
    }

    /// Syncs what was written (by another writer) to disk.
    fn sync(&self) -> anyhow::Result<()> {
        self.open()?
            .sync_all()
            .with_context(|| format!("cannot write {}", self.path.display()))
    }

    /// Renames the file over its target and syncs the folder, so the new name survives a
    /// crash.
    fn put_in_place(mut self) -> anyhow::Result<()> {
        std::fs::rename(&self.path, &self.target)
            .with_context(|| format!("cannot write {}", self.target.display()))?;
        self.placed = true;
        let folder = self
            .target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        #[cfg(unix)]
        File::open(folder)
            .and_then(|dir| dir.sync_all())
            .with_context(|| format!("cannot sync folder {}", folder.display()))?;
        Ok(())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.placed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[derive(Clone, Copy)]
enum Direction {
    Backup,
    Restore,
}

/// On PostgreSQL: the line to run, built from the database URL without its password, and an
/// error (nothing is done).
fn postgres_instead(
    config: &Config,
    out: &mut (dyn Write + Send),
    direction: Direction,
    file: &Path,
) -> anyhow::Result<()> {
    let (url, had_password) = url_without_password(&config.database.url);
    let file = shell_quote(&file.display().to_string());
    let url = shell_quote(&url);
    let (command, line) = match direction {
        Direction::Backup => (
            "pg_dump",
            format!("pg_dump --format=custom --file={file} --dbname={url}"),
        ),
        Direction::Restore => (
            "pg_restore",
            format!("pg_restore --clean --if-exists --no-owner --dbname={url} {file}"),
        ),
    };
    writeln!(out, "On PostgreSQL, use {command}:")?;
    writeln!(out, "  {line}")?;
    if had_password {
        writeln!(
            out,
            "(the password is not shown: {command} asks for it, or reads PGPASSWORD or ~/.pgpass)"
        )?;
    }
    writeln!(
        out,
        "Keep the token key with the dump: tokens.key and tokens.previous_keys of the \
         configuration (or SANGHA__TOKENS__KEY), else {}",
        config.data_dir.join("token.key").display()
    )?;
    bail!("sangha backup and restore copy SQLite databases only; on PostgreSQL run the line above")
}

/// The URL with its password (and any `…password…` query parameter) left out; whether there
/// was one.
fn url_without_password(raw: &str) -> (String, bool) {
    let Ok(mut url) = url::Url::parse(raw) else {
        return ("postgres://HOST/DATABASE".to_owned(), true);
    };
    let mut had = url.password().is_some();
    let _ = url.set_password(None);
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let kept: Vec<&(String, String)> = pairs
        .iter()
        .filter(|(k, _)| !k.to_ascii_lowercase().contains("password"))
        .collect();
    had |= kept.len() != pairs.len();
    if kept.is_empty() {
        url.set_query(None);
    } else {
        url.query_pairs_mut()
            .clear()
            .extend_pairs(kept.iter().map(|(k, v)| (k, v)));
    }
    (url.to_string(), had)
}

/// `text` as one shell word.
fn shell_quote(text: &str) -> String {
    if text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-:@".contains(c))
    {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_postgres_line_never_holds_the_password() {
        let (url, had) =
            url_without_password("postgres://sangha:s3cret@db.example:5433/news?sslmode=require");
        assert_eq!(
            url,
            "postgres://sangha@db.example:5433/news?sslmode=require"
        );
        assert!(had);
        let (url, had) = url_without_password("postgres://sangha@db/news?password=s3cret&x=1");
        assert_eq!(url, "postgres://sangha@db/news?x=1");
        assert!(had);
        let (url, had) = url_without_password("postgres://sangha@db/news");
        assert_eq!(url, "postgres://sangha@db/news");
        assert!(!had);
    }

    #[test]
    fn a_path_with_spaces_and_quotes_is_one_shell_word() {
        assert_eq!(shell_quote("/srv/b.dump"), "/srv/b.dump");
        assert_eq!(shell_quote("my list's.dump"), r"'my list'\''s.dump'");
        assert_eq!(shell_quote("a b&c"), "'a b&c'");
    }
}
