use std::fmt;

use super::Invalid;

/// A person's name as they typed it: trimmed, at most [`SubscriberName::MAX_CHARS`] characters,
/// no control characters (so it can never break a header line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberName(String);

impl SubscriberName {
    /// Longest name taken, in characters.
    pub const MAX_CHARS: usize = 100;

    /// Checks a typed name; an empty or blank input is no name at all, and the error's text is
    /// the message a person reads.
    pub fn parse(input: &str) -> Result<Option<Self>, Invalid> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Ok(None);
        }
        if trimmed.chars().any(char::is_control) {
            return Err(Invalid(
                "A name cannot contain line breaks or control characters.".into(),
            ));
        }
        if trimmed.chars().count() > Self::MAX_CHARS {
            return Err(Invalid(format!(
                "Please keep your name under {} characters.",
                Self::MAX_CHARS
            )));
        }
        Ok(Some(Self(trimmed.to_owned())))
    }

    /// The name as typed, trimmed.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SubscriberName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::SubscriberName;

    #[test]
    fn trims_and_treats_blank_as_none() {
        assert_eq!(SubscriberName::parse("   ").unwrap(), None);
        assert_eq!(
            SubscriberName::parse("  Śakti Devi ")
                .unwrap()
                .unwrap()
                .as_str(),
            "Śakti Devi"
        );
    }

    #[test]
    fn refuses_control_characters_and_long_names() {
        assert!(SubscriberName::parse("a\r\nBcc: x@y.z").is_err());
        assert!(SubscriberName::parse("a\0b").is_err());
        assert!(SubscriberName::parse(&"x".repeat(101)).is_err());
        assert!(SubscriberName::parse(&"ä".repeat(100)).unwrap().is_some());
    }
}
