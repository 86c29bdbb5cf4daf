//! `sangha schedule`, `preview`, `test-send` and `sends …`: the owner's side of sending.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::app::Runtime;
use crate::clock::{Millis, format_ms};
use crate::config::Config;
use crate::content::{self, Content};
use crate::delivery::for_mail;
use crate::domain::{
    DeliveryStatus, EmailAddress, Every, LinkTarget, RecurrenceStatus, RelayFault, Slug, TimeOfDay,
    Timezone,
};
use crate::mail::{CompiledSend, EmailContent, Recipient, SendTemplates};
use crate::schedule::{content_files, local_instant, new_send};
use crate::store::{FailureGroup, NewSend, Offering, RetryOutcome, SendStatus, SendSummary};

use super::{PreviewArgs, ScheduleArgs, SendsCommand, TestSendArgs, offering, open};

/// When a send goes out.
#[derive(Debug, Clone)]
enum When {
    Now,
    /// A wall-clock time in a zone (`2026-12-01 06:30` in `Europe/Berlin`).
    At(jiff::civil::DateTime, jiff::tz::TimeZone),
    /// A time of day on a date in each subscriber's own zone. With `send_late`, zones where
    /// it has already passed get it at once; without, scheduling is refused for them.
    Local {
        time: jiff::civil::Time,
        date: jiff::civil::Date,
        send_late: bool,
    },
}

/// The zone furthest ahead (UTC+14): a local time happens there first.
const FIRST_ZONE: &str = "Pacific/Kiritimati";

impl When {
    /// `--at` in `zone` (the `--timezone` given, or the site's).
    fn at(local: jiff::civil::DateTime, zone: &str) -> anyhow::Result<Self> {
        let tz = jiff::tz::TimeZone::get(zone).map_err(|_| {
            anyhow::anyhow!(
                "--timezone: `{}` is not a known IANA time zone",
                Timezone::excerpt(zone)
            )
        })?;
        Ok(When::At(local, tz))
    }

    fn resolve(&self, now: Millis) -> anyhow::Result<Millis> {
        match self {
            When::Now => Ok(now),
            When::Local { time, date, .. } => local_instant(*date, *time, FIRST_ZONE),
            When::At(local, tz) => {
                let zoned = local
                    .to_zoned_datetime(tz.clone())
                    .context("--at: that time does not exist in this zone")?;
                let at = zoned.timestamp().as_millisecond();
                if at < now {
                    bail!("--at: {zoned} is in the past; use --now to send at once");
                }
                Ok(at)
            }
        }
    }
}

/// `sangha schedule`: checks the content (rendering it once) and records the send, or the
/// recurring send of a folder; prints its id.
pub async fn schedule(
    config: Config,
    args: ScheduleArgs,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    if let Some(dir) = args.content_dir {
        let every = args.every.context("--content-dir needs --every")?;
        let time = args
            .local_time
            .context("--content-dir needs --local-time")?;
        let from = match args.from {
            Some(date) => date,
            None => jiff::Timestamp::now()
                .to_zoned_datetime(config.site.timezone.zone().clone())
                .date(),
        };
        let runtime = open(config).await?;
        let id = schedule_recurring(&runtime, &args.offering, &dir, every, time, from).await?;
        writeln!(out, "recurring send {id}: see `sangha sends list`")?;
        return Ok(());
    }
    let content = args.content.context("--content is required")?;
    let when = match (args.now, args.at, args.local_time) {
        (true, _, _) => When::Now,
        (false, Some(at), _) => {
            let zone = args
                .timezone
                .unwrap_or_else(|| config.site.timezone.to_string());
            When::at(at, &zone)?
        }
        (false, None, Some(time)) => When::Local {
            time,
            date: args.on.context("--local-time needs --on DATE")?,
            send_late: args.send_late,
        },
        (false, None, None) => {
            bail!("say when: --at \"YYYY-MM-DD HH:MM\", --local-time HH:MM --on DATE, or --now")
        }
    };
    let runtime = open(config).await?;
    let id = schedule_once(&runtime, &args.offering, &content, &when, args.private).await?;
    writeln!(out, "{id}")?;
    Ok(())
}

