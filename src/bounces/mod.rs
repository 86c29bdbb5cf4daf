//! What comes back about the mail we send: bounces, complaints and auto-replies, matched to the
//! delivery each answers (`record`).

mod record;

pub use record::{Incoming, Notice, Recorded, Recorder};
