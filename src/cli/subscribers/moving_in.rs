//! `sangha subscribers import` of another tool's export, read as that tool writes it:
//! Mailchimp (the audience export's subscribed, unsubscribed and cleaned files), listmonk (the
//! subscribers export), Substack and Buttondown (their subscriber exports).
//!
//! The format is found from the header row (`--format` forces one). Each row's status maps
//! onto ours (see [`MovedStatus`]); the consent time, IP and a source naming the tool, the file
//! and the old tool's fields go into the consent record. Offerings come from the row where the
//! tool has tags (Mailchimp `TAGS`, Buttondown `tags`, listmonk `attributes.offerings`) that
//! name an offering, otherwise from `--offering`.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;

use anyhow::{Context, bail};

use crate::clock::{Millis, format_ms};
use crate::domain::{EmailAddress, ListFormat, Slug, SubscriberName, SuppressionReason, Timezone};
use crate::links::Links;
use crate::store::{MovedCounts, MovedPerson, MovedStatus, Offering, Store};

use super::import::ImportOptions;
use super::rows::{CsvFile, check_timezone, restore_formula};

/// The format of the file at `path`, from its header; a header no other tool writes is ours
/// (whose reader then says what is wrong with it).
pub fn detect_file(path: &Path) -> anyhow::Result<ListFormat> {
    let file = CsvFile::open(path)?;
    Ok(file
        .header
        .as_ref()
        .and_then(|h| detect(&names_of(h)))
        .unwrap_or(ListFormat::Sangha))
}

/// The column names of a header, trimmed and lowercased.
fn names_of(header: &csv::ByteRecord) -> Vec<String> {
    header
        .iter()
        .map(|name| {
            String::from_utf8_lossy(name)
                .trim_start_matches('\u{feff}')
                .trim()
                .to_lowercase()
        })
        .collect()
}

/// Which tool writes a header with these columns.
fn detect(names: &[String]) -> Option<ListFormat> {
    let has = |c: &str| names.iter().any(|n| n == c);
    if has("email address") {
        Some(ListFormat::Mailchimp)
    } else if has("subscriber_type") {
        Some(ListFormat::Buttondown)
    } else if has("active_subscription") || has("email_disabled") {
        Some(ListFormat::Substack)
    } else if has("email") && has("attributes") {
        Some(ListFormat::Listmonk)
    } else {
        None
    }
}

/// Which of Mailchimp's three files this is: it writes one per status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MailchimpFile {
    Subscribed,
    Unsubscribed,
    Cleaned,
}

/// Where the columns of a foreign file are.
struct Layout {
    format: ListFormat,
    columns: HashMap<String, usize>,
    count: usize,
    mailchimp: MailchimpFile,
}

