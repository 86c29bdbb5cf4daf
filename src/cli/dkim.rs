//! `sangha dkim keygen` and `sangha dkim show`: the signing keys and the DNS records that
//! publish them.

use std::io::Write;
use std::path::Path;

use anyhow::Context;

use super::DkimCommand;
use crate::config::Config;
use crate::mail::{Dkim, DkimAlgorithm, DkimRecord, generate_key, key_file_for, record_of_pem};

/// Runs one `sangha dkim` command.
pub fn run(
    config: &Config,
    command: DkimCommand,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    match command {
        DkimCommand::Keygen {
            selector,
            algorithm,
            force,
        } => keygen(config, &selector, algorithm, force, out),
        DkimCommand::Show => show(config, out),
    }
}

/// Writes a new key as `data_dir/dkim/<selector>.pem` (the folder 0700, the file 0600) and
/// prints its DNS record and the config lines that use it.
fn keygen(
    config: &Config,
    selector: &str,
    algorithm: DkimAlgorithm,
    force: bool,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    if selector.is_empty()
        || !selector
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        anyhow::bail!("--selector: `{selector}` must be letters, digits and `-`, like sangha2026");
    }
    let relative = key_file_for(selector);
    let path = config.data_dir.join(&relative);
    if path.exists() && !force {
        anyhow::bail!(
            "{} exists; a published key would stop verifying if it were replaced. \
             Choose another --selector, or pass --force to overwrite it",
            path.display()
        );
    }
    let pem = generate_key(algorithm)?;
    let domain = config.dkim_domain();
    let record = record_of_pem(selector, &domain, pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("the new key: {e}"))?;
    write_private(&path, pem.as_bytes())
        .with_context(|| format!("cannot write DKIM key {}", path.display()))?;
    writeln!(
        out,
        "wrote {} ({} key)",
        path.display(),
        algorithm.key_type()
    )?;
    writeln!(out)?;
    writeln!(out, "Publish this TXT record in the DNS of {domain}:")?;
    print_record(&record, out)?;
    writeln!(out)?;
    writeln!(out, "Then add the key to the config file:")?;
    writeln!(out)?;
    writeln!(out, "[[dkim.keys]]")?;
    writeln!(out, "selector = \"{selector}\"")?;
    writeln!(out, "file = \"{}\"", relative.display())?;
    Ok(())
}

/// Prints the DNS records of the configured keys, read from their files.
fn show(config: &Config, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    let dkim = Dkim::from_config(config)?;
    if !dkim.is_enabled() {
        writeln!(
            out,
            "no DKIM keys are configured: messages go out unsigned. \
             Run `sangha dkim keygen` to make one."
        )?;
        return Ok(());
    }
    for (i, record) in dkim.records().iter().enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        print_record(record, out)?;
    }
    Ok(())
}

fn print_record(record: &DkimRecord, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    writeln!(out, "  name:  {}", record.name)?;
    writeln!(out, "  type:  TXT")?;
    writeln!(out, "  value: {}", record.quoted_strings())?;
    Ok(())
}

/// Writes `bytes` readable by the owner only, creating the folder owner-only too.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir)?;
    }
    let tmp = path.with_extension("pem.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}