/// Runs one `sangha sends` command.
pub async fn run(
    runtime: &Runtime,
    command: SendsCommand,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let store = &runtime.store;
    let changed = |ok: bool, id: i64, what: &str| -> anyhow::Result<()> {
        anyhow::ensure!(
            ok,
            "send {id} cannot be {what} in its current state (see `sangha sends show {id}`)"
        );
        Ok(())
    };
    match command {
        SendsCommand::List(flag) => {
            let sends = store.send_summaries(None).await?;
            if flag.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&sends)?)?;
            } else {
                print_send_list(&sends, out)?;
                print_recurrences(runtime, out).await?;
            }
        }
        SendsCommand::Show { id } => print_send(runtime, id, out).await?,
        SendsCommand::Pause { id } => {
            changed(
                store.pause_send(id, "paused by the owner").await?,
                id,
                "paused",
            )?;
            writeln!(out, "send {id} paused")?;
        }
        SendsCommand::Resume { id } => {
            changed(store.resume_send(id).await?, id, "resumed")?;
            writeln!(out, "send {id} resumed")?;
        }
        SendsCommand::Retry { id, failed } => retry(runtime, id, failed, out).await?,
        SendsCommand::Cancel { id } => {
            changed(
                store.cancel_send(id, runtime.clock.now_ms()).await?,
                id,
                "cancelled",
            )?;
            writeln!(out, "send {id} cancelled")?;
        }
        SendsCommand::Watch { id } => watch(runtime, id, out).await?,
        SendsCommand::StopRecurring { id } => {
            let now = runtime.clock.now_ms();
            changed(
                store
                    .end_recurrence(id, RecurrenceStatus::Cancelled, "stopped by the owner", now)
                    .await?,
                id,
                "stopped",
            )?;
            writeln!(out, "recurring send {id} stopped")?;
        }
    }
    Ok(())
}

/// `sangha preview`: renders content as a subscriber (or a sample person) would receive it:
/// the HTML part, the text part, or the whole message into a file.
pub async fn preview(
    runtime: &Runtime,
    args: PreviewArgs,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let eml = match &args.eml {
        Some(path) => {
            Some(File::create(path).with_context(|| format!("cannot write {}", path.display()))?)
        }
        None => None,
    };
    let (offering, send) = draft(runtime, &args.content, args.offering.as_ref()).await?;
    let compiled = CompiledSend::new(&templates(&send))?;
    let (content, message) =
        render_for(runtime, &compiled, &offering, args.subscriber.as_ref()).await?;
    match (eml, &args.eml) {
        (Some(mut file), Some(path)) => {
            file.write_all(&message.formatted())?;
            writeln!(out, "wrote {}", path.display())?;
        }
        _ if args.text => {
            writeln!(out, "Subject: {}\n", content.subject)?;
            out.write_all(content.text.as_bytes())?;
        }
        _ => out.write_all(content.html.as_bytes())?,
    }
    Ok(())
}

/// `sangha test-send`: sends content once, now, to `--to`, through the configured transport
/// (not the outbox).
pub async fn test_send(
    runtime: &Runtime,
    args: TestSendArgs,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let (offering, mut send) = draft(runtime, &args.content, args.offering.as_ref()).await?;
    send.subject = format!("[Test] {}", send.subject);
    let compiled = CompiledSend::new(&templates(&send))?;
    let to = &args.to;
    let (_, message) = render_for(runtime, &compiled, &offering, Some(to)).await?;
    let transport = runtime.transport()?;
    let sent = transport.send(message).await;
    // End the session with QUIT rather than dropping the connection.
    transport.close().await;
    let reply = sent.map_err(|e| anyhow::anyhow!("the test send failed: {e}"))?;
    writeln!(out, "sent to {to}: {reply}")?;
    Ok(())
}

/// Loads and checks content for an offering, refusing a mismatch with its front matter.
fn checked_content(path: &Path, offering: &Offering) -> anyhow::Result<Content> {
    let content = content::load(path)?;
    if let Some(slug) = &content.offering
        && slug != &offering.slug
    {
        bail!(
            "{}: the front matter says offering `{slug}`, but --offering is `{}`",
            path.display(),
            offering.slug
        );
    }
    Ok(content)
}

