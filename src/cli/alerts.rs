//! `sangha alerts`: what the owner was alerted of, and whether the email reached her relay.

use std::io::Write;

use super::bounces::Since;
use super::printable;
use crate::app::Runtime;
use crate::clock::format_ms;

/// How far back `alerts` looks without `--since`.
const DEFAULT_DAYS: u32 = 30;

/// Prints the alerts raised since `since` (30 days without it), newest first.
pub async fn list(
    runtime: &Runtime,
    since: Option<Since>,
    json: bool,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let since = since
        .unwrap_or(Since::DaysAgo(DEFAULT_DAYS))
        .millis(runtime)?;
    let alerts = runtime.store.alerts_since(since).await?;
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&alerts)?)?;
        return Ok(());
    }
    if alerts.is_empty() {
        writeln!(out, "no alerts")?;
    }
    let owner = runtime.config.site.owner_email.as_ref();
    for a in &alerts {
        let emailed = match (a.emailed_at, owner, &a.last_error) {
            (Some(at), _, _) => format!("emailed {}", format_ms(at)),
            (None, None, _) => "not emailed: site.owner_email is empty".to_owned(),
            (None, Some(_), Some(error)) => format!(
                "not emailed yet ({} attempts): {}",
                a.attempts,
                printable(error, false)
            ),
            (None, Some(_), None) => "to be emailed".to_owned(),
        };
        let over = a
            .cleared_at
            .map(|at| format!(", over {}", format_ms(at)))
            .unwrap_or_default();
        writeln!(
            out,
            "{:>5}  {}  {:<15}  {}{over}\n       {}",
            a.id,
            format_ms(a.raised_at),
            a.kind,
            a.summary,
            emailed
        )?;
    }
    Ok(())
}
