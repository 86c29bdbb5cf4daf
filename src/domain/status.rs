use serde::{Deserialize, Serialize};

/// A word that is not one of a closed set's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{word}` is not one of: {}", words.join(", "))]
pub struct UnknownWord {
    word: String,
    words: &'static [&'static str],
}

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
            /// Every state, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The word stored in the database and printed.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $word),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownWord;

            fn from_str(word: &str) -> Result<Self, UnknownWord> {
                match word {
                    $($word => Ok($name::$variant),)+
                    other => Err(UnknownWord {
                        word: other.to_owned(),
                        words: &[$($word),+],
                    }),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }

    };
}

word_enum!(
    /// What the owner is alerted of (`alerts.kind`).
    AlertKind {
        /// A send paused itself: too many of its deliveries failed or bounced.
        #[serde(rename = "send_paused")]
        SendPaused => "send_paused",
        /// A send that could not pause (it had finished) passed its failure share by bounces.
        #[serde(rename = "send_bounces")]
        SendBounces => "send_bounces",
        /// A send's complaints passed `alerts.complaint_percent` of what it delivered.
        #[serde(rename = "send_complaints")]
        SendComplaints => "send_complaints",
        /// Deliveries have been due for longer than `alerts.queue_late_minutes`.
        #[serde(rename = "queue_late")]
        QueueLate => "queue_late",
    }
);

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
    /// How often a recurring send goes out.
    Every { Day => "day", Weekday => "weekday", Week => "week" }
);

impl Every {
    /// The first occurrence date on or after `date`.
    pub fn first_on_or_after(self, date: jiff::civil::Date) -> jiff::civil::Date {
        let mut d = date;
        if self == Every::Weekday {
            while matches!(
                d.weekday(),
                jiff::civil::Weekday::Saturday | jiff::civil::Weekday::Sunday
            ) {
                d = d.tomorrow().expect("a representable date");
            }
        }
        d
    }

    /// The occurrence date after `date`.
    pub fn next_after(self, date: jiff::civil::Date) -> jiff::civil::Date {
        match self {
            Every::Day => date.tomorrow().expect("a representable date"),
            Every::Week => date
                .checked_add(jiff::Span::new().days(7))
                .expect("a representable date"),
            Every::Weekday => {
                self.first_on_or_after(date.tomorrow().expect("a representable date"))
            }
        }
    }
}

word_enum!(
    /// Why an address is on the suppression list.
    SuppressionReason {
        Erased => "erased",
        Bounced => "bounced",
        Complained => "complained",
        /// The owner (or the owner's former tool, as its blocklist) said never to mail it.
        Owner => "owner",
    }
);

word_enum!(
    /// Whose CSV a subscriber file is: ours, or another newsletter tool's export.
    ListFormat {
        Sangha => "sangha",
        Mailchimp => "mailchimp",
        Listmonk => "listmonk",
        Substack => "substack",
        Buttondown => "buttondown",
    }
);

word_enum!(
    /// What a report says happened to one message.
    BounceKind {
        /// A permanent failure (5.x.x, or the provider's permanent type): stop mailing.
        Hard => "hard",
        /// A temporary failure (4.x.x, a full mailbox): counts towards suppression.
        Soft => "soft",
        /// Not delivered yet and still being tried: nothing to do.
        Delayed => "delayed",
        /// The person marked the message as spam (a feedback report).
        Complaint => "complaint",
        /// A vacation or out-of-office reply, or a challenge: not a bounce.
        #[serde(rename = "auto_reply")]
        AutoReply => "auto_reply",
        /// Nothing recognisable: kept for the owner to read, never acted on.
        Unknown => "unknown",
    }
);

word_enum!(
    /// How a report reached us.
    BounceSource {
        /// The bounce mailbox, read over IMAP.
        Imap => "imap",
        /// `sangha bounces import`.
        Import => "import",
        Ses => "ses",
        Postmark => "postmark",
        Mailgun => "mailgun",
        Sendgrid => "sendgrid",
    }
);

word_enum!(
    /// How a report was tied to the delivery it answers.
    MatchedBy {
        /// The VERP tag of the address it came back to.
        Verp => "verp",
        /// The provider's id of the message.
        #[serde(rename = "provider_id")]
        ProviderId => "provider_id",
        /// The original Message-ID quoted in the report.
        #[serde(rename = "message_id")]
        MessageId => "message_id",
    }
);

word_enum!(
    /// What a report made Sangha do.
    BounceAction {
        /// The address went on the suppression list and left every offering.
        Suppressed => "suppressed",
        /// A complaint: the person left everything and the address is suppressed.
        Unsubscribed => "unsubscribed",
        /// A soft bounce, counted towards suppression.
        Counted => "counted",
        /// Nothing (a delay, an auto-reply, an address already suppressed).
        None => "none",
        /// No delivery matched: kept for review, acted on nothing.
        Unmatched => "unmatched",
    }
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

word_enum!(
    /// Where a consent was given: the signup form, the JSON API, a link in an email
    /// (confirming, unsubscribing, preferences), or the owner's command line.
    ConsentSource {
        Form => "form",
        Api => "api",
        Email => "email",
        Owner => "owner",
    }
);

word_enum!(
    /// Which step of opening a session with the relay failed, as stored in
    /// `deliveries.failure_kind`.
    RelayFault {
        /// No connection, no greeting, a refusing greeting (`421`), or no answer in time.
        Connect => "connect",
        /// STARTTLS missing or refused, the TLS handshake, the certificate or its pin.
        Tls => "tls",
        /// `AUTH` failed: wrong credentials (`535`) or no mechanism both sides know.
        Auth => "auth",
    }
);

#[cfg(test)]
mod tests {
    use super::{Every, SubscriptionStatus};

    #[test]
    fn a_word_parses_to_its_state_and_an_unknown_one_names_the_words() {
        for every in Every::ALL {
            assert_eq!(every.as_str().parse::<Every>(), Ok(*every));
        }
        let err = "happy".parse::<SubscriptionStatus>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "`happy` is not one of: pending, confirmed, unsubscribed"
        );
    }
}