impl Layout {
    fn of(format: ListFormat, header: &csv::ByteRecord) -> Result<Self, String> {
        let names = names_of(header);
        let mut columns = HashMap::new();
        // Mailchimp writes some columns twice (`UNSUB_REASON`): the first one counts. Two
        // address columns would be ambiguous.
        for (i, name) in names.iter().enumerate() {
            if columns.contains_key(name) && name.starts_with("email") {
                return Err(format!("the column `{name}` appears twice"));
            }
            columns.entry(name.clone()).or_insert(i);
        }
        let has = |c: &str| columns.contains_key(c);
        let needed: &[&str] = match format {
            ListFormat::Mailchimp => &["email address"],
            ListFormat::Buttondown => &["subscriber_type"],
            ListFormat::Substack | ListFormat::Listmonk | ListFormat::Sangha => &["email"],
        };
        let email = has("email") || has("email address") || has("email_address");
        if let Some(missing) = needed
            .iter()
            .find(|c| !has(c))
            .or((!email).then_some(&"email"))
        {
            return Err(format!(
                "no `{missing}` column, which a {format} export has; is this file from \
                 another tool? (--format forces one of: {})",
                ListFormat::ALL
                    .iter()
                    .map(|f| f.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let mailchimp = if has("clean_time") {
            MailchimpFile::Cleaned
        } else if has("unsub_time") {
            MailchimpFile::Unsubscribed
        } else {
            MailchimpFile::Subscribed
        };
        Ok(Self {
            format,
            count: names.len(),
            columns,
            mailchimp,
        })
    }

    /// Whether rows can name their own offerings.
    fn has_offering_column(&self) -> bool {
        let has = |c: &str| self.columns.contains_key(c);
        match self.format {
            ListFormat::Mailchimp | ListFormat::Buttondown => has("tags"),
            ListFormat::Listmonk => has("attributes"),
            ListFormat::Substack | ListFormat::Sangha => false,
        }
    }

    /// Whether every row of the file goes to the suppression list (Mailchimp's cleaned file).
    fn all_suppressed(&self) -> bool {
        self.format == ListFormat::Mailchimp && self.mailchimp == MailchimpFile::Cleaned
    }
}

/// What an import from another tool did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MoveReport {
    /// The tool the file came from.
    pub format: Option<ListFormat>,
    /// Rows read, not counting the header.
    pub read: u64,
    /// What the people of the valid rows came to.
    pub people: MovedCounts,
    /// Rows not imported for their status there (never confirmed, marked as spam), by line.
    pub skipped: u64,
    /// Rows that are not valid, by line.
    pub invalid: u64,
}

impl fmt::Display for MoveReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tool = self.format.map_or("other tool's", ListFormat::as_str);
        writeln!(f, "{} row(s) read from a {tool} export", self.read)?;
        writeln!(
            f,
            "  {} confirmed, with the consent {tool} recorded (time, IP, source)",
            self.people.confirmed
        )?;
        writeln!(
            f,
            "  {} unsubscribed: kept so they are never mailed and no import brings them back",
            self.people.unsubscribed
        )?;
        writeln!(
            f,
            "  {} suppressed: cleaned, bounced or blocklisted in {tool}, now on the suppression list",
            self.people.suppressed
        )?;
        writeln!(
            f,
            "  {} already here as the file says: unchanged",
            self.people.unchanged
        )?;
        if self.people.kept_unsubscribed > 0 {
            writeln!(
                f,
                "  {} confirmed in {tool} but had left here: kept unsubscribed",
                self.people.kept_unsubscribed
            )?;
        }
        if self.people.already_suppressed > 0 {
            writeln!(
                f,
                "  {} on the suppression list here (erased or bounced): not imported",
                self.people.already_suppressed
            )?;
        }
        write!(
            f,
            "  {} row(s) skipped, listed above by line: {} not valid, {} not imported for their \
             status in {tool}",
            self.skipped + self.invalid,
            self.invalid,
            self.skipped
        )
    }
}

/// One row, read.
enum Moved {
    Person(Box<MovedPerson>),
    /// `line N: why` for a row left out for its status there.
    Skipped(String),
    /// `line N: what is wrong`.
    Invalid(String),
}

/// Reads a foreign file row by row.
struct ForeignRows<'o> {
    file: CsvFile,
    layout: Layout,
    record: csv::ByteRecord,
    offerings: &'o [Offering],
    /// `--offering`: for rows that name none.
    default_offerings: Vec<i64>,
    /// What each consent record's source starts with.
    source: String,
    links: &'o Links,
    now: Millis,
    timezones: HashMap<String, Timezone>,
}

impl<'o> ForeignRows<'o> {
    fn open(
        path: &Path,
        format: ListFormat,
        context: &Shared<'o>,
        default_offerings: Vec<i64>,
    ) -> anyhow::Result<Self> {
        let file = CsvFile::open(path)?;
        let Some(header) = &file.header else {
            bail!(
                "{} is empty: the first line must be its header",
                path.display()
            );
        };
        let layout = Layout::of(format, header)
            .map_err(|e| anyhow::anyhow!("{}: line {}: {e}", path.display(), file.header_line))?;
        if default_offerings.is_empty() && !layout.has_offering_column() && !layout.all_suppressed()
        {
            bail!(
                "{} is a {format} export without an offering column: say which offering(s) \
                 these people join with --offering SLUG (repeat it for several)",
                path.display()
            );
        }
        Ok(Self {
            file,
            layout,
            record: csv::ByteRecord::new(),
            offerings: context.offerings,
            default_offerings,
            source: context.source.clone(),
            links: context.links,
            now: context.now,
            timezones: HashMap::new(),
        })
    }

    fn next_row(&mut self) -> anyhow::Result<Option<Moved>> {
        let Some(line) = self.file.next_record(&mut self.record)? else {
            return Ok(None);
        };
        Ok(Some(match self.check_row() {
            Ok(Ok(person)) => Moved::Person(Box::new(person)),
            Ok(Err(skip)) => Moved::Skipped(format!("line {line}: {skip}")),
            Err(problems) => Moved::Invalid(format!("line {line}: {problems}")),
        }))
    }

