//! `sangha subscribers`: list, show, remove, erase, and CSV import and export.
//!
//! The file format is the one in DESIGN.md: a header row `email,name,timezone,offerings`, then
//! one person per row; several offerings in one cell are separated by `;`. An export writes the
//! same four columns (so it can be imported again) followed by columns that describe, and are
//! ignored on import: `statuses,created_at,confirmed_at,consent_at,consent_source`.
//!
//! Another tool's export (Mailchimp, listmonk, Substack, Buttondown) is read as that tool writes
//! it (`moving_in.rs`), and an export can be written as Mailchimp or listmonk import it
//! (`moving_out.rs`).
//!
//! Both directions stream, whatever the size of the list: an import holds a few batches of rows
//! (1,000 each by default: one being read, up to two being written) and an export one
//! subscriber at a time.

mod export;
mod import;
mod moving_in;
mod moving_out;
mod rows;

use std::io::Write;

use crate::app::Runtime;
use crate::clock::{Millis, format_ms};
use crate::config::Config;
use anyhow::bail;

use crate::domain::{ConsentSource, EmailAddress, ListFormat, Slug, SubscriptionStatus};
use crate::store::{ConsentMeta, SubscriberDetail, SubscriberRow, Waiting};

use super::{JsonFlag, SubscribersCommand, offering, open};

/// Runs one `sangha subscribers` command.
pub async fn run(
    config: Config,
    command: SubscribersCommand,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    match command {
        SubscribersCommand::List {
            offering,
            status,
            json,
        } => list(&open(config).await?, offering.as_ref(), status, json, out).await,
        SubscribersCommand::Show { email, json } => {
            let runtime = open(config).await?;
            let detail = find(&runtime, &email).await?;
            if json.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&detail)?)?;
            } else {
                print_detail(&detail, out)?;
                super::courses::print_progress(&runtime.courses, &detail, out)?;
            }
            Ok(())
        }
        SubscribersCommand::Import {
            file,
            confirmed,
            source,
            strict,
            batch_size,
            format,
            offering,
        } => {
            let options = import::ImportOptions {
                confirmed,
                source,
                strict,
                batch_size,
            };
            options.check()?;
            let runtime = open(config).await?;
            let links = runtime.links()?;
            let format = match format {
                Some(format) => format,
                None => moving_in::detect_file(&file)?,
            };
            if format != ListFormat::Sangha {
                if confirmed {
                    bail!(
                        "--confirmed is for sangha files: a {format} export says itself who \
                         confirmed, and their consent is carried over"
                    );
                }
                let report = moving_in::import(
                    &runtime.store,
                    &links,
                    &file,
                    format,
                    &offering,
                    &options,
                    &mut std::io::stderr(),
                    runtime.clock.now_ms(),
                )
                .await?;
                writeln!(out, "{report}")?;
                return Ok(());
            }
            if !offering.is_empty() {
                bail!(
                    "--offering is for other tools' exports: a sangha file names each row's \
                     offerings in its `offerings` column"
                );
            }
            let report = import::import(
                &runtime.store,
                &links,
                &file,
                &options,
                &mut std::io::stderr(),
                runtime.clock.now_ms(),
            )
            .await?;
            writeln!(out, "{report}")?;
            Ok(())
        }
        SubscribersCommand::Export {
            output,
            format,
            status,
        } => {
            if format == ListFormat::Sangha && status.is_some() {
                bail!(
                    "--status is for --format mailchimp or listmonk; a sangha export has every status"
                );
            }
            let runtime = open(config).await?;
            if format != ListFormat::Sangha {
                let counts = match &output {
                    Some(path) => {
                        let mut file = export::create_private_file(path)?;
                        let counts =
                            moving_out::export(&runtime.store, format, status, &mut file).await?;
                        file.sync_all()?;
                        counts
                    }
                    None => moving_out::export(&runtime.store, format, status, out).await?,
                };
                if let Some(path) = output {
                    writeln!(
                        out,
                        "{} subscriber(s) written to {} for {format}; {} left out (pending, or \
                         not of the status asked for)",
                        counts.written,
                        path.display(),
                        counts.left_out
                    )?;
                }
                return Ok(());
            }
            match output {
                Some(path) => {
                    let mut file = export::create_private_file(&path)?;
                    let n = export::export(&runtime.store, &mut file).await?;
                    file.sync_all()?;
                    writeln!(out, "{n} subscriber(s) written to {}", path.display())?;
                }
                None => {
                    export::export(&runtime.store, out).await?;
                }
            }
            Ok(())
        }
        SubscribersCommand::Remove { email, offering } => {
            remove(&open(config).await?, &email, offering.as_ref(), out).await
        }
        SubscribersCommand::Erase { email } => {
            let runtime = open(config).await?;
            let who = find(&runtime, &email).await?;
            let hash = runtime.links()?.email_hash(&email);
            runtime
                .store
                .erase_subscriber(who.subscriber.id, &hash, runtime.clock.now_ms())
                .await?;
            writeln!(
                out,
                "{email} erased; only a keyed hash stays on the suppression list"
            )?;
            Ok(())
        }
        SubscribersCommand::Course(command) => {
            super::courses::run(&open(config).await?, command, out).await
        }
    }
}

