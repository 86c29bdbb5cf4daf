//! `sangha`: parse the command line, start logging, run the command.

use std::io::IsTerminal;

use clap::Parser;
use sangha::config::LogFormat;
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc's malloc: less CPU per delivered message (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = sangha::cli::Cli::parse();
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=warn"))
        // Whatever RUST_LOG says: handlebars logs the values given to block helpers at debug
        // (`{{#if name}}` in an owner's template would log subscribers' names, a helper over a
        // link would log its token).
        .add_directive("handlebars=warn".parse().expect("a valid directive"))
        // sqlx warns about a connect parameter it does not know with its value: that is how
        // `?sslpassword=…` (a libpq parameter) reached the log. The URL is shown redacted in
        // the error when the database cannot be opened.
        .add_directive(
            "sqlx_postgres::options::parse=error"
                .parse()
                .expect("a valid directive"),
        );
    // Colour only for a person at a terminal: a log file or journald would keep the escape
    // codes as text. NO_COLOR (https://no-color.org) turns it off there too.
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    // `[log] format` is read before the command loads the config for itself; a config that
    // does not load logs as text, and the command then says what is wrong with it.
    let format = sangha::config::Config::load(cli.config.as_deref())
        .map(|c| c.log.format)
        .unwrap_or_default();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.with_ansi(colour).init(),
        // One object per line: the event's fields flattened beside level, target and time,
        // and every enclosing span's fields (request_id; send_id, delivery_id) in `spans`.
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .init(),
    }
    let mut stdout = std::io::stdout();
    match sangha::cli::run(cli, &mut stdout).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
