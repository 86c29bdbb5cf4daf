//! The owner's command line.

pub mod sends;
pub mod subscribers_csv;

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::app::{Application, Runtime, shutdown_signal};
use crate::clock::{Clock, format_ms};
use crate::config::Config;
use crate::domain::{EmailAddress, Slug, SubscriptionStatus};
use crate::store::{SubscriberDetail, SubscriberRow};

#[derive(Debug, Parser)]
#[command(name = "sangha", version, about = "A self-hosted newsletter service")]
pub struct Cli {
    /// Config file (default: ./config.toml when present, else built-in defaults).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the web server, the scheduler and delivery workers.
    Serve {
        /// Only serve web requests; run `sangha worker` elsewhere to send.
        #[arg(long)]
        no_worker: bool,
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
    Schedule {
        #[arg(long, value_name = "SLUG")]
        offering: String,
        /// The email: a Markdown file (or NAME.html.hbs beside NAME.txt.hbs).
        #[arg(
            long,
            value_name = "PATH",
            required_unless_present = "content_dir",
            conflicts_with = "content_dir"
        )]
        content: Option<PathBuf>,
        /// Recurring: each occurrence takes the next unused Markdown file of this folder.
        #[arg(long, value_name = "DIR", requires_all = ["every", "local_time"])]
        content_dir: Option<PathBuf>,
        /// Recurring: day, weekday or week.
        #[arg(long, value_name = "EVERY", requires = "content_dir")]
        every: Option<String>,
        /// First date of a recurring send (default: today in site.timezone).
        #[arg(long, value_name = "DATE", requires = "content_dir")]
        from: Option<String>,
        /// A time of day in each subscriber's own zone, "HH:MM".
        #[arg(long, value_name = "HH:MM", conflicts_with_all = ["at", "now"])]
        local_time: Option<String>,
        /// The date of a --local-time send, "YYYY-MM-DD".
        #[arg(
            long,
            value_name = "DATE",
            requires = "local_time",
            conflicts_with = "content_dir"
        )]
        on: Option<String>,
        /// Zones where --local-time on --on has passed get it at once (else refused).
        #[arg(long, requires = "on")]
        send_late: bool,
        /// When to send: "YYYY-MM-DD HH:MM" in --timezone.
        #[arg(long, value_name = "TIME", conflicts_with = "now")]
        at: Option<String>,
        /// The zone of --at (default: site.timezone).
        #[arg(long, value_name = "ZONE", requires = "at")]
        timezone: Option<String>,
        /// Send as soon as possible.
        #[arg(long)]
        now: bool,
    },
    /// Look after sends: list, show, pause, resume, retry, cancel, watch.
    #[command(subcommand)]
    Sends(SendsCommand),
    /// Render content as a subscriber would receive it.
    Preview {
        #[arg(long, value_name = "PATH")]
        content: PathBuf,
        /// The offering (default: `offering:` in the front matter).
        #[arg(long, value_name = "SLUG")]
        offering: Option<String>,
        /// Render for this subscriber (default: a sample person).
        #[arg(long, value_name = "EMAIL")]
        subscriber: Option<String>,
        /// Print the text part instead of the HTML part.
        #[arg(long, conflicts_with = "eml")]
        text: bool,
        /// Write the whole message (.eml) to this file instead.
        #[arg(long, value_name = "FILE")]
        eml: Option<PathBuf>,
    },
    /// Send content once to one address through the configured transport.
    TestSend {
        #[arg(long, value_name = "PATH")]
        content: PathBuf,
        #[arg(long, value_name = "EMAIL")]
        to: String,
        #[arg(long, value_name = "SLUG")]
        offering: Option<String>,
    },
}

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

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and print it with secrets redacted.
    Check,
}

#[derive(Debug, Subcommand)]
pub enum OfferingsCommand {
    /// List offerings with subscriber counts.
    List(JsonFlag),
}

