//! CSV import and export of subscribers, for the owner's command line.
//!
//! The file format is the one in DESIGN.md: a header row `email,name,timezone,offerings`, then
//! one person per row; several offerings in one cell are separated by `;`. An export writes the
//! same four columns (so it can be imported again) followed by columns that describe, and are
//! ignored on import: `statuses,created_at,confirmed_at,consent_at,consent_source`.
//!
//! Both directions stream, whatever the size of the list: an import holds a few batches of rows
//! (1,000 each by default: one being read, up to two being written) and an export one
//! subscriber at a time.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use futures::StreamExt;
use sha2::{Digest, Sha256};

use crate::clock::{Millis, format_ms};
use crate::domain::{EmailAddress, SubscriberName, SubscriptionStatus, Timezone};
use crate::links::Links;
use crate::store::{ExportLine, ImportCounts, ImportTerms, ImportedPerson, Offering, Store};

/// The columns an import needs, in the order an export writes them.
pub const HEADER: [&str; 4] = ["email", "name", "timezone", "offerings"];

/// The columns an export adds after [`HEADER`]; an import accepts and ignores them.
pub const EXPORT_COLUMNS: [&str; 5] = [
    "statuses",
    "created_at",
    "confirmed_at",
    "consent_at",
    "consent_source",
];

/// Longest row an import reads, in bytes. A real row is under 2 KiB (an address, a name of 100
/// characters, a zone, some offerings); without a cap csv grows its buffer for as long as a row
/// goes on, and a file with one line of 1 GB took 3 GB of memory.
const MAX_ROW_BYTES: u64 = 1 << 20;

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

/// Writes every subscriber as CSV to `out`, ordered by address, and returns how many. The
/// first four columns can be imported again; `offerings` holds the active offerings the person
/// has not left, `statuses` every subscription as `slug:status`. Times are RFC 3339 UTC.
///
/// A cell that a spreadsheet would run as a formula (it starts with `=`, `+`, `-`, `@`) is
/// written with a leading `'`, which an import takes off again (see [`defuse_formula`]).
pub async fn export(store: &Store, out: &mut (dyn Write + Send)) -> anyhow::Result<u64> {
    let mut writer = csv::Writer::from_writer(out);
    writer.write_record(HEADER.iter().chain(EXPORT_COLUMNS.iter()))?;
    let mut lines = store.export_lines();
    let mut current: Option<Exported> = None;
    let mut count = 0u64;
    while let Some(line) = lines.next().await {
        let line = line.context("cannot read the subscribers")?;
        if current.as_ref().is_some_and(|c| c.id != line.subscriber_id) {
            current.take().expect("checked").write(&mut writer)?;
            count += 1;
        }
        current
            .get_or_insert_with(|| Exported::new(&line))
            .add(line);
    }
    if let Some(last) = current {
        last.write(&mut writer)?;
        count += 1;
    }
    writer.flush()?;
    Ok(count)
}

/// Creates (or truncates) a file only its owner can read, for an export: it holds people's
/// addresses and interests.
pub fn create_private_file(path: &Path) -> anyhow::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))
}

/// One subscriber of an export, gathered from their consecutive lines.
struct Exported {
    id: i64,
    email: String,
    name: Option<String>,
    timezone: Option<String>,
    created_at: Millis,
    consent_at: Option<Millis>,
    consent_source: Option<String>,
    offerings: Vec<String>,
    statuses: Vec<String>,
    confirmed_at: Option<Millis>,
}

impl Exported {
    fn new(line: &ExportLine) -> Self {
        Self {
            id: line.subscriber_id,
            email: line.email.clone(),
            name: line.name.clone(),
            timezone: line.timezone.clone(),
            created_at: line.created_at,
            consent_at: line.consent_at,
            consent_source: line.consent_source.clone(),
            offerings: Vec::new(),
            statuses: Vec::new(),
            confirmed_at: None,
        }
    }

    fn add(&mut self, line: ExportLine) {
        let Some(sub) = line.subscription else {
            return;
        };
        self.statuses
            .push(format!("{}:{}", sub.offering, sub.status));
        if sub.status == SubscriptionStatus::Confirmed {
            self.confirmed_at = self.confirmed_at.max(sub.confirmed_at);
        }
        if sub.status != SubscriptionStatus::Unsubscribed && sub.offering_active {
            self.offerings.push(sub.offering);
        }
    }