    /// A cell by column name ("" when the file has no such column), as an export of ours wrote
    /// it before defusing it.
    fn cell(&self, name: &str) -> Result<&str, String> {
        let Some(&i) = self.layout.columns.get(name) else {
            return Ok("");
        };
        let text = std::str::from_utf8(&self.record[i])
            .map_err(|_| format!("{name}: not valid UTF-8 text (save the file as UTF-8)"))?;
        Ok(restore_formula(text.trim()))
    }

    /// `Ok(Ok(person))`, `Ok(Err(why it is skipped))` or `Err(what is wrong)`.
    fn check_row(&mut self) -> Result<Result<MovedPerson, String>, String> {
        if self.record.len() != self.layout.count {
            return Err(format!(
                "expected {} fields, found {}",
                self.layout.count,
                self.record.len()
            ));
        }
        let mut problems = Vec::new();
        let email_text = match self.layout.format {
            ListFormat::Mailchimp => self.cell("email address")?,
            _ if self.layout.columns.contains_key("email") => self.cell("email")?,
            _ => self.cell("email_address")?,
        };
        let email = if email_text.is_empty() {
            problems.push("email: empty".to_owned());
            None
        } else {
            EmailAddress::parse(email_text)
                .map_err(|e| problems.push(format!("email: {e}")))
                .ok()
        };
        let name_text = match self.layout.format {
            ListFormat::Mailchimp => {
                format!("{} {}", self.cell("first name")?, self.cell("last name")?)
            }
            _ => self.cell("name")?.to_owned(),
        };
        let name = SubscriberName::parse(name_text.trim())
            .map_err(|e| problems.push(format!("name: {e}")))
            .ok()
            .flatten();
        let facts = match self.facts() {
            Ok(Ok(facts)) => Some(facts),
            Ok(Err(skip)) => return Ok(Err(skip)),
            Err(e) => {
                problems.push(e);
                None
            }
        };
        let (Some(email), Some(facts), true) = (email, facts, problems.is_empty()) else {
            return Err(problems.join("; "));
        };
        // A zone the old tool guessed (Mailchimp's from an IP) that is not one is left out
        // rather than refusing the person.
        let timezone = check_timezone(&mut self.timezones, &facts.timezone)
            .ok()
            .flatten();
        let mut offering_ids = Vec::new();
        for tag in &facts.tags {
            let tag = tag.to_lowercase();
            if let Some(o) = self.offerings.iter().find(|o| o.slug == tag)
                && !offering_ids.contains(&o.id)
            {
                offering_ids.push(o.id);
            }
        }
        if offering_ids.is_empty() {
            offering_ids.clone_from(&self.default_offerings);
        }
        if offering_ids.is_empty() && !matches!(facts.status, MovedStatus::Suppressed(_)) {
            return Err(
                "offerings: none of the row's tags names an offering, and no --offering was \
                 given"
                    .to_owned(),
            );
        }
        let source = if facts.details.is_empty() {
            self.source.clone()
        } else {
            format!("{}: {}", self.source, facts.details.join(", "))
        };
        Ok(Ok(MovedPerson {
            email_hash: self.links.email_hash(&email),
            email_hashes: self.links.email_hashes(&email),
            email,
            name: (facts.status == MovedStatus::Confirmed)
                .then_some(name)
                .flatten(),
            timezone: (facts.status == MovedStatus::Confirmed)
                .then_some(timezone)
                .flatten(),
            offering_ids,
            status: facts.status,
            at: facts.at.unwrap_or(self.now),
            ip: facts.ip.map(|ip| ip.to_string()),
            source,
        }))
    }

    /// What the tool's own columns say of the row.
    fn facts(&self) -> Result<Result<Facts, String>, String> {
        match self.layout.format {
            ListFormat::Mailchimp => self.mailchimp().map(Ok),
            ListFormat::Listmonk => self.listmonk().map(Ok),
            ListFormat::Substack => self.substack().map(Ok),
            ListFormat::Buttondown => self.buttondown(),
            ListFormat::Sangha => Err("not a file of another tool".to_owned()),
        }
    }

    /// A time column, noted in the details.
    fn time(
        &self,
        column: &str,
        label: &str,
        details: &mut Vec<String>,
    ) -> Result<Option<Millis>, String> {
        let at = parse_time(self.cell(column)?).map_err(|e| format!("{label}: {e}"))?;
        if let Some(at) = at {
            details.push(format!("{label} {}", format_ms(at)));
        }
        Ok(at)
    }

