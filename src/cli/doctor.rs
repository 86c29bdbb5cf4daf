//! `sangha doctor`: what is wrong with this installation and how to fix it, one line per
//! finding, each OK, WARN or FAIL. It changes nothing (it creates no database, folder or
//! key) and sends no mail.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use crate::config::{Config, TransportKind, redact_url_password};
use crate::dns::{Dns, tag};
use crate::mail::{Dkim, RelayFault, SendErrorKind, Transport};
use crate::store::{Backend, Store};

/// How sure a finding is that something needs doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Ok,
    Warn,
    Fail,
}

/// The findings so far, printed as they come.
struct Report<'a> {
    out: &'a mut (dyn Write + Send),
    failed: usize,
    warned: usize,
}

impl Report<'_> {
    fn line(&mut self, verdict: Verdict, area: &str, what: &str) -> std::io::Result<()> {
        let word = match verdict {
            Verdict::Ok => "OK  ",
            Verdict::Warn => {
                self.warned += 1;
                "WARN"
            }
            Verdict::Fail => {
                self.failed += 1;
                "FAIL"
            }
        };
        writeln!(self.out, "{word} {area:<9} {what}")
    }
}

/// Runs every check; fails (a non-zero exit) when any check FAILs.
pub async fn run(config_path: Option<&Path>, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    let mut report = Report {
        out,
        failed: 0,
        warned: 0,
    };
    match Config::load(config_path) {
        Ok(config) => {
            report.line(Verdict::Ok, "config", "the configuration loads and checks")?;
            check_config(&mut report, &config)?;
            check_database(&mut report, &config).await?;
            check_mail(&mut report, &config).await?;
            check_dns(&mut report, &config).await?;
        }
        Err(e) => report.line(
            Verdict::Fail,
            "config",
            &format!("{e}: fix it, then run `sangha config check`"),
        )?,
    }
    let (failed, warned) = (report.failed, report.warned);
    writeln!(
        report.out,
        "{failed} failed, {warned} warning{}",
        if warned == 1 { "" } else { "s" }
    )?;
    anyhow::ensure!(failed == 0, "doctor: {failed} check(s) failed");
    Ok(())
}

/// Settings that work but that a mailbox provider or an attacker would hold against us.
fn check_config(report: &mut Report<'_>, config: &Config) -> std::io::Result<()> {
    for warning in config.warnings() {
        report.line(Verdict::Warn, "config", &warning)?;
    }
    match &config.mail.return_path {
        Some(path) => report.line(
            Verdict::Ok,
            "bounces",
            &format!("each email goes out from its own address under {path}, so a bounce names it"),
        )?,
        None => report.line(
            Verdict::Warn,
            "bounces",
            "mail.return_path is empty: bounces come back to the From address mixed with \
             replies, and only those that quote the email's Message-ID can be matched; set \
             it to a mailbox that takes +tag addresses, like bounces@ your domain",
        )?,
    }
    let base = config.base_url();
    if base.starts_with("https://") {
        report.line(Verdict::Ok, "base_url", &format!("{base} is https"))
    } else {
        report.line(
            Verdict::Warn,
            "base_url",
            &format!(
                "{base} is not https: the links in every email (confirm, unsubscribe) go out \
                 unencrypted; set server.base_url to the https:// address of the site"
            ),
        )
    }
}

/// Reachable, every migration applied, and on SQLite in WAL mode.
async fn check_database(report: &mut Report<'_>, config: &Config) -> std::io::Result<()> {
    let shown = redact_url_password(&config.database.url);
    if let Some(file) = crate::store::sqlite_file(&config.database.url)
        && !file.exists()
    {
        return report.line(
            Verdict::Fail,
            "database",
            &format!(
                "the database file {} does not exist yet: `sangha migrate` (or `sangha \
                 serve`) creates it",
                file.display()
            ),
        );
    }
    let store = match Store::connect_with_timeout(
        &config.database.url,
        1,
        Duration::from_secs(config.database.connect_timeout_seconds.clamp(1, 10)),
    )
    .await
    {
        Ok(store) => store,
        Err(e) => {
            return report.line(
                Verdict::Fail,
                "database",
                &format!(
                    "cannot connect to {shown}: {e}; check database.url and that the \
                     database server is running"
                ),
            );
        }
    };
    match store.pending_migrations().await {
        Ok(pending) if pending.is_empty() => report.line(
            Verdict::Ok,
            "database",
            &format!("{shown} is reachable and every migration is applied"),
        )?,
        Ok(pending) => report.line(
            Verdict::Fail,
            "database",
            &format!(
                "{shown}: {} migration(s) not applied ({}): run `sangha migrate`",
                pending.len(),
                pending.join(", ")
            ),
        )?,
        Err(e) => report.line(
            Verdict::Fail,
            "database",
            &format!("{shown}: cannot read the applied migrations: {e}"),
        )?,
    }
    if store.backend() == Backend::Sqlite {
        match store.journal_mode().await {
            Ok(Some(mode)) if mode.eq_ignore_ascii_case("wal") => {
                report.line(Verdict::Ok, "database", "SQLite is in WAL mode")?
            }
            Ok(mode) => report.line(
                Verdict::Fail,
                "database",
                &format!(
                    "SQLite is in journal mode {}, not WAL: readers would wait for every \
                     write; keep the database on a local disk (WAL does not work on network \
                     file systems)",
                    mode.unwrap_or_default()
                ),
            )?,
            Err(e) => report.line(
                Verdict::Fail,
                "database",
                &format!("cannot read SQLite's journal mode: {e}"),
            )?,
        }
    }
    Ok(())
}