/// The content at `path` as a send, due now, of the offering `--offering` names (else the
/// one its front matter names), for a preview or a test send.
async fn draft(
    runtime: &Runtime,
    path: &Path,
    slug: Option<&Slug>,
) -> anyhow::Result<(Offering, NewSend)> {
    let content = content::load(path)?;
    let slug = match slug {
        Some(slug) => slug.clone(),
        None => {
            let named = content.offering.as_deref().ok_or_else(|| {
                anyhow::anyhow!(
                    "name the offering: --offering SLUG (or `offering:` in the front matter)"
                )
            })?;
            Slug::parse(named).map_err(|e| anyhow::anyhow!("--offering: {e}"))?
        }
    };
    let offering = offering(runtime, &slug).await?;
    let send = new_send(&offering, content, path, runtime.clock.now_ms());
    Ok((offering, send))
}

/// Checks the content (rendering it once) and records the send. Returns its id.
async fn schedule_once(
    runtime: &Runtime,
    slug: &Slug,
    path: &Path,
    when: &When,
    private: bool,
) -> anyhow::Result<i64> {
    let offering = offering(runtime, slug).await?;
    let content = checked_content(path, &offering)?;
    let now = runtime.clock.now_ms();
    let send_at = when.resolve(now)?;
    let mut send = new_send(&offering, content, path, send_at);
    send.private = private;
    if let When::Local {
        time,
        date,
        send_late,
    } = when
    {
        refuse_passed_zones(runtime, &offering, *date, *time, *send_late, now).await?;
        send.local = Some((TimeOfDay::from(*time), *date));
        send.send_late = *send_late;
    }
    // One real render through the send's own pipeline, as a worker will do it.
    let compiled = CompiledSend::new(&templates(&send))?;
    render_for(runtime, &compiled, &offering, None).await?;
    Ok(runtime.store.create_send(&send, now).await?)
}

/// Refuses a local-time send when its time has already passed in the zone of some current
/// subscribers, unless the owner said to send those late.
async fn refuse_passed_zones(
    runtime: &Runtime,
    offering: &Offering,
    date: jiff::civil::Date,
    time: jiff::civil::Time,
    send_late: bool,
    now: Millis,
) -> anyhow::Result<()> {
    let default = runtime.config.site.timezone.as_str();
    let mut passed = Vec::new();
    for (zone, people) in runtime.store.offering_zones(offering.id, default).await? {
        if local_instant(date, time, &zone)? < now {
            passed.push(format!("{zone} ({people} subscriber(s))"));
        }
    }
    if !passed.is_empty() && !send_late {
        bail!(
            "{} on {date} has already passed in: {}. Pass --send-late to send to them at \
             once, or choose a later date",
            time.strftime("%H:%M"),
            passed.join(", ")
        );
    }
    Ok(())
}

/// Starts a recurring send: every checked now, so a broken piece is found today and not on
/// the morning it is due. Returns the recurrence id.
async fn schedule_recurring(
    runtime: &Runtime,
    slug: &Slug,
    dir: &Path,
    every: Every,
    time: jiff::civil::Time,
    from: jiff::civil::Date,
) -> anyhow::Result<i64> {
    let offering = offering(runtime, slug).await?;
    let files = content_files(dir)?;
    if files.is_empty() {
        bail!("{}: the folder has no Markdown (.md) files", dir.display());
    }
    for name in &files {
        checked_content(&dir.join(name), &offering)?;
    }
    let dir =
        std::fs::canonicalize(dir).with_context(|| format!("cannot resolve {}", dir.display()))?;
    let first = every.first_on_or_after(from);
    Ok(runtime
        .store
        .create_recurrence(
            offering.id,
            &dir.display().to_string(),
            every,
            TimeOfDay::from(time),
            first,
            runtime.clock.now_ms(),
        )
        .await?)
}

/// A send not yet stored, as `mail` compiles it.
fn templates(send: &NewSend) -> SendTemplates<'_> {
    SendTemplates {
        id: 0,
        subject: &send.subject,
        preheader: send.preheader.as_deref(),
        html: &send.html_template,
        text: &send.text_template,
        send_at: send.send_at,
        // Not stored yet: no web copy to link to.
        private: true,
    }
}

