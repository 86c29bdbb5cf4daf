//! `sangha subscribers export`: every subscriber as CSV, one at a time.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use futures::StreamExt;

use crate::clock::{Millis, format_ms};
use crate::domain::SubscriptionStatus;
use crate::store::{ExportLine, ExportSubscription, Store};

use super::rows::{EXPORT_COLUMNS, HEADER, defuse_formula};

/// Writes every subscriber as CSV to `out`, ordered by address, and returns how many. The
/// first four columns can be imported again; `offerings` holds the active offerings the person
/// has not left, `statuses` every subscription as `slug:status`. Times are RFC 3339 UTC.
///
/// A cell that a spreadsheet would run as a formula (it starts with `=`, `+`, `-`, `@`) is
/// written with a leading `'`, which an import takes off again (see [`defuse_formula`]).
pub async fn export(store: &Store, out: &mut (dyn Write + Send)) -> anyhow::Result<u64> {
    let mut writer = csv::Writer::from_writer(out);
    writer.write_record(HEADER.iter().chain(EXPORT_COLUMNS.iter()))?;
    let mut count = 0u64;
    each_subscriber(store, |person| {
        count += 1;
        person.write(&mut writer)
    })
    .await?;
    writer.flush()?;
    Ok(count)
}

/// Calls `write` with every subscriber, ordered by address, one at a time.
pub(super) async fn each_subscriber(
    store: &Store,
    mut write: impl FnMut(Exported) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut lines = store.export_lines();
    let mut current: Option<Exported> = None;
    while let Some(line) = lines.next().await {
        let line = line.context("cannot read the subscribers")?;
        if current.as_ref().is_some_and(|c| c.id != line.subscriber_id) {
            write(current.take().expect("checked"))?;
        }
        current
            .get_or_insert_with(|| Exported::new(&line))
            .add(line);
    }
    if let Some(last) = current {
        write(last)?;
    }
    Ok(())
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
pub(super) struct Exported {
    id: i64,
    pub(super) email: String,
    pub(super) name: Option<String>,
    pub(super) timezone: Option<String>,
    created_at: Millis,
    pub(super) consent_at: Option<Millis>,
    consent_source: Option<String>,
    offerings: Vec<String>,
    statuses: Vec<String>,
    pub(super) confirmed_at: Option<Millis>,
    /// Every subscription, in offering order.
    pub(super) subscriptions: Vec<ExportSubscription>,
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
            subscriptions: Vec::new(),
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
            self.offerings.push(sub.offering.clone());
        }
        self.subscriptions.push(sub);
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
