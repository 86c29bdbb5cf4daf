//! `sangha bounces list`, `show`, `import` and `poll`: what came back about the mail sent, and
//! what Sangha did about it.

use std::io::Write;

use anyhow::{Context, bail};

use super::{BouncesCommand, printable};
use crate::app::Runtime;
use crate::bounces::{Incoming, Recorder};
use crate::clock::{Millis, format_ms};
use crate::domain::BounceSource;

/// `--since`: a day in the site's zone, or a number of days back.
#[derive(Debug, Clone)]
pub enum Since {
    Day(jiff::civil::Date),
    DaysAgo(u32),
}

/// Reads `--since` as `YYYY-MM-DD` or `Nd`.
pub fn parse_since(text: &str) -> Result<Since, String> {
    if let Some(days) = text.strip_suffix('d') {
        return days.parse().map(Since::DaysAgo).map_err(|_| {
            format!("`{text}`: give a number of days like 7d, or a day like 2026-12-01")
        });
    }
    text.parse()
        .map(Since::Day)
        .map_err(|_| format!("`{text}`: give a day like 2026-12-01, or a number of days like 7d"))
}

impl Since {
    /// The moment it names.
    pub(super) fn millis(&self, runtime: &Runtime) -> anyhow::Result<Millis> {
        Ok(match self {
            Since::DaysAgo(days) => runtime.clock.now_ms() - i64::from(*days) * 86_400_000,
            Since::Day(day) => crate::schedule::local_instant(
                *day,
                jiff::civil::Time::midnight(),
                runtime.config.site.timezone.as_str(),
            )?,
        })
    }
}

/// The most reports `list` prints.
const LIST_LIMIT: i64 = 1_000;

/// Runs one `sangha bounces` command.
pub async fn run(
    runtime: &Runtime,
    command: BouncesCommand,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    match command {
        BouncesCommand::List { since, json } => {
            let since = match since {
                Some(s) => s.millis(runtime)?,
                None => 0,
            };
            let rows = runtime.store.bounces_since(since, LIST_LIMIT).await?;
            if json.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
                return Ok(());
            }
            writeln!(
                out,
                "{:>6}  {:<19}  {:<8} {:<10} {:<12} {:<10} {:<32} STATUS",
                "ID", "RECEIVED (UTC)", "SOURCE", "KIND", "ACTION", "MATCHED", "RECIPIENT",
            )?;
            for b in &rows {
                writeln!(
                    out,
                    "{:>6}  {:<19}  {:<8} {:<10} {:<12} {:<10} {:<32} {}",
                    b.id,
                    format_ms(b.received_at),
                    b.source,
                    b.kind,
                    b.action,
                    b.matched_by.map_or("-", |m| m.as_str()),
                    printable(b.recipient.as_deref().unwrap_or("-"), false),
                    printable(b.status.as_deref().unwrap_or("-"), false),
                )?;
            }
            if rows.len() as i64 == LIST_LIMIT {
                writeln!(
                    out,
                    "(the newest {LIST_LIMIT}; use --since to see older ones)"
                )?;
            }
            Ok(())
        }
        BouncesCommand::Import { files } => import(runtime, &files, out).await,
        BouncesCommand::Poll => {
            let Some(mailbox) = runtime.bounce_mailbox()? else {
                bail!("no bounce mailbox is configured: set bounces.imap.host");
            };
            let count = mailbox
                .poll_once()
                .await
                .context("cannot read the bounce mailbox")?;
            writeln!(out, "{count}")?;
            Ok(())
        }
        BouncesCommand::Show { id } => {
            let Some(b) = runtime.store.bounce(id).await? else {
                bail!("there is no report {id}");
            };
            writeln!(out, "report {}: {} from {}", b.id, b.kind, b.source)?;
            writeln!(out, "received:   {}", format_ms(b.received_at))?;
            let field =
                |v: &Option<String>| printable(v.as_deref().unwrap_or("-"), false).into_owned();
            writeln!(out, "recipient:  {}", field(&b.recipient))?;
            writeln!(out, "status:     {}", field(&b.status))?;
            writeln!(out, "diagnostic: {}", field(&b.diagnostic))?;
            match (b.delivery_id, b.matched_by) {
                (Some(delivery), Some(by)) => writeln!(
                    out,
                    "delivery:   {delivery} (matched by {by}){}",
                    b.send_id.map(|s| format!(", send {s}")).unwrap_or_default()
                )?,
                _ => writeln!(
                    out,
                    "delivery:   none matched; kept for you to read, nothing done"
                )?,
            }
            writeln!(out, "action:     {}", b.action)?;
            match &b.raw {
                Some(raw) => writeln!(out, "\n{}", printable(raw, true))?,
                None => writeln!(
                    out,
                    "\n(the report itself is no longer kept: bounces.keep_days = {})",
                    runtime.config.bounces.keep_days
                )?,
            }
            Ok(())
        }
    }
}

/// `sangha bounces import FILE…`: each file read and recorded; a file that cannot be read is
/// named and the others still go in.
async fn import(
    runtime: &Runtime,
    files: &[std::path::PathBuf],
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let recorder = Recorder::new(
        runtime.store.clone(),
        runtime.links()?,
        runtime.clock.clone(),
        &runtime.config,
    );
    let mut unreadable = 0;
    for file in files {
        let raw = match std::fs::read(file) {
            Ok(raw) => raw,
            Err(e) => {
                writeln!(out, "{}: cannot read it: {e}", file.display())?;
                unreadable += 1;
                continue;
            }
        };
        let report = Incoming::from_message(&raw, BounceSource::Import);
        let recorded = recorder
            .record(&report)
            .await
            .with_context(|| format!("{}: cannot record it", file.display()))?;
        for (notice, done) in report.notices.iter().zip(&recorded) {
            let who = printable(notice.recipient.as_deref().unwrap_or("someone"), false);
            let what = match (done.id, done.action, done.matched_by) {
                (None, _, _) => "already recorded; nothing done again".to_owned(),
                (Some(id), Some(action), Some(by)) => {
                    format!("{action} (matched by {by}; report {id})")
                }
                (Some(id), _, _) => {
                    format!("matches no email of ours; kept as report {id} for you to read")
                }
            };
            writeln!(out, "{}: {} of {who}: {what}", file.display(), notice.kind)?;
        }
    }
    if unreadable > 0 {
        bail!("{unreadable} file(s) could not be read; the others were recorded");
    }
    Ok(())
}
