//! Where a route forwards: the ready endpoints of a Service port, balanced round-robin.

use std::sync::atomic::{AtomicUsize, Ordering};

use http::uri::Authority;

/// One upstream address, ready to put in a request URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    pub authority: Authority,
}

/// The resolved backend of a route.
#[derive(Debug)]
pub struct Backend {
    /// `namespace/service:port`, for logs, pages and metrics.
    pub name: String,
    pub upstreams: Vec<Upstream>,
    /// Weighted shares of `upstreams`, one per Service (Gateway API weighted `backendRefs`);
    /// empty when the backend is one Service.
    shares: Vec<Share>,
    next: AtomicUsize,
    /// The upstreams speak HTTP/2 without TLS, with prior knowledge (h2c): a GRPCRoute's
    /// backends. Otherwise they speak HTTP/1.1.
    pub h2c: bool,
}

/// One Service's share of a weighted backend: `len` upstreams from `start`, chosen for the
/// turns below `until` (weights summed so far).
#[derive(Debug)]
struct Share {
    start: usize,
    len: usize,
    until: u64,
    /// The reference did not resolve: its share of requests fails.
    invalid: bool,
}

/// A part of a weighted backend: a Service's ready upstreams, or `None` when the reference
/// does not resolve; and its weight.
pub type WeightedPart = (Option<Vec<Upstream>>, u32);

/// Why no upstream was picked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoUpstream {
    /// The Service has no ready endpoint.
    NoEndpoints,
    /// This share of requests goes to a reference that does not resolve.
    Invalid,
}

impl Backend {
    pub fn new(name: String, upstreams: Vec<Upstream>) -> Self {
        Backend {
            name,
            upstreams,
            shares: Vec::new(),
            next: AtomicUsize::new(0),
            h2c: false,
        }
    }

    /// The same backend, reached over cleartext HTTP/2 (h2c).
    pub fn speaking_h2c(mut self) -> Self {
        self.h2c = true;
        self
    }

    /// Several Services, each taking a share of requests proportional to its weight. Parts of
    /// weight 0 take none.
    pub fn weighted(name: String, parts: Vec<WeightedPart>) -> Self {
        let mut upstreams = Vec::new();
        let mut shares = Vec::new();
        let mut until = 0u64;
        for (part, weight) in parts {
            if weight == 0 {
                continue;
            }
            until += u64::from(weight);
            let invalid = part.is_none();
            let part = part.unwrap_or_default();
            shares.push(Share {
                start: upstreams.len(),
                len: part.len(),
                until,
                invalid,
            });
            upstreams.extend(part);
        }
        Backend {
            name,
            upstreams,
            shares,
            next: AtomicUsize::new(0),
            h2c: false,
        }
    }

    /// The next upstream in round-robin order; `None` when the Service has no ready endpoint.
    pub fn pick(&self) -> Option<&Upstream> {
        self.pick_index().ok().map(|index| &self.upstreams[index])
    }

    /// The index in `upstreams` of the next upstream, for a caller that keeps the backend.
    pub fn pick_index(&self) -> Result<usize, NoUpstream> {
        // Relaxed is enough: the counter only spreads load, it orders nothing.
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        if self.shares.is_empty() {
            if self.upstreams.is_empty() {
                return Err(NoUpstream::NoEndpoints);
            }
            return Ok(turn % self.upstreams.len());
        }
        let total = self.shares.last().map_or(1, |share| share.until);
        let turn = turn as u64;
        let slot = turn % total;
        let share = self
            .shares
            .iter()
            .find(|share| slot < share.until)
            .expect("the last share ends at the total");
        if share.invalid {
            return Err(NoUpstream::Invalid);
        }
        if share.len == 0 {
            return Err(NoUpstream::NoEndpoints);
        }
        // Round-robin within the share, over the turns that fell to it.
        let round = usize::try_from(turn / total).unwrap_or_default();
        Ok(share.start + round % share.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(authority: &str) -> Upstream {
        Upstream {
            authority: authority.parse().expect("valid authority"),
        }
    }

    #[test]
    fn picks_rotate_over_every_endpoint() {
        let backend = Backend::new(
            "ns/svc:80".into(),
            vec![upstream("10.0.0.1:80"), upstream("10.0.0.2:80")],
        );
        let picks: Vec<String> = (0..4)
            .map(|_| backend.pick().expect("has endpoints").authority.to_string())
            .collect();
        assert_eq!(
            picks,
            ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.1:80", "10.0.0.2:80"]
        );
    }

    #[test]
    fn weighted_shares_get_requests_in_proportion_and_an_invalid_share_fails() {
        let backend = Backend::weighted(
            "split".into(),
            vec![
                (
                    Some(vec![upstream("10.0.0.1:80"), upstream("10.0.0.2:80")]),
                    3,
                ),
                (Some(vec![upstream("10.0.1.1:80")]), 1),
                (Some(vec![upstream("10.0.9.9:80")]), 0),
                (None, 1),
            ],
        );
        let mut counts = std::collections::BTreeMap::new();
        for _ in 0..500 {
            let key = match backend.pick_index() {
                Ok(index) => backend.upstreams[index].authority.to_string(),
                Err(NoUpstream::Invalid) => "invalid".to_string(),
                Err(NoUpstream::NoEndpoints) => "none".to_string(),
            };
            *counts.entry(key).or_insert(0) += 1;
        }
        let got: Vec<(String, i32)> = counts.into_iter().collect();
        assert_eq!(
            got,
            [
                ("10.0.0.1:80".to_string(), 150),
                ("10.0.0.2:80".to_string(), 150),
                ("10.0.1.1:80".to_string(), 100),
                ("invalid".to_string(), 100),
            ]
        );
    }

    #[test]
    fn no_endpoints_picks_nothing() {
        assert!(Backend::new("ns/svc:80".into(), vec![]).pick().is_none());
    }
}
