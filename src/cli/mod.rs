//! The owner's command line: the clap types and a short dispatch to each command family
//! (`sends`, `subscribers`, `courses`, `offerings`). Only `main` and `cli` print.

mod alerts;
mod backup;
mod bounces;
mod courses;
mod dkim;
mod doctor;
mod form;
mod offerings;
mod sends;
mod subscribers;

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::app::{Application, Runtime, shutdown_signal};
use crate::clock::Clock;
use crate::config::{Config, TransportKind};
use crate::domain::{EmailAddress, Every, ListFormat, Slug, SubscriptionStatus};
use crate::mail::DkimAlgorithm;
use crate::store::Offering;

/// The command line: a global config path and one command.
#[derive(Debug, Parser)]
#[command(name = "sangha", version, about = "A self-hosted newsletter service")]
pub struct Cli {
    /// Config file (default: ./config.toml when present, else built-in defaults).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the web server, the scheduler and delivery workers.
    Serve {
        /// Only serve web requests; run `sangha worker` elsewhere to send.
        #[arg(long)]
        no_worker: bool,
        /// Start even though the server answers beyond this machine and base_url is http
        /// (links in emails would travel in clear text).
        #[arg(long)]
        insecure: bool,
    },
    /// Run delivery workers only (several may share a PostgreSQL database).
    Worker,
    /// Apply pending database migrations.
    Migrate,
    /// Check the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Show the offerings.
    #[command(subcommand)]
    Offerings(OfferingsCommand),
    /// Look at subscribers.
    #[command(subcommand)]
    Subscribers(SubscribersCommand),
    /// Schedule a send of an offering from a Markdown (or handlebars) file.
    Schedule(ScheduleArgs),
    /// Look after sends: list, show, pause, resume, retry, cancel, watch.
    #[command(subcommand)]
    Sends(SendsCommand),
    /// Render content as a subscriber would receive it.
    Preview(PreviewArgs),
    /// Send content once to one address through the configured transport.
    TestSend(TestSendArgs),
    /// Check the installation and say what to fix: config, database, the relay (no mail is
    /// sent), base_url; exits non-zero when a check fails.
    Doctor,
    /// DKIM keys: make one, print the DNS records to publish.
    #[command(subcommand)]
    Dkim(DkimCommand),
    /// Bounces, complaints and auto-replies: list, show, import a saved report.
    #[command(subcommand)]
    Bounces(BouncesCommand),
    /// What the owner was alerted of (a send that paused itself, bounces or complaints past
    /// their share, mail waiting too long), newest first, and whether the email went out.
    Alerts {
        /// Only those raised on or after this day (YYYY-MM-DD, in the site's time zone) or in
        /// the last N days (`7d`); without it, the last 30 days.
        #[arg(long, value_parser = bounces::parse_since)]
        since: Option<bounces::Since>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Copy the SQLite database to FILE and its token keys to FILE.key, while Sangha runs
    /// (on PostgreSQL: print the pg_dump line to run instead).
    Backup {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Replace FILE and FILE.key when they exist.
        #[arg(long)]
        force: bool,
    },
    /// Print the signup form as an HTML snippet to paste into another site's page (it works
    /// without script; its script shows the answer in place for origins in
    /// server.cors_origins).
    Form {
        /// The offering(s) the form signs up for (default: every public offering).
        #[arg(long, value_name = "SLUG")]
        offering: Vec<Slug>,
        /// plain (no styles of its own) or inline (one compact line, with a small <style>).
        #[arg(long, value_enum, default_value = "plain")]
        style: form::FormStyle,
    },
    /// Put a backup (FILE and FILE.key) in place as the configured database, once checked;
    /// refused while Sangha has the database open.
    Restore {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Replace the database that is there now.
        #[arg(long)]
        force: bool,
    },
}

/// `sangha bounces …`: what came back about the mail sent.
#[derive(Debug, Subcommand)]
pub enum BouncesCommand {
    /// Reports received, newest first: what each said and what Sangha did.
    List {
        /// Only those received on or after this day (YYYY-MM-DD, in the site's time zone) or
        /// in the last N days (`7d`).
        #[arg(long, value_parser = bounces::parse_since)]
        since: Option<bounces::Since>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// One report: its parsed fields and the report itself (while kept).
    Show { id: i64 },
    /// Read reports saved by hand (.eml files: a bounce, a complaint, an auto-reply) and do
    /// what each calls for, as if they had come to the bounce mailbox.
    Import {
        #[arg(required = true, value_name = "FILE.eml")]
        files: Vec<PathBuf>,
    },
    /// Read the bounce mailbox (`[bounces.imap]`) once now: record each message and move it to
    /// the processed folder.
    Poll,
}

#[derive(Debug, Subcommand)]
pub enum DkimCommand {
    /// Write a new signing key under data_dir/dkim/ and print its DNS record.
    Keygen {
        /// The key's name in DNS: SELECTOR._domainkey.DOMAIN.
        #[arg(long, default_value = "sangha")]
        selector: String,
        /// rsa (2048 bits, known to every verifier) or ed25519.
        #[arg(long, default_value = "rsa")]
        algorithm: DkimAlgorithm,
        /// Overwrite an existing key file of this selector.
        #[arg(long)]
        force: bool,
    },
    /// Print the DNS TXT records of the configured keys again.
    Show,
}

/// `sangha sends …`: list, inspect and steer sends.
#[derive(Debug, Subcommand)]
pub enum SendsCommand {
    /// Every send, newest first.
    List(JsonFlag),
    /// One send: progress counts and why recipients did not get it.
    Show { id: i64 },
    /// Stop handing out the send's deliveries (those in flight finish).
    Pause { id: i64 },
    /// Continue a paused send.
    Resume { id: i64 },
    /// Try again the deliveries that failed before anything reached the relay (connection,
    /// TLS, login), once the relay or the configuration is fixed; a done or paused send goes
    /// on sending.
    Retry {
        id: i64,
        /// Every failed delivery, whatever the reason (not suppressed or skipped ones).
        #[arg(long)]
        failed: bool,
    },
    /// Cancel the rest of a send.
    Cancel { id: i64 },
    /// A live progress bar with rate and time left, until the send ends.
    Watch { id: i64 },
    /// Stop a recurring send (occurrences already created go on; cancel those separately).
    StopRecurring { id: i64 },
}

/// `sangha config …`: check the configuration.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and print it with secrets redacted.
    Check,
}

/// `sangha offerings …`: the configured offerings.
#[derive(Debug, Subcommand)]
pub enum OfferingsCommand {
    /// List offerings with subscriber counts.
    List(JsonFlag),
}

/// The `--json` flag of listing commands.
#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `sangha subscribers …`: list, import, export and manage subscribers.
#[derive(Debug, Subcommand)]
pub enum SubscribersCommand {
    /// List subscribers, optionally of one offering and status.
    List {
        #[arg(long, value_name = "SLUG")]
        offering: Option<Slug>,
        /// pending, confirmed or unsubscribed
        #[arg(long, value_name = "STATUS")]
        status: Option<SubscriptionStatus>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Show one subscriber: each offering with its status, and the consent record.
    Show {
        email: EmailAddress,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Import people from a CSV file with the header `email,name,timezone,offerings` (several
    /// offerings in one cell separated by `;`). Without --confirmed they are imported as
    /// pending: they receive no email until they sign up themselves. A bad row is reported
    /// with its line number and skipped.
    Import {
        /// The CSV file.
        file: PathBuf,
        /// They gave their consent elsewhere: confirm them at once (needs --source).
        #[arg(long, requires = "source")]
        confirmed: bool,
        /// Where they gave their consent, kept in each consent record
        /// (for example "signup sheet, retreat May 2024").
        #[arg(long, value_name = "TEXT")]
        source: Option<String>,
        /// Check the whole file first and import nothing if any row is bad.
        #[arg(long)]
        strict: bool,
        /// People written per transaction.
        #[arg(long, value_name = "N", default_value_t = 1000, hide = true)]
        batch_size: usize,
        /// Whose export the file is: sangha, or mailchimp, listmonk, substack, buttondown
        /// (read as those tools export it). Found from the header when not given.
        #[arg(long, value_name = "FORMAT")]
        format: Option<ListFormat>,
        /// The offering(s) the people of another tool's export join, when their rows do not
        /// name one (by a tag); repeat for several.
        #[arg(long, value_name = "SLUG")]
        offering: Vec<Slug>,
    },
    /// Export every subscriber as CSV: the import columns, then statuses and consent times;
    /// or, with --format mailchimp|listmonk, as those tools import it.
    Export {
        /// Write to this file (readable only by you) instead of standard output.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
        /// sangha (every column, the default), mailchimp or listmonk.
        #[arg(long, value_name = "FORMAT", default_value = "sangha")]
        format: ListFormat,
        /// For mailchimp and listmonk: only the people who are confirmed, or only those who
        /// left (Mailchimp imports one status per file; its default is confirmed).
        #[arg(long, value_name = "STATUS")]
        status: Option<SubscriptionStatus>,
    },
    /// Unsubscribe someone from one offering, or from everything (the record is kept).
    Remove {
        email: EmailAddress,
        #[arg(long, value_name = "SLUG")]
        offering: Option<Slug>,
    },
    /// Erase someone: every record about them goes; only a keyed hash of the address stays
    /// on the suppression list, so no import brings them back.
    Erase { email: EmailAddress },
    /// Pause or resume someone's course (as they can from their preferences page).
    #[command(subcommand)]
    Course(CourseCommand),
}

/// `sangha courses …`: pause, resume and describe one person's course.
#[derive(Debug, Subcommand)]
pub enum CourseCommand {
    /// Pause: no lesson comes until the course is resumed.
    Pause {
        email: EmailAddress,
        #[arg(long, value_name = "SLUG")]
        offering: Slug,
    },
    /// Resume at the next lesson; the later ones keep their spacing (the course's clock
    /// stood still while it was paused).
    Resume {
        email: EmailAddress,
        #[arg(long, value_name = "SLUG")]
        offering: Slug,
    },
}

/// `sangha schedule`: one send, or a recurring one from a folder.
#[derive(Debug, Args)]
pub struct ScheduleArgs {
    #[arg(long, value_name = "SLUG")]
    pub offering: Slug,
    /// The email: a Markdown file (or NAME.html.hbs beside NAME.txt.hbs).
    #[arg(
        long,
        value_name = "PATH",
        required_unless_present = "content_dir",
        conflicts_with = "content_dir"
    )]
    pub content: Option<PathBuf>,
    /// Recurring: each occurrence takes the next unused Markdown file of this folder.
    #[arg(long, value_name = "DIR", requires_all = ["every", "local_time"])]
    pub content_dir: Option<PathBuf>,
    /// Recurring: day, weekday or week.
    #[arg(long, value_name = "EVERY", requires = "content_dir")]
    pub every: Option<Every>,
    /// First date of a recurring send (default: today in site.timezone).
    #[arg(long, value_name = "DATE", requires = "content_dir", value_parser = date)]
    pub from: Option<jiff::civil::Date>,
    /// A time of day in each subscriber's own zone, "HH:MM".
    #[arg(long, value_name = "HH:MM", conflicts_with_all = ["at", "now"], value_parser = time_of_day)]
    pub local_time: Option<jiff::civil::Time>,
    /// The date of a --local-time send, "YYYY-MM-DD".
    #[arg(
        long,
        value_name = "DATE",
        requires = "local_time",
        conflicts_with = "content_dir",
        value_parser = date
    )]
    pub on: Option<jiff::civil::Date>,
    /// Zones where --local-time on --on has passed get it at once (else refused).
    #[arg(long, requires = "on")]
    pub send_late: bool,
    /// When to send: "YYYY-MM-DD HH:MM" in --timezone.
    #[arg(long, value_name = "TIME", conflicts_with = "now", value_parser = date_time)]
    pub at: Option<jiff::civil::DateTime>,
    /// The zone of --at (default: site.timezone).
    // Parsed by hand, not by clap: clap's error repeats the whole value, and a refused zone
    // is shown shortened and without control characters (`Timezone::excerpt`).
    #[arg(long, value_name = "ZONE", requires = "at")]
    pub timezone: Option<String>,
    /// Send as soon as possible.
    #[arg(long)]
    pub now: bool,
    /// Keep this send out of the offering's public archive and feed; its email carries no
    /// "read on the web" link.
    #[arg(long, conflicts_with = "content_dir")]
    pub private: bool,
}