    fn write<W: Write>(self, writer: &mut csv::Writer<W>) -> anyhow::Result<()> {
        let time = |t: Option<Millis>| t.map(format_ms).unwrap_or_default();
        // Every cell, not only the name: an address such as `=cmd|'/Ccalc'!A0@csv.test` is
        // valid, and so is a consent source the owner typed.
        let cells = [
            self.email,
            self.name.unwrap_or_default(),
            self.timezone.unwrap_or_default(),
            self.offerings.join(";"),
            self.statuses.join(";"),
            format_ms(self.created_at),
            time(self.confirmed_at),
            time(self.consent_at),
            self.consent_source.unwrap_or_default(),
        ];
        writer.write_record(cells.iter().map(|cell| defuse_formula(cell)))?;
        Ok(())
    }
}

/// Whether a spreadsheet would run the cell as a formula (OWASP "CSV injection": `=`, `+`, `-`,
/// `@`, tab, carriage return), or it would after [`restore_formula`] took a `'` off.
fn starts_a_formula(text: &str) -> bool {
    text.trim_start_matches('\'')
        .starts_with(['=', '+', '-', '@', '\t', '\r'])
}

/// A cell as an export writes it: text that starts a formula, after any number of `'`, gets one
/// more `'` in front. So `=SUM(A1)` is written `'=SUM(A1)` and `'=SUM(A1)` as typed is written
/// `''=SUM(A1)`, while `'Radha` stays as it is: [`restore_formula`] undoes exactly this.
fn defuse_formula(text: &str) -> String {
    if starts_a_formula(text) {
        format!("'{text}")
    } else {
        text.to_owned()
    }
}

/// A cell as an import reads it: the `'` that [`defuse_formula`] added, taken off.
fn restore_formula(text: &str) -> &str {
    match text.strip_prefix('\'') {
        Some(rest) if starts_a_formula(rest) => rest,
        _ => text,
    }
}

/// One row of an import file, checked.
enum Row {
    Valid(ValidRow),
    /// An export's row for a person who had left every offering: nothing to import.
    Left,
    /// `line N: what is wrong`.
    Invalid(String),
}

struct ValidRow {
    email: EmailAddress,
    name: Option<SubscriberName>,
    timezone: Option<Timezone>,
    offering_ids: Vec<i64>,
}

/// Where each column is in the file.
#[derive(Debug)]
struct Columns {
    email: usize,
    name: usize,
    timezone: usize,
    offerings: usize,
    statuses: Option<usize>,
    count: usize,
}

/// Reads an import file record by record and checks each row.
struct Rows<'o> {
    reader: csv::Reader<LineCounter<File>>,
    columns: Columns,
    record: csv::ByteRecord,
    offerings: &'o [Offering],
    /// Zones already checked (see [`check_timezone`]).
    timezones: HashMap<String, Timezone>,
}

impl<'o> Rows<'o> {
    fn open(path: &Path, offerings: &'o [Offering]) -> anyhow::Result<Self> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        // Flexible: a row with the wrong number of fields is reported by line like any other
        // bad row, instead of stopping the reader.
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .has_headers(false)
            .from_reader(LineCounter::new(file));
        let mut header = csv::ByteRecord::new();
        let read = reader
            .read_byte_record(&mut header)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if !read {
            bail!(
                "{} is empty: the first line must be the header `{}`",
                path.display(),
                HEADER.join(",")
            );
        }
        let line = record_line(&mut reader, &header);
        let columns = columns_of(&header)
            .map_err(|e| anyhow::anyhow!("{}: line {line}: {e}", path.display()))?;
        Ok(Self {
            reader,
            columns,
            record: csv::ByteRecord::new(),
            offerings,
            timezones: HashMap::new(),
        })
    }

