//! Sending: the scheduler that turns due sends into deliveries (and moves people through their
//! courses), the delivery workers that drain the outbox, the poller of the bounce mailbox, and
//! the owner's alerts.

mod alerts;
mod bounce_mailbox;
mod course_step;
/// What the mail side needs from delivery rows (recipients, links).
pub mod for_mail;
mod pending_signups;
mod scheduler;
mod worker;

pub use alerts::{AlertStep, Alerts};
pub use bounce_mailbox::{BounceMailbox, PollCount};
pub use course_step::CourseStep;
pub use pending_signups::{PendingOutcome, PendingSignups};
pub use scheduler::{ScheduleOutcome, Scheduler};
pub use worker::{LANES, StepOutcome, Worker, backoff_ms};