/// `sangha preview`.
#[derive(Debug, Args)]
pub struct PreviewArgs {
    #[arg(long, value_name = "PATH")]
    pub content: PathBuf,
    /// The offering (default: `offering:` in the front matter).
    #[arg(long, value_name = "SLUG")]
    pub offering: Option<Slug>,
    /// Render for this subscriber (default: a sample person).
    #[arg(long, value_name = "EMAIL")]
    pub subscriber: Option<EmailAddress>,
    /// Print the text part instead of the HTML part.
    #[arg(long, conflicts_with = "eml")]
    pub text: bool,
    /// Write the whole message (.eml) to this file instead.
    #[arg(long, value_name = "FILE")]
    pub eml: Option<PathBuf>,
}

/// `sangha test-send`.
#[derive(Debug, Args)]
pub struct TestSendArgs {
    #[arg(long, value_name = "PATH")]
    pub content: PathBuf,
    #[arg(long, value_name = "EMAIL")]
    pub to: EmailAddress,
    #[arg(long, value_name = "SLUG")]
    pub offering: Option<Slug>,
}

/// `HH:MM` (for `--local-time`).
/// Text that came from outside (a bounce report, a relay's diagnostic) made safe to print on
/// the owner's terminal: each control character is shown as `\u{..}` instead of being sent,
/// so a hostile report cannot move the cursor, clear the screen or retitle the window with
/// escape sequences. `keep_lines` keeps newlines and tabs (a whole report); otherwise they are
/// shown too (one field on one line).
pub(crate) fn printable(text: &str, keep_lines: bool) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() && !(keep_lines && (c == '\n' || c == '\t'));
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut shown = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if keep_lines && c == '\r' {
            continue;
        }
        if unsafe_char(c) {
            shown.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            shown.push(c);
        }
    }
    std::borrow::Cow::Owned(shown)
}

