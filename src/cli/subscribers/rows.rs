//! Reading an import file: the header, each row checked, line numbers, the row cap; and the
//! cell escaping an export writes and an import undoes.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, bail};

use crate::domain::{EmailAddress, Invalid, SubscriberName, Timezone};
use crate::store::Offering;

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

/// Whether a spreadsheet would run the cell as a formula (OWASP "CSV injection": `=`, `+`, `-`,
/// `@`, tab, carriage return), or it would after [`restore_formula`] took a `'` off.
fn starts_a_formula(text: &str) -> bool {
    text.trim_start_matches('\'')
        .starts_with(['=', '+', '-', '@', '\t', '\r'])
}

/// A cell as an export writes it: text that starts a formula, after any number of `'`, gets one
/// more `'` in front. So `=SUM(A1)` is written `'=SUM(A1)` and `'=SUM(A1)` as typed is written
/// `''=SUM(A1)`, while `'Radha` stays as it is: [`restore_formula`] undoes exactly this.
pub(super) fn defuse_formula(text: &str) -> String {
    if starts_a_formula(text) {
        format!("'{text}")
    } else {
        text.to_owned()
    }
}

/// A cell as an import reads it: the `'` that [`defuse_formula`] added, taken off.
pub(super) fn restore_formula(text: &str) -> &str {
    match text.strip_prefix('\'') {
        Some(rest) if starts_a_formula(rest) => rest,
        _ => text,
    }
}

/// One row of an import file, checked.
pub(super) enum Row {
    Valid(ValidRow),
    /// An export's row for a person who had left every offering: nothing to import.
    Left,
    /// `line N: what is wrong`.
    Invalid(String),
}

pub(super) struct ValidRow {
    pub(super) email: EmailAddress,
    pub(super) name: Option<SubscriberName>,
    pub(super) timezone: Option<Timezone>,
    pub(super) offering_ids: Vec<i64>,
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

/// A CSV file read record by record, each with the line it starts on, with the row cap.
pub(super) struct CsvFile {
    reader: csv::Reader<LineCounter<File>>,
    /// The first record, or `None` when the file is empty.
    pub(super) header: Option<csv::ByteRecord>,
    /// The line the header starts on.
    pub(super) header_line: u64,
}

impl CsvFile {
    /// Opens the file and reads its header.
    pub(super) fn open(path: &Path) -> anyhow::Result<Self> {
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
        let header_line = if read {
            record_line(&mut reader, &header)
        } else {
            0
        };
        Ok(Self {
            reader,
            header: read.then_some(header),
            header_line,
        })
    }

    /// Reads the next record into `record` and returns the line it starts on, or `None` at
    /// the end of the file. Only reading the file can fail.
    pub(super) fn next_record(
        &mut self,
        record: &mut csv::ByteRecord,
    ) -> anyhow::Result<Option<u64>> {
        match self.reader.read_byte_record(record) {
            Ok(true) => Ok(Some(record_line(&mut self.reader, record))),
            Ok(false) => Ok(None),
            Err(e) => {
                if let csv::ErrorKind::Io(io) = e.kind()
                    && let Some(long) = io.get_ref().and_then(|e| e.downcast_ref::<RowTooLong>())
                {
                    bail!("{long}");
                }
                Err(anyhow::Error::new(e).context("cannot read the file"))
            }
        }
    }
}

/// Reads an import file record by record and checks each row.
pub(super) struct Rows<'o> {
    file: CsvFile,
    columns: Columns,
    record: csv::ByteRecord,
    offerings: &'o [Offering],
    /// Zones already checked (see [`check_timezone`]).
    timezones: HashMap<String, Timezone>,
}

impl<'o> Rows<'o> {
    pub(super) fn open(path: &Path, offerings: &'o [Offering]) -> anyhow::Result<Self> {
        let file = CsvFile::open(path)?;
        let Some(header) = &file.header else {
            bail!(
                "{} is empty: the first line must be the header `{}`",
                path.display(),
                HEADER.join(",")
            );
        };
        let line = file.header_line;
        let columns = columns_of(header)
            .map_err(|e| anyhow::anyhow!("{}: line {line}: {e}", path.display()))?;
        Ok(Self {
            file,
            columns,
            record: csv::ByteRecord::new(),
            offerings,
            timezones: HashMap::new(),
        })
    }

    /// The next row, or `None` at the end of the file. Only reading the file can fail here.
    pub(super) fn next_row(&mut self) -> anyhow::Result<Option<Row>> {
        let Some(line) = self.file.next_record(&mut self.record)? else {
            return Ok(None);
        };
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
pub(super) fn check_timezone(
    known: &mut HashMap<String, Timezone>,
    text: &str,
) -> Result<Option<Timezone>, Invalid> {
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