/// The way out: the relay answers and takes our login, or the outbox folder is writable.
async fn check_mail(report: &mut Report<'_>, config: &Config) -> std::io::Result<()> {
    if config.mail.transport == TransportKind::File {
        return report.line(
            Verdict::Warn,
            "mail",
            &format!(
                "messages are written to {}, not sent: set mail.transport = \"smtp\" and the \
                 [smtp] section to deliver",
                config.outbox_dir().display()
            ),
        );
    }
    let transport = match Transport::from_config(config) {
        Ok(transport) => transport,
        Err(e) => return report.line(Verdict::Fail, "mail", &format!("{e:#}")),
    };
    let result = transport.probe().await;
    transport.close().await;
    match result {
        Ok(found) => report.line(Verdict::Ok, "smtp", &found),
        Err(e) => {
            let fix = match e.kind {
                SendErrorKind::Relay(RelayFault::Connect) => {
                    "check smtp.host and smtp.port, and that the relay is up and reachable \
                     from here"
                }
                SendErrorKind::Relay(RelayFault::Tls) => {
                    "check smtp.tls (starttls on 587, tls on 465) and the relay's certificate \
                     (smtp.trust, smtp.ca_file, smtp.certificate_sha256)"
                }
                SendErrorKind::Relay(RelayFault::Auth) => {
                    "check smtp.username and smtp.password (better set in the environment as \
                     SANGHA__SMTP__PASSWORD)"
                }
                _ => "check the [mail] and [smtp] settings",
            };
            report.line(Verdict::Fail, "smtp", &format!("{}: {fix}", e.message))
        }
    }
}

/// SPF of the envelope domain and DMARC of the From domain, as mailbox providers read them.
async fn check_dns(report: &mut Report<'_>, config: &Config) -> std::io::Result<()> {
    let dns = match Dns::new(&config.dns.nameservers) {
        Ok(dns) => dns,
        Err(e) => return report.line(Verdict::Fail, "dns", &e.to_string()),
    };
    let domain = config.envelope_sender().domain().to_ascii_lowercase();
    match dns.spf(&domain).await {
        Ok(records) => {
            let (verdict, what) = judge_spf(&domain, &records);
            report.line(verdict, "spf", &what)?;
        }
        Err(e) => report.line(
            Verdict::Fail,
            "spf",
            &format!("{e}: check the network or dns.nameservers"),
        )?,
    }
    check_dkim(report, config, &dns).await?;
    // A subdomain without a record of its own is covered by its parent's (RFC 7489 §6.6.3).
    let mut at = domain.as_str();
    loop {
        match dns.dmarc(at).await {
            Ok(records) if records.is_empty() && at.matches('.').count() > 1 => {
                at = at.split_once('.').map_or(at, |(_, parent)| parent);
            }
            Ok(records) => {
                let (verdict, what) = judge_dmarc(&domain, at, &records);
                return report.line(verdict, "dmarc", &what);
            }
            Err(e) => {
                return report.line(
                    Verdict::Fail,
                    "dmarc",
                    &format!("{e}: check the network or dns.nameservers"),
                );
            }
        }
    }
}

