use std::fmt;

use validator::ValidateEmail;

use super::Invalid;

/// A syntactically valid email address, normalised: surrounding space trimmed and the domain
/// in its ASCII form, lowercased (IDNA/UTS-46: `Bücher.test`, `xn--bcher-kva.test` and a
/// fullwidth `ｔｅｓｔ` are each one domain). The local part is kept as typed: RFC 5321 lets
/// servers treat it case-sensitively, so `Radha@` and `radha@` are two subscribers, mailed as
/// typed; limits that count a person use [`EmailAddress::mailbox`] instead.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EmailAddress(String);

impl EmailAddress {
    /// Longest address that fits a forward path (RFC 5321 §4.5.3.1.3).
    pub const MAX_LEN: usize = 254;

    /// Parses and normalises a typed address; the error's text is the message a person reads.
    pub fn parse(input: &str) -> Result<Self, Invalid> {
        Self::normalise(input).map(Self).map_err(Invalid)
    }

    /// The normalised address, or the message a person reads.
    fn normalise(input: &str) -> Result<String, String> {
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
        if domain.starts_with('[') {
            return Err(
                "Please use an address with a domain name, not an IP address in brackets.".into(),
            );
        }
        let invalid = || format!("`{trimmed}` does not look like a valid email address.");
        // UTS-46 maps case and width and turns Unicode labels into their xn-- form.
        let domain = idna::domain_to_ascii(domain).map_err(|_| invalid())?;
        // A top-level domain is never all digits: `a@127.0.0.1` is an address literal too.
        if domain
            .rsplit('.')
            .next()
            .is_none_or(|tld| tld.is_empty() || tld.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err("Please use an address with a domain name, not an IP address.".into());
        }
        let normalised = format!("{local}@{domain}");
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
            return Err(invalid());
        }
        Ok(normalised)
    }

    /// The inbox an address reaches, as far as a limit on one person is concerned: the local
    /// part lowercased and without a `+tag`, at the domain. Never used to send.
    pub fn mailbox(&self) -> String {
        let (local, domain) = self.0.rsplit_once('@').unwrap_or(("", &self.0));
        let local = match local.split_once('+') {
            Some((base, _)) if !base.is_empty() => base,
            _ => local,
        };
        format!("{}@{domain}", local.to_lowercase())
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part after the last `@`, in its ASCII form.
    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
    }
}

impl std::str::FromStr for EmailAddress {
    type Err = Invalid;

    fn from_str(input: &str) -> Result<Self, Invalid> {
        Self::parse(input)
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

    #[test]
    fn domains_are_stored_in_one_ascii_form() {
        for spelling in [
            "bob@bücher.test",
            "bob@BÜCHER.test",
            "bob@xn--bcher-kva.test",
            "bob@XN--BCHER-KVA.TEST",
            "bob@bücher.ｔｅｓｔ",
        ] {
            let e = EmailAddress::parse(spelling).unwrap();
            assert_eq!(e.as_str(), "bob@xn--bcher-kva.test", "{spelling}");
        }
    }

    #[test]
    fn address_literals_are_refused() {
        for bad in [
            "user@[127.0.0.1]",
            "user@[IPv6:::1]",
            "user@127.0.0.1",
            "user@10.0.0.300",
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn spellings_of_one_inbox_share_a_mailbox() {
        let mailbox = |s: &str| EmailAddress::parse(s).unwrap().mailbox();
        for spelling in [
            "bomb@example.org",
            "bOmB@example.org",
            "BOMB+1@Example.org",
            "bomb+news+x@EXAMPLE.ORG",
        ] {
            assert_eq!(mailbox(spelling), "bomb@example.org", "{spelling}");
        }
        assert_eq!(mailbox("+only@example.org"), "+only@example.org");
        // The address itself is kept as typed, for sending.
        assert_eq!(
            EmailAddress::parse("bOmB+1@example.org").unwrap().as_str(),
            "bOmB+1@example.org"
        );
    }
}