fn time_of_day(text: &str) -> Result<jiff::civil::Time, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a time like 06:30"))
}

/// `YYYY-MM-DD` (for `--on` and `--from`).
fn date(text: &str) -> Result<jiff::civil::Date, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a date like 2026-12-01"))
}

/// `YYYY-MM-DD HH:MM` (for `--at`).
fn date_time(text: &str) -> Result<jiff::civil::DateTime, String> {
    text.trim()
        .replacen(' ', "T", 1)
        .parse()
        .map_err(|_| format!("`{text}` is not a time like \"2026-12-01 06:30\""))
}

/// Runs a parsed command, printing to `out`.
pub async fn run(cli: Cli, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    let path = cli.config.as_deref();
    // Loaded by each command: a configuration that does not load is one of the doctor's
    // findings, not an error before it.
    let load = || Config::load(path);
    match cli.command {
        Command::Doctor => doctor::run(path, out).await,
        Command::Config(ConfigCommand::Check) => check_config(&load()?, out),
        Command::Serve {
            no_worker,
            insecure,
        } => serve(load()?, !no_worker, insecure, out).await,
        Command::Worker => worker(load()?).await,
        Command::Migrate => {
            open(load()?).await?;
            writeln!(out, "migrations applied")?;
            Ok(())
        }
        Command::Offerings(OfferingsCommand::List(flag)) => {
            offerings::list(&open(load()?).await?, flag.json, out).await
        }
        Command::Subscribers(command) => subscribers::run(load()?, command, out).await,
        Command::Schedule(args) => sends::schedule(load()?, args, out).await,
        Command::Sends(command) => sends::run(&open(load()?).await?, command, out).await,
        Command::Preview(args) => sends::preview(&open(load()?).await?, args, out).await,
        Command::TestSend(args) => sends::test_send(&open(load()?).await?, args, out).await,
        Command::Dkim(command) => dkim::run(&load()?, command, out),
        Command::Bounces(command) => bounces::run(&open(load()?).await?, command, out).await,
        Command::Alerts { since, json } => {
            alerts::list(&open(load()?).await?, since, json.json, out).await
        }
        Command::Backup { file, force } => backup::backup(load()?, &file, force, out).await,
        Command::Restore { file, force } => backup::restore(load()?, &file, force, out).await,
        Command::Form { offering, style } => form::print(&load()?, &offering, style, out),
    }
}

