//! The one integration test binary: black-box tests through HTTP, SMTP and the `sangha`
//! command line. Each test runs on SQLite and, when `TEST_DATABASE_URL` is set, PostgreSQL.

mod support;

mod cli;
mod confirm;
mod crash;
mod first_run;
mod import;
mod leaving;
mod outbox;
mod sends;
mod signup;
mod smtp_delivery;
mod smtp_pool;
mod smtp_sends;