#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum SubscribersCommand {
    /// List subscribers, optionally of one offering and status.
    List {
        #[arg(long, value_name = "SLUG")]
        offering: Option<String>,
        /// pending, confirmed or unsubscribed
        #[arg(long, value_name = "STATUS")]
        status: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Show one subscriber: each offering with its status, and the consent record.
    Show {
        email: String,
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
    },
    /// Export every subscriber as CSV: the import columns, then statuses and consent times.
    Export {
        /// Write to this file (readable only by you) instead of standard output.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Unsubscribe someone from one offering, or from everything (the record is kept).
    Remove {
        email: String,
        #[arg(long, value_name = "SLUG")]
        offering: Option<String>,
    },
    /// Erase someone: every record about them goes; only a keyed hash of the address stays
    /// on the suppression list, so no import brings them back.
    Erase { email: String },
    /// Pause or resume someone's course (as they can from their preferences page).
    #[command(subcommand)]
    Course(CourseCommand),
}

#[derive(Debug, Subcommand)]
pub enum CourseCommand {
    /// Pause: no lesson comes until the course is resumed.
    Pause {
        email: String,
        #[arg(long, value_name = "SLUG")]
        offering: String,
    },
    /// Resume at the next lesson; the later ones keep their spacing (the course's clock
    /// stood still while it was paused).
    Resume {
        email: String,
        #[arg(long, value_name = "SLUG")]
        offering: String,
    },
}

/// Runs a parsed command, printing to `out`.
pub async fn run(cli: Cli, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Config(ConfigCommand::Check) => {
            writeln!(out, "# configuration is valid")?;
            if config.mail.transport == crate::config::TransportKind::Smtp {
                for warning in config.smtp.warnings() {
                    writeln!(out, "# warning: {warning}")?;
                }
            }
            writeln!(out, "{}", config.to_redacted_toml())?;
            Ok(())
        }
        Command::Serve { no_worker } => serve(config, !no_worker, out).await,
        Command::Worker => {
            let runtime = Runtime::open(config, Clock::System).await?;
            let worker = runtime.worker(runtime.templates()?, runtime.links()?)?;
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let task = tokio::spawn(worker.run(stop_rx, Default::default()));
            shutdown_signal().await;
            let _ = stop_tx.send(true);
            task.await?;
            Ok(())
        }
        Command::Migrate => {
            Runtime::open(config, Clock::System).await?;
            writeln!(out, "migrations applied")?;
            Ok(())
        }
        Command::Offerings(OfferingsCommand::List(flag)) => {
            let runtime = Runtime::open(config, Clock::System).await?;
            let offerings = runtime.store.offering_summaries().await?;
            if flag.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&offerings)?)?;
                return Ok(());
            }
            writeln!(
                out,
                "{:<24} {:<28} {:<10} {:<7} {:>8} {:>10} {:>13}",
                "SLUG", "NAME", "KIND", "PUBLIC", "PENDING", "CONFIRMED", "UNSUBSCRIBED"
            )?;
            for o in offerings {
                let name = if o.active {
                    o.offering.name.clone()
                } else {
                    format!("{} (removed)", o.offering.name)
                };
                writeln!(
                    out,
                    "{:<24} {:<28} {:<10} {:<7} {:>8} {:>10} {:>13}",
                    o.offering.slug,
                    name,
                    o.offering.kind,
                    if o.offering.public { "yes" } else { "no" },
                    o.pending,
                    o.confirmed,
                    o.unsubscribed
                )?;
            }
            Ok(())
        }
        Command::Subscribers(SubscribersCommand::List {
            offering,
            status,
            json,
        }) => {
            let offering = offering
                .map(|s| Slug::parse(&s).map_err(anyhow::Error::msg))
                .transpose()
                .context("--offering")?;
            let status = status
                .map(|s| SubscriptionStatus::parse(&s).map_err(anyhow::Error::msg))
                .transpose()
                .context("--status")?;
            let runtime = Runtime::open(config, Clock::System).await?;
            if let Some(slug) = &offering
                && runtime.store.offering_by_slug(slug).await?.is_none()
            {
                anyhow::bail!("--offering: there is no offering `{slug}`");
            }
            let rows = runtime
                .store
                .list_subscribers(offering.as_ref().map(Slug::as_str), status)
                .await?;
            if json.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
            } else {
                print_subscriber_table(&rows, out)?;
            }
            Ok(())
        }
        Command::Schedule {
            offering,
            content,
            content_dir,
            every,
            from,
            local_time,
            on,
            send_late,
            at,
            timezone,
            now,
        } => {
            if let Some(dir) = content_dir {
                let every = crate::schedule::Every::parse(every.as_deref().unwrap_or_default())?;
                let time =
                    crate::schedule::parse_local_time(local_time.as_deref().unwrap_or_default())?;
                let from = match from {
                    Some(d) => crate::schedule::parse_date("--from", &d)?,
                    None => jiff::Timestamp::now()
                        .to_zoned_datetime(jiff::tz::TimeZone::get(&config.site.timezone)?)
                        .date(),
                };
                let runtime = Runtime::open(config, Clock::System).await?;
                let id =
                    sends::schedule_recurring(&runtime, &offering, &dir, every, time, from).await?;
                writeln!(out, "recurring send {id}: see `sangha sends list`")?;
                return Ok(());
            }
            let content = content.context("--content is required")?;
            let when = match (now, at, local_time) {
                (true, _, _) => sends::When::Now,
                (false, Some(at), _) => {
                    let zone = timezone.unwrap_or_else(|| config.site.timezone.clone());
                    sends::When::parse_at(&at, &zone)?
                }
                (false, None, Some(time)) => sends::When::Local {
                    time: crate::schedule::parse_local_time(&time)?,
                    date: crate::schedule::parse_date(
                        "--on",
                        on.as_deref().context("--local-time needs --on DATE")?,
                    )?,
                    send_late,
                },
                (false, None, None) => anyhow::bail!(
                    "say when: --at \"YYYY-MM-DD HH:MM\", --local-time HH:MM --on DATE, or --now"
                ),
            };
            let runtime = Runtime::open(config, Clock::System).await?;
            let id = sends::schedule(&runtime, &offering, &content, &when).await?;
            writeln!(out, "{id}")?;
            Ok(())
        }
        Command::Sends(command) => {
            let runtime = Runtime::open(config, Clock::System).await?;
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
                        sends::print_send_list(&sends, out)?;
                        sends::print_recurrences(&runtime, out).await?;
                    }
                }
                SendsCommand::Show { id } => sends::print_send(&runtime, id, out).await?,
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
                SendsCommand::Retry { id, failed } => {
                    sends::retry(&runtime, id, failed, out).await?
                }
                SendsCommand::Cancel { id } => {
                    changed(
                        store.cancel_send(id, runtime.clock.now_ms()).await?,
                        id,
                        "cancelled",
                    )?;
                    writeln!(out, "send {id} cancelled")?;
                }
                SendsCommand::Watch { id } => sends::watch(&runtime, id, out).await?,
                SendsCommand::StopRecurring { id } => {
                    let now = runtime.clock.now_ms();
                    changed(
                        store
                            .end_recurrence(
                                id,
                                crate::domain::RecurrenceStatus::Cancelled,
                                "stopped by the owner",
                                now,
                            )
                            .await?,
                        id,
                        "stopped",
                    )?;
                    writeln!(out, "recurring send {id} stopped")?;
                }
            }
            Ok(())
        }
        Command::Preview {
            content,
            offering,
            subscriber,
            text,
            eml,
        } => {
            let subscriber = subscriber
                .map(|s| EmailAddress::parse(&s).map_err(anyhow::Error::msg))
                .transpose()
                .context("--subscriber")?;
            let runtime = Runtime::open(config, Clock::System).await?;
            match eml {
                Some(path) => {
                    let mut file = std::fs::File::create(&path)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    sends::preview(
                        &runtime,
                        &content,
                        offering.as_deref(),
                        subscriber.as_ref(),
                        sends::PreviewPart::Raw,
                        &mut file,
                    )
                    .await?;
                    writeln!(out, "wrote {}", path.display())?;
                }
                None => {
                    let part = if text {
                        sends::PreviewPart::Text
                    } else {
                        sends::PreviewPart::Html
                    };
                    sends::preview(
                        &runtime,
                        &content,
                        offering.as_deref(),
                        subscriber.as_ref(),
                        part,
                        out,
                    )
                    .await?;
                }
            }
            Ok(())
        }
        Command::TestSend {
            content,
            to,
            offering,
        } => {
            let to = EmailAddress::parse(&to)
                .map_err(anyhow::Error::msg)
                .context("--to")?;
            let runtime = Runtime::open(config, Clock::System).await?;
            let reply = sends::test_send(&runtime, &content, offering.as_deref(), &to).await?;
            writeln!(out, "sent to {to}: {reply}")?;
            Ok(())
        }
        Command::Subscribers(SubscribersCommand::Import {
            file,
            confirmed,
            source,
            strict,
            batch_size,
        }) => {
            let options = subscribers_csv::ImportOptions {
                confirmed,
                source,
                strict,
                batch_size,
            };
            options.check()?;
            let runtime = Runtime::open(config, Clock::System).await?;
            let links = runtime.links()?;
            let report = subscribers_csv::import(
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
        Command::Subscribers(SubscribersCommand::Export { output }) => {
            let runtime = Runtime::open(config, Clock::System).await?;
            match output {
                Some(path) => {
                    let mut file = subscribers_csv::create_private_file(&path)?;
                    let n = subscribers_csv::export(&runtime.store, &mut file).await?;
                    file.sync_all()?;
                    writeln!(out, "{n} subscriber(s) written to {}", path.display())?;
                }
                None => {
                    subscribers_csv::export(&runtime.store, out).await?;
                }
            }
            Ok(())
        }
        Command::Subscribers(SubscribersCommand::Remove { email, offering }) => {
            let email = EmailAddress::parse(&email).map_err(anyhow::Error::msg)?;
            let runtime = Runtime::open(config, Clock::System).await?;
            let Some(who) = runtime.store.subscriber_detail(&email).await? else {
                anyhow::bail!("no subscriber with the address {email}");
            };
            let offering_id = match offering {
                Some(slug) => {
                    let slug = Slug::parse(&slug)
                        .map_err(anyhow::Error::msg)
                        .context("--offering")?;
                    let o = runtime.store.offering_by_slug(&slug).await?;
                    Some(
                        o.ok_or_else(|| {
                            anyhow::anyhow!("--offering: there is no offering `{slug}`")
                        })?
                        .id,
                    )
                }
                None => None,
            };
            let meta = crate::store::ConsentMeta {
                ip: None,
                user_agent: None,
                text_hash: String::new(),
                source: "owner",
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
        Command::Subscribers(SubscribersCommand::Erase { email }) => {
            let email = EmailAddress::parse(&email).map_err(anyhow::Error::msg)?;
            let runtime = Runtime::open(config, Clock::System).await?;
            let Some(who) = runtime.store.subscriber_detail(&email).await? else {
                anyhow::bail!("no subscriber with the address {email}");
            };
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
        Command::Subscribers(SubscribersCommand::Show { email, json }) => {
            let email = EmailAddress::parse(&email).map_err(anyhow::Error::msg)?;
            let runtime = Runtime::open(config, Clock::System).await?;
            let Some(detail) = runtime.store.subscriber_detail(&email).await? else {
                anyhow::bail!("no subscriber with the address {email}");
            };
            if json.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&detail)?)?;
            } else {
                print_subscriber_detail(&detail, out)?;
                print_courses(&runtime.config, &detail, out)?;
            }
            Ok(())
        }
        Command::Subscribers(SubscribersCommand::Course(command)) => {
            course(config, command, out).await
        }
    }
}

