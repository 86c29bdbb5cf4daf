//! Sangha: a self-hosted newsletter service. Visitors sign up for offerings and confirm by
//! email; the owner schedules sends from the command line; workers deliver from a durable
//! outbox.

/// Opening the database, token key, templates and transport; running the server and workers.
pub mod app;
/// What comes back about sent mail: bounces, complaints and auto-replies read from raw
/// messages, matched to their deliveries and acted on.
pub mod bounces;
/// The owner's command line (clap).
pub mod cli;
/// The time the application believes it is; manual in tests.
pub mod clock;
/// File and environment → a typed, validated `Config`, each value parsed once.
pub mod config;
/// Email content: Markdown or handlebars files with front matter, checked at scheduling time.
pub mod content;
/// Course rules: lesson plans, lesson folders, a person's progress (pause, resume, describe).
pub mod courses;
/// The scheduler (with the course step), the delivery workers that drain the outbox, and the
/// poller of the bounce mailbox (IMAP).
pub mod delivery;
/// The DNS records mail authentication rests on (SPF, DMARC, DKIM), for `sangha doctor`.
pub mod dns;
/// Newtypes and state enums parsed at the boundary.
pub mod domain;
/// Links with signed tokens that go into emails.
pub mod links;
/// Templates, message building, transports.
pub mod mail;
/// Prometheus metrics: counters updated where outcomes are known, gauges read at each scrape,
/// the `/metrics` router for the metrics address.
pub mod metrics;
/// The calendar of sends: times of day, dates, recurrence, content folders.
pub mod schedule;
/// The database: SQLite or PostgreSQL, migrations, queries.
pub mod store;
/// The website: signup, confirmation, pages, the public archive and its feeds, the email
/// providers' webhooks.
pub mod web;
