use std::fmt;

/// An IANA time zone name that the bundled time zone database knows (`Asia/Kathmandu`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timezone(String);

impl Timezone {
    pub fn parse(input: &str) -> Result<Self, String> {
        let trimmed = input.trim();
        if trimmed.len() > 64 || jiff::tz::TimeZone::get(trimmed).is_err() {
            return Err(format!("`{trimmed}` is not a known IANA time zone."));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Timezone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
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
    }
}