/// `sangha subscribers course pause|resume EMAIL --offering SLUG`.
async fn course(
    config: Config,
    command: CourseCommand,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    use crate::courses::{Courses, PauseOutcome, ResumeOutcome, local_time_text};
    let (email, slug, pause) = match command {
        CourseCommand::Pause { email, offering } => (email, offering, true),
        CourseCommand::Resume { email, offering } => (email, offering, false),
    };
    let email = EmailAddress::parse(&email).map_err(anyhow::Error::msg)?;
    let slug = Slug::parse(&slug)
        .map_err(anyhow::Error::msg)
        .context("--offering")?;
    let runtime = Runtime::open(config, Clock::System).await?;
    let Some(offering) = runtime.store.offering_by_slug(&slug).await? else {
        anyhow::bail!("--offering: there is no offering `{slug}`");
    };
    anyhow::ensure!(
        offering.kind == crate::domain::OfferingKind::Course,
        "--offering: `{slug}` is a newsletter, not a course"
    );
    let Some(who) = runtime.store.subscriber_detail(&email).await? else {
        anyhow::bail!("no subscriber with the address {email}");
    };
    let courses = Courses::from_config(&runtime.config);
    let (store, id, now) = (&runtime.store, who.subscriber.id, runtime.clock.now_ms());
    let not_started = || {
        anyhow::anyhow!(
            "{email} has not started {slug}: they are not confirmed for it (a course starts \
             within a minute of the confirmation)"
        )
    };
    if pause {
        match courses.pause(store, id, offering.id, now).await? {
            PauseOutcome::Paused => writeln!(
                out,
                "{email}: {slug} paused; `sangha subscribers course resume {email} --offering \
                 {slug}` continues it at the next lesson"
            )?,
            PauseOutcome::NotStarted => return Err(not_started()),
            PauseOutcome::NotActive(state) => {
                anyhow::bail!("{email}: {slug} is {state}, so it cannot be paused")
            }
        }
    } else {
        match courses.resume(store, id, offering.id, now).await? {
            ResumeOutcome::Resumed(Some((day, at))) => {
                let zone = who.subscriber.timezone.as_deref();
                writeln!(
                    out,
                    "{email}: {slug} resumed; next: day {day} on {} {}",
                    local_time_text(at, &courses.zone(zone)),
                    courses.zone_name(zone)
                )?
            }
            ResumeOutcome::Resumed(None) => {
                writeln!(out, "{email}: {slug} resumed; no lesson is left: finished")?
            }
            ResumeOutcome::NotStarted => return Err(not_started()),
            ResumeOutcome::NotPaused(state) => {
                anyhow::bail!("{email}: {slug} is {state}, not paused")
            }
        }
    }
    Ok(())
}