/// The subscriber with this address, or an error that names it.
pub async fn find(runtime: &Runtime, email: &EmailAddress) -> anyhow::Result<SubscriberDetail> {
    runtime
        .store
        .subscriber_detail(email)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no subscriber with the address {email}"))
}

/// `sangha subscribers list [--offering SLUG] [--status STATUS] [--json]`.
async fn list(
    runtime: &Runtime,
    slug: Option<&Slug>,
    status: Option<SubscriptionStatus>,
    json: JsonFlag,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    if let Some(slug) = slug {
        offering(runtime, slug).await?;
    }
    let rows = runtime
        .store
        .list_subscribers(slug.map(Slug::as_str), status)
        .await?;
    if status == Some(SubscriptionStatus::Pending) {
        let waiting = runtime.store.waiting_signups().await?;
        let now = runtime.clock.now_ms();
        if json.json {
            let rows: Vec<serde_json::Value> = rows
                .iter()
                .map(|row| {
                    let wait = waiting.get(&row.id);
                    let mut value = serde_json::to_value(row)?;
                    value["signed_up_at"] = serde_json::json!(wait.map(|w| w.signed_up_at));
                    value["reminded_at"] = serde_json::json!(wait.and_then(|w| w.reminded_at));
                    Ok(value)
                })
                .collect::<Result<_, serde_json::Error>>()?;
            writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
        } else {
            print_waiting(&rows, &waiting, now, out)?;
        }
    } else if json.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
    } else {
        print_table(&rows, out)?;
    }
    Ok(())
}

/// The pending list: how long each person has waited since their latest signup, and whether
/// its one reminder went out.
fn print_waiting(
    rows: &[SubscriberRow],
    waiting: &std::collections::HashMap<i64, Waiting>,
    now: Millis,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    writeln!(
        out,
        "{:<40} {:<10} {:<22} SUBSCRIPTIONS",
        "EMAIL", "WAITING", "REMINDED"
    )?;
    for row in rows {
        let wait = waiting.get(&row.id);
        writeln!(
            out,
            "{:<40} {:<10} {:<22} {}",
            row.email,
            wait.map_or_else(|| "-".to_owned(), |w| duration_words(now - w.signed_up_at)),
            wait.and_then(|w| w.reminded_at)
                .map_or_else(|| "no".to_owned(), format_ms),
            subscription_words(row)
        )?;
    }
    writeln!(out, "{} subscriber(s) waiting to confirm", rows.len())?;
    Ok(())
}

/// A wait as people say it: `2d 3h`, `5h 12m`, `7m`.
fn duration_words(ms: Millis) -> String {
    let minutes = ms.max(0) / 60_000;
    let (days, hours, minutes) = (minutes / 1440, minutes / 60 % 24, minutes % 60);
    match (days, hours) {
        (0, 0) => format!("{minutes}m"),
        (0, _) => format!("{hours}h {minutes}m"),
        _ => format!("{days}d {hours}h"),
    }
}

