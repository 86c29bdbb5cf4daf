use serde::{Deserialize, Serialize};

/// Defines a closed set of states stored as lowercase words in the database.
macro_rules! word_enum {
    ($(#[$meta:meta])* $name:ident {
        $($(#[$vmeta:meta])* $variant:ident => $word:literal),+ $(,)?
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $word),+ }
            }

            pub fn parse(word: &str) -> Result<Self, String> {
                match word {
                    $($word => Ok($name::$variant),)+
                    other => Err(format!(
                        "`{other}` is not one of: {}",
                        [$($word),+].join(", ")
                    )),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownWord;
            fn from_str(word: &str) -> Result<Self, UnknownWord> {
                $name::parse(word).map_err(UnknownWord)
            }
        }
    };
}

/// A word that is not one of a status's words; the text names the ones that are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnknownWord(pub String);

word_enum!(
    /// What an offering is: a newsletter (sends scheduled by the owner) or a course (steps
    /// N days after each person's confirmation).
    OfferingKind { Newsletter => "newsletter", Course => "course" }
);

word_enum!(
    /// A subscriber's relation to one offering: `pending` → `confirmed` → `unsubscribed`.
    SubscriptionStatus {
        Pending => "pending",
        Confirmed => "confirmed",
        Unsubscribed => "unsubscribed",
    }
);

word_enum!(
    /// What a delivery row carries.
    DeliveryKind { Confirmation => "confirmation", Send => "send" }
);

word_enum!(
    /// Where one delivery is in its life. `pending` rows are claimed by workers; the others are
    /// final.
    DeliveryStatus {
        Pending => "pending",
        Sent => "sent",
        Failed => "failed",
        Suppressed => "suppressed",
        Skipped => "skipped",
        Cancelled => "cancelled",
    }
);

word_enum!(
    /// Where a send is: `scheduled` until its time, `sending` once fanned out, `done` when every
    /// delivery is final; `paused` and `cancelled` by the owner (or a failing send itself).
    SendStatus {
        Scheduled => "scheduled",
        Sending => "sending",
        Paused => "paused",
        Cancelled => "cancelled",
        Done => "done",
    }
);

word_enum!(
    /// Where a person is in a course.
    CourseState {
        /// Lessons come as their days come.
        Active => "active",
        /// Paused by the person or the owner: nothing comes until resumed.
        Paused => "paused",
        /// The subscription is no longer confirmed; confirming again continues the course.
        Left => "left",
        /// No lesson left.
        Finished => "finished",
    }
);

word_enum!(
    /// Why an address is on the suppression list.
    SuppressionReason { Erased => "erased", Bounced => "bounced" }
);

word_enum!(
    /// Where a recurring send is: `active` while it makes occurrences, `finished` when its
    /// files ran out or its end came, `cancelled` by the owner.
    RecurrenceStatus {
        Active => "active",
        Finished => "finished",
        Cancelled => "cancelled",
    }
);
