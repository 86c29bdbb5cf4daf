//! The calendar of sends, shared by the owner's command line (which schedules) and the
//! scheduler (which creates each occurrence): times of day, dates, recurrence, content folders.

use std::path::Path;

use anyhow::Context;

use crate::clock::Millis;
use crate::content::Content;
use crate::store::{NewSend, Offering};

/// The moment `time` on `date` happens in `zone` (jiff's compatible rule for times that a
/// daylight-saving change skips or repeats).
pub fn local_instant(
    date: jiff::civil::Date,
    time: jiff::civil::Time,
    zone: &str,
) -> anyhow::Result<Millis> {
    let tz = jiff::tz::TimeZone::get(zone).map_err(|_| {
        anyhow::anyhow!(
            "`{}` is not a known IANA time zone",
            crate::domain::Timezone::excerpt(zone)
        )
    })?;
    let zoned = date.to_datetime(time).to_zoned_datetime(tz)?;
    Ok(zoned.timestamp().as_millisecond())
}

/// A send of checked content, to be sent at `send_at` (local settings are added by callers).
pub fn new_send(offering: &Offering, content: Content, path: &Path, send_at: Millis) -> NewSend {
    NewSend {
        offering_id: offering.id,
        subject: content.subject,
        preheader: content.preheader,
        html_template: content.html,
        text_template: content.text,
        source_path: path.display().to_string(),
        send_at,
        local: None,
        send_late: false,
        recurrence_id: None,
        content_file: None,
        private: false,
    }
}

/// The Markdown files of a content folder, in name order.
pub fn content_files(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the content folder {}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md") && !n.starts_with('.'))
        .collect();
    names.sort();
    Ok(names)
}
