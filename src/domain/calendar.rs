//! Times of day and weekdays as the owner writes them in the configuration.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The `String` conversions serde reads and writes a type of text through.
macro_rules! text_conversions {
    ($ty:ident, $err:ident) => {
        impl TryFrom<String> for $ty {
            type Error = $err;

            fn try_from(text: String) -> Result<Self, $err> {
                text.parse()
            }
        }

        impl From<$ty> for String {
            fn from(value: $ty) -> String {
                value.to_string()
            }
        }
    };
}

/// A time of day written `HH:MM` on the 24-hour clock (a course's `local_time`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TimeOfDay(jiff::civil::Time);

impl TimeOfDay {
    /// `hour:minute`; `None` when either is out of range.
    pub fn new(hour: i8, minute: i8) -> Option<Self> {
        jiff::civil::Time::new(hour, minute, 0, 0).ok().map(Self)
    }

    /// The time as jiff's civil time.
    pub fn time(self) -> jiff::civil::Time {
        self.0
    }
}

/// A text that is not a time of day like `07:00`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a time of day like \"07:00\"")]
pub struct NotATimeOfDay(String);

impl From<jiff::civil::Time> for TimeOfDay {
    /// The hour and minute of `time` (seconds are dropped).
    fn from(time: jiff::civil::Time) -> Self {
        Self(
            time.with()
                .second(0)
                .subsec_nanosecond(0)
                .build()
                .unwrap_or(time),
        )
    }
}

impl std::str::FromStr for TimeOfDay {
    type Err = NotATimeOfDay;

    fn from_str(text: &str) -> Result<Self, NotATimeOfDay> {
        let text = text.trim();
        let two_digits = |p: &str| p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit());
        text.split_once(':')
            .filter(|(h, m)| two_digits(h) && two_digits(m))
            .and_then(|(h, m)| Self::new(h.parse().ok()?, m.parse().ok()?))
            .ok_or_else(|| NotATimeOfDay(super::Timezone::excerpt(text)))
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0.hour(), self.0.minute())
    }
}

text_conversions!(TimeOfDay, NotATimeOfDay);

/// A day of the week, written `mon` … `sun` or in full, in any case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Weekday(jiff::civil::Weekday);

impl Weekday {
    /// The weekday as jiff's.
    pub fn weekday(self) -> jiff::civil::Weekday {
        self.0
    }
}

impl From<jiff::civil::Weekday> for Weekday {
    fn from(day: jiff::civil::Weekday) -> Self {
        Self(day)
    }
}

/// A text that is not a weekday.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a weekday: use mon, tue, wed, thu, fri, sat, sun")]
pub struct NotAWeekday(String);

/// The short names, Monday first.
const WEEKDAYS: [(&str, &str, jiff::civil::Weekday); 7] = {
    use jiff::civil::Weekday::*;
    [
        ("mon", "monday", Monday),
        ("tue", "tuesday", Tuesday),
        ("wed", "wednesday", Wednesday),
        ("thu", "thursday", Thursday),
        ("fri", "friday", Friday),
        ("sat", "saturday", Saturday),
        ("sun", "sunday", Sunday),
    ]
};

impl std::str::FromStr for Weekday {
    type Err = NotAWeekday;

    fn from_str(text: &str) -> Result<Self, NotAWeekday> {
        let word = text.trim().to_ascii_lowercase();
        WEEKDAYS
            .iter()
            .find(|(short, long, _)| word == *short || word == *long)
            .map(|(_, _, day)| Self(*day))
            .ok_or_else(|| NotAWeekday(super::Timezone::excerpt(text)))
    }
}

impl fmt::Display for Weekday {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (short, _, _) = WEEKDAYS
            .iter()
            .find(|(_, _, day)| *day == self.0)
            .expect("every weekday is listed");
        f.write_str(short)
    }
}

text_conversions!(Weekday, NotAWeekday);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_of_day_is_two_digits_colon_two_digits() {
        assert_eq!(
            "07:00".parse::<TimeOfDay>().unwrap(),
            TimeOfDay::new(7, 0).unwrap()
        );
        assert_eq!(" 18:30 ".parse::<TimeOfDay>().unwrap().to_string(), "18:30");
        for bad in ["7am", "7:00", "24:00", "12:60", "07:00:00", "", "ab:cd"] {
            let err = bad.parse::<TimeOfDay>().unwrap_err().to_string();
            assert!(err.contains("is not a time of day"), "{bad}: {err}");
        }
    }

    #[test]
    fn weekdays_are_short_or_long_in_any_case() {
        use jiff::civil::Weekday::*;
        for (text, day) in [("mon", Monday), ("Fri", Friday), ("SUNDAY", Sunday)] {
            assert_eq!(text.parse::<Weekday>().unwrap().weekday(), day);
        }
        assert_eq!(Weekday::from(Wednesday).to_string(), "wed");
        let err = "someday".parse::<Weekday>().unwrap_err().to_string();
        assert!(err.contains("is not a weekday"), "{err}");
    }
}
