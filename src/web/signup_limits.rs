//! What one source may do to one mail domain: signups for addresses at a domain accepted per
//! hour from one network. The per-domain cap on confirmation emails protects the sender's
//! standing with a provider, but counted alone it let one IP use up gmail.com's hour for every
//! real visitor; this limit makes a flood bite on where it comes from.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use crate::clock::Millis;

/// The network an address belongs to, as far as one source is concerned: an IPv4 /24 or an
/// IPv6 /48 (what one household, office or small hoster usually holds). An IPv4 address
/// written as IPv6 (`::ffff:a.b.c.d`) is the IPv4 address.
pub fn network_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::from([a, b, c, 0])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::from([s[0], s[1], s[2], 0, 0, 0, 0, 0])
        }
    }
}

/// Signups per (domain, network) per hour, counted in fixed hours of the app's clock.
pub struct DomainSourceLimiter {
    per_hour: u32,
    windows: Mutex<HashMap<(String, IpAddr), Window>>,
}

#[derive(Clone, Copy)]
struct Window {
    start: Millis,
    count: u32,
}

const HOUR_MS: Millis = 3_600_000;

impl DomainSourceLimiter {
    /// `None` when the limit is 0 (no limit).
    pub fn new(per_hour: u32) -> Option<Self> {
        (per_hour > 0).then(|| Self {
            per_hour,
            windows: Mutex::new(HashMap::new()),
        })
    }

    /// Counts a signup for `domain` from `ip` at `now`; `Err(seconds to wait)` when its
    /// network is over the limit for that domain (the signup is then not counted).
    pub fn check(&self, domain: &str, ip: IpAddr, now: Millis) -> Result<(), u64> {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() > 100_000 {
            windows.retain(|_, w| now - w.start < HOUR_MS);
        }
        let window = windows
            .entry((domain.to_owned(), network_of(ip)))
            .or_insert(Window {
                start: now,
                count: 0,
            });
        if now - window.start >= HOUR_MS || now < window.start {
            *window = Window {
                start: now,
                count: 0,
            };
        }
        if window.count >= self.per_hour {
            let wait_ms = window.start + HOUR_MS - now;
            return Err(u64::try_from((wait_ms + 999) / 1000).unwrap_or(1).max(1));
        }
        window.count += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::ip;

    #[test]
    fn one_network_is_limited_per_domain_and_others_are_not() {
        let limiter = DomainSourceLimiter::new(2).unwrap();
        let t = 1_800_000_000_000;
        assert!(limiter.check("gmail.com", ip("203.0.113.5"), t).is_ok());
        assert!(
            limiter
                .check("gmail.com", ip("203.0.113.77"), t + 1)
                .is_ok()
        );
        // The same /24, written as IPv6 or not: over the limit until its hour is over.
        let wait = limiter
            .check("gmail.com", ip("::ffff:203.0.113.9"), t + 600_000)
            .unwrap_err();
        assert_eq!(wait, 3000);
        // Another network, or another domain from the same network: not held back.
        assert!(limiter.check("gmail.com", ip("198.51.100.7"), t).is_ok());
        assert!(limiter.check("example.org", ip("203.0.113.5"), t).is_ok());
        // A new hour, a new count.
        assert!(
            limiter
                .check("gmail.com", ip("203.0.113.5"), t + 3_600_000)
                .is_ok()
        );
        assert!(DomainSourceLimiter::new(0).is_none());
    }

    #[test]
    fn networks_are_a_v4_slash_24_and_a_v6_slash_48() {
        assert_eq!(network_of(ip("192.0.2.200")), ip("192.0.2.0"));
        assert_eq!(network_of(ip("::ffff:192.0.2.200")), ip("192.0.2.0"));
        assert_eq!(network_of(ip("2001:db8:aa:bb:cc::1")), ip("2001:db8:aa::"));
    }
}