/// Opens what a command needs (the database, migrated) on the system clock.
async fn open(config: Config) -> anyhow::Result<Runtime> {
    Runtime::open(config, Clock::System).await
}

/// The offering `--offering` names, or an error that says there is none.
async fn offering(runtime: &Runtime, slug: &Slug) -> anyhow::Result<Offering> {
    runtime
        .store
        .offering_by_slug(slug)
        .await?
        .ok_or_else(|| anyhow::anyhow!("--offering: there is no offering `{slug}`"))
}

/// `sangha config check`.
fn check_config(config: &Config, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    let dkim = crate::mail::Dkim::from_config(config)?;
    writeln!(out, "# configuration is valid")?;
    if dkim.is_enabled() {
        let names: Vec<String> = dkim.records().into_iter().map(|r| r.name).collect();
        writeln!(out, "# DKIM keys read: {}", names.join(", "))?;
    } else {
        writeln!(out, "# no DKIM keys: messages go out unsigned")?;
    }
    for warning in config.warnings() {
        writeln!(out, "# warning: {warning}")?;
    }
    writeln!(out, "{}", config.to_redacted_toml())?;
    Ok(())
}

/// `sangha worker`: delivery workers until Ctrl-C.
async fn worker(config: Config) -> anyhow::Result<()> {
    let runtime = open(config).await?;
    let worker = runtime.worker(runtime.templates()?, runtime.links()?)?;
    let metrics = crate::app::MetricsEndpoint::bind(&runtime).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let timeouts = crate::web::ConnectionTimeouts::from_config(&runtime.config.server);
    let metrics = metrics.map(|endpoint| endpoint.spawn(timeouts, stop_rx.clone()));
    let task = tokio::spawn(worker.run(stop_rx, Default::default()));
    shutdown_signal().await;
    let _ = stop_tx.send(true);
    task.await?;
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    Ok(())
}