/// What the SPF records of `domain` let receivers conclude.
fn judge_spf(domain: &str, records: &[String]) -> (Verdict, String) {
    let record = match records {
        [] => {
            return (
                Verdict::Fail,
                format!(
                    "no SPF record at {domain}: publish a TXT record `v=spf1 include:… -all` \
                     naming your relay (its documentation gives the include)"
                ),
            );
        }
        [one] => one,
        _ => {
            return (
                Verdict::Fail,
                format!(
                    "{} SPF records at {domain}: receivers treat more than one as an error \
                     (RFC 7208); merge them into one",
                    records.len()
                ),
            );
        }
    };
    let all = record.split_whitespace().find(|term| {
        term.trim_start_matches(['+', '-', '~', '?'])
            .eq_ignore_ascii_case("all")
    });
    match all {
        Some(term) if term.starts_with('-') || term.starts_with('~') => (
            Verdict::Ok,
            format!("{domain}: `{record}`; it must name the relay you send through"),
        ),
        Some(term) if term.starts_with('?') => (
            Verdict::Warn,
            format!(
                "{domain}: `{record}` ends in ?all, which says nothing of other senders; use \
                 ~all or -all"
            ),
        ),
        Some(_) => (
            Verdict::Fail,
            format!("{domain}: `{record}` lets anyone send as {domain} (+all); end it with -all"),
        ),
        None if record.to_ascii_lowercase().contains("redirect=") => {
            (Verdict::Ok, format!("{domain}: `{record}` (redirected)"))
        }
        None => (
            Verdict::Warn,
            format!("{domain}: `{record}` has no `all` at its end; end it with ~all or -all"),
        ),
    }
}

/// What the DMARC record found at `at` (the From domain or a parent) says.
fn judge_dmarc(domain: &str, at: &str, records: &[String]) -> (Verdict, String) {
    let record = match records {
        [] => {
            return (
                Verdict::Fail,
                format!(
                    "no DMARC record for {domain}: Gmail and Yahoo require one of bulk senders; \
                     publish TXT `v=DMARC1; p=none; rua=mailto:postmaster@{domain}` at \
                     _dmarc.{domain} to start"
                ),
            );
        }
        [one] => one,
        _ => {
            return (
                Verdict::Fail,
                format!(
                    "{} DMARC records at _dmarc.{at}: receivers ignore them all; keep one",
                    records.len()
                ),
            );
        }
    };
    let inherited = if at == domain {
        String::new()
    } else {
        format!(" (from {at})")
    };
    match tag(record, "p").map(str::to_ascii_lowercase).as_deref() {
        Some("reject" | "quarantine") => (Verdict::Ok, format!("{domain}{inherited}: `{record}`")),
        Some("none") => (
            Verdict::Ok,
            format!(
                "{domain}{inherited}: `{record}`: policy none only watches; once the reports \
                 show your mail passes, move to p=quarantine"
            ),
        ),
        _ => (
            Verdict::Fail,
            format!(
                "{domain}{inherited}: `{record}` has no valid policy: add p=none, \
                 p=quarantine or p=reject"
            ),
        ),
    }
}

/// Each configured DKIM key against the TXT record published for its selector.
async fn check_dkim(report: &mut Report<'_>, config: &Config, dns: &Dns) -> std::io::Result<()> {
    let dkim = match Dkim::from_config(config) {
        Ok(dkim) => dkim,
        Err(e) => return report.line(Verdict::Fail, "dkim", &format!("{e:#}")),
    };
    let records = dkim.records();
    if records.is_empty() {
        return report.line(
            Verdict::Warn,
            "dkim",
            "mail goes out unsigned: Gmail and Yahoo require DKIM of bulk senders; run \
             `sangha dkim keygen`, publish the record it prints and add the key to [dkim]",
        );
    }
    for expected in records {
        let name = &expected.name;
        let key = |record: &str| tag(record, "p").map(|p| p.split_whitespace().collect::<String>());
        let wanted = key(&expected.value);
        match dns.txt(name).await {
            Err(e) => report.line(
                Verdict::Fail,
                "dkim",
                &format!("{e}: check the network or dns.nameservers"),
            )?,
            Ok(found) if found.is_empty() => report.line(
                Verdict::Fail,
                "dkim",
                &format!(
                    "no record at {name}: receivers cannot check the signature; publish the \
                     record `sangha dkim show` prints"
                ),
            )?,
            Ok(found) if found.iter().any(|r| key(r) == wanted) => report.line(
                Verdict::Ok,
                "dkim",
                &format!("{name} publishes the key that signs"),
            )?,
            Ok(_) => report.line(
                Verdict::Fail,
                "dkim",
                &format!(
                    "{name} publishes another key than the one that signs: every signature \
                     fails; publish the record `sangha dkim show` prints"
                ),
            )?,
        }
    }
    Ok(())
}
