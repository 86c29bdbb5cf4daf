use std::fmt;

use super::Invalid;

/// An offering's identifier in URLs, forms and the CLI: lowercase ASCII letters, digits and
/// hyphens, starting with a letter or digit, at most 64 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slug(String);

impl Slug {
    /// Checks a typed slug; the error's text is the message a person reads.
    pub fn parse(input: &str) -> Result<Self, Invalid> {
        let ok = !input.is_empty()
            && input.len() <= 64
            && input.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && input
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if ok {
            Ok(Self(input.to_owned()))
        } else {
            Err(Invalid(format!(
                "`{input}` is not a valid offering slug (lowercase letters, digits and hyphens)"
            )))
        }
    }

    /// The slug as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Slug {
    type Err = Invalid;

    fn from_str(input: &str) -> Result<Self, Invalid> {
        Self::parse(input)
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