    fn ip(&self, column: &str, label: &str) -> Result<Option<IpAddr>, String> {
        let text = self.cell(column)?;
        if text.is_empty() {
            return Ok(None);
        }
        text.parse()
            .map(Some)
            .map_err(|_| format!("{label}: `{}` is not an IP address", shown(text)))
    }

    fn mailchimp(&self) -> Result<Facts, String> {
        let mut details = Vec::new();
        let tags = split_tags(self.cell("tags")?);
        let timezone = self.cell("timezone")?.to_owned();
        let (status, at, ip) = match self.layout.mailchimp {
            MailchimpFile::Subscribed => {
                let optin_ip = self.ip("optin_ip", "OPTIN_IP")?;
                let optin = self.time("optin_time", "OPTIN_TIME", &mut details)?;
                if let Some(ip) = optin_ip {
                    details.push(format!("OPTIN_IP {ip}"));
                }
                let confirm_ip = self.ip("confirm_ip", "CONFIRM_IP")?;
                let confirm = self.time("confirm_time", "CONFIRM_TIME", &mut details)?;
                if let Some(ip) = confirm_ip {
                    details.push(format!("CONFIRM_IP {ip}"));
                }
                (
                    MovedStatus::Confirmed,
                    confirm.or(optin),
                    confirm_ip.or(optin_ip),
                )
            }
            MailchimpFile::Unsubscribed => {
                let at = self.time("unsub_time", "UNSUB_TIME", &mut details)?;
                (MovedStatus::Unsubscribed, at, None)
            }
            MailchimpFile::Cleaned => {
                let at = self.time("clean_time", "CLEAN_TIME", &mut details)?;
                (
                    MovedStatus::Suppressed(SuppressionReason::Bounced),
                    at,
                    None,
                )
            }
        };
        Ok(Facts {
            status,
            at,
            ip,
            details,
            tags,
            timezone,
        })
    }

    fn listmonk(&self) -> Result<Facts, String> {
        let mut details = Vec::new();
        let word = self.cell("status")?.to_lowercase();
        let status = match word.as_str() {
            "" | "enabled" => MovedStatus::Confirmed,
            "disabled" => MovedStatus::Unsubscribed,
            "blocklisted" | "blacklisted" => MovedStatus::Suppressed(SuppressionReason::Owner),
            other => {
                return Err(format!(
                    "status: `{}` is not one of enabled, disabled, blocklisted",
                    shown(other)
                ));
            }
        };
        if !word.is_empty() {
            details.push(format!("status {word}"));
        }
        let at = match status {
            MovedStatus::Confirmed => self.time("created_at", "created_at", &mut details)?,
            _ => self.time("updated_at", "updated_at", &mut details)?,
        };
        let (mut tags, mut timezone) = (Vec::new(), String::new());
        let attributes = self.cell("attributes")?;
        if !attributes.is_empty() {
            let value: serde_json::Value = serde_json::from_str(attributes)
                .map_err(|e| format!("attributes: not JSON ({e})"))?;
            if let Some(list) = value.get("offerings").and_then(|v| v.as_array()) {
                tags = list
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect();
            }
            if let Some(zone) = value.get("timezone").and_then(|v| v.as_str()) {
                timezone = zone.to_owned();
            }
        }
        Ok(Facts {
            status,
            at,
            ip: None,
            details,
            tags,
            timezone,
        })
    }

    fn substack(&self) -> Result<Facts, String> {
        let mut details = Vec::new();
        let disabled = self.cell("email_disabled")?.to_lowercase();
        let status = match disabled.as_str() {
            "" | "false" | "no" | "0" => MovedStatus::Confirmed,
            "true" | "yes" | "1" => MovedStatus::Unsubscribed,
            other => {
                return Err(format!(
                    "email_disabled: `{}` is not true or false",
                    shown(other)
                ));
            }
        };
        let at = match status {
            MovedStatus::Confirmed => self.time("created_at", "created_at", &mut details)?,
            _ => {
                details.push("email_disabled true".to_owned());
                None
            }
        };
        Ok(Facts {
            status,
            at,
            ip: None,
            details,
            tags: Vec::new(),
            timezone: String::new(),
        })
    }

