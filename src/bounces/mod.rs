//! What comes back about the mail we send: bounces, complaints and auto-replies, matched to the
//! delivery each answers (`record`); the providers' event webhooks read into reports
//! (`providers`).

mod providers;
mod record;

pub use providers::{
    MAILGUN_WINDOW_MS, Refused, SeenTokens, mailgun_event, postmark_authorized, postmark_event,
    sendgrid_events,
};
pub use record::{Incoming, Notice, Recorded, Recorder};