/// `sangha serve`: the web server (and, unless `--no-worker`, the workers) until Ctrl-C.
async fn serve(
    config: Config,
    with_worker: bool,
    insecure: bool,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    if let Some(why) = config.insecure_exposure() {
        if !insecure {
            anyhow::bail!("refusing to start: {why}");
        }
        tracing::warn!("{why}");
    }
    let outbox = config.outbox_dir();
    let transport = config.mail.transport;
    let base = config.base_url().to_owned();
    crate::web::raise_open_file_limit();
    let app = Application::build(config, Clock::System, with_worker).await?;
    writeln!(out, "Sangha is listening on http://{}", app.local_addr())?;
    writeln!(out, "  signup page: {base}/subscribe")?;
    match (with_worker, transport) {
        (false, _) => writeln!(out, "  no delivery worker here (--no-worker)")?,
        (true, TransportKind::File) => {
            writeln!(out, "  outgoing mail is written to {}", outbox.display())?
        }
        (true, TransportKind::Smtp) => writeln!(out, "  outgoing mail goes out over SMTP")?,
    }
    writeln!(out, "Press Ctrl-C to stop.")?;
    out.flush()?;
    app.run_until(shutdown_signal()).await
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn text_from_outside_is_printed_without_its_control_characters() {
        assert_eq!(
            printable("550 5.1.1 no such user", false),
            "550 5.1.1 no such user"
        );
        assert_eq!(
            printable("a\x1b[2Jb\x07c\rd\ne", false),
            "a\\u{1b}[2Jb\\u{7}c\\u{d}d\\u{a}e"
        );
        // A whole report keeps its lines; a bare carriage return cannot overwrite one.
        assert_eq!(
            printable("Subject: x\r\n\x1b]0;owned\x07\r\nbody\tend\rX\r\n", true),
            "Subject: x\n\\u{1b}]0;owned\\u{7}\nbody\tendX\n"
        );
    }
}