    /// The next row, or `None` at the end of the file. Only reading the file can fail here.
    fn next_row(&mut self) -> anyhow::Result<Option<Row>> {
        match self.reader.read_byte_record(&mut self.record) {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(e) => {
                if let csv::ErrorKind::Io(io) = e.kind()
                    && let Some(long) = io.get_ref().and_then(|e| e.downcast_ref::<RowTooLong>())
                {
                    bail!("{long}");
                }
                return Err(anyhow::Error::new(e).context("cannot read the file"));
            }
        }
        let line = record_line(&mut self.reader, &self.record);
        Ok(Some(match self.check_row() {
            Ok(row) => row,
            Err(problems) => Row::Invalid(format!("line {line}: {problems}")),
        }))
    }

    fn check_row(&mut self) -> Result<Row, String> {
        let columns = &self.columns;
        if self.record.len() != columns.count {
            return Err(format!(
                "expected {} fields, found {}",
                columns.count,
                self.record.len()
            ));
        }
        let text = |i: usize| {
            std::str::from_utf8(&self.record[i])
                .map_err(|_| "not valid UTF-8 text (save the file as UTF-8)".to_owned())
        };
        // Each cell as it was before an export defused it (see `defuse_formula`).
        let cell = |i: usize| text(i).map(|t| restore_formula(t.trim()));
        let (email, name, timezone, offerings) = (
            cell(columns.email)?,
            cell(columns.name)?,
            cell(columns.timezone)?,
            cell(columns.offerings)?,
        );
        let left_everything = match columns.statuses {
            Some(i) => !text(i)?.trim().is_empty(),
            None => false,
        };

        let mut problems = Vec::new();
        let email = if email.trim().is_empty() {
            problems.push("email: empty".to_owned());
            None
        } else {
            EmailAddress::parse(email)
                .map_err(|e| problems.push(format!("email: {e}")))
                .ok()
        };
        let name = SubscriberName::parse(name)
            .map_err(|e| problems.push(format!("name: {e}")))
            .ok()
            .flatten();
        let timezone = check_timezone(&mut self.timezones, timezone)
            .map_err(|e| problems.push(format!("timezone: {e}")))
            .ok()
            .flatten();
        let mut offering_ids = Vec::new();
        for slug in offerings
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let slug = slug.to_ascii_lowercase();
            match self.offerings.iter().find(|o| o.slug == slug) {
                Some(o) if !offering_ids.contains(&o.id) => offering_ids.push(o.id),
                Some(_) => {}
                None => {
                    let known: Vec<&str> = self.offerings.iter().map(|o| o.slug.as_str()).collect();
                    problems.push(format!(
                        "offerings: there is no offering `{slug}` (known: {})",
                        known.join(", ")
                    ));
                }
            }
        }
        if offering_ids.is_empty() && problems.is_empty() {
            if left_everything {
                return Ok(Row::Left);
            }
            problems.push(
                "offerings: none given (name at least one; separate several with `;`)".to_owned(),
            );
        }
        match (email, problems.is_empty()) {
            (Some(email), true) => Ok(Row::Valid(ValidRow {
                email,
                name,
                timezone,
                offering_ids,
            })),
            _ => Err(problems.join("; ")),
        }
    }
}

/// An empty cell is no time zone. `known` remembers zones already checked, as looking one up
/// parses its rules.
fn check_timezone(
    known: &mut HashMap<String, Timezone>,
    text: &str,
) -> Result<Option<Timezone>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if let Some(zone) = known.get(text) {
        return Ok(Some(zone.clone()));
    }
    let zone = Timezone::parse(text)?;
    // Bounded: there are some 600 zone names, and this is only a shortcut.
    if known.len() < 1024 {
        known.insert(text.to_owned(), zone.clone());
    }
    Ok(Some(zone))
}

/// Finds the columns by name (any order, any case). The four of [`HEADER`] are needed; the
/// ones an export adds are allowed; anything else is refused, so a misspelt column is not
/// silently ignored.
fn columns_of(header: &csv::ByteRecord) -> Result<Columns, String> {
    let expected = || format!("the header must be `{}`", HEADER.join(","));
    let mut found: HashMap<String, usize> = HashMap::new();
    for (i, name) in header.iter().enumerate() {
        let name = std::str::from_utf8(name)
            .map_err(|_| format!("not valid UTF-8 text; {}", expected()))?
            .trim()
            .to_ascii_lowercase();
        if !HEADER.contains(&name.as_str()) && !EXPORT_COLUMNS.contains(&name.as_str()) {
            return Err(format!("unknown column `{name}`: {}", expected()));
        }
        if found.insert(name.clone(), i).is_some() {
            return Err(format!("the column `{name}` appears twice: {}", expected()));
        }
    }
    let missing: Vec<&str> = HEADER
        .iter()
        .copied()
        .filter(|c| !found.contains_key(*c))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "missing column(s) {}: {}",
            missing.join(", "),
            expected()
        ));
    }
    Ok(Columns {
        email: found["email"],
        name: found["name"],
        timezone: found["timezone"],
        offerings: found["offerings"],
        statuses: found.get("statuses").copied(),
        count: header.len(),
    })
}

