use std::fmt;

use super::Invalid;
use super::timezone_old_names::OLD_NAMES;

/// An IANA time zone name that the bundled time zone database knows (`Asia/Kathmandu`), under
/// its current name: one the database keeps only as a link for an old name (`Asia/Calcutta`,
/// still what some browsers report) is taken as the zone it links to (`Asia/Kolkata`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timezone {
    name: String,
    zone: jiff::tz::TimeZone,
}

impl Timezone {
    /// The longest name taken (the longest IANA name has 32 characters).
    pub const MAX_BYTES: usize = 64;

    /// Checks a zone name against the bundled database, spelled as the database spells it and
    /// renamed from an old name to its current one; the error's text is the message a person
    /// reads.
    pub fn parse(input: &str) -> Result<Self, Invalid> {
        let trimmed = input.trim();
        let zone = Some(trimmed)
            .filter(|t| t.len() <= Self::MAX_BYTES)
            .and_then(|t| jiff::tz::TimeZone::get(t).ok());
        let Some(zone) = zone else {
            return Err(Invalid(format!(
                "`{}` is not a known IANA time zone.",
                Self::excerpt(trimmed)
            )));
        };
        let spelled = zone.iana_name().unwrap_or(trimmed);
        match Self::current_name(spelled) {
            Some(current) => Ok(Self {
                name: current.to_owned(),
                zone: jiff::tz::TimeZone::get(current).map_err(|e| Invalid(e.to_string()))?,
            }),
            None => Ok(Self {
                name: spelled.to_owned(),
                zone,
            }),
        }
    }

    /// The current name of a zone known by an old one (`Asia/Calcutta` → `Asia/Kolkata`).
    fn current_name(old: &str) -> Option<&'static str> {
        OLD_NAMES
            .binary_search_by(|(name, _)| (*name).cmp(old))
            .ok()
            .map(|i| OLD_NAMES[i].1)
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

    #[test]
    fn an_old_name_is_stored_under_the_current_one() {
        for (old, current) in [
            ("Asia/Calcutta", "Asia/Kolkata"),
            ("Europe/Kiev", "Europe/Kyiv"),
            ("Asia/Saigon", "Asia/Ho_Chi_Minh"),
            ("US/Eastern", "America/New_York"),
            ("asia/calcutta", "Asia/Kolkata"),
        ] {
            let zone = Timezone::parse(old).unwrap();
            assert_eq!(zone.as_str(), current, "{old}");
            assert_eq!(zone.zone().iana_name(), Some(current), "{old}");
        }
        // A country's own name stays, though the database links it to a neighbour's zone;
        // so do the spellings of UTC.
        for kept in [
            "Europe/Bratislava",
            "Europe/Vatican",
            "UTC",
            "Etc/UTC",
            "Asia/Kolkata",
        ] {
            assert_eq!(Timezone::parse(kept).unwrap().as_str(), kept);
        }
    }

    #[test]
    fn the_table_of_old_names_is_sorted_and_leads_to_zones_the_database_knows() {
        use super::OLD_NAMES;
        assert!(OLD_NAMES.len() > 100, "{}", OLD_NAMES.len());
        assert!(OLD_NAMES.windows(2).all(|w| w[0].0 < w[1].0), "sorted");
        for (old, current) in OLD_NAMES {
            assert!(jiff::tz::TimeZone::get(old).is_ok(), "{old}");
            let zone = jiff::tz::TimeZone::get(current).expect(current);
            assert_eq!(
                zone.iana_name(),
                Some(*current),
                "spelled as the database does"
            );
            assert!(
                OLD_NAMES.binary_search_by(|(n, _)| n.cmp(current)).is_err(),
                "{current} is itself an old name"
            );
        }
    }
}
