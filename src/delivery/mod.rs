//! Sending: the scheduler that turns due sends into deliveries, and the delivery workers that
//! drain the outbox.

/// Courses: each person's lessons, day by day after their confirmation.
pub mod courses;
mod scheduler;
mod worker;

pub use scheduler::{ScheduleOutcome, Scheduler};
pub use worker::{LANES, StepOutcome, Worker, backoff_ms};