    fn buttondown(&self) -> Result<Result<Facts, String>, String> {
        let mut details = Vec::new();
        let kind = self.cell("subscriber_type")?.to_lowercase();
        let status = match kind.as_str() {
            "regular" | "premium" | "trialed" | "unpaid" | "gifted" | "churning" | "paused"
            | "past_due" => MovedStatus::Confirmed,
            "unsubscribed" | "removed" => MovedStatus::Unsubscribed,
            "unactivated" => {
                return Ok(Err(
                    "never confirmed their address in buttondown (unactivated): not imported; \
                     they can sign up here"
                        .to_owned(),
                ));
            }
            "spammy" => {
                return Ok(Err(
                    "buttondown marked the signup as spam (spammy): not imported".to_owned(),
                ));
            }
            other => {
                return Err(format!(
                    "subscriber_type: `{}` is not one of regular, premium, trialed, unpaid, \
                     gifted, churning, paused, past_due, unsubscribed, removed, unactivated, \
                     spammy",
                    shown(other)
                ));
            }
        };
        details.push(format!("subscriber_type {kind}"));
        let at = match status {
            MovedStatus::Confirmed => self.time("creation_date", "creation_date", &mut details)?,
            _ => None,
        };
        Ok(Ok(Facts {
            status,
            at,
            ip: None,
            details,
            tags: split_tags(self.cell("tags")?),
            timezone: String::new(),
        }))
    }
}

/// The shared parts of an import: the offerings, the source text, the keys, the time.
struct Shared<'o> {
    offerings: &'o [Offering],
    source: String,
    links: &'o Links,
    now: Millis,
}

/// What a row says, in the tool's own words.
struct Facts {
    status: MovedStatus,
    at: Option<Millis>,
    ip: Option<IpAddr>,
    /// `OPTIN_TIME 2023-…`: the old tool's fields, for the consent record's source.
    details: Vec<String>,
    tags: Vec<String>,
    timezone: String,
}

/// Tags as the tools write them in one cell: `"a","b"` (Mailchimp), `a, b`, `['a', 'b']`.
fn split_tags(cell: &str) -> Vec<String> {
    cell.split(',')
        .map(|t| t.trim_matches(|c: char| c.is_whitespace() || "[]\"'".contains(c)))
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A time as the tools write them: RFC 3339 or with an offset (`2024-05-01 10:00:00+02:00`),
/// a UTC date and time without one (Mailchimp: `2024-05-01 08:00:00`), or a date.
fn parse_time(text: &str) -> Result<Option<Millis>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if let Ok(at) = text.parse::<jiff::Timestamp>() {
        return Ok(Some(at.as_millisecond()));
    }
    let civil = text.parse::<jiff::civil::DateTime>().or_else(|_| {
        text.parse::<jiff::civil::Date>()
            .map(|d| d.to_datetime(jiff::civil::Time::midnight()))
    });
    match civil.and_then(|dt| jiff::tz::TimeZone::UTC.to_timestamp(dt)) {
        Ok(at) => Ok(Some(at.as_millisecond())),
        Err(_) => Err(format!("`{}` is not a date and time", shown(text))),
    }
}

/// A cell's text as an error message shows it: short, with control characters escaped.
fn shown(text: &str) -> String {
    let short: String = text.chars().take(60).collect();
    crate::cli::printable(&short, false).into_owned()
}

