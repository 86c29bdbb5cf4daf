//! Who is asking: the client's IP (the socket peer, or the forwarded-for address when the peer
//! is a configured trusted proxy), its user agent, and the per-IP rate limit.
//!
//! Addresses are kept in one canonical form: an IPv4-mapped IPv6 address (`::ffff:192.0.2.1`,
//! what a dual-stack socket reports for an IPv4 client, and what a client may write in a
//! forwarded header) is its IPv4 address, so that one client has one rate limit, one form in
//! consent records, and matches a trusted proxy written either way.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::USER_AGENT;
use axum::http::request::Parts;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use super::AppState;
use crate::domain::ConsentSource;
use crate::store::ConsentMeta;

/// The client of one request.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

impl FromRequestParts<AppState> for ClientInfo {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_canonical());
        let trusted = &state.config().server.trusted_proxies;
        let ip = peer.map(|peer| client_ip(peer, trusted, forwarded_for(parts)));
        let user_agent = parts
            .headers
            .get(USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().filter(|c| !c.is_control()).take(512).collect());
        Ok(ClientInfo { ip, user_agent })
    }
}

impl ClientInfo {
    /// The consent record of what this client did: `text_hash` is the consent text agreed to
    /// (empty where none is shown), `source` where it happened.
    pub fn consent(self, text_hash: String, source: ConsentSource) -> ConsentMeta {
        ConsentMeta {
            ip: self.ip.map(|ip| ip.to_string()),
            user_agent: self.user_agent,
            text_hash,
            source,
        }
    }
}

fn forwarded_for(parts: &Parts) -> Vec<String> {
    parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_owned())
        .collect()
}

/// The forwarded chain is believed only hop by hop from our side: starting at the peer, each
/// trusted proxy vouches for the address before it. The first address not vouched for by a
/// trusted proxy is the client.
pub fn client_ip(peer: IpAddr, trusted: &[IpAddr], forwarded: Vec<String>) -> IpAddr {
    let mut current = peer.to_canonical();
    for hop in forwarded.iter().rev() {
        if !trusted.iter().any(|proxy| proxy.to_canonical() == current) {
            break;
        }
        match hop.parse::<IpAddr>() {
            Ok(ip) => current = ip.to_canonical(),
            Err(_) => break,
        }
    }
    current
}

/// A per-IP limit on signups: a burst, then a steady rate per minute.
pub struct RateLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
}

impl RateLimiter {
    /// `None` when the rate is 0 (no limit).
    pub fn new(per_minute: u32, burst: u32) -> Option<Self> {
        let per_minute = NonZeroU32::new(per_minute)?;
        let burst = NonZeroU32::new(burst).unwrap_or(per_minute);
        Some(Self {
            limiter: DefaultKeyedRateLimiter::keyed(
                Quota::per_minute(per_minute).allow_burst(burst),
            ),
        })
    }

    /// `Err(seconds to wait)` when `ip` is over its limit.
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        let ip = ip.to_canonical();
        if self.limiter.len() > 100_000 {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(&ip).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::ip;

    #[test]
    fn forwarded_headers_are_ignored_from_untrusted_peers() {
        let got = client_ip(ip("203.0.113.9"), &[], vec!["1.2.3.4".into()]);
        assert_eq!(got, ip("203.0.113.9"));
    }

    #[test]
    fn a_trusted_proxy_vouches_for_the_address_before_it_only() {
        let proxy = ip("10.0.0.1");
        // The client forged the first entry; the proxy appended the real one.
        let got = client_ip(
            proxy,
            &[proxy],
            vec!["6.6.6.6".into(), "198.51.100.7".into()],
        );
        assert_eq!(got, ip("198.51.100.7"));
        let got = client_ip(proxy, &[proxy], vec!["garbage".into()]);
        assert_eq!(got, proxy);
    }

    #[test]
    fn ipv4_mapped_addresses_are_their_ipv4_form() {
        let mapped = ip("::ffff:10.0.0.1");
        assert_eq!(client_ip(mapped, &[], vec![]), ip("10.0.0.1"));
        // A proxy listed in either form is trusted in either form.
        for listed in [ip("10.0.0.1"), mapped] {
            for peer in [ip("10.0.0.1"), mapped] {
                let got = client_ip(peer, &[listed], vec!["::ffff:198.51.100.7".into()]);
                assert_eq!(got, ip("198.51.100.7"));
            }
        }
        // Other IPv6 addresses stay as they are.
        assert_eq!(client_ip(ip("2001:db8::1"), &[], vec![]), ip("2001:db8::1"));
    }

    #[test]
    fn the_limiter_allows_a_burst_then_says_how_long_to_wait() {
        let limiter = RateLimiter::new(1, 2).unwrap();
        let a = ip("192.0.2.1");
        assert!(limiter.check(a).is_ok());
        assert!(limiter.check(a).is_ok());
        let wait = limiter.check(a).unwrap_err();
        assert!((1..=60).contains(&wait), "{wait}");
        assert!(
            limiter.check(ip("192.0.2.2")).is_ok(),
            "other addresses unaffected"
        );
        assert!(RateLimiter::new(0, 5).is_none());
    }
}
