//! Domain newtypes and state enums. Input is parsed into these once, at the boundary; the rest
//! of the code never handles a raw email string or a status word.

mod calendar;
mod email;
mod name;
mod slug;
mod status;
mod timezone;
mod timezone_old_names;
mod token;

pub use calendar::{NotATimeOfDay, NotAWeekday, TimeOfDay, Weekday};
pub use email::EmailAddress;
pub use name::SubscriberName;
pub use slug::Slug;
pub use status::{
    AlertKind, BounceAction, BounceKind, BounceSource, ConsentSource, CourseState, DeliveryKind,
    DeliveryStatus, Every, ListFormat, MatchedBy, OfferingKind, RecurrenceStatus, RelayFault,
    SendStatus, SubscriptionStatus, SuppressionReason, UnknownWord,
};
pub use timezone::Timezone;

/// A text a domain type refused, with the reason a person reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(String);

/// Lowercase hex of bytes (digests, random ids).
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}
pub use token::{BounceTag, LinkTarget, Token, TokenError, TokenKey, TokenPurpose};
