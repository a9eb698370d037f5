//! Request rate limits: per policy (`spec.rateLimit.requestsPerMinute`, checked before any
//! authentication work) and per client address for the sign-in endpoints, so a flood cannot make
//! the proxy hammer the identity provider. Lock-free GCRA from the `governor` crate.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};

/// One clock for every limiter: creating a clock calibrates it (CPUID and a timing loop), which
/// made it a tenth of a 10,000-policy table build.
fn clock() -> DefaultClock {
    static CLOCK: OnceLock<DefaultClock> = OnceLock::new();
    CLOCK.get_or_init(DefaultClock::default).clone()
}

/// A policy's limit on this replica.
#[derive(Debug)]
pub struct RateLimit {
    pub requests_per_minute: u32,
    limiter: DefaultDirectRateLimiter,
}

impl RateLimit {
    pub fn per_minute(requests: u32) -> Self {
        let requests = NonZeroU32::new(requests).unwrap_or(NonZeroU32::MIN);
        RateLimit {
            requests_per_minute: requests.get(),
            limiter: DefaultDirectRateLimiter::direct_with_clock(
                Quota::per_minute(requests),
                clock(),
            ),
        }
    }

    /// `Ok` to go ahead, or how long until the next request would be accepted.
    pub fn check(&self) -> Result<(), Duration> {
        self.limiter
            .check()
            .map_err(|not_until| not_until.wait_time_from(clock().now()))
    }
}

/// Per-client-address limits for `/_iap/callback` and sign-in redirects.
pub struct AddressLimit {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    checks: AtomicU32,
}

impl AddressLimit {
    pub fn per_minute(requests: u32) -> Self {
        let requests = NonZeroU32::new(requests).unwrap_or(NonZeroU32::MIN);
        AddressLimit {
            limiter: DefaultKeyedRateLimiter::keyed(Quota::per_minute(requests)),
            checks: AtomicU32::new(0),
        }
    }

    pub fn check(&self, address: IpAddr) -> Result<(), Duration> {
        // Forget idle addresses now and then, so the map does not grow with every client seen.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        self.limiter
            .check_key(&address)
            .map_err(|not_until| not_until.wait_time_from(clock().now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_beyond_the_limit_is_refused_with_a_wait() {
        let limit = RateLimit::per_minute(3);
        for _ in 0..3 {
            assert!(limit.check().is_ok());
        }
        let wait = limit
            .check()
            .expect_err("the fourth request in a minute is refused");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
    }

    #[test]
    fn addresses_are_limited_separately() {
        let limit = AddressLimit::per_minute(1);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(limit.check(a).is_ok());
        assert!(limit.check(a).is_err());
        assert!(limit.check(b).is_ok());
    }
}
