//! The DNS records mail authentication rests on, looked up for `sangha doctor`: SPF of the
//! envelope domain, DMARC of the From domain, and the DKIM key of a selector.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ProtocolConfig, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{Resolver, TokioResolver};

/// A lookup that got no answer (a timeout, a refusing server), as opposed to "no record".
#[derive(Debug, thiserror::Error)]
#[error("cannot look up {name}: {reason}")]
pub struct DnsError {
    name: String,
    reason: String,
}

/// A resolver over the configured name servers, or the system's.
pub struct Dns {
    resolver: TokioResolver,
}

impl Dns {
    /// Asks `nameservers` (UDP, then TCP for long answers), or those of `/etc/resolv.conf`
    /// when the list is empty.
    pub fn new(nameservers: &[SocketAddr]) -> Result<Self, DnsError> {
        let failed = |e: &dyn std::fmt::Display| DnsError {
            name: "the resolver configuration".into(),
            reason: e.to_string(),
        };
        let mut builder = if nameservers.is_empty() {
            Resolver::builder_tokio().map_err(|e| failed(&e))?
        } else {
            let servers = nameservers
                .iter()
                .map(|addr| {
                    let connection = |protocol| {
                        let mut connection = ConnectionConfig::new(protocol);
                        connection.port = addr.port();
                        connection
                    };
                    NameServerConfig::new(
                        addr.ip(),
                        true,
                        vec![
                            connection(ProtocolConfig::Udp),
                            connection(ProtocolConfig::Tcp),
                        ],
                    )
                })
                .collect();
            Resolver::builder_with_config(
                ResolverConfig::from_parts(None, Vec::new(), servers),
                TokioRuntimeProvider::default(),
            )
        };
        let mut options = ResolverOpts::default();
        options.timeout = Duration::from_secs(3);
        options.attempts = 1;
        options.cache_size = 0;
        *builder.options_mut() = options;
        Ok(Self {
            resolver: builder.build().map_err(|e| failed(&e))?,
        })
    }

    /// The TXT records at `name`, each one's strings joined; empty when there are none.
    pub async fn txt(&self, name: &str) -> Result<Vec<String>, DnsError> {
        let fqdn = format!("{}.", name.trim_end_matches('.'));
        match self.resolver.txt_lookup(fqdn.as_str()).await {
            Ok(lookup) => Ok(lookup
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    RData::TXT(txt) => Some(
                        txt.txt_data
                            .iter()
                            .map(|part| String::from_utf8_lossy(part))
                            .collect::<String>(),
                    ),
                    _ => None,
                })
                .collect()),
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => Ok(Vec::new()),
            Err(e) => Err(DnsError {
                name: name.to_owned(),
                reason: e.to_string(),
            }),
        }
    }

    /// The SPF records of `domain` (TXT records that start `v=spf1`).
    pub async fn spf(&self, domain: &str) -> Result<Vec<String>, DnsError> {
        Ok(self
            .txt(domain)
            .await?
            .into_iter()
            .filter(|r| tag_is(r, "v=spf1"))
            .collect())
    }

    /// The DMARC records of `domain` (at `_dmarc.DOMAIN`, starting `v=DMARC1`).
    pub async fn dmarc(&self, domain: &str) -> Result<Vec<String>, DnsError> {
        Ok(self
            .txt(&format!("_dmarc.{domain}"))
            .await?
            .into_iter()
            .filter(|r| tag_is(r, "v=DMARC1"))
            .collect())
    }

    /// The DKIM key records of `selector` for `domain` (at `SELECTOR._domainkey.DOMAIN`).
    pub async fn dkim(&self, selector: &str, domain: &str) -> Result<Vec<String>, DnsError> {
        self.txt(&format!("{selector}._domainkey.{domain}")).await
    }
}

/// Whether a record starts with `version` (`v=spf1`, `v=DMARC1`), case-insensitively, as a
/// whole term.
fn tag_is(record: &str, version: &str) -> bool {
    let first = record
        .trim_start()
        .split([' ', ';'])
        .next()
        .unwrap_or_default();
    first.eq_ignore_ascii_case(version)
}

/// The value of tag `name` in a `tag=value; tag=value` record (DKIM, DMARC).
pub fn tag<'a>(record: &'a str, name: &str) -> Option<&'a str> {
    record.split(';').find_map(|part| {
        let (key, value) = part.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then_some(value.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::{tag, tag_is};

    #[test]
    fn versions_and_tags_are_read_as_terms() {
        assert!(tag_is("v=spf1 include:_spf.example.net ~all", "v=spf1"));
        assert!(!tag_is("v=spf10 -all", "v=spf1"));
        assert!(tag_is("v=DMARC1; p=reject", "v=DMARC1"));
        assert!(tag_is("V=dmarc1;p=none", "v=DMARC1"));
        assert_eq!(
            tag("v=DMARC1; p=quarantine; rua=mailto:a@b", "p"),
            Some("quarantine")
        );
        assert_eq!(tag("v=DKIM1; k=ed25519; p=abc=", "p"), Some("abc="));
        assert_eq!(tag("v=DKIM1; k=rsa", "p"), None);
    }
}
