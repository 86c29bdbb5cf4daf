//! Sending: the scheduler that turns due sends into deliveries (and moves people through their
//! courses), and the delivery workers that drain the outbox.

mod course_step;
/// What the mail side needs from delivery rows (recipients, links).
pub mod for_mail;
mod scheduler;
mod worker;

pub use course_step::CourseStep;
pub use scheduler::{ScheduleOutcome, Scheduler};
pub use worker::{LANES, StepOutcome, Worker, backoff_ms};
