//! The one integration test binary: black-box tests through HTTP, SMTP and the `sangha`
//! command line. Each test runs on SQLite and, when `TEST_DATABASE_URL` is set, PostgreSQL.

mod support;

mod alerts;
mod architecture;
mod archive;
mod backup;
mod bombing;
mod bounce_mailbox;
mod bounces;
mod cli;
mod confirm;
mod courses;
mod crash;
mod dkim;
mod doctor;
mod erased;
mod faults;
mod first_run;
mod hostile;
mod import;
mod leaving;
mod local_time;
mod metrics;
mod moving_in;
mod outbox;
mod pending;
mod private_ca;
mod probe_cli;
mod probe_stop;
mod probe_web;
mod readiness;
mod relay_mistakes;
mod relay_refusal;
mod return_path;
mod secrets;
mod sends;
mod ses_webhook;
mod signup;
mod slow_relays;
mod small_things;
mod smtp_delivery;
mod smtp_pool;
mod smtp_sends;
mod spam_score;
mod webhooks;
