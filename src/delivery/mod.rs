//! Sending: the scheduler that turns due sends into deliveries, and the delivery workers that
//! drain the outbox.

mod scheduler;
mod worker;

pub use scheduler::{ScheduleOutcome, Scheduler};
pub use worker::{LANES, StepOutcome, Worker, backoff_ms};
