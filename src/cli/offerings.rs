//! `sangha offerings list`.

use std::io::Write;

use crate::app::Runtime;

/// Prints the offerings with their subscriber counts, as a table or as JSON.
pub async fn list(
    runtime: &Runtime,
    json: bool,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let offerings = runtime.store.offering_summaries().await?;
    if json {
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
