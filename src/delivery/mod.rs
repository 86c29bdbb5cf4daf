//! Sending: the scheduler that turns due sends into deliveries, and the delivery workers that
//! drain the outbox.

pub mod for_mail;
mod scheduler;
mod worker;

pub use scheduler::{ScheduleOutcome, Scheduler};
pub use worker::{LANES, StepOutcome, Worker, backoff_ms};