/// Where the person is in each course, one line each.
fn print_courses(
    config: &Config,
    detail: &SubscriberDetail,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    if detail.courses.is_empty() {
        return Ok(());
    }
    let courses = crate::courses::Courses::from_config(config);
    writeln!(out, "courses:")?;
    for c in &detail.courses {
        let line = courses.describe(c, detail.subscriber.timezone.as_deref());
        writeln!(out, "  {:<24} {line}", c.offering)?;
    }
    Ok(())
}

async fn serve(
    config: Config,
    with_worker: bool,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let outbox = config.outbox_dir();
    let transport = config.mail.transport;
    let base = config.base_url().to_owned();
    crate::web::raise_open_file_limit();
    let app = Application::build(config, Clock::System, with_worker).await?;
    writeln!(out, "Sangha is listening on http://{}", app.local_addr())?;
    writeln!(out, "  signup page: {base}/subscribe")?;
    match (with_worker, transport) {
        (false, _) => writeln!(out, "  no delivery worker here (--no-worker)")?,
        (true, crate::config::TransportKind::File) => {
            writeln!(out, "  outgoing mail is written to {}", outbox.display())?
        }
        (true, crate::config::TransportKind::Smtp) => {
            writeln!(out, "  outgoing mail goes out over SMTP")?
        }
    }
    writeln!(out, "Press Ctrl-C to stop.")?;
    out.flush()?;
    app.run_until(shutdown_signal()).await
}

fn print_subscriber_table(
    rows: &[SubscriberRow],
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    writeln!(out, "{:<40} {:<24} SUBSCRIPTIONS", "EMAIL", "NAME")?;
    for row in rows {
        let subs: Vec<String> = row
            .subscriptions
            .iter()
            .map(|s| format!("{}:{}", s.offering, s.status))
            .collect();
        writeln!(
            out,
            "{:<40} {:<24} {}",
            row.email,
            row.name.as_deref().unwrap_or("-"),
            subs.join(" ")
        )?;
    }
    writeln!(out, "{} subscriber(s)", rows.len())?;
    Ok(())
}

fn print_subscriber_detail(
    detail: &SubscriberDetail,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
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
    Ok(())
}
