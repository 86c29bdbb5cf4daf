//! The owner's command line.

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
}

/// Runs a parsed command, printing to `out`.
pub async fn run(cli: Cli, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Config(ConfigCommand::Check) => {
            writeln!(
                out,
                "# configuration is valid\n{}",
                config.to_redacted_toml()
            )?;
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
            }
            Ok(())
        }
    }
}

async fn serve(
    config: Config,
    with_worker: bool,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let outbox = config.outbox_dir();
    let transport = config.mail.transport;
    let base = config.base_url().to_owned();
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