/// The line of the file a record just read starts on (the first line is 1).
///
/// csv's own `Position::line` is where the reader stood when it began looking for the record,
/// which is a line too early after `\r\n` line ends (as spreadsheets write them) and after
/// blank lines. So: the record ends just before the reader's byte position, the line it ends on
/// is one more than the line breaks before that, and it starts as many lines earlier as it has
/// line breaks inside quoted fields.
fn record_line(reader: &mut csv::Reader<LineCounter<File>>, record: &csv::ByteRecord) -> u64 {
    let end = reader.position().byte();
    reader.get_mut().row_ended_at(end);
    // The last byte read is the record's terminator (or its last byte at the end of the file,
    // which is never a bare line break): line breaks strictly before it.
    let before_end = reader.get_mut().newlines_before(end.saturating_sub(1));
    let inside = record.as_slice().iter().filter(|b| **b == b'\n').count() as u64;
    (1 + before_end).saturating_sub(inside)
}

/// Passes the file through and remembers the offsets of its line breaks, so that rows can be
/// given their line numbers. It holds only the line breaks read ahead of the parser (csv
/// reads in 8 KiB chunks).
///
/// It also stops a row that goes on past [`MAX_ROW_BYTES`] (one huge line, or a quote left
/// open): reading fails with [`RowTooLong`], so neither csv's record nor the line breaks
/// remembered here grow further.
struct LineCounter<R> {
    inner: R,
    offset: u64,
    ahead: VecDeque<u64>,
    passed: u64,
    /// Where the last row read ended: the next one starts here or after blank lines.
    row_end: u64,
    /// The offsets of the lines read ahead that are not blank: the next row starts on the first
    /// at or after `row_end`.
    line_starts: VecDeque<u64>,
    /// Whether the last byte read ended a line (or the file has just begun).
    at_line_start: bool,
    max_row_bytes: u64,
}

impl<R> LineCounter<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            offset: 0,
            ahead: VecDeque::new(),
            passed: 0,
            row_end: 0,
            line_starts: VecDeque::new(),
            at_line_start: true,
            max_row_bytes: MAX_ROW_BYTES,
        }
    }

    /// How many line breaks come before byte `offset`; offsets asked for never decrease.
    fn newlines_before(&mut self, offset: u64) -> u64 {
        while self.ahead.front().is_some_and(|&at| at < offset) {
            self.ahead.pop_front();
            self.passed += 1;
        }
        self.passed
    }

    /// The parser has read a whole row, up to byte `offset`.
    fn row_ended_at(&mut self, offset: u64) {
        self.row_end = offset;
        while self.line_starts.front().is_some_and(|&at| at < offset) {
            self.line_starts.pop_front();
        }
    }
}

impl<R: Read> Read for LineCounter<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.offset - self.row_end > self.max_row_bytes {
            let start = self
                .line_starts
                .iter()
                .copied()
                .find(|&at| at >= self.row_end)
                .unwrap_or(self.offset);
            let line = 1 + self.newlines_before(start);
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                RowTooLong {
                    line,
                    max_bytes: self.max_row_bytes,
                },
            ));
        }
        let n = self.inner.read(buf)?;
        for (i, &byte) in buf[..n].iter().enumerate() {
            let at = self.offset + i as u64;
            match byte {
                b'\n' => self.ahead.push_back(at),
                b'\r' => {}
                _ if self.at_line_start => self.line_starts.push_back(at),
                _ => {}
            }
            self.at_line_start = byte == b'\n' || (byte == b'\r' && self.at_line_start);
        }
        self.offset += n as u64;
        Ok(n)
    }
}

