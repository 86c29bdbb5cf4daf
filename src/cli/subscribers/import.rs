//! `sangha subscribers import`: people from a CSV file, in batches, each in one transaction.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

use crate::clock::Millis;
use crate::domain::EmailAddress;
use crate::links::Links;
use crate::store::{ImportCounts, ImportTerms, ImportedPerson, Store};

use super::rows::{Row, Rows, ValidRow};

/// Longest `--source` text kept in consent records.
const MAX_SOURCE_CHARS: usize = 200;

/// How an import treats the people in the file.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The people consented elsewhere: their subscriptions are confirmed at once. Needs
    /// `source`. Without it they are pending and receive no email until they sign up
    /// themselves.
    pub confirmed: bool,
    /// Where the consent was given (`paper list, retreat May 2024`); recorded with each person.
    pub source: Option<String>,
    /// Check the whole file first and import nothing when any row is bad.
    pub strict: bool,
    /// People written per transaction.
    pub batch_size: usize,
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self {
            confirmed: false,
            source: None,
            strict: false,
            batch_size: 1000,
        }
    }
}

impl ImportOptions {
    /// Refuses options that cannot work, before any file is read.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.confirmed && self.source.is_none() {
            bail!(
                "--confirmed needs --source: say where these people gave their consent, \
                 for example --source \"signup sheet, retreat May 2024\""
            );
        }
        if let Some(source) = &self.source {
            let source = source.trim();
            if source.is_empty() {
                bail!("--source is empty: say where these people gave their consent");
            }
            if source.chars().any(char::is_control) {
                bail!("--source cannot contain line breaks or control characters");
            }
            if source.chars().count() > MAX_SOURCE_CHARS {
                bail!("--source is too long: keep it under {MAX_SOURCE_CHARS} characters");
            }
        }
        if self.batch_size == 0 {
            bail!("the batch size must be at least 1");
        }
        Ok(())
    }
}

/// What an import did. Rows and people: `read` = `imported` + `updated` + `unchanged` +
/// `merged` + `skipped_*`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Whether new subscriptions were confirmed (`--confirmed`) or left pending.
    pub confirmed: bool,
    /// Rows read, not counting the header.
    pub read: u64,
    /// New subscribers.
    pub imported: u64,
    /// Existing subscribers who got an offering, a confirmation, a name or a time zone.
    pub updated: u64,
    /// Existing subscribers the file had nothing new for.
    pub unchanged: u64,
    /// Rows that repeated the address of a row shortly before (within one batch) and were
    /// merged into it; a repeat further away counts as `updated` or `unchanged`.
    pub merged: u64,
    /// Rows that are not valid (each reported with its line number).
    pub skipped_invalid: u64,
    /// Rows of an export for people who had left every offering.
    pub skipped_left: u64,
    /// People on the suppression list (erased or bounced): never brought back.
    pub skipped_suppressed: u64,
    /// Subscriptions listed in the file that the person had left: they stay unsubscribed.
    pub kept_unsubscribed: u64,
}

impl fmt::Display for ImportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} row(s) read", self.read)?;
        if self.confirmed {
            writeln!(
                f,
                "  {} new subscriber(s) imported as confirmed",
                self.imported
            )?;
        } else {
            writeln!(
                f,
                "  {} new subscriber(s) imported as pending; they receive no email until they \
                 sign up themselves",
                self.imported
            )?;
        }
        writeln!(
            f,
            "  {} existing subscriber(s) updated, {} unchanged",
            self.updated, self.unchanged
        )?;
        if self.merged > 0 {
            writeln!(
                f,
                "  {} row(s) repeated an address and were merged into it",
                self.merged
            )?;
        }
        writeln!(
            f,
            "  {} row(s) skipped as not valid{}",
            self.skipped_invalid,
            if self.skipped_invalid > 0 {
                " (listed above)"
            } else {
                ""
            }
        )?;
        if self.skipped_left > 0 {
            writeln!(
                f,
                "  {} row(s) skipped: the person had left every offering",
                self.skipped_left
            )?;
        }
        writeln!(
            f,
            "  {} suppressed address(es) skipped (erased or bounced)",
            self.skipped_suppressed
        )?;
        write!(
            f,
            "  {} subscription(s) kept unsubscribed: the person left, and an import does not \
             bring them back",
            self.kept_unsubscribed
        )
    }
}

