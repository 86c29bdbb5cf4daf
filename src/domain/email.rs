use std::fmt;

use validator::ValidateEmail;

/// A syntactically valid email address, normalised: surrounding space trimmed and the domain
/// lowercased (the local part is kept as typed: RFC 5321 lets servers treat it case-sensitively).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EmailAddress(String);

impl EmailAddress {
    /// Longest address that fits a forward path (RFC 5321 §4.5.3.1.3).
    pub const MAX_LEN: usize = 254;

    pub fn parse(input: &str) -> Result<Self, String> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err("Please enter your email address.".into());
        }
        if trimmed.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err("An email address cannot contain spaces or control characters.".into());
        }
        if trimmed.len() > Self::MAX_LEN {
            return Err("This email address is too long.".into());
        }
        let Some((local, domain)) = trimmed.rsplit_once('@') else {
            return Err("This does not look like an email address: it has no @.".into());
        };
        let normalised = format!("{local}@{}", domain.to_lowercase());
        // Lowercasing can lengthen a domain (`İ` is two bytes, `i̇` three).
        if normalised.len() > Self::MAX_LEN {
            return Err("This email address is too long.".into());
        }
        // validator follows HTML5, which lets dots run together or end the local part; RFC 5322
        // (and lettre, which addresses the confirmation) does not.
        if !normalised.validate_email()
            || !domain.contains('.')
            || normalised.parse::<lettre::Address>().is_err()
        {
            return Err(format!(
                "`{trimmed}` does not look like a valid email address."
            ));
        }
        Ok(Self(normalised))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for EmailAddress {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::EmailAddress;

    #[test]
    fn trims_and_lowercases_the_domain_only() {
        let e = EmailAddress::parse("  Radha.Devi@Example.ORG \n").unwrap();
        assert_eq!(e.as_str(), "Radha.Devi@example.org");
        assert_eq!(e.domain(), "example.org");
    }

    #[test]
    fn refuses_what_is_not_an_address() {
        for bad in [
            "",
            "   ",
            "plain",
            "@example.org",
            "a@",
            "a@b",
            "a b@example.org",
            "a@example.org\r\nBcc: x@y.z",
            "a\0@example.org",
            "a@@example.org",
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "accepted {bad:?}");
        }
        let long = format!("{}@example.org", "a".repeat(250));
        assert!(EmailAddress::parse(&long).is_err());
    }
}
