//! Sending: the delivery workers that drain the outbox.

mod worker;

pub use worker::{StepOutcome, Worker, backoff_ms};