/// Renders a send for one person (an existing subscriber, or a sample one).
async fn render_for(
    runtime: &Runtime,
    send: &CompiledSend,
    offering: &Offering,
    email: Option<&EmailAddress>,
) -> anyhow::Result<(EmailContent, lettre::Message)> {
    let (link, address, name) = match email {
        Some(email) => match runtime.store.subscriber_detail(email).await? {
            Some(d) => (d.link, d.subscriber.email, d.subscriber.name),
            None => (LinkTarget { id: 0, secret: 0 }, email.to_string(), None),
        },
        None => (
            LinkTarget { id: 0, secret: 0 },
            "friend@example.org".to_owned(),
            None,
        ),
    };
    let message_id = crate::store::message_id(
        &crate::store::new_message_id_prefix(),
        link.id,
        &runtime.config.message_id_domain(),
    );
    let to = Recipient {
        email: &address,
        name: name.as_deref(),
        link,
        message_id: &message_id,
        delivery_id: None,
    };
    let offering = for_mail::offering(offering);
    let composer = runtime.composer(runtime.templates()?, runtime.links()?)?;
    let (content, _) = composer.render_send(&to, send, &offering)?;
    Ok((content, composer.send_email(&to, send, &offering)?))
}

fn print_send_list(sends: &[SendSummary], out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    writeln!(
        out,
        "{:>4}  {:<22} {:<10} {:<20} {:>15}  SUBJECT",
        "ID", "OFFERING", "STATUS", "SEND AT (UTC)", "SENT/TOTAL"
    )?;
    for s in sends {
        writeln!(
            out,
            "{:>4}  {:<22} {:<10} {:<20} {:>15}  {}",
            s.id,
            s.offering,
            s.status,
            format_ms(s.send_at),
            format!("{}/{}", s.counts.sent, s.counts.total()),
            s.subject
        )?;
    }
    if sends.is_empty() {
        writeln!(out, "no sends yet: schedule one with `sangha schedule`")?;
    }
    Ok(())
}

/// The recurring sends: next occurrence, pieces left, and a warning when few are left.
async fn print_recurrences(runtime: &Runtime, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    let all = runtime.store.recurrences(false).await?;
    if all.is_empty() {
        return Ok(());
    }
    writeln!(out, "\nrecurring sends:")?;
    for r in all {
        let left = content_files(Path::new(&r.content_dir))
            .map(|files| {
                let used = files.len() as i64 - r.used;
                used.max(0)
            })
            .unwrap_or(0);
        let mut line = format!(
            "{:>4}  {:<22} every {} at {} local, {}",
            r.id, r.offering, r.every, r.local_time, r.status
        );
        if r.status == RecurrenceStatus::Active {
            line.push_str(&format!(", next {}, {left} piece(s) left", r.next_date));
            if left < i64::from(runtime.config.worker.recurring_warn_below) {
                line.push_str(&format!(
                    "  WARNING: running out: add Markdown files to {}",
                    r.content_dir
                ));
            }
        }
        if let Some(note) = &r.note {
            line.push_str(&format!("  ({note})"));
        }
        writeln!(out, "{line}")?;
    }
    Ok(())
}

