use std::fmt;

use super::Invalid;

/// An IANA time zone name that the bundled time zone database knows (`Asia/Kathmandu`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timezone {
    name: String,
    zone: jiff::tz::TimeZone,
}

impl Timezone {
    /// The longest name taken (the longest IANA name has 32 characters).
    pub const MAX_BYTES: usize = 64;

    /// Checks a zone name against the bundled database; the error's text is the message a
    /// person reads.
    pub fn parse(input: &str) -> Result<Self, Invalid> {
        let trimmed = input.trim();
        let zone = Some(trimmed)
            .filter(|t| t.len() <= Self::MAX_BYTES)
            .and_then(|t| jiff::tz::TimeZone::get(t).ok());
        match zone {
            Some(zone) => Ok(Self {
                name: trimmed.to_owned(),
                zone,
            }),
            None => Err(Invalid(format!(
                "`{}` is not a known IANA time zone.",
                Self::excerpt(trimmed)
            ))),
        }
    }

    /// What an error message shows of a refused zone: at most [`Timezone::MAX_BYTES`]
    /// characters (a form field or a CSV cell can hold thousands), control characters replaced
    /// (a terminal would run escape codes).
    pub fn excerpt(input: &str) -> String {
        let mut shown: String = input
            .chars()
            .take(Self::MAX_BYTES)
            .map(|c| if c.is_control() { '\u{fffd}' } else { c })
            .collect();
        if input.chars().nth(Self::MAX_BYTES).is_some() {
            shown.push('…');
        }
        shown
    }

    /// The zone name.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The zone's rules, for date arithmetic.
    pub fn zone(&self) -> &jiff::tz::TimeZone {
        &self.zone
    }
}

impl std::str::FromStr for Timezone {
    type Err = Invalid;

    fn from_str(input: &str) -> Result<Self, Invalid> {
        Self::parse(input)
    }
}

impl fmt::Display for Timezone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::Timezone;

    #[test]
    fn knows_iana_names_and_refuses_others() {
        for ok in [
            "Europe/Berlin",
            "Asia/Kathmandu",
            "Pacific/Kiritimati",
            "UTC",
        ] {
            assert_eq!(Timezone::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            "Mars/Olympus",
            "Europe/../etc/passwd",
            "Europe/Berlin\0",
        ] {
            assert!(Timezone::parse(bad).is_err(), "accepted {bad:?}");
        }
        let err = Timezone::parse(&"x".repeat(10_000))
            .unwrap_err()
            .to_string();
        assert!(err.len() < 120, "{err}");
        assert!(err.contains(&format!("{}…", "x".repeat(64))), "{err}");
        assert_eq!(Timezone::excerpt("Mars\u{1b}[2J"), "Mars\u{fffd}[2J");
    }
}