/// `sangha subscribers remove EMAIL [--offering SLUG]`: unsubscribes, keeping the record.
async fn remove(
    runtime: &Runtime,
    email: &EmailAddress,
    slug: Option<&Slug>,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let who = find(runtime, email).await?;
    let offering_id = match slug {
        Some(slug) => Some(offering(runtime, slug).await?.id),
        None => None,
    };
    let meta = ConsentMeta {
        ip: None,
        user_agent: None,
        text_hash: String::new(),
        source: ConsentSource::Owner,
    };
    let left = runtime
        .store
        .unsubscribe(
            who.subscriber.id,
            offering_id,
            &meta,
            runtime.clock.now_ms(),
        )
        .await?;
    writeln!(out, "{email}: left {} offering(s)", left.len())?;
    Ok(())
}

/// `offering:status` of each subscription, as the lists print them.
fn subscription_words(row: &SubscriberRow) -> String {
    let words: Vec<String> = row
        .subscriptions
        .iter()
        .map(|s| format!("{}:{}", s.offering, s.status))
        .collect();
    words.join(" ")
}

fn print_table(rows: &[SubscriberRow], out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    writeln!(out, "{:<40} {:<24} SUBSCRIPTIONS", "EMAIL", "NAME")?;
    for row in rows {
        writeln!(
            out,
            "{:<40} {:<24} {}",
            row.email,
            row.name.as_deref().unwrap_or("-"),
            subscription_words(row)
        )?;
    }
    writeln!(out, "{} subscriber(s)", rows.len())?;
    Ok(())
}

fn print_detail(detail: &SubscriberDetail, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    let s = &detail.subscriber;
    writeln!(out, "email:    {}", s.email)?;
    writeln!(out, "name:     {}", s.name.as_deref().unwrap_or("-"))?;
    writeln!(out, "timezone: {}", s.timezone.as_deref().unwrap_or("-"))?;
    writeln!(out, "since:    {}", format_ms(s.created_at))?;
    writeln!(out, "offerings:")?;
    for sub in &s.subscriptions {
        let when = match sub.status {
            SubscriptionStatus::Confirmed => sub.confirmed_at,
            SubscriptionStatus::Unsubscribed => sub.unsubscribed_at,
            SubscriptionStatus::Pending => Some(sub.created_at),
        };
        writeln!(
            out,
            "  {:<24} {:<13} {}",
            sub.offering,
            sub.status,
            when.map(format_ms).unwrap_or_default()
        )?;
    }
    writeln!(out, "consent:")?;
    for c in &detail.consents {
        writeln!(
            out,
            "  {:<8} {}  ip={}  via={}  offerings={}  text-sha256={}  user-agent={:?}",
            c.action,
            format_ms(c.at),
            c.ip.as_deref().unwrap_or("-"),
            c.source,
            c.offerings.join(";"),
            c.text_hash,
            c.user_agent.as_deref().unwrap_or("-"),
        )?;
    }
    if !detail.bounces.is_empty() {
        writeln!(out, "bounces and complaints:")?;
        for b in &detail.bounces {
            writeln!(
                out,
                "  {}  {:<10} {:<12} {}  (report {}, `sangha bounces show {}`)",
                format_ms(b.received_at),
                b.kind,
                b.action,
                crate::cli::printable(
                    b.diagnostic
                        .as_deref()
                        .or(b.status.as_deref())
                        .unwrap_or("-"),
                    false
                ),
                b.id,
                b.id
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::duration_words;

    #[test]
    fn a_wait_reads_in_days_and_hours_or_hours_and_minutes() {
        assert_eq!(duration_words(7 * 60_000), "7m");
        assert_eq!(duration_words((5 * 60 + 12) * 60_000), "5h 12m");
        assert_eq!(duration_words((2 * 24 + 3) * 3_600_000 + 59_000), "2d 3h");
        assert_eq!(duration_words(-5), "0m");
    }
}