/// Imports another tool's export at `path` (see the module comment). Rows that are not valid,
/// and rows left out for their status there, are reported to `errors` by line; with
/// `options.strict` nothing is imported when any row is not valid.
#[allow(clippy::too_many_arguments)]
pub async fn import(
    store: &Store,
    links: &Links,
    path: &Path,
    format: ListFormat,
    offerings_asked: &[Slug],
    options: &ImportOptions,
    errors: &mut (dyn Write + Send),
    now: Millis,
) -> anyhow::Result<MoveReport> {
    options.check()?;
    let offerings = store.active_offerings().await?;
    let mut default_offerings = Vec::new();
    for slug in offerings_asked {
        let Some(o) = offerings.iter().find(|o| o.slug == slug.as_str()) else {
            let known: Vec<&str> = offerings.iter().map(|o| o.slug.as_str()).collect();
            bail!(
                "--offering: there is no offering `{slug}` (known: {})",
                known.join(", ")
            );
        };
        if !default_offerings.contains(&o.id) {
            default_offerings.push(o.id);
        }
    }
    let file_name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into(),
    );
    let context = Shared {
        offerings: &offerings,
        source: match &options.source {
            Some(source) => format!("{} ({format} import of {file_name})", source.trim()),
            None => format!("{format} import of {file_name}"),
        },
        links,
        now,
    };

    if options.strict {
        let mut rows = ForeignRows::open(path, format, &context, default_offerings.clone())?;
        let mut bad = 0u64;
        while let Some(row) = rows.next_row().context("nothing was imported (--strict)")? {
            if let Moved::Invalid(message) = row {
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

    let mut rows = ForeignRows::open(path, format, &context, default_offerings)?;
    let mut report = MoveReport {
        format: Some(format),
        ..MoveReport::default()
    };
    let mut batch = Vec::with_capacity(options.batch_size);
    let stopped = loop {
        let row = match rows.next_row() {
            Ok(Some(row)) => row,
            Ok(None) => break None,
            Err(e) => break Some(e),
        };
        report.read += 1;
        match row {
            Moved::Person(person) => {
                batch.push(*person);
                if batch.len() >= options.batch_size {
                    write_batch(store, &offerings, &mut batch, now, &mut report).await?;
                }
            }
            Moved::Skipped(message) => {
                writeln!(errors, "{message}")?;
                report.skipped += 1;
            }
            Moved::Invalid(message) => {
                writeln!(errors, "{message}")?;
                report.invalid += 1;
            }
        }
    };
    write_batch(store, &offerings, &mut batch, now, &mut report).await?;
    if let Some(e) = stopped {
        return Err(e.context(format!(
            "the import stopped after {} row(s), which were imported (those not valid \
             skipped); running it again after fixing the file is safe",
            report.read
        )));
    }
    Ok(report)
}

async fn write_batch(
    store: &Store,
    offerings: &[Offering],
    batch: &mut Vec<MovedPerson>,
    now: Millis,
    report: &mut MoveReport,
) -> anyhow::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let counts = store
        .import_moved(batch, offerings, now)
        .await
        .with_context(|| {
            format!(
                "cannot write the batch that ends at row {} (the batches before it were written; \
             running the same import again is safe)",
                report.read
            )
        })?;
    batch.clear();
    report.people.add(counts);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(s: &str) -> Vec<String> {
        s.split(',').map(|n| n.trim().to_lowercase()).collect()
    }

    #[test]
    fn each_tool_is_known_by_its_header() {
        let mailchimp = "Email Address,First Name,Last Name,MEMBER_RATING,OPTIN_TIME,OPTIN_IP,\
                         CONFIRM_TIME,CONFIRM_IP,LATITUDE,LONGITUDE,GMTOFF,DSTOFF,TIMEZONE,CC,\
                         REGION,LAST_CHANGED,LEID,EUID,NOTES,TAGS";
        assert_eq!(detect(&names(mailchimp)), Some(ListFormat::Mailchimp));
        assert_eq!(
            detect(&names(
                "uuid,email,name,attributes,status,created_at,updated_at"
            )),
            Some(ListFormat::Listmonk)
        );
        assert_eq!(
            detect(&names(
                "email,active_subscription,expiry,plan,email_disabled,created_at"
            )),
            Some(ListFormat::Substack)
        );
        assert_eq!(
            detect(&names(
                "email,creation_date,subscriber_type,notes,metadata,tags"
            )),
            Some(ListFormat::Buttondown)
        );
        assert_eq!(detect(&names("email,name,timezone,offerings")), None);
    }

    #[test]
    fn times_are_read_as_each_tool_writes_them() {
        let utc = Some(1_714_557_600_000); // 2024-05-01T10:00:00Z
        assert_eq!(parse_time("2024-05-01 10:00:00"), Ok(utc));
        assert_eq!(parse_time("2024-05-01T10:00:00Z"), Ok(utc));
        assert_eq!(parse_time("2024-05-01T10:00:00.000Z"), Ok(utc));
        assert_eq!(parse_time("2024-05-01 12:00:00+02:00"), Ok(utc));
        assert_eq!(parse_time("2024-05-01 15:30:00.000000+05:30"), Ok(utc));
        assert_eq!(parse_time(""), Ok(None));
        assert!(parse_time("yesterday").unwrap_err().contains("`yesterday`"));
    }

    #[test]
    fn tags_are_split_as_each_tool_writes_them() {
        assert_eq!(split_tags("\"a\",\"b c\""), ["a", "b c"]);
        assert_eq!(split_tags("a, b"), ["a", "b"]);
        assert_eq!(split_tags("['a', 'b']"), ["a", "b"]);
        assert!(split_tags("").is_empty());
    }
}
