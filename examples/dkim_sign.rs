//! The cost of DKIM signing per message: times `Dkim::sign` on one message (an `.eml` as
//! `sangha preview --eml` writes it) with a fresh rsa-sha256 (2048-bit) key, an
//! ed25519-sha256 key, and both, and prints microseconds per message. See BENCHMARKS.md.
//!
//! ```sh
//! sangha preview --content bench/content.md --offering morning-meditation --eml /tmp/m.eml
//! cargo run --release --example dkim_sign -- /tmp/m.eml [MESSAGES]
//! ```
//!
//! (BENCHMARKS.md gives the whole sequence, with a database for `preview`.)

use std::path::PathBuf;
use std::time::Instant;

use sangha::config::{Config, DkimKeyConfig};
use sangha::mail::{Dkim, DkimAlgorithm, generate_key};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let eml = PathBuf::from(
        args.next()
            .ok_or_else(|| anyhow::anyhow!("usage: dkim_sign MESSAGE.eml [MESSAGES]"))?,
    );
    let messages: u32 = args.next().map_or(Ok(2000), |n| n.parse())?;
    let message = std::fs::read(&eml)?;

    let dir = tempfile::tempdir()?;
    for (selector, algorithm) in [("rsa", DkimAlgorithm::Rsa), ("ed", DkimAlgorithm::Ed25519)] {
        std::fs::write(
            dir.path().join(format!("{selector}.pem")),
            generate_key(algorithm)?,
        )?;
    }
    println!(
        "{} bytes, {messages} messages each, after {} unmeasured",
        message.len(),
        messages / 10
    );
    for (label, selectors) in [
        ("rsa-sha256 2048", &["rsa"][..]),
        ("ed25519-sha256", &["ed"][..]),
        ("both", &["rsa", "ed"][..]),
    ] {
        let mut config = Config {
            data_dir: dir.path().to_owned(),
            ..Config::default()
        };
        config.dkim.keys = selectors
            .iter()
            .map(|s| DkimKeyConfig {
                selector: (*s).to_owned(),
                file: format!("{s}.pem").into(),
            })
            .collect();
        let dkim = Dkim::from_config(&config)?;
        for _ in 0..messages / 10 {
            std::hint::black_box(dkim.sign(message.clone()).map_err(anyhow::Error::msg)?);
        }
        let started = Instant::now();
        for _ in 0..messages {
            std::hint::black_box(dkim.sign(message.clone()).map_err(anyhow::Error::msg)?);
        }
        let micros = started.elapsed().as_secs_f64() * 1e6 / f64::from(messages);
        println!(
            "{label:<16} {micros:8.1} µs/message  ({:.0} messages/s on one core)",
            1e6 / micros
        );
    }
    Ok(())
}