/// Imports the people in the CSV file at `path` (see the module comment for the format).
///
/// A bad row is reported to `errors` as `line N: what is wrong` and skipped; with
/// `options.strict` the file is checked first and nothing is imported when any row is bad.
/// A file whose header is wrong is refused whole. Rows are written in batches of
/// `options.batch_size`, each in one transaction; running the same import again changes
/// nothing and records nothing.
pub async fn import(
    store: &Store,
    links: &Links,
    path: &Path,
    options: &ImportOptions,
    errors: &mut (dyn Write + Send),
    now: Millis,
) -> anyhow::Result<ImportReport> {
    options.check()?;
    let offerings = store.active_offerings().await?;
    let source = match &options.source {
        Some(source) => source.trim().to_owned(),
        None => format!(
            "import of {}",
            path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into()
            )
        ),
    };
    let text_hash = crate::domain::hex(&Sha256::digest(source.as_bytes()));
    let terms = Arc::new(ImportTerms {
        confirmed: options.confirmed,
        source,
        text_hash,
        offerings: offerings.clone(),
    });

    if options.strict {
        let mut rows = Rows::open(path, &offerings)?;
        let mut bad = 0u64;
        while let Some(row) = rows.next_row().context("nothing was imported (--strict)")? {
            if let Row::Invalid(message) = row {
                writeln!(errors, "{message}")?;
                bad += 1;
            }
        }
        if bad > 0 {
            bail!(
                "{bad} row(s) of {} are not valid; nothing was imported (--strict)",
                path.display()
            );
        }
    }

    let mut report = ImportReport {
        confirmed: options.confirmed,
        ..ImportReport::default()
    };
    let mut writes = Writes::new(store.import_lanes());
    let read = async {
        let mut rows = Rows::open(path, &offerings)?;
        let mut batch: Vec<ImportedPerson> = Vec::with_capacity(options.batch_size);
        let mut in_batch: HashMap<EmailAddress, usize> = HashMap::with_capacity(options.batch_size);
        // A file that cannot be read on stops the import there, after the rows before it.
        let stopped = loop {
            let row = match rows.next_row() {
                Ok(Some(row)) => row,
                Ok(None) => break None,
                Err(e) => break Some(e),
            };
            report.read += 1;
            match row {
                Row::Invalid(message) => {
                    if options.strict {
                        bail!("{message} (the file changed while it was imported)");
                    }
                    writeln!(errors, "{message}")?;
                    report.skipped_invalid += 1;
                }
                Row::Left => report.skipped_left += 1,
                Row::Valid(person) => {
                    if let Some(&i) = in_batch.get(&person.email) {
                        merge(&mut batch[i], person);
                        report.merged += 1;
                        continue;
                    }
                    in_batch.insert(person.email.clone(), batch.len());
                    batch.push(ImportedPerson {
                        email_hashes: links.email_hashes(&person.email),
                        email: person.email,
                        name: person.name,
                        timezone: person.timezone,
                        offering_ids: person.offering_ids,
                    });
                    if batch.len() >= options.batch_size {
                        let full =
                            std::mem::replace(&mut batch, Vec::with_capacity(options.batch_size));
                        let emails = std::mem::take(&mut in_batch);
                        writes
                            .start(store, &terms, full, emails, now, &mut report)
                            .await?;
                    }
                }
            }
        };
        if !batch.is_empty() {
            writes
                .start(store, &terms, batch, in_batch, now, &mut report)
                .await?;
        }
        match stopped {
            Some(e) => Err(e.context(format!(
                "the import stopped after {} row(s), which were imported (those not valid \
                 skipped); running it again after fixing the file is safe",
                report.read
            ))),
            None => anyhow::Ok(()),
        }
    }
    .await;
    // However the reading ended, the batches handed over are waited for: none is cut off
    // mid-transaction when the command exits.
    let written = writes.finish(&mut report).await;
    read.and(written)?;
    Ok(report)
}

