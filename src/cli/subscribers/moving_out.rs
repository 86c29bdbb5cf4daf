//! `sangha subscribers export --format mailchimp|listmonk`: the list as those tools import it,
//! so leaving is as easy as arriving.
//!
//! Each person is written once, with the offerings of one status:
//!
//! | here | Mailchimp (one status per import) | listmonk |
//! |---|---|---|
//! | a confirmed subscription | the `--status confirmed` file (the default): import as "Subscribed" | `status` `enabled`, import with subscription status "confirmed" |
//! | only subscriptions they left | the `--status unsubscribed` file, with `UNSUB_TIME`: import as "Unsubscribed" | `status` `disabled` (never mailed) |
//! | only pending ones | left out: they have not consented yet | left out |
//!
//! Mailchimp gets `"Email Address","First Name","Last Name"` (the name split at its first
//! space), the offerings as `TAGS`, `TIMEZONE`, and the consent and confirmation times;
//! listmonk gets `email,name,status,attributes` with `{"offerings": [...], "timezone": ...}`
//! as attributes. `sangha subscribers import` reads both back.

use std::io::Write;

use anyhow::bail;

use crate::clock::Millis;
use crate::domain::{ListFormat, SubscriptionStatus};
use crate::store::Store;

use super::export::{Exported, each_subscriber};
use super::rows::defuse_formula;

/// How many people an export to another tool wrote, and how many it left out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MovedOut {
    pub written: u64,
    /// People with only pending subscriptions, or not of the status asked for.
    pub left_out: u64,
}

/// Writes the subscribers as `format` (mailchimp or listmonk) imports them. `status` picks
/// the confirmed or the unsubscribed people; without it Mailchimp gets the confirmed ones
/// (it imports one status at a time) and listmonk both.
pub async fn export(
    store: &Store,
    format: ListFormat,
    status: Option<SubscriptionStatus>,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<MovedOut> {
    let status = match (format, status) {
        (_, Some(SubscriptionStatus::Pending)) => bail!(
            "--status pending: people who have not confirmed have given no consent to carry to \
             another tool; export confirmed or unsubscribed"
        ),
        (ListFormat::Mailchimp, None) => Some(SubscriptionStatus::Confirmed),
        (ListFormat::Mailchimp | ListFormat::Listmonk, status) => status,
        (other, _) => bail!(
            "--format {other}: an export writes sangha, mailchimp or listmonk (the formats those \
             tools import)"
        ),
    };
    let mut writer = csv::Writer::from_writer(out);
    let mut header: Vec<&str> = match format {
        ListFormat::Mailchimp => MAILCHIMP.to_vec(),
        _ => LISTMONK.to_vec(),
    };
    if format == ListFormat::Mailchimp && status == Some(SubscriptionStatus::Unsubscribed) {
        // Mailchimp's own export of that status has it.
        header.push("UNSUB_TIME");
    }
    writer.write_record(header)?;
    let mut counts = MovedOut::default();
    each_subscriber(store, |person| {
        let Some((state, offerings, left_at)) = standing(&person) else {
            counts.left_out += 1;
            return Ok(());
        };
        if status.is_some_and(|s| s != state) {
            counts.left_out += 1;
            return Ok(());
        }
        let cells = match format {
            ListFormat::Mailchimp => mailchimp_row(&person, &offerings, left_at, status),
            _ => listmonk_row(&person, &offerings, state)?,
        };
        writer.write_record(cells.iter().map(|c| defuse_formula(c)))?;
        counts.written += 1;
        Ok(())
    })
    .await?;
    writer.flush()?;
    Ok(counts)
}

/// What Mailchimp's audience import reads from a "Subscribed" file (it maps the columns by
/// name; `TAGS` become tags).
const MAILCHIMP: [&str; 7] = [
    "Email Address",
    "First Name",
    "Last Name",
    "TAGS",
    "TIMEZONE",
    "OPTIN_TIME",
    "CONFIRM_TIME",
];

/// listmonk's import columns.
const LISTMONK: [&str; 4] = ["email", "name", "status", "attributes"];

/// Confirmed with the offerings confirmed, or unsubscribed with the offerings left (and when
/// last), or `None` for someone with only pending subscriptions. Offerings gone from the
/// configuration are not named.
fn standing(person: &Exported) -> Option<(SubscriptionStatus, Vec<String>, Option<Millis>)> {
    let of = |status| {
        person
            .subscriptions
            .iter()
            .filter(move |s| s.offering_active && s.status == status)
    };
    let confirmed: Vec<String> = of(SubscriptionStatus::Confirmed)
        .map(|s| s.offering.clone())
        .collect();
    if !confirmed.is_empty() {
        return Some((SubscriptionStatus::Confirmed, confirmed, None));
    }
    let left: Vec<String> = of(SubscriptionStatus::Unsubscribed)
        .map(|s| s.offering.clone())
        .collect();
    let left_at = of(SubscriptionStatus::Unsubscribed)
        .filter_map(|s| s.unsubscribed_at)
        .max();
    (!left.is_empty()).then_some((SubscriptionStatus::Unsubscribed, left, left_at))
}

/// Mailchimp's time format: UTC, `YYYY-MM-DD HH:MM:SS`.
fn mailchimp_time(at: Option<Millis>) -> String {
    at.and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

fn mailchimp_row(
    person: &Exported,
    offerings: &[String],
    left_at: Option<Millis>,
    status: Option<SubscriptionStatus>,
) -> Vec<String> {
    let name = person.name.as_deref().unwrap_or_default();
    let (first, last) = name.split_once(' ').unwrap_or((name, ""));
    let mut cells = vec![
        person.email.clone(),
        first.to_owned(),
        last.to_owned(),
        offerings.join(","),
        person.timezone.clone().unwrap_or_default(),
        mailchimp_time(person.consent_at),
        mailchimp_time(person.confirmed_at),
    ];
    if status == Some(SubscriptionStatus::Unsubscribed) {
        cells.push(mailchimp_time(left_at));
    }
    cells
}

fn listmonk_row(
    person: &Exported,
    offerings: &[String],
    state: SubscriptionStatus,
) -> anyhow::Result<Vec<String>> {
    let mut attributes = serde_json::json!({ "offerings": offerings });
    if let Some(zone) = &person.timezone {
        attributes["timezone"] = serde_json::Value::from(zone.as_str());
    }
    let status = match state {
        SubscriptionStatus::Confirmed => "enabled",
        _ => "disabled",
    };
    Ok(vec![
        person.email.clone(),
        person.name.clone().unwrap_or_default(),
        status.to_owned(),
        serde_json::to_string(&attributes)?,
    ])
}