async fn print_send(
    runtime: &Runtime,
    id: i64,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let Some(s) = runtime.store.send_summaries(Some(id)).await?.pop() else {
        bail!("there is no send {id}");
    };
    writeln!(out, "send {}: {} ({})", s.id, s.subject, s.source_path)?;
    writeln!(out, "offering:   {} ({})", s.offering_name, s.offering)?;
    writeln!(out, "status:     {}", s.status)?;
    if let Some(reason) = &s.paused_reason {
        writeln!(out, "why paused: {reason}")?;
    }
    writeln!(out, "send at:    {}", format_ms(s.send_at))?;
    if let Some(t) = s.fanout_done_at {
        writeln!(out, "recipients: listed at {}", format_ms(t))?;
    }
    if let Some(t) = s.finished_at {
        writeln!(out, "finished:   {}", format_ms(t))?;
    }
    let c = &s.counts;
    writeln!(
        out,
        "pending: {}  sent: {}  failed: {}  suppressed: {}  skipped: {}  cancelled: {}",
        c.pending, c.sent, c.failed, c.suppressed, c.skipped, c.cancelled
    )?;
    let later = runtime.store.send_bounce_counts(id).await?;
    if later != Default::default() {
        writeln!(
            out,
            "reported later: bounced: {}  complained: {}  (`sangha bounces list`)",
            later.bounced, later.complained
        )?;
    }
    if s.interrupted > 0 {
        writeln!(
            out,
            "interrupted: {} attempt(s) whose result was never recorded (a worker stopped \
             midway, or the database refused the write: see the worker's log); those \
             recipients may have it twice (same Message-ID)",
            s.interrupted
        )?;
    }
    let zones = runtime
        .store
        .zone_progress(id, runtime.config.site.timezone.as_str())
        .await?;
    if let Some(local) = &s.local {
        writeln!(
            out,
            "local time: {local} in each subscriber's zone; by zone (due, UTC):"
        )?;
        for z in &zones {
            writeln!(
                out,
                "  {:<28} {}  sent {:>5}  pending {:>5}  skipped {:>5}  failed {:>5}",
                z.zone,
                format_ms(z.first_due),
                z.sent,
                z.pending,
                z.skipped,
                z.failed
            )?;
        }
    }
    let failures = runtime.store.send_failures(id).await?;
    if !failures.is_empty() {
        writeln!(out, "why some did not get it:")?;
        let groups = group_failures(&failures);
        for (status, error, count) in groups.iter().take(FAILURE_LINES) {
            let what = match status.as_str() {
                "pending" => "retrying",
                other => other,
            };
            writeln!(out, "  {count:>6} {what:<10} {error}")?;
        }
        if groups.len() > FAILURE_LINES {
            let rest: i64 = groups[FAILURE_LINES..].iter().map(|g| g.2).sum();
            writeln!(out, "  {rest:>6} other reasons")?;
        }
    }
    for line in relay_advice(id, &failures) {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// Lines of failure reasons `sends show` prints.
const FAILURE_LINES: usize = 20;

/// Failure reasons grouped by what they say, not by who they were about: a relay's reply
/// often names the recipient (`451 4.7.1 <ana@example.org>: Greylisted`), and twenty
/// greylisted people are one reason, not twenty. Addresses become `<address>`. Most common
/// first: (status, reason, count).
fn group_failures(failures: &[FailureGroup]) -> Vec<(String, String, i64)> {
    let mut groups: Vec<(String, String, i64)> = Vec::new();
    for f in failures {
        let reason = without_addresses(&f.error);
        match groups
            .iter_mut()
            .find(|(status, r, _)| status == f.status.as_str() && *r == reason)
        {
            Some(group) => group.2 += f.count,
            None => groups.push((f.status.to_string(), reason, f.count)),
        }
    }
    groups.sort_by_key(|g| std::cmp::Reverse(g.2));
    groups
}

/// `text` with every word that holds an `@` (an email address, with any brackets or
/// punctuation around it) replaced by `<address>`.
fn without_addresses(text: &str) -> String {
    text.split(' ')
        .map(|word| {
            if word.contains('@') {
                let end = word.len()
                    - word
                        .chars()
                        .rev()
                        .take_while(|c| matches!(c, ':' | ',' | ';' | '.' | ')'))
                        .count();
                format!("<address>{}", &word[end..])
            } else {
                word.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What the owner should do about failures before anything reached the relay: the fix of
/// the configuration first, then `sends retry` for the deliveries that failed meanwhile.
fn relay_advice(id: i64, failures: &[FailureGroup]) -> Vec<String> {
    let count = |kind: &str| -> i64 {
        failures
            .iter()
            .filter(|f| f.failure_kind.map(RelayFault::as_str) == Some(kind))
            .map(|f| f.count)
            .sum()
    };
    let failed_for_relay: i64 = failures
        .iter()
        .filter(|f| f.status == DeliveryStatus::Failed && f.failure_kind.is_some())
        .map(|f| f.count)
        .sum();
    let mut lines = Vec::new();
    if count("auth") > 0 {
        lines.push(
            "relay:      the SMTP relay REFUSED THE CREDENTIALS: no mail goes out until they are \
             fixed (one login is tried at a time, less and less often). Check smtp.username and \
             smtp.password (or SANGHA__SMTP__PASSWORD), then restart `sangha serve`."
                .to_owned(),
        );
    }
    if count("tls") > 0 {
        lines.push(
            "relay:      TLS with the SMTP relay failed: check smtp.tls and smtp.port (587 is \
             usually \"starttls\", 465 \"tls\"), and for a private certificate smtp.ca_file or \
             smtp.certificate_sha256."
                .to_owned(),
        );
    }
    if count("connect") > 0 {
        lines.push(
            "relay:      the SMTP relay could not be reached: check smtp.host and smtp.port, and \
             that the relay is up."
                .to_owned(),
        );
    }
    if failed_for_relay > 0 {
        lines.push(format!(
            "retry:      {failed_for_relay} delivery(ies) failed before reaching the relay; once \
             it is fixed, `sangha sends retry {id}` sends them"
        ));
    }
    lines
}

/// `sangha sends retry ID [--failed]`.
async fn retry(
    runtime: &Runtime,
    id: i64,
    all_failed: bool,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let now = runtime.clock.now_ms();
    match runtime.store.retry_send(id, all_failed, now).await? {
        RetryOutcome::NoSuchSend => bail!("there is no send {id}"),
        RetryOutcome::Cancelled => {
            bail!("send {id} was cancelled; schedule the content again to send it")
        }
        RetryOutcome::Retried {
            failed: 0,
            waiting: 0,
        } => {
            let which = if all_failed {
                "no failed delivery"
            } else {
                "no delivery that failed before reaching the relay (`--failed` puts back every \
                 failed one)"
            };
            writeln!(out, "send {id}: {which}; nothing to retry")?;
        }
        RetryOutcome::Retried { failed, waiting } => {
            writeln!(
                out,
                "send {id}: {failed} failed delivery(ies) put back and {waiting} waiting one(s) \
                 due now; a running `sangha serve` sends them"
            )?;
        }
    }
    Ok(())
}

/// A live progress bar until the send ends (or is paused).
async fn watch(runtime: &Runtime, id: i64, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} send {prefix} [{bar:40}] {pos}/{len} {per_sec} eta {eta} {msg}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(id.to_string());
    let bar = Arc::new(bar);
    loop {
        let Some(s) = runtime.store.send_summaries(Some(id)).await?.pop() else {
            bail!("there is no send {id}");
        };
        let c = &s.counts;
        bar.set_length(c.total().max(1) as u64);
        bar.set_position((c.total() - c.pending) as u64);
        bar.set_message(format!(
            "failed {} skipped {}",
            c.failed + c.suppressed,
            c.skipped
        ));
        match s.status {
            SendStatus::Done | SendStatus::Cancelled => {
                bar.finish();
                writeln!(
                    out,
                    "send {id} {}: {} sent, {} failed, {} suppressed, {} skipped",
                    s.status, c.sent, c.failed, c.suppressed, c.skipped
                )?;
                return Ok(());
            }
            SendStatus::Paused => {
                bar.abandon();
                writeln!(
                    out,
                    "send {id} is paused: {}",
                    s.paused_reason.as_deref().unwrap_or("by the owner")
                )?;
                return Ok(());
            }
            SendStatus::Scheduled if s.send_at > runtime.clock.now_ms() => {
                bar.set_message(format!("waiting until {}", format_ms(s.send_at)));
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(status: &str, error: &str, count: i64) -> FailureGroup {
        FailureGroup {
            status: status.parse().expect("a delivery status"),
            failure_kind: None,
            error: error.to_owned(),
            count,
        }
    }

    #[test]
    fn failures_that_differ_only_by_address_are_one_reason() {
        let failures = [
            group(
                "pending",
                "RCPT TO: transient error (451): 4.7.1 <a@example.org>: Greylisted, see https://x/a@example.org.",
                1,
            ),
            group(
                "pending",
                "RCPT TO: transient error (451): 4.7.1 <b@example.org>: Greylisted, see https://x/b@example.org.",
                1,
            ),
            group(
                "failed",
                "end of data: permanent error (554): 5.7.1 Message refused",
                2,
            ),
            group(
                "failed",
                "RCPT TO: transient error (451): 4.7.1 <c@example.org>: Greylisted, see https://x/c@example.org.",
                1,
            ),
        ];
        assert_eq!(
            group_failures(&failures),
            [
                (
                    "pending".to_owned(),
                    "RCPT TO: transient error (451): 4.7.1 <address>: Greylisted, see <address>."
                        .to_owned(),
                    2
                ),
                (
                    "failed".to_owned(),
                    "end of data: permanent error (554): 5.7.1 Message refused".to_owned(),
                    2
                ),
                (
                    "failed".to_owned(),
                    "RCPT TO: transient error (451): 4.7.1 <address>: Greylisted, see <address>."
                        .to_owned(),
                    1
                ),
            ]
        );
    }
}