/// A row longer than an import reads (see [`LineCounter`]).
#[derive(Debug)]
struct RowTooLong {
    line: u64,
    max_bytes: u64,
}

impl fmt::Display for RowTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}: the row goes on for more than {} KiB, the longest an import reads \
             (is a quote left open, or is this not a CSV file of subscribers?)",
            self.line,
            self.max_bytes / 1024
        )
    }
}

impl std::error::Error for RowTooLong {}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(data: &[u8]) -> Vec<u64> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.csv");
        std::fs::write(&path, data).unwrap();
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .has_headers(false)
            .from_reader(LineCounter::new(File::open(&path).unwrap()));
        let mut record = csv::ByteRecord::new();
        let mut lines = Vec::new();
        while reader.read_byte_record(&mut record).unwrap() {
            lines.push(record_line(&mut reader, &record));
        }
        lines
    }

    #[test]
    fn rows_get_the_line_they_start_on_whatever_the_line_ends() {
        let lf = b"h\na\n\n\nb\n\"c\nd\",e\nf\n\n  \ng";
        assert_eq!(lines_of(lf), [1, 2, 5, 6, 8, 10, 11]);
        let crlf = b"\xEF\xBB\xBFh\r\na\r\n\r\n\r\nb\r\n\"c\r\nd\",e\r\nf\r\n\r\n  \r\ng\r\n";
        assert_eq!(lines_of(crlf), [1, 2, 5, 6, 8, 10, 11]);
    }

    #[test]
    fn a_row_past_the_cap_stops_the_reader_with_the_line_it_starts_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.csv");
        let long = "x".repeat(100_000);
        std::fs::write(&path, format!("h\r\na\r\n\r\n\"{long}\n{long}\"\r\nb\r\n")).unwrap();
        let mut counter = LineCounter::new(File::open(&path).unwrap());
        counter.max_row_bytes = 50_000;
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .has_headers(false)
            .from_reader(counter);
        let mut record = csv::ByteRecord::new();
        for line in [1, 2] {
            assert!(reader.read_byte_record(&mut record).unwrap());
            assert_eq!(record_line(&mut reader, &record), line);
        }
        let err = reader.read_byte_record(&mut record).unwrap_err();
        let csv::ErrorKind::Io(io) = err.kind() else {
            panic!("{err}");
        };
        let long = io.get_ref().unwrap().downcast_ref::<RowTooLong>().unwrap();
        assert_eq!(long.line, 4);
        assert!(record.as_slice().len() < 60_000);
    }

    #[test]
    fn a_name_that_looks_like_a_formula_survives_a_round_trip() {
        for name in [
            "=SUM(A1)",
            "+49 Anna",
            "-Anna",
            "@anna",
            "Anna",
            "'quoted'",
            "'Radha",
            "'=SUM(A1)",
            "''@x",
            "\tx",
            "'",
            "",
        ] {
            let written = defuse_formula(name);
            assert!(
                !written.starts_with(['=', '+', '-', '@', '\t']),
                "{written}"
            );
            assert_eq!(restore_formula(&written), name);
        }
        assert_eq!(defuse_formula("=1+1"), "'=1+1");
        assert_eq!(defuse_formula("'Radha"), "'Radha");
        assert_eq!(defuse_formula("'=1"), "''=1");
    }

    #[test]
    fn a_header_needs_the_four_columns_and_allows_the_export_ones() {
        let header = |s: &str| csv::ByteRecord::from(s.split(',').collect::<Vec<_>>());
        assert!(columns_of(&header("email,name,timezone,offerings")).is_ok());
        assert!(columns_of(&header("Offerings, Email ,name,timezone")).is_ok());
        let export = format!("{},{}", HEADER.join(","), EXPORT_COLUMNS.join(","));
        assert_eq!(columns_of(&header(&export)).unwrap().statuses, Some(4));
        let err = columns_of(&header("mail,name,timezone,offerings")).unwrap_err();
        assert!(err.contains("`mail`") && err.contains("email,name,timezone,offerings"));
        let err = columns_of(&header("email,name,offerings")).unwrap_err();
        assert!(err.contains("missing column(s) timezone"), "{err}");
        assert!(columns_of(&header("email,email,name,timezone,offerings")).is_err());
    }
}