/// A batch being written by its own task.
struct BatchWrite {
    task: tokio::task::JoinHandle<Result<ImportCounts, sqlx::Error>>,
    /// The addresses of the batch: a later batch holding one of them waits for this one.
    emails: HashMap<EmailAddress, usize>,
    /// The row the batch ends at, for the error message.
    last_row: u64,
}

/// The batches being written, in file order. On PostgreSQL two are written at once, each in
/// its own transaction on its own connection, while the next one is read: the server's work
/// (mostly foreign-key checks and index entries) then uses both cores, and a million rows took
/// 40 s instead of 65. SQLite has one writer, so it writes one batch at a time, while the next
/// is read.
///
/// Batches written at once never share an address (a batch that repeats one waits), so they
/// touch different rows, cannot deadlock, and count a person exactly as one after the other
/// would. Results are taken in file order: an error names the first batch that failed.
struct Writes {
    lanes: usize,
    running: VecDeque<BatchWrite>,
}

impl Writes {
    fn new(lanes: usize) -> Self {
        Self {
            lanes: lanes.max(1),
            running: VecDeque::new(),
        }
    }

    /// Starts writing `batch` once a lane is free and no running batch shares an address.
    async fn start(
        &mut self,
        store: &Store,
        terms: &Arc<ImportTerms>,
        batch: Vec<ImportedPerson>,
        emails: HashMap<EmailAddress, usize>,
        now: Millis,
        report: &mut ImportReport,
    ) -> anyhow::Result<()> {
        while self.running.len() >= self.lanes
            || self
                .running
                .iter()
                .any(|w| emails.keys().any(|e| w.emails.contains_key(e)))
        {
            self.finish_first(report).await?;
        }
        let (store, terms) = (store.clone(), Arc::clone(terms));
        let task = tokio::spawn(async move { store.import_people(&batch, &terms, now).await });
        self.running.push_back(BatchWrite {
            task,
            emails,
            last_row: report.read,
        });
        Ok(())
    }

    /// Waits for every running batch.
    async fn finish(&mut self, report: &mut ImportReport) -> anyhow::Result<()> {
        while !self.running.is_empty() {
            self.finish_first(report).await?;
        }
        Ok(())
    }

    /// Waits for the oldest running batch and counts what it did. When it failed, the batches
    /// after it are still waited for (a task left running could be cut off mid-transaction
    /// when the command exits), and the error names it.
    async fn finish_first(&mut self, report: &mut ImportReport) -> anyhow::Result<()> {
        let Some(write) = self.running.pop_front() else {
            return Ok(());
        };
        let result = match write.task.await {
            Ok(result) => result.map_err(anyhow::Error::from),
            Err(join) => Err(anyhow::anyhow!("the task writing it failed: {join}")),
        };
        match result {
            Ok(counts) => {
                report.imported += counts.imported;
                report.updated += counts.updated;
                report.unchanged += counts.unchanged;
                report.skipped_suppressed += counts.suppressed;
                report.kept_unsubscribed += counts.kept_unsubscribed;
                Ok(())
            }
            Err(error) => {
                for later in self.running.drain(..) {
                    let _ = later.task.await;
                }
                Err(error.context(format!(
                    "cannot write the batch that ends at row {} (the batches before it were \
                     written; running the same import again is safe)",
                    write.last_row
                )))
            }
        }
    }
}

/// A later row of the same address: the first name and zone given win (as for an existing
/// subscriber), the offerings are the union.
fn merge(into: &mut ImportedPerson, row: ValidRow) {
    if into.name.is_none() {
        into.name = row.name;
    }
    if into.timezone.is_none() {
        into.timezone = row.timezone;
    }
    for id in row.offering_ids {
        if !into.offering_ids.contains(&id) {
            into.offering_ids.push(id);
        }
    }
}
